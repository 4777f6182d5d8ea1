"""Checkpoints as models: a checked checkpoint rebuilt as a VAEModule, and the checks before a resume."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

import torch

from vae_lightning.core.checkpoint_io import CONFIG_KEYS, read_checkpoint
from vae_lightning.core.errors import CheckpointError, VAELightningError
from vae_lightning.module import STANDARD_NORMAL, VAEModule


def load_module(
    path: str | os.PathLike, map_location: Any = "cpu", config_dirs: Sequence[str | os.PathLike] = ()
) -> VAEModule:
    """The VAEModule stored in `path`, in eval mode, rebuilt from the checked checkpoint alone (`config_dirs`:
    the user's own config folders, whose classes are trusted as ours). The model its settings describe is first
    built on the meta device (no memory) and its tensor shapes compared with the stored weights, so that settings
    that do not fit them (a huge width in a small file) are refused before any memory is spent."""
    checkpoint = read_checkpoint(path, map_location, config_dirs)
    try:
        with torch.device("meta"):  # the model described, without memory: its sizes are checked before building
            check_weights_fit(checkpoint, VAEModule(**checkpoint["hyper_parameters"]), path, "its settings build")
        module = VAEModule(**checkpoint["hyper_parameters"])
        module.load_state_dict(checkpoint["state_dict"])
    except CheckpointError:
        raise
    except (RuntimeError, KeyError, TypeError, VAELightningError) as bad:
        reason = str(bad).splitlines()[0][:200]
        raise CheckpointError(f"ckpt_path={path} does not match the model it describes ({reason}).") from None
    module.on_load_checkpoint(checkpoint)
    return module.eval()


# keys added to the model's config after checkpoints were first written, with the value that earlier checkpoints
# were trained with (the class default): such a checkpoint resumes under a config that leaves them as they were
LATER_KEYS = {"model.channels_last": False, "model.output_bias_from_data": False, "prior.start_from_data": False}


def _flat(tree: Any, prefix: str) -> dict[str, Any]:
    if isinstance(tree, dict):
        flat: dict[str, Any] = {}
        for key, value in tree.items():
            flat |= _flat(value, f"{prefix}.{key}")
        return flat
    return {prefix: list(tree) if isinstance(tree, tuple) else tree}


def check_resume(
    path: str | os.PathLike,
    module_cfg: dict[str, Any],
    trainer_cfg: dict[str, Any],
    config_dirs: Sequence[str | os.PathLike] = (),
) -> dict:
    """Refuse, with one line naming the key, a resume that Lightning would refuse with a traceback or that would
    silently train another model: a checkpoint without training state, one already past `trainer.max_epochs` or
    `trainer.max_steps`, or one whose model settings (`model.*`, `prior.*`, `loss.*`) differ from the config's."""
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
    hparams = checkpoint["hyper_parameters"]
    for name in ("net", "prior", "loss"):
        saved, wanted = hparams.get(name), module_cfg.get(name)
        if name == "prior":  # checkpoints from before the prior was a choice were trained with the standard normal
            saved, wanted = saved or STANDARD_NORMAL, wanted or STANDARD_NORMAL
        saved, wanted = _flat(saved, CONFIG_KEYS[name]), _flat(wanted, CONFIG_KEYS[name])
        saved = {key: value for key, value in LATER_KEYS.items() if key in wanted} | saved
        for key in sorted(saved.keys() | wanted.keys()):
            if saved.get(key) != wanted.get(key):
                raise CheckpointError(
                    f"Cannot resume from {path}: `{key}` is {saved.get(key)!r} in the checkpoint but "
                    f"{wanted.get(key)!r} in this config. Resume with the settings it was trained with "
                    "(its run folder's .hydra/config.yaml)."
                )
    return checkpoint


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


def _misfit(saved: Any, fresh: Any, key: str) -> str | None:
    """Where `saved` (a state read from a checkpoint) differs in form from `fresh` (the same state as this run
    makes it): other keys, list lengths, tensor shapes or dtypes, types, or a non-finite number; None if it fits.
    Numbers may differ in value (a learning rate, a step count); strings, flags and None must be equal."""
    if isinstance(fresh, dict):
        if not isinstance(saved, dict) or set(saved) != set(fresh):
            return f"{key} has other entries"
        return next((m for k in fresh if (m := _misfit(saved[k], fresh[k], f"{key}.{k}")) is not None), None)
    if isinstance(fresh, list | tuple):
        if not isinstance(saved, list | tuple) or len(saved) != len(fresh):
            return f"{key} has another length"
        pairs = enumerate(zip(saved, fresh, strict=True))
        return next((m for i, (a, b) in pairs if (m := _misfit(a, b, f"{key}[{i}]")) is not None), None)
    if isinstance(fresh, torch.Tensor):
        if not isinstance(saved, torch.Tensor) or saved.shape != fresh.shape or saved.dtype != fresh.dtype:
            return f"{key} is not a {fresh.dtype} tensor of shape {tuple(fresh.shape)}"
        return None if not saved.is_floating_point() or bool(saved.isfinite().all()) else f"{key} is not finite"
    if isinstance(fresh, bool) or fresh is None or isinstance(fresh, str):
        return None if type(saved) is type(fresh) and saved == fresh else f"{key} is {saved!r}, not {fresh!r}"
    if isinstance(fresh, int | float):
        if isinstance(saved, bool) or not isinstance(saved, int | float) or not math.isfinite(saved):
            return f"{key} is not a finite number"
        return None if isinstance(fresh, float) or isinstance(saved, int) else f"{key} is not an integer"
    return None


def _known_entries(saved: Any, fresh: dict, key: str) -> str | None:
    """Like `_misfit` for a state dict that torch restores key by key (an optimizer's parameter group, a
    learning-rate schedule): entries this torch does not know are removed from `saved` (a schedule would set
    them as attributes), entries it lacks keep this run's values (checkpoints of other torch versions), and
    the entries both have must fit."""
    if not isinstance(saved, dict):
        return f"{key} is not a state"
    for name in [name for name in saved if name not in fresh]:
        del saved[name]
    return next((m for k in saved if (m := _misfit(saved[k], fresh[k], f"{key}.{k}")) is not None), None)


def _counters(tree: Any, key: str) -> str | None:
    """The first entry of a loop state that is not a non-negative integer (or a flag, or a nested state)."""
    if isinstance(tree, dict):
        return next((m for k, v in tree.items() if (m := _counters(v, f"{key}.{k}")) is not None), None)
    if isinstance(tree, bool) or (isinstance(tree, int) and tree >= 0):
        return None
    return f"{key} is not a count"


def check_training_state(checkpoint: dict, module: Any, path: str | os.PathLike) -> None:
    """Refuse, in one line, a checkpoint whose training state does not fit the model it resumes: optimizer states
    whose tensors are not the shape and dtype of their parameters (the fused Adam would read and write out of
    bounds), scheduler states of another form, counters that are not counts, a random state torch cannot take.
    Checked before `fit`, on the model built from the run's config."""
    optimizer_and_schedule = module.configure_optimizers()
    optimizer = optimizer_and_schedule["optimizer"]
    schedule = optimizer_and_schedule["lr_scheduler"]["scheduler"]
    problem = _optimizer_misfit(checkpoint.get("optimizer_states"), optimizer)
    if problem is None:
        saved = checkpoint.get("lr_schedulers", [])  # none: written before schedules, which then start afresh
        problem = "lr_schedulers is not one state" if not isinstance(saved, list) or len(saved) > 1 else None
        if problem is None and saved:
            problem = _known_entries(saved[0], schedule.state_dict(), "lr_schedulers[0]")
    for name in ("epoch", "global_step"):
        if problem is None:
            problem = _counters(checkpoint.get(name), name)
    if problem is None:
        problem = _counters(checkpoint.get("loops", {}), "loops")
    if problem is None:
        problem = _misfit(checkpoint.get("trained_to", {"step": 0, "epoch": 0}), {"step": 0, "epoch": 0}, "trained_to")
    if problem is None and "random_state" in checkpoint:
        saved = checkpoint["random_state"]
        fresh = {"cpu": torch.get_rng_state()}
        problem = _misfit({"cpu": saved.get("cpu")} if isinstance(saved, dict) else saved, fresh, "random_state")
    if problem is not None:
        raise CheckpointError(
            f"ckpt_path={path} was refused: its training state does not fit this model ({problem}). Nothing was "
            "trained. Resume from a checkpoint this run wrote, or start afresh."
        )


def _optimizer_misfit(saved: Any, optimizer: torch.optim.Optimizer) -> str | None:
    """How the saved optimizer states differ from `optimizer` over the model's parameters, or None."""
    if not isinstance(saved, list) or len(saved) != 1 or not isinstance(saved[0], dict):
        return "optimizer_states is not one optimizer's state"
    fresh = optimizer.state_dict()
    state, groups = saved[0].get("state"), saved[0].get("param_groups")
    if set(saved[0]) != set(fresh):
        return "optimizer_states[0] has other entries"
    if not isinstance(groups, list) or len(groups) != len(fresh["param_groups"]):
        return "optimizer_states[0].param_groups are not this optimizer's groups"
    for i, (group, fresh_group) in enumerate(zip(groups, fresh["param_groups"], strict=True)):
        problem = _known_entries(group, fresh_group, f"optimizer_states[0].param_groups[{i}]")
        if problem is not None:
            return problem
    if [group.get("params") for group in groups] != [group["params"] for group in fresh["param_groups"]]:
        return "optimizer_states[0].param_groups name other parameters"
    parameters = [p for group in optimizer.param_groups for p in group["params"]]
    if not isinstance(state, dict) or not set(state) <= set(range(len(parameters))):
        return "optimizer_states[0].state names parameters the model does not have"
    for index, entries in state.items():
        if not isinstance(entries, dict):
            return f"optimizer_states[0].state[{index}] is not a state"
        parameter = parameters[index]
        for name, value in entries.items():
            where = f"optimizer_states[0].state[{index}].{name}"
            if not isinstance(value, torch.Tensor):
                problem = _misfit(value, 0.0, where)
            elif value.dim() == 0:  # the step count, a float tensor
                problem = None if value.is_floating_point() else f"{where} is not a float"
                problem = problem or _misfit(value, torch.zeros((), dtype=value.dtype), where)
                problem = problem or (f"{where} is negative" if float(value) < 0 else None)
            else:
                problem = _misfit(value, parameter.detach(), where)
            if problem is not None:
                return problem
    return None
