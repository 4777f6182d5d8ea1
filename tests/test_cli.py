"""The commands' contracts, in real processes (slow): exit codes, one-line errors, no tracebacks, and what only
Hydra's own parsing or a fresh process decides."""

from __future__ import annotations

import json

import pytest

from tests.checkpoint_payloads import hostile_checkpoints
from tests.conftest import ROOT, one_line_error, run_command, run_commands, run_train
from vae_lightning.core.config import CONF_DIR

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def good_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("cli") / "run"
    result = run_train(["debug=fast", "logger=csv"], run_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr  # a normal run is quiet: no third-party tips or deprecation noise
    for noise in ("Tip:", "litlogger", "transfer_batch_to_device", "LeafSpec", "Total FLOPs: 0", "Warning"):
        assert noise not in output, noise
    assert (
        "Run finished. Outputs in" in result.stdout + result.stderr and (run_dir / ".hydra" / "config.yaml").is_file()
    )
    return run_dir


MODELS = ", ".join(sorted(path.stem for path in (CONF_DIR / "model").glob("*.yaml")))
TABLE = [
    # what only a real `train.py` process shows: Hydra's parsing, the Hydra callback, the exit code
    (["model=nonexistent"], f"Error: model=nonexistent is not an option of the `model` group ({MODELS})."),
    (["module.gradient_clip_val=1"], "Error: `module.gradient_clip_val` has moved: use +trainer.gradient_clip_val"),
    (["dataset=mnsit"], "Did you mean mnist?"),
    (["loss/likelihood=gausian"], "Did you mean gaussian?"),
    (["model.foo=1"], "Error: `model.foo` is not a key of `model`."),
    (["trainer.max_epoch=3"], "Did you mean trainer.max_epochs?"),
    (["hydra.run.dir=TMP/a_file/run"], "cannot be written"),
    (["dataset=mnist", "dataset.root=/no/such/folder", "dataset.download=false"], "MNIST files are missing"),
]


@pytest.mark.parametrize(("overrides", "message"), TABLE, ids=[" ".join(o) for o, _ in TABLE])
def test_train_py_bad_input_is_one_message_and_exit_code_1(overrides, message, tmp_path):
    (tmp_path / "a_file").write_text("")
    overrides = [o.replace("TMP", str(tmp_path)) for o in overrides]
    run_dir = [] if any(o.startswith("hydra.run.dir") for o in overrides) else [f"hydra.run.dir={tmp_path / 'run'}"]
    result = run_command(
        [str(ROOT / "train.py"), *overrides, "debug=fast", *run_dir], env={"VAE_DATA_DIR": str(tmp_path / "data")}
    )
    assert message in one_line_error(result)


def test_the_tools_are_hydra_apps(good_run, tmp_path):
    checkpoint = good_run / "checkpoints" / "last.ckpt"
    checks = []
    for tool in ("evaluate", "morph"):
        checks += [
            ["-m", f"vae_lightning.{tool}", "--cfg", "job", f"ckpt_path={checkpoint}"],
            ["-m", f"vae_lightning.{tool}"],
            ["-m", f"vae_lightning.{tool}", f"ckpt_path={checkpoint}", "bogus=1"],
        ]
    runs = [
        [
            "-m",
            "vae_lightning.evaluate",
            f"ckpt_path={checkpoint}",
            f"output={tmp_path / 'm.json'}",
            "eval.nll_samples=5",
        ],
        ["-m", "vae_lightning.morph", f"ckpt_path={checkpoint}", f"output={tmp_path / 'm.gif'}"],
    ]
    results = run_commands([*checks, *runs])  # side by side: most of each is the imports' wait
    for shown, missing, bogus in (results[0:3], results[3:6]):
        assert shown.returncode == 0 and f"ckpt_path: {checkpoint}" in shown.stdout, shown.stderr
        assert "ckpt_path is required" in one_line_error(missing)
        assert "Error: `bogus` is not a key of the config" in one_line_error(bogus)
    evaluated, morphed = results[6:]
    assert evaluated.returncode == 0 and json.loads(evaluated.stdout)["test/nll"] > 0, evaluated.stderr[-2000:]
    assert evaluated.stderr.count("GPU available") == 1  # each log line once, on stderr
    assert morphed.returncode == 0 and (tmp_path / "m.gif").is_file(), morphed.stderr[-2000:]


def test_no_command_runs_a_hostile_checkpoint(good_run, tmp_path):
    """A pickled `os.system` and a `loss` setting that opens a file, each given to every command."""
    marker = tmp_path / "marker"
    commands = []
    for hostile in hostile_checkpoints(good_run / "checkpoints" / "last.ckpt", tmp_path, marker):
        commands += [
            ["-m", "vae_lightning.evaluate", f"ckpt_path={hostile}"],
            ["-m", "vae_lightning.morph", f"ckpt_path={hostile}", f"output={tmp_path / 'm.gif'}"],
            [str(ROOT / "train.py"), f"ckpt_path={hostile}", "debug=fast", f"hydra.run.dir={tmp_path / 'run'}"],
        ]
    for result in run_commands(commands):
        output = one_line_error(result)
        assert "was refused" in output or "refused unread" in output, output[-2000:]
    assert not marker.exists() and not (tmp_path / "run").exists() and not (tmp_path / "m.gif").exists()
