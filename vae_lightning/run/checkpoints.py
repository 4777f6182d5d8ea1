"""Checkpoints as models: a checked checkpoint rebuilt as a VAEModule, and the checks before a resume."""

from __future__ import annotations

import inspect
import os
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from hydra.utils import get_object

from vae_lightning.core.checkpoint_io import MODEL_PARTS, current_settings, read_checkpoint
from vae_lightning.core.config import CONFIG_KEYS
from vae_lightning.core.errors import CheckpointError, VAELightningError
from vae_lightning.module import VAEModule

# the keys that tell Hydra how to build a config, not what
HYDRA_FLAGS = ("_partial_", "_convert_", "_recursive_")


def load_module(
    path: str | os.PathLike, map_location: Any = "cpu", config_dirs: Sequence[str | os.PathLike] = ()
) -> VAEModule:
    """The VAEModule stored in `path`, in eval mode, rebuilt from the checked checkpoint alone (`config_dirs`:
    the user's own config folders, whose classes are trusted as ours). The model its settings describe is first
    built on the meta device (no memory) and its tensor shapes compared with the stored weights, so that settings
    that do not fit them (a huge width in a small file) are refused before any memory is spent."""
    checkpoint = read_checkpoint(path, map_location, config_dirs)
    if "net" not in checkpoint["hyper_parameters"]:
        raise CheckpointError(
            f"ckpt_path={path} holds a model built from objects in Python, whose network was not stored as a config: "
            "load it with VAEModule.load_from_checkpoint(path, net=..., prior=..., loss=..., ...)."
        )
    try:
        with torch.device("meta"):  # the model described, without memory: its sizes are checked before building
            skeleton = VAEModule.from_settings(checkpoint["hyper_parameters"])
            check_weights_fit(checkpoint, skeleton, path, "its settings build")
        module = VAEModule.from_checkpoint(checkpoint)
    except CheckpointError:
        raise
    except (RuntimeError, KeyError, TypeError, ValueError, AttributeError, VAELightningError) as bad:
        reason = str(bad).splitlines()[0][:200]
        raise CheckpointError(f"ckpt_path={path} does not match the model it describes ({reason}).") from None
    return module


def class_defaults(saved: dict[str, Any], keys: Iterable[str]) -> dict[str, Any]:
    """For flat `keys` (e.g. `model.channels_last`) that a checkpoint's flat settings `saved` lack, because the
    key was added to its option after the checkpoint was written, the value its model was built with: the
    default of that parameter in the class its settings name beside it (`model._target_`), as instantiating
    those settings uses it. Keys of a class without such a parameter or default are left out."""
    defaults = {}
    for key in keys:
        parent, _, name = key.rpartition(".")
        target = saved.get(f"{parent}._target_")
        if key in saved or not isinstance(target, str):
            continue
        try:  # the checkpoint's classes were checked against the allowlist when it was read
            parameter = inspect.signature(get_object(target)).parameters.get(name)
        except (ImportError, AttributeError, ValueError, TypeError):
            continue
        if parameter is not None and parameter.default is not inspect.Parameter.empty:
            default = parameter.default
            defaults[key] = list(default) if isinstance(default, tuple) else default
    return defaults


def _flat(tree: Any, prefix: str) -> dict[str, Any]:
    if isinstance(tree, dict):
        flat: dict[str, Any] = {}
        for key, value in tree.items():
            flat |= _flat(value, f"{prefix}.{key}")
        return flat
    return {prefix: list(tree) if isinstance(tree, tuple) else tree}


def set_on_command_line(overrides: Sequence[str] | None) -> list[str] | None:
    """The config keys that command-line overrides set: `model.latent_dim=8` -> model.latent_dim; an option,
    `model=conv` or `loss/likelihood=gaussian`, -> its class, model._target_ or loss.likelihood._target_ (its
    other keys are the option's defaults, which may have changed since). None: unknown."""
    if overrides is None:
        return None
    keys = [override.split("=", 1)[0].lstrip("+~") for override in overrides]
    return [key if "." in key else f"{key.replace('/', '.')}._target_" for key in keys]


