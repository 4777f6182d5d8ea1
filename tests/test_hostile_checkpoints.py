"""A checkpoint cannot reach outside its run: hostile copies of real checkpoints (`tests/checkpoint_payloads.py`)
through every entry point (a resume, `ckpt_path=`, `evaluate`, `morph`, the Python API, the demo), each test
showing that nothing outside the run changed. Beside them, the failures that must lose no record. The suite
grows with every finding."""

from __future__ import annotations

import base64
import json
import logging
import os
import resource
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests import checkpoint_payloads as payloads
from tests.conftest import compose_tool, compose_train, train_in_process
from vae_lightning.core.checkpoint_io import AtomicCheckpointIO, read_checkpoint, trusted_targets
from vae_lightning.core.errors import (
    CheckpointError,
    CheckpointWriteError,
    ConfigErrors,
    DataNotFoundError,
    VAELightningError,
)
from vae_lightning.core.files import write_metrics

RESUME = ["debug=fast", "trainer.max_epochs=3", "trainer.limit_val_batches=null", "~callbacks.diagnostics"]


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under `folder` with its size and modification time: equal snapshots, nothing changed."""
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def run_copy(digits_run, tmp_path) -> Path:
    """A copy of a finished two-epoch digits run, to resume."""
    copy = tmp_path / "run"
    shutil.copytree(digits_run, copy)
    return copy


@pytest.fixture
def victim(tmp_path) -> Path:
    """A folder outside every run, with a file in it, that no checkpoint may touch."""
    folder = tmp_path / "victim"
    (folder / "keep").mkdir(parents=True)
    (folder / "keep" / "precious.txt").write_text("not a checkpoint")
    return folder


@pytest.fixture(scope="module")
def images_run(tmp_path_factory) -> tuple[Path, Path]:
    """(last checkpoint, photo folder) of a short `dataset=images` run: a data set with a root and a cache."""
    tmp = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for label in ("cats", "dogs"):
        (tmp / "photos" / label).mkdir(parents=True)
        for i in range(6):
            pixels = rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp / "photos" / label / f"{i}.png")
    args = ["dataset=images", f"dataset.root={tmp / 'photos'}", "dataset.image_size=16", "model.channels=[8,16]"]
    train_in_process([*args, "model.latent_dim=2", "debug=fast", "~callbacks.diagnostics"], tmp / "run")
    return tmp / "run" / "checkpoints" / "last.ckpt", tmp / "photos"


# -- callback paths: a resume never removes what lies outside the run's checkpoint folder ----------------------
def test_a_resume_whose_callbacks_name_a_folder_outside_the_run_deletes_nothing(run_copy, victim, caplog):
    last = run_copy / "checkpoints" / "last.ckpt"
    payloads.callbacks_naming(last, last, run_copy / "checkpoints", victim)
    before = snapshot(victim)
    with caplog.at_level(logging.WARNING):
        train_in_process([*RESUME, "resume=true"], run_copy)
    assert snapshot(victim) == before
    assert "outside this run's checkpoint folder" in caplog.text
    assert json.loads((run_copy / "metrics.json").read_text())["status"] == "completed"


def test_callback_scores_that_are_not_numbers_are_dropped_before_lightning_compares_them(run_copy):
    last = run_copy / "checkpoints" / "last.ckpt"
    best = str(next((run_copy / "checkpoints").glob("best-*.ckpt")))

    def scores_as_text(checkpoint):
        for state in checkpoint["callbacks"].values():
            state |= {"dirpath": str(run_copy / "checkpoints"), "best_model_score": "high", "kth_value": "x"}
            state["best_k_models"] = {best: "not a number"}

    payloads.training_state(last, last, scores_as_text)
    train_in_process([*RESUME, "resume=true"], run_copy)
    assert json.loads((run_copy / "metrics.json").read_text())["status"] == "completed"


def test_a_checkpoint_given_as_ckpt_path_with_such_callbacks_deletes_nothing(digits_run, victim, tmp_path):
    hostile = payloads.callbacks_naming(
        digits_run / "checkpoints" / "last.ckpt", tmp_path / "shared.ckpt", tmp_path / "new" / "checkpoints", victim
    )
    before = snapshot(victim)
    train_in_process([*RESUME, f"ckpt_path={hostile}"], tmp_path / "new")
    assert snapshot(victim) == before


def test_the_checkpoint_io_removes_only_checkpoint_files_of_its_folder(tmp_path, victim):
    folder = tmp_path / "run" / "checkpoints"
    folder.mkdir(parents=True)
    own = folder / "best-epoch001.ckpt"
    own.write_bytes(b"x")
    (folder / "link.ckpt").symlink_to(victim / "keep" / "precious.txt")
    (folder / "notes.txt").write_text("mine")
    io = AtomicCheckpointIO(checkpoint_dir=folder)
    AtomicCheckpointIO().remove_checkpoint(victim / "keep" / "precious.txt")  # without a folder: .ckpt files only
    io.remove_checkpoint(folder / "notes.txt")
    assert (folder / "notes.txt").is_file() and (victim / "keep" / "precious.txt").is_file()
    before = snapshot(victim)
    for path in (victim, victim / "keep", folder / ".." / ".." / "victim", folder / "link.ckpt", folder, "memory://x"):
        io.remove_checkpoint(path)
    assert snapshot(victim) == before and (folder / "link.ckpt").is_symlink()
    io.remove_checkpoint(own)
    assert not own.exists()


# -- training state: checked against the model before fit ------------------------------------------------------
def wrong_step(checkpoint):
    checkpoint["optimizer_states"][0]["state"][1]["step"] = torch.tensor(-5.0)


def other_parameters(checkpoint):
    groups = checkpoint["optimizer_states"][0]["param_groups"]
    groups[0]["params"] = [0] * len(groups[0]["params"])


def schedule_nan(checkpoint):
    checkpoint["lr_schedulers"][0]["base_lrs"] = [float("nan")]


def negative_counter(checkpoint):
    checkpoint["loops"]["fit_loop"]["epoch_progress"]["total"]["completed"] = -3


def schedule_length_text(checkpoint):
    checkpoint["beta_total_steps"] = "many"


def short_random_state(checkpoint):
    checkpoint["random_state"]["cpu"] = torch.zeros(7, dtype=torch.uint8)


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (wrong_step, r"state\[1\]\.step is negative"),
        (other_parameters, "name other parameters"),
        (schedule_nan, r"lr_schedulers\[0\]\.base_lrs\[0\] is not a finite number"),
        (negative_counter, r"loops\.fit_loop\.epoch_progress\.total\.completed is not a count"),
        (short_random_state, r"random_state\.cpu is not a torch\.uint8 tensor of shape"),
        (schedule_length_text, "beta_total_steps is not a count"),
    ],
)
def test_a_training_state_that_does_not_fit_is_refused_before_training(run_copy, change, named):
    last = run_copy / "checkpoints" / "last.ckpt"
    payloads.training_state(last, last, change)
    before = snapshot(run_copy / "checkpoints")
    with pytest.raises(CheckpointError, match=named):
        train_in_process([*RESUME, "resume=true"], run_copy)
    assert snapshot(run_copy / "checkpoints") == before


@pytest.mark.parametrize("entry", ["resume", "ckpt_path"])
def test_an_adam_state_of_the_wrong_shape_is_refused_in_one_line_before_training(run_copy, tmp_path, entry):
    last = run_copy / "checkpoints" / "last.ckpt"
    hostile = payloads.adam_moment_of_shape(last, last if entry == "resume" else tmp_path / "x.ckpt", (3,))
    folder = run_copy if entry == "resume" else tmp_path / "new"
    before = snapshot(run_copy)
    how = "resume=true" if entry == "resume" else f"ckpt_path={hostile}"
    with pytest.raises(CheckpointError, match=r"exp_avg is not a torch\.float32 tensor of shape \(512, 64\)") as bad:
        train_in_process([*RESUME, how], folder)
    assert "\n" not in str(bad.value)
    assert snapshot(run_copy) == before and not (tmp_path / "new" / "checkpoints").exists()  # metrics.json too


def test_unknown_entries_of_a_schedule_state_are_dropped_not_set(run_copy):
    """A learning-rate schedule sets every entry of its state as an attribute (`optimizer` too): unknown ones
    are removed before Lightning restores it; the run resumes."""
    last = run_copy / "checkpoints" / "last.ckpt"
    payloads.training_state(last, last, lambda c: c["lr_schedulers"][0].update(optimizer={}, anything=1))
    train_in_process([*RESUME, "resume=true"], run_copy)
    assert json.loads((run_copy / "metrics.json").read_text())["status"] == "completed"
    # a schedule saves its attributes: the new checkpoint shows what Lightning restored
    assert "anything" not in torch.load(last, weights_only=True)["lr_schedulers"][0]


# -- where tools read and write: never the checkpoint's choice -------------------------------------------------
def test_tools_never_read_write_or_download_where_a_checkpoint_says(images_run, tmp_path, monkeypatch):
    from vae_lightning.api import TrainedVAE
    from vae_lightning.demo.main import load_model
    from vae_lightning.evaluate import evaluate
    from vae_lightning.morph import morph

    good, photos = images_run
    victim_root = tmp_path / "victim_photos"
    shutil.copytree(photos, victim_root)
    victim_cache = tmp_path / "victim_cache"
    hostile = payloads.data_elsewhere(good, tmp_path / "shared.ckpt", victim_root, victim_cache)
    monkeypatch.setenv("VAE_DATA_DIR", str(tmp_path / "user_data"))
    monkeypatch.setenv("VAE_CACHE_DIR", str(tmp_path / "user_cache"))
    before = snapshot(victim_root)
    given = [f"ckpt_path={hostile}", f"dataset.root={photos}"]
    evaluate(compose_tool("evaluate", [*given, f"output={tmp_path / 'm.json'}", "eval.nll_samples=2"]))
    load_model(compose_tool("demo", given))
    morph(
        compose_tool("morph", [*given, "mode=attribute", "attribute=dogs", "steps=2", f"output={tmp_path / 'm.gif'}"])
    )
    TrainedVAE.load(hostile).datamodule({"root": str(photos)})
    assert not victim_cache.exists() and snapshot(victim_root) == before
    assert any((tmp_path / "user_cache").glob("*.pt"))  # the user's own cache folder instead
    # without a root given, the tool looks where this installation keeps data; the stored root is only a hint
    with pytest.raises(VAELightningError, match=rf"trained on {victim_root}, which is on this machine: give dataset"):
        evaluate(compose_tool("evaluate", [f"ckpt_path={hostile}", f"output={tmp_path / 'm.json'}"]))
    assert not victim_cache.exists() and snapshot(victim_root) == before
    shutil.rmtree(victim_root)  # a root that is not on this machine: named as a hint in the data set's own error
    with pytest.raises(VAELightningError, match=rf"trained with dataset\.root={victim_root}: give that"):
        evaluate(compose_tool("evaluate", [f"ckpt_path={hostile}", f"output={tmp_path / 'm.json'}"]))


def test_an_interpolation_in_a_checkpoint_never_reaches_the_output(digits_run, images_run, tmp_path, monkeypatch):
    from vae_lightning.api import TrainedVAE
    from vae_lightning.demo.main import load_model
    from vae_lightning.evaluate import evaluate
    from vae_lightning.morph import morph
    from vae_lightning.run.checkpoints import check_resume

    monkeypatch.setenv("VAE_TEST_SECRET", "s3cr3t-value")
    good, _ = images_run
    hostile = [
        payloads.with_setting(good, tmp_path / "a.ckpt", "data", "root", "${oc.env:VAE_TEST_SECRET}"),
        payloads.with_setting(good, tmp_path / "b.ckpt", "net", "latent_dim", "${oc.env:VAE_TEST_SECRET}"),
    ]
    for path in hostile:
        entries = [
            lambda p=path: TrainedVAE.load(p),
            lambda p=path: check_resume(p, {}, {}),
            lambda p=path: evaluate(compose_tool("evaluate", [f"ckpt_path={p}"])),
            lambda p=path: morph(compose_tool("morph", [f"ckpt_path={p}", f"output={tmp_path / 'm.gif'}"])),
            lambda p=path: load_model(compose_tool("demo", [f"ckpt_path={p}"])),
        ]
        for entry in entries:
            with pytest.raises(CheckpointError, match=r"holds an interpolation") as refused:
                entry()
            assert "s3cr3t" not in str(refused.value)
    assert not (tmp_path / "m.gif").exists()


def test_a_width_the_weights_do_not_have_is_refused_before_building(digits_run, tmp_path):
    from vae_lightning.api import TrainedVAE

    hostile = payloads.with_setting(
        digits_run / "checkpoints" / "last.ckpt", tmp_path / "wide.ckpt", "net", "hidden_dims", [12000, 12000]
    )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB
    with pytest.raises(CheckpointError, match=r"has \(512, 64\) for net\.encoder\.0\.weight, its settings build"):
        TrainedVAE.load(hostile)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak < 300_000  # the 1.6 GB model was never built


# -- no failure loses a record ---------------------------------------------------------------------------------
def test_a_full_disk_while_saving_is_one_line_and_keeps_the_last_checkpoint(tmp_path):
    """A real failed write: the file size limit of this process, as a full disk refuses it (torch's zip writer
    then raises its own RuntimeError, not an OSError)."""
    folder = tmp_path / "checkpoints"
    io = AtomicCheckpointIO(checkpoint_dir=folder)
    io.save_checkpoint({"w": torch.zeros(10)}, folder / "last.ckpt")
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    try:
        resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, hard))
        with pytest.raises(CheckpointWriteError, match=rf"in {folder}\. The previous checkpoint is kept") as bad:
            io.save_checkpoint({"w": torch.zeros(1_000_000)}, folder / "last.ckpt")
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)
    assert "\n" not in str(bad.value)
    assert torch.equal(torch.load(folder / "last.ckpt", weights_only=True)["w"], torch.zeros(10))
    assert sorted(p.name for p in folder.iterdir()) == ["last.ckpt"]


def test_a_failed_attempt_keeps_the_completed_record(tmp_path):
    write_metrics(tmp_path, {"test/nll": 90.0}, "completed", tested_checkpoint="checkpoints/best.ckpt")
    write_metrics(tmp_path, {}, "running")
    running = json.loads((tmp_path / "metrics.json").read_text())
    assert running["status"] == "completed" and running["attempts"][0]["status"] == "running"
    write_metrics(tmp_path, {}, "failed", error="Could not write the checkpoint")
    record = json.loads((tmp_path / "metrics.json").read_text())
    assert record["status"] == "completed" and record["test/nll"] == 90.0
    assert record["tested_checkpoint"] == "checkpoints/best.ckpt"
    assert [a["status"] for a in record["attempts"]] == ["failed"]  # the running entry became the failed one
    write_metrics(tmp_path, {"test/nll": 80.0}, "completed")  # a later attempt that completes is the record
    record = json.loads((tmp_path / "metrics.json").read_text())
    assert record["test/nll"] == 80.0 and [a["status"] for a in record["attempts"]] == ["failed"]


def test_a_run_says_running_with_its_process_until_it_ends(run_copy):
    from vae_lightning.train import record

    record(run_copy, {}, "running")
    assert json.loads((run_copy / "metrics.json").read_text())["attempts"][-1]["pid"] == os.getpid()


def test_resume_on_a_folder_that_does_not_exist_says_so(tmp_path):
    from vae_lightning.run.folder import check_resume_before_start

    cfg = compose_train(["resume=true", f"hydra.run.dir={tmp_path / 'nowhere'}"], tmp_path / "nowhere")
    with pytest.raises(VAELightningError, match=r"resume=true, but the run folder .*nowhere does not exist"):
        check_resume_before_start(cfg)
    assert not (tmp_path / "nowhere").exists()


# -- the low ones: one clear line each -------------------------------------------------------------------------
def test_a_folder_as_ckpt_path_names_the_checkpoint_in_it(digits_run):
    with pytest.raises(CheckpointError, match=rf"is a folder, not a checkpoint file: .*{digits_run}/checkpoints/last"):
        read_checkpoint(digits_run)


def test_broken_yaml_in_a_users_config_folder_is_a_warning_not_a_failure(digits_run, tmp_path, caplog):
    (tmp_path / "conf" / "model").mkdir(parents=True)
    (tmp_path / "conf" / "model" / "broken.yaml").write_text("_target_: [unclosed\n")
    with caplog.at_level(logging.WARNING):
        trusted_targets.cache_clear()
        assert read_checkpoint(digits_run / "checkpoints" / "last.ckpt", config_dirs=[tmp_path / "conf"])
    assert "broken.yaml is not valid YAML" in caplog.text
    trusted_targets.cache_clear()


def test_a_corrupt_cached_direction_is_computed_again(digits_run, tmp_path):
    from vae_lightning.api import TrainedVAE

    shutil.copy(digits_run / "checkpoints" / "last.ckpt", tmp_path / "last.ckpt")
    vae = TrainedVAE.load(tmp_path / "last.ckpt")
    datamodule = vae.datamodule()
    direction, _ = vae.attribute_direction(0, datamodule)  # `attribute=0` from the command line is an int
    cached = tmp_path / "last.ckpt.attribute_0.pt"
    for damage in (b"not a torch file", cached.read_bytes()[:100]):
        cached.write_bytes(damage)
        again, _ = vae.attribute_direction("0", datamodule)
        assert torch.allclose(again, direction)


def test_several_bad_values_of_a_tool_are_reported_together(digits_run, tmp_path):
    from vae_lightning.morph import morph

    args = [f"ckpt_path={digits_run / 'checkpoints' / 'last.ckpt'}", "steps=1", "scale=abc", "mode=sideways"]
    with pytest.raises(ConfigErrors, match="4 problems") as bad:
        morph(compose_tool("morph", [*args, "seed=abc", f"output={tmp_path / 'm.gif'}"]))
    assert {p.key for p in bad.value.problems} == {"steps", "scale", "mode", "seed"}
    from vae_lightning.evaluate import evaluate

    args = [f"ckpt_path={digits_run / 'checkpoints' / 'last.ckpt'}", "eval.mutual_info=maybe", "accelerator=tpu2"]
    with pytest.raises(ConfigErrors, match="2 problems") as bad:  # before the checkpoint is read
        evaluate(compose_tool("evaluate", args))
    assert {p.key for p in bad.value.problems} == {"eval.mutual_info", "accelerator"}


@pytest.mark.parametrize("what", ["unreadable", "one image"])
def test_a_folder_it_cannot_train_on_is_one_line(tmp_path, what):
    folder = tmp_path / "photos"
    folder.mkdir()
    if what == "unreadable":
        (folder / "a.jpg").write_text("not a picture")
        (folder / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
        expected = r"None of the 2 files found could be read as an image"
    else:
        Image.new("RGB", (20, 20)).save(folder / "only.png")
        expected = r"at least 3 images are needed"
    with pytest.raises(VAELightningError, match=expected):
        train_in_process(["dataset=images", f"dataset.root={folder}", "dataset.image_size=16", "debug=fast"], tmp_path)


def test_a_finite_but_enormous_loss_is_warned_of():
    from vae_lightning.train import enormous_loss

    assert enormous_loss({"val/loss": 95.0, "test/loss": 96.0}) is None
    assert "val/loss=1e+21" in enormous_loss({"val/loss": 1e21, "test/nll": 1e21})


# -- the demo's one gate for every image it is sent ------------------------------------------------------------
def data_url(content: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(content).decode()


def test_every_image_the_demo_receives_passes_one_gate(tmp_path):
    from vae_lightning.demo.model import DemoInputError, upload_path

    server = tmp_path / "vae-demo-x"
    results = server / "results"  # not created yet: a fresh server
    png = tmp_path / "frame.png"
    Image.new("RGB", (8, 8)).save(png)
    path, _ = upload_path({"url": data_url(png.read_bytes())}, results, 1000)
    assert Path(path).read_bytes() == png.read_bytes() and Path(path).parent == results
    uploaded = server / "gradio" / "photo.png"
    uploaded.parent.mkdir(parents=True)
    shutil.copy(png, uploaded)
    assert upload_path({"path": str(uploaded), "orig_name": "me.png"}, results, 1000) == (str(uploaded), "me.png")
    refused = [
        ({"url": data_url(b"x" * 5000)}, 1000, "larger than this page takes"),
        ({"url": "data:image/png;base64,@@@@"}, 1000, "damaged"),
        ({"url": "data:image/png,rawtext"}, 1000, "not a base64 data URL"),
        ({"path": str(png)}, 1000, "not a file this page received"),  # outside the demo's folder
        ({"path": str(server / "gradio" / ".." / ".." / "frame.png")}, 1000, "not a file this page received"),
        ({"path": str(uploaded)}, 10, "larger than this page takes"),
        (["a list"], 1000, "not understood"),
    ]
    for payload, limit, message in refused:
        with pytest.raises(DemoInputError, match=message) as bad:
            upload_path(payload, results, limit)
        assert str(tmp_path) not in str(bad.value)


def test_the_demo_size_limit_reads_as_gradio_takes_it():
    from vae_lightning.core.errors import ConfigValueError
    from vae_lightning.demo.main import file_size

    assert file_size("max_file_size", "100mb") == 100 * 2**20 and file_size("max_file_size", 512) == 512
    with pytest.raises(ConfigValueError, match="max_file_size"):
        file_size("max_file_size", "lots")


def test_a_missing_data_folder_stays_a_data_error_for_the_demo(images_run, tmp_path, monkeypatch):
    """The demo opens without the attribute tab when the data is not here: that needs the error's kind kept."""
    from vae_lightning.api import TrainedVAE

    monkeypatch.setenv("VAE_DATA_DIR", str(tmp_path / "empty"))
    with pytest.raises(DataNotFoundError):
        TrainedVAE.load(images_run[0]).datamodule()


