import json

import pytest
import torch

from vae_lightning import checkpoint_io
from vae_lightning.checkpoint_io import AtomicCheckpointIO, CheckpointWriteError
from vae_lightning.run_files import write_metrics


def test_a_failed_save_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    path = tmp_path / "checkpoints" / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"step": 1}, path)

    def disk_full(obj, f):
        f.write(b"half a checkpoint")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint_io.torch, "save", disk_full)
    with pytest.raises(CheckpointWriteError, match=r"No space left on device.*previous checkpoint is kept"):
        io.save_checkpoint({"step": 2}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=False) == {"step": 1}
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"]  # no temporary file left


def test_metrics_json_is_flat_with_status(tmp_path):
    path = write_metrics(tmp_path, {"val/loss": torch.tensor(1.5), "test/nll": float("nan")}, "completed")
    assert json.loads(path.read_text()) == {"test/nll": "nan", "val/loss": 1.5, "status": "completed"}
    with pytest.raises(ValueError):
        write_metrics(tmp_path, {}, "unknown")


def test_only_rank_zero_writes_metrics(tmp_path, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    assert write_metrics(tmp_path, {}, "completed") is None
    assert not (tmp_path / "metrics.json").exists()


def test_leftovers_of_dead_writers_are_removed_and_live_ones_kept(tmp_path):
    import os

    from vae_lightning.leftovers import remove_leftovers

    dead = tmp_path / ".last.ckpt.999999999.tmp"  # no such process
    alive = tmp_path / f".last.ckpt.{os.getpid()}.tmp"  # this process is still writing it
    keep = tmp_path / "last.ckpt"
    for path in (dead, alive, keep):
        path.write_bytes(b"x")
    assert remove_leftovers(tmp_path) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([alive.name, keep.name])
