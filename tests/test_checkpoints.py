"""Checkpoints are written atomically and read without running anything from the file; a resume is checked
against the run before Lightning sees it."""

from __future__ import annotations

import json
import os

import pytest
import torch

from tests.checkpoint_payloads import hostile_checkpoints
from vae_lightning.core import checkpoint_io as checkpoints_module
from vae_lightning.core.checkpoint_io import AtomicCheckpointIO, read_checkpoint
from vae_lightning.core.errors import CheckpointError, CheckpointWriteError
from vae_lightning.core.files import remove_leftovers, write_metrics
from vae_lightning.run.checkpoints import check_resume, check_weights_fit, load_module


@pytest.fixture
def hostile(digits_run, tmp_path):
    marker = tmp_path / "marker"
    return (*hostile_checkpoints(digits_run / "checkpoints" / "last.ckpt", tmp_path, marker), marker)


def test_a_pickled_command_is_refused_unread(hostile):
    pickled, _, marker = hostile
    for read in (read_checkpoint, load_module, AtomicCheckpointIO().load_checkpoint):
        with pytest.raises(CheckpointError, match="refused unread"):
            read(pickled)
    assert not marker.exists()


def test_a_foreign_target_is_refused_before_anything_is_built(hostile, digits_run):
    _, opens_a_file, marker = hostile
    for read in (read_checkpoint, load_module):
        with pytest.raises(CheckpointError, match=r"`loss._target_` names `io.open`"):
            read(opens_a_file)
    with pytest.raises(CheckpointError, match=r"io\.open"):
        check_resume(opens_a_file, {}, {})
    assert not marker.exists()
    checkpoint = torch.load(digits_run / "checkpoints" / "last.ckpt", weights_only=True)
    checkpoint["hyper_parameters"]["net"]["activation"] = {"_target_": "builtins.exec", "_args_": ["print(1)"]}
    torch.save(checkpoint, marker.parent / "nested.ckpt")
    with pytest.raises(CheckpointError, match=r"`model\.activation\._target_` names `builtins\.exec`"):
        read_checkpoint(marker.parent / "nested.ckpt")


def test_the_trusted_targets_are_the_projects_own_options():
    assert "vae_lightning.nets.conv.ConvVAE" in checkpoints_module.trusted_targets("model")
    assert "torch.nn.Tanh" in checkpoints_module.trusted_targets("model")  # an activation of conf/model/mlp.yaml
    assert "vae_lightning.data.dogs.DogsSource" in checkpoints_module.trusted_targets("dataset")
    assert "io.open" not in set().union(*(checkpoints_module.trusted_targets(g) for g in ("model", "loss", "dataset")))


def test_truncated_foreign_and_missing_checkpoints_say_what_is_wrong(digits_run, tmp_path):
    good = digits_run / "checkpoints" / "last.ckpt"
    (tmp_path / "truncated.ckpt").write_bytes(good.read_bytes()[:4000])
    torch.save({"weights": torch.zeros(2)}, tmp_path / "foreign.ckpt")
    for name, message in (
        ("truncated", "is not a readable checkpoint"),
        ("foreign", "was not written by vae_lightning"),
        ("missing", "no such checkpoint file"),
    ):
        with pytest.raises(CheckpointError, match=message):
            read_checkpoint(tmp_path / f"{name}.ckpt")


def test_a_resume_is_checked_against_the_config(digits_run):
    good = digits_run / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(good, weights_only=True)
    module = {name: checkpoint["hyper_parameters"][name] for name in ("net", "loss")}
    assert check_resume(good, module, {"max_epochs": 2})["epoch"] == 1
    with pytest.raises(CheckpointError, match=r"reached epoch 1 \(counted from 0\) but `trainer.max_epochs=1`"):
        check_resume(good, module, {"max_epochs": 1})
    with pytest.raises(CheckpointError, match=r"optimizer step 10 but `trainer.max_steps=5`"):
        check_resume(good, module, {"max_epochs": -1, "max_steps": 5})
    changed = module | {"net": module["net"] | {"latent_dim": 5}}
    with pytest.raises(CheckpointError, match=r"`model\.latent_dim` is None in the checkpoint but 5 in this config"):
        check_resume(good, changed, {"max_epochs": 4})  # the default network's latent_dim: None, its own choice
    with pytest.raises(CheckpointError, match=r"`model\.latent_dim` is None in the checkpoint but 5 in this config"):
        check_resume(good, changed, {"max_epochs": 4}, given=["model.latent_dim"])
    assert check_resume(good, changed, {"max_epochs": 4}, given=["model.hidden_dims", "beta"])["epoch"] == 1
    other_shape = load_module(good)
    other_shape.net.decoder[-1] = torch.nn.Linear(512, 10)
    with pytest.raises(CheckpointError, match="saved from a different model"):
        check_weights_fit(checkpoint, other_shape, good)


def test_a_failed_save_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    path = tmp_path / "checkpoints" / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"step": 1}, path)

    def disk_full(obj, f):
        f.write(b"half a checkpoint")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoints_module.torch, "save", disk_full)
    with pytest.raises(CheckpointWriteError, match=r"No space left on device.*previous checkpoint is kept"):
        io.save_checkpoint({"step": 2}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True) == {"step": 1}
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"]  # no temporary file left


def test_metrics_json_is_flat_with_a_status_and_written_by_the_first_process_only(tmp_path, monkeypatch):
    path = write_metrics(tmp_path, {"val/loss": torch.tensor(1.5), "test/nll": float("nan")}, "interrupted", x="y")
    assert json.loads(path.read_text()) == {"test/nll": "nan", "val/loss": 1.5, "status": "interrupted", "x": "y"}
    with pytest.raises(ValueError):
        write_metrics(tmp_path, {}, "unknown")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert write_metrics(tmp_path / "other", {}, "completed") is None
    assert not (tmp_path / "other").exists()


def test_leftovers_of_dead_writers_are_removed_and_live_ones_kept(tmp_path):
    dead = tmp_path / ".last.ckpt.999999999.tmp"  # no such process
    alive = tmp_path / f".last.ckpt.{os.getpid()}.tmp"  # this process is still writing it
    keep = tmp_path / "last.ckpt"
    for path in (dead, alive, keep):
        path.write_bytes(b"x")
    assert remove_leftovers(tmp_path) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([alive.name, keep.name])


def test_lightnings_own_loader_is_checked_too(hostile, digits_run):
    from vae_lightning.module import VAEModule

    pickled, opens_a_file, marker = hostile
    for path in (pickled, opens_a_file):
        with pytest.raises(CheckpointError):
            VAEModule.load_from_checkpoint(path)
    assert not marker.exists()
    assert VAEModule.load_from_checkpoint(digits_run / "checkpoints" / "last.ckpt").net.latent_dim == 2