# -- as commands (slow) ----------------------------------------------------------------------------------------
FULL_DISK = """
import resource, runpy, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG, as on a full disk
resource.setrlimit(resource.RLIMIT_FSIZE, (1_000_000, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@pytest.mark.slow
def test_a_resume_that_meets_a_full_disk_is_one_line_and_keeps_the_checkpoint_and_the_record(run_copy):
    from tests.conftest import ROOT, one_line_error, run_command

    last = run_copy / "checkpoints" / "last.ckpt"
    before, completed = last.read_bytes(), json.loads((run_copy / "metrics.json").read_text())
    args = ["-c", FULL_DISK, str(ROOT / "train.py"), *RESUME, "resume=true", f"hydra.run.dir={run_copy}"]
    output = one_line_error(run_command(args, env={"VAE_DATA_DIR": str(run_copy.parent / "data")}))
    assert (
        f"Could not write the checkpoint {run_copy}/checkpoints/" in output and "previous checkpoint is kept" in output
    )
    assert last.read_bytes() == before
    record = json.loads((run_copy / "metrics.json").read_text())
    assert {k: v for k, v in record.items() if k != "attempts"} == completed  # the completed run's record stays
    assert [a["status"] for a in record["attempts"]] == ["failed"]
    assert "Could not write the checkpoint" in record["attempts"][0]["error"]


@pytest.mark.slow
def test_a_wandb_run_resumed_with_a_changed_override_goes_on(tmp_path):
    pytest.importorskip("wandb", reason="the W&B test needs the extra: pip install -e '.[wandb]'")
    from tests.conftest import run_train

    run = tmp_path / "run"
    assert run_train(["logger=wandb", "debug=fast", "trainer.max_epochs=1"], run).returncode == 0
    result = run_train(["logger=wandb", "debug=fast", "trainer.max_epochs=2", "resume=true"], run)
    assert result.returncode == 0 and "Traceback" not in result.stdout + result.stderr, result.stderr[-3000:]
    assert json.loads((run / "metrics.json").read_text())["status"] == "completed"
    _, resumed = sorted((run / "wandb").glob("offline-run-*"))  # the same run id, a second record log
    (records,) = resumed.glob("run-*.wandb")
    assert b"resumed/choice/trainer.max_epochs" in records.read_bytes() and b"1 -> 2" in records.read_bytes()
