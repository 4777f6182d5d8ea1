"""Checkpoints on disk: written atomically, read without running code from them.

Reading never runs code from the file. `torch.load(weights_only=True)` unpickles tensors and plain containers
only, and the `_target_`s stored in a checkpoint's hyperparameters must be targets of the config options offered
for them (the files under `model/`, `prior/`, `loss/`, `beta/`, `optimizer/`, `lr_schedule/`, `dataset/` of the
packaged configs, and of a user's own config folders given with `--config-dir` or `hydra.searchpath`) before any
of them is built. A checkpoint shared by someone else can therefore describe a model, but not run a command or
open a file.
"""

from __future__ import annotations

import functools
import os
import pickle
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from omegaconf import OmegaConf

from vae_lightning.core.config import CONF_DIR
from vae_lightning.core.errors import CheckpointError, CheckpointWriteError
from vae_lightning.core.files import atomic_write

# hyperparameter of VAEModule -> the config groups whose targets it may name
TRUSTED_GROUPS = {
    "net": ("model",),
    "prior": ("prior",),
    "loss": ("loss",),
    "beta": ("beta",),
    "optimizer": ("optimizer",),
    "lr_schedule": ("lr_schedule",),
    "data": ("dataset",),
}
# hyperparameter -> the config key a user sets it with
CONFIG_KEYS = {
    "net": "model",
    "prior": "prior",
    "loss": "loss",
    "beta": "beta",
    "optimizer": "optimizer",
    "lr_schedule": "lr_schedule",
    "data": "dataset",
}


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint IO with atomic saves (a kill or a full disk leaves the previous file intact) and
    the checked, code-free read of `read_checkpoint` for every load, including resuming with `ckpt_path`.
    `config_dirs`: the user's own config folders, whose options' targets are trusted as the packaged ones."""

    def __init__(self, config_dirs: Sequence[str | os.PathLike] = ()) -> None:
        super().__init__()
        self.config_dirs = tuple(str(Path(d)) for d in config_dirs)

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any = None) -> None:
        try:
            atomic_write(path, lambda f: torch.save(checkpoint, f))
        except OSError as bad:
            raise CheckpointWriteError(
                f"Could not write the checkpoint {path} ({bad.strerror or bad}). The previous checkpoint is kept. "
                "Free some disk space and continue with resume=true hydra.run.dir=<this run's folder>."
            ) from None

    def load_checkpoint(self, path: str | os.PathLike, map_location: Any = None, weights_only: Any = None) -> dict:
        return read_checkpoint(path, map_location or "cpu", self.config_dirs)


@functools.cache
def trusted_targets(group: str, config_dirs: tuple[str, ...] = ()) -> frozenset[str]:
    """Every `_target_` named in the option files of config group `group` (and its nested groups), in the
    packaged configs and in each of `config_dirs`."""
    targets: set[str] = set()
    for root in (CONF_DIR, *map(Path, config_dirs)):
        for path in (root / group).rglob("*.yaml"):
            targets.update(_targets(OmegaConf.to_container(OmegaConf.load(path), resolve=False)))
    return frozenset(targets)


def _targets(tree: Any) -> Iterator[str]:
    if isinstance(tree, dict):
        for key, value in tree.items():
            if key == "_target_":
                yield str(value)
            else:
                yield from _targets(value)
    elif isinstance(tree, list | tuple):
        for item in tree:
            yield from _targets(item)


def _untrusted_target(hparams: dict[str, Any], config_dirs: tuple[str, ...]) -> tuple[str, str] | None:
    """(the key, the target) of the first `_target_` in `hparams` that the project does not offer there."""

    def walk(tree: Any, key: str) -> Iterator[tuple[str, str]]:
        if isinstance(tree, dict):
            for name, value in tree.items():
                if name == "_target_":
                    yield f"{key}._target_", str(value)
                else:
                    yield from walk(value, f"{key}.{name}")
        elif isinstance(tree, list | tuple):
            for i, item in enumerate(tree):
                yield from walk(item, f"{key}[{i}]")

    for name, value in hparams.items():
        allowed = frozenset().union(*(trusted_targets(group, config_dirs) for group in TRUSTED_GROUPS.get(name, ())))
        for key, target in walk(value, CONFIG_KEYS.get(name, name)):
            if target not in allowed:
                return key, target
    return None


def read_checkpoint(
    path: str | os.PathLike, map_location: Any = "cpu", config_dirs: Sequence[str | os.PathLike] = ()
) -> dict:
    """The checkpoint dictionary, loaded without running code (memory-mapped, so cheap), checked to be a
    vae_lightning checkpoint whose hyperparameters name only classes that the packaged configs, or the user's
    own config folders `config_dirs`, offer for them."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"ckpt_path={path}: no such checkpoint file.")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True, mmap=True)
    except pickle.UnpicklingError as bad:
        reason = str(bad).strip().splitlines()[-1][:160]
        raise CheckpointError(
            f"ckpt_path={path} holds more than weights and settings and was refused unread ({reason}). "
            "Only load checkpoints written by vae_lightning's train.py."
        ) from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as bad:
        raise CheckpointError(
            f"ckpt_path={path} is not a readable checkpoint ({type(bad).__name__}: {str(bad).splitlines()[0][:120]}); "
            "it may be truncated. Use another one, e.g. checkpoints/last.ckpt."
        ) from None
    hparams = checkpoint.get("hyper_parameters", {}) if isinstance(checkpoint, dict) else {}
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint or not {"net", "input_shape"} <= set(hparams):
        raise CheckpointError(
            f"ckpt_path={path} was not written by vae_lightning's train.py (it has no VAE hyperparameters)."
        )
    untrusted = _untrusted_target(hparams, tuple(str(Path(d)) for d in config_dirs))
    if untrusted is not None:
        key, target = untrusted
        raise CheckpointError(
            f"ckpt_path={path} was refused: its setting `{key}` names `{target}`, which is not one of "
            "the classes that the configs offer for it. Nothing from the file was run. A class of your own is "
            f"trusted when an option file of the `{key.split('.')[0].split('[')[0]}` group in a config folder you "
            "give names it (--config-dir <folder>)."
        )
    return checkpoint
