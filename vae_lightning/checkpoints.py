"""Reading vae_lightning checkpoints for tools (morph, evaluate) and for resuming, with one clear error for
each way a checkpoint can be wrong."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import torch

from vae_lightning.errors import VAELightningError


class CheckpointError(VAELightningError):
    """A checkpoint file is missing, unreadable or not one of ours."""


def read_checkpoint(path: str | Path, map_location: str = "cpu") -> dict:
    """The checkpoint dictionary (memory-mapped, so cheap), checked to be a vae_lightning one."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"ckpt_path={path}: no such checkpoint file.")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=False, mmap=True)
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError) as bad:
        raise CheckpointError(
            f"ckpt_path={path} is not a readable checkpoint ({type(bad).__name__}: {str(bad).splitlines()[0][:120]}); "
            "it may be truncated. Use another one, e.g. checkpoints/last.ckpt."
        ) from None
    hparams = checkpoint.get("hyper_parameters", {}) if isinstance(checkpoint, dict) else {}
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint or not {"net", "input_shape"} <= set(hparams):
        raise CheckpointError(
            f"ckpt_path={path} was not written by vae_lightning's train.py (it has no VAE hyperparameters)."
        )
    return checkpoint


def load_module(path: str | Path, map_location: str = "cpu"):
    """The VAEModule stored in `path`, in eval mode, rebuilt from the checkpoint alone."""
    from vae_lightning.module import VAEModule

    path = Path(path).expanduser()
    read_checkpoint(path, map_location)
    try:
        module = VAEModule.load_from_checkpoint(path, map_location=map_location, weights_only=False)
    except (RuntimeError, KeyError, TypeError) as bad:
        raise CheckpointError(f"ckpt_path={path} does not match the model it describes ({bad}).") from None
    module.eval()
    return module
