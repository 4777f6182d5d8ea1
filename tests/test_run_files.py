import json

import pytest
import torch

from vae_lightning import checkpoint_io
from vae_lightning.checkpoint_io import AtomicCheckpointIO
from vae_lightning.run_files import write_metrics


def test_a_failed_save_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    path = tmp_path / "checkpoints" / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"step": 1}, path)

    def disk_full(obj, f):
        f.write(b"half a checkpoint")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint_io.torch, "save", disk_full)
    with pytest.raises(OSError, match="No space left"):
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
