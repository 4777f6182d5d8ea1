"""The front page and the documentation site against the code: the option lists of the README and of the
configuration page are the config folders' options, every page is in the site's navigation, the README's links
lead to files that exist, the README stays a front page, and its Python block runs on a trained model."""

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
