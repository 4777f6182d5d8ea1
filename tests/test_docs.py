"""The front page and the documentation site against the code: the option lists of the README and of the
configuration page are the config folders' options, every page is in the site's navigation, the README's links
lead to files that exist, the README stays a front page, its Python block runs on a trained model, and every command
of ours in a shell block composes as written."""

from __future__ import annotations

import re

import pytest
import yaml

from tests.conftest import ROOT
from vae_lightning.core.config import CONF_DIR

README = ROOT / "README.md"
DOCS = ROOT / "docs"


def option_rows(text: str) -> dict[str, set[str]]:
    """{group: the backticked names of its options column} for each table row whose first cell is a config
    group (`| `prior` | `standard_normal` (default), `mixture`, ... |`)."""
    rows = {}
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) < 2 or not re.fullmatch(r"`[a-z_/]+`( \(with [^)]*\))?", cells[0]):
            continue
        group = cells[0].split("`")[1]
        if (CONF_DIR / group).is_dir():
            listed = re.sub(r"\([^()]*\)", "", cells[1].split(", or a list")[0])  # notes in brackets name keys
            rows[group] = set(re.findall(r"`([a-z_0-9]+)`", listed))
    return rows


def options(group: str) -> set[str]:
    return {path.stem for path in (CONF_DIR / group).glob("*.yaml")}


@pytest.mark.parametrize("page", [README, DOCS / "configuration.md"], ids=lambda p: p.name)
def test_the_option_tables_list_exactly_the_options_of_each_config_group(page):
    rows = option_rows(page.read_text())
    assert len(rows) >= 12, sorted(rows)
    for group, listed in rows.items():
        assert listed == options(group), (page.name, group, sorted(listed ^ options(group)))


def test_the_readme_is_a_front_page_whose_links_lead_somewhere():
    text = README.read_text()
    assert len(text.splitlines()) <= 300
    for target in re.findall(r"\]\(([^)#]+)\)", text):
        assert (ROOT / target).exists(), target
    for command in ('pip install -e ".[dev]"', "python train.py", "pytest", "pytest -m slow"):
        assert command in text, command


def test_every_page_is_in_the_sites_navigation_and_every_nav_entry_exists():
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    listed = {next(iter(entry.values())) for entry in config["nav"]}
    assert listed == {path.name for path in DOCS.glob("*.md")}


def test_the_readmes_python_block_runs_on_a_trained_model(digits_run, tmp_path, monkeypatch):
    """The block as printed, with the run's checkpoint and a photo in place of the placeholders."""
    from PIL import Image

    block = re.search(r"```python\n(.*?)```", README.read_text(), re.S).group(1)
    Image.new("RGB", (40, 40), (200, 150, 120)).save(tmp_path / "friend.jpg")
    monkeypatch.chdir(tmp_path)
    code = block.replace("outputs/<run>/checkpoints/last.ckpt", str(digits_run / "checkpoints" / "last.ckpt"))
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    assert namespace["images"].shape[0] == 1 and float(namespace["images"].min()) >= 0


TOOLS = {"train", "evaluate", "morph", "export", "demo", "shards"}  # each command's config has its name
PLUGINS = {
    "hydra/launcher=ray": "hydra_plugins.hydra_ray_launcher",
    "hydra/launcher=joblib": "hydra_plugins.hydra_joblib_launcher",
}


def commands_in_docs() -> list[tuple[str, str, list[str]]]:
    """(page, config name, overrides) of every command of ours in a shell block of the README and the site, as a
    user would paste it: comments, environment settings and `...` dropped, `<placeholders>` filled, the first
    value of each swept key (`-m`) kept."""
    import shlex

    found = []
    for page in [README, *sorted(DOCS.glob("*.md"))]:
        for block in re.findall(r"```(?:bash|sh|shell|console)?\n(.*?)```", page.read_text(), re.S):
            for line in re.sub(r"\\\n", " ", block).splitlines():
                if not re.match(r"\s*([A-Z_]+=\S+\s+)*(python train\.py|python -m vae_lightning\.|vae-)", line):
                    continue
                words = shlex.split(re.sub(r"<[^>]+>", "PLACEHOLDER", line), comments=True)
                while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):
                    words = words[1:]  # MLFLOW_TRACKING_URI=... python train.py
                if words[:2] == ["python", "train.py"]:
                    name, args = "train", words[2:]
                elif words[:2] == ["python", "-m"] and words[2].startswith("vae_lightning."):
                    name, args = words[2].split(".")[1], words[3:]
                elif words and words[0].startswith("vae-"):
                    name, args = words[0][4:], words[1:]
                else:
                    continue
                if "--config-dir" in args:  # a user's config folder: tests/test_package.py runs examples/my_project
                    continue
                args = [w.split(",")[0] if "[" not in w else w for w in args if w not in ("-m", "...")]
                assert name in TOOLS, f"{page.name}: {line}"
                found.append((page.name, name, args))
    return found


@pytest.mark.parametrize(("page", "tool", "args"), commands_in_docs(), ids=lambda v: v if isinstance(v, str) else "")
def test_every_command_in_the_docs_composes_as_written(page, tool, args):
    """Each command line of the README and the site names options and keys that exist (the config Hydra would
    run with composes); the commands that train or need data are run by the suites that test those features."""
    import importlib.util

    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    for override, plugin in PLUGINS.items():
        if override in args and importlib.util.find_spec(plugin) is None:
            pytest.skip(f"{override} needs {plugin}, installed with the `ray` extra (.ci/run does)")
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        compose(tool, overrides=args, return_hydra_config=True)  # raises for an option or key that is not there