def check_resume(
    path: str | os.PathLike,
    module_cfg: dict[str, Any],
    trainer_cfg: dict[str, Any],
    config_dirs: Sequence[str | os.PathLike] = (),
    given: Sequence[str] | None = None,
) -> dict:
    """Refuse, with one line naming the key, a resume that Lightning would refuse with a traceback or that would
    silently train another model: a checkpoint without training state, one already past `trainer.max_epochs` or
    `trainer.max_steps`, or one whose model settings (`model.*`, `posterior.*`, `prior.*`, `loss.*`) differ from
    the config's.

    A resume continues the checkpoint's own model (`resumed_model`), so a default that changed since it was
    written does not stop it: with `given` (the keys set on the command line, `set_on_command_line`) only those
    settings are compared; without it, all of them."""
    checkpoint = read_checkpoint(path, "cpu", config_dirs)
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
    saved_model = resumed_model(checkpoint)
    for name, earlier in MODEL_PARTS.items():
        saved, wanted = saved_model[name], module_cfg.get(name) or earlier
        saved, wanted = _flat(saved, CONFIG_KEYS[name]), _flat(wanted, CONFIG_KEYS[name])
        saved |= class_defaults(saved, wanted)
        for key in sorted(saved.keys() | wanted.keys()):
            if key.rpartition(".")[2] in HYDRA_FLAGS:
                continue  # how Hydra builds a part, not which part
            compared = given is None or any(key == g or key.startswith(f"{g}.") for g in given)
            if compared and saved.get(key) != wanted.get(key):
                raise CheckpointError(
                    f"Cannot resume from {path}: `{key}` is {saved.get(key)!r} in the checkpoint but "
                    f"{wanted.get(key)!r} in this config. Resume with the settings it was trained with "
                    "(its run folder's .hydra/config.yaml)."
                )
    return checkpoint


def resumed_model(checkpoint: dict) -> dict[str, Any]:
    """The settings of the model's parts (`MODEL_PARTS`: network, posterior, prior, objective) that a resume of
    `checkpoint` trains on: its own."""
    hparams = checkpoint["hyper_parameters"]
    if not isinstance(hparams.get("net"), dict) or not isinstance(hparams.get("loss"), dict):
        raise CheckpointError(
            "Cannot resume: the checkpoint holds no network or objective settings (a model built from objects in "
            "Python); resume it in Python: trainer.fit(VAEModule(net=..., loss=..., ...), ckpt_path=<the checkpoint>)."
        )
    settings = current_settings(hparams)  # as today's configs give them, the parts it has none of filled in
    return {name: settings[name] for name in MODEL_PARTS}


def check_weights_fit(
    checkpoint: dict, module: torch.nn.Module, path: str | os.PathLike, builder: str = "this config builds"
) -> None:
    """Refuse a checkpoint whose weights do not have the shapes of `module`, the model `builder` names (this
    config: e.g. another image size; its settings: a checkpoint whose settings and weights disagree)."""
    theirs = checkpoint["state_dict"]
    if not isinstance(theirs, dict) or not all(isinstance(t, torch.Tensor) for t in theirs.values()):
        raise CheckpointError(f"ckpt_path={path} has weights that are not tensors.")
    for name, tensor in module.state_dict().items():
        if name not in theirs or tuple(theirs[name].shape) != tuple(tensor.shape):
            shape = tuple(theirs[name].shape) if name in theirs else "nothing"
            raise CheckpointError(
                f"ckpt_path={path} was saved from a different model: it has {shape} for {name}, {builder} "
                f"{tuple(tensor.shape)}. "
                + (
                    "Use the config it was trained with (its .hydra/config.yaml)."
                    if builder == "this config builds"
                    else "The file was altered or damaged; nothing was built from it."
                )
            )
