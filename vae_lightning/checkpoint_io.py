"""Checkpoints written to a temporary file, flushed to disk, then renamed over the target.

A kill or a full disk during the save leaves the previous checkpoint intact.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from vae_lightning.errors import VAELightningError


class CheckpointWriteError(VAELightningError):
    """A checkpoint could not be written (disk full, no permission); the previous one is intact."""


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


class AtomicCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any = None) -> None:
        try:
            atomic_torch_save(checkpoint, path)
        except OSError as bad:
            raise CheckpointWriteError(
                f"Could not write the checkpoint {path} ({bad.strerror or bad}). The previous checkpoint is kept. "
                "Free some disk space and continue with resume=true hydra.run.dir=<this run's folder>."
            ) from None
