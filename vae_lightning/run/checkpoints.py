"""Checkpoints: written atomically, read safely, and checked against the run before a resume.

Reading never runs code from the file. `torch.load(weights_only=True)` unpickles tensors and plain containers
only, and the `_target_`s stored in a checkpoint's hyperparameters must be targets of the project's own config
options (the files under `conf/model`, `conf/loss`, `conf/beta`, `conf/optimizer`, `conf/dataset`) before any
of them is built. A checkpoint shared by someone else can therefore describe a model, but not run a command
or open a file.
"""

from __future__ import annotations

import functools
import os
import pickle
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from omegaconf import OmegaConf

from vae_lightning import CONF_DIR
from vae_lightning.run.errors import CheckpointError, CheckpointWriteError, VAELightningError
from vae_lightning.run.files import atomic_write

# hyperparameter of VAEModule -> the config groups whose targets it may name
TRUSTED_GROUPS = {
    "net": ("model",),
    "loss": ("loss",),
    "beta": ("beta",),
    "optimizer": ("optimizer",),
    "data": ("dataset",),
}
# hyperparameter -> the config key a user sets it with
CONFIG_KEYS = {"net": "model", "loss": "loss", "beta": "beta", "optimizer": "optimizer", "data": "dataset"}


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint IO with atomic saves (a kill or a full disk leaves the previous file intact) and
    the checked, code-free read of `read_checkpoint` for every load, including resuming with `ckpt_path`."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any = None) -> None:
        try:
            atomic_write(path, lambda f: torch.save(checkpoint, f))
        except OSError as bad:
            raise CheckpointWriteError(
                f"Could not write the checkpoint {path} ({bad.strerror or bad}). The previous checkpoint is kept. "
                "Free some disk space and continue with resume=true hydra.run.dir=<this run's folder>."
            ) from None

    def load_checkpoint(self, path: str | os.PathLike, map_location: Any = None, weights_only: Any = None) -> dict:
        return read_checkpoint(path, map_location or "cpu")


@functools.cache
def trusted_targets(group: str) -> frozenset[str]:
    """Every `_target_` named in the option files of config group `group` (and its nested groups)."""
    targets: set[str] = set()
    for path in (CONF_DIR / group).rglob("*.yaml"):
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


def _untrusted_target(hparams: dict[str, Any]) -> tuple[str, str] | None:
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
        allowed = frozenset().union(*(trusted_targets(group) for group in TRUSTED_GROUPS.get(name, ())))
        for key, target in walk(value, CONFIG_KEYS.get(name, name)):
            if target not in allowed:
                return key, target
    return None


def read_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict:
    """The checkpoint dictionary, loaded without running code (memory-mapped, so cheap), checked to be a
    vae_lightning checkpoint whose hyperparameters name only the project's own classes."""
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
    untrusted = _untrusted_target(hparams)
    if untrusted is not None:
        key, target = untrusted
        raise CheckpointError(
            f"ckpt_path={path} was refused: its setting `{key}` names `{target}`, which is not one of "
            "vae_lightning's own classes for it. Nothing from the file was run."
        )
    return checkpoint


def load_module(path: str | os.PathLike, map_location: Any = "cpu"):
    """The VAEModule stored in `path`, in eval mode, rebuilt from the checked checkpoint alone."""
    from vae_lightning.module import VAEModule

    checkpoint = read_checkpoint(path, map_location)
    try:
        module = VAEModule(**checkpoint["hyper_parameters"])
        module.load_state_dict(checkpoint["state_dict"])
    except (RuntimeError, KeyError, TypeError, VAELightningError) as bad:
        reason = str(bad).splitlines()[0][:200]
        raise CheckpointError(f"ckpt_path={path} does not match the model it describes ({reason}).") from None
    module.on_load_checkpoint(checkpoint)
    return module.eval()


def _flat(tree: Any, prefix: str) -> dict[str, Any]:
    if isinstance(tree, dict):
        flat: dict[str, Any] = {}
        for key, value in tree.items():
            flat |= _flat(value, f"{prefix}.{key}")
        return flat
    return {prefix: list(tree) if isinstance(tree, tuple) else tree}


def check_resume(path: str | os.PathLike, module_cfg: dict[str, Any], trainer_cfg: dict[str, Any]) -> dict:
    """Refuse, with one line naming the key, a resume that Lightning would refuse with a traceback or that would
    silently train another model: a checkpoint without training state, one already past `trainer.max_epochs` or
    `trainer.max_steps`, or one whose model settings (`model.*`, `loss.*`) differ from the config's."""
    checkpoint = read_checkpoint(path)
    if "optimizer_states" not in checkpoint or "loops" not in checkpoint:
        raise CheckpointError(f"ckpt_path={path} holds weights only, no training state to resume from.")
    max_epochs, max_steps = trainer_cfg.get("max_epochs"), trainer_cfg.get("max_steps")
    epoch, step = int(checkpoint.get("epoch", 0)), int(checkpoint.get("global_step", 0))
    if max_epochs not in (None, -1) and epoch >= max_epochs:
        raise CheckpointError(
            f"Cannot resume: the checkpoint {path} has reached epoch {epoch} (counted from 0) but "
            f"`trainer.max_epochs={max_epochs}` asks for fewer; give a larger `trainer.max_epochs`."
        )
    if max_steps not in (None, -1) and step > max_steps:
        raise CheckpointError(
            f"Cannot resume: the checkpoint {path} is at optimizer step {step} but `trainer.max_steps={max_steps}` "
            "asks for fewer; give a larger `trainer.max_steps`."
        )
    hparams = checkpoint["hyper_parameters"]
    for name in ("net", "loss"):
        saved, wanted = _flat(hparams.get(name), CONFIG_KEYS[name]), _flat(module_cfg.get(name), CONFIG_KEYS[name])
        for key in sorted(saved.keys() | wanted.keys()):
            if saved.get(key) != wanted.get(key):
                raise CheckpointError(
                    f"Cannot resume from {path}: `{key}` is {saved.get(key)!r} in the checkpoint but "
                    f"{wanted.get(key)!r} in this config. Resume with the settings it was trained with "
                    "(its run folder's .hydra/config.yaml)."
                )
    return checkpoint


def check_weights_fit(checkpoint: dict, module: torch.nn.Module, path: str | os.PathLike) -> None:
    """Refuse a checkpoint whose weights do not have this model's shapes (e.g. another image size)."""
    theirs = checkpoint["state_dict"]
    for name, tensor in module.state_dict().items():
        if name not in theirs or tuple(theirs[name].shape) != tuple(tensor.shape):
            shape = tuple(theirs[name].shape) if name in theirs else "nothing"
            raise CheckpointError(
                f"ckpt_path={path} was saved from a different model: it has {shape} for {name}, this config "
                f"builds {tuple(tensor.shape)}. Use the config it was trained with (its .hydra/config.yaml)."
            )
