"""What the module's checkpoints carry beside Lightning's own state: the random state (so that a resumed run
draws the noise the uninterrupted one would) and which weights they hold (steps and epoch); and the check that a
checkpoint's training state fits the model it resumes, before the optimizer and the schedule take it."""

from __future__ import annotations

import math
import os
from typing import Any

import torch

from vae_lightning.core.config import is_plain
from vae_lightning.core.errors import CheckpointError


def random_state() -> dict[str, Any]:
    state: dict[str, Any] = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_random_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def trained_to(checkpoint: dict) -> tuple[int, int]:
    """(optimizer steps, epoch from 0 of the last one) of a checkpoint's weights: Lightning's `epoch` counts
    the epochs completed once `fit` has ended, so the module stores its own `trained_to`."""
    step = int(checkpoint.get("global_step", 0))
    epoch = checkpoint.get("trained_to", {}).get("epoch", checkpoint.get("epoch", 0))
    return step, int(epoch)


MANUAL_STEPS = "epoch_loop.manual_optimization.optim_step_progress"
AUTOMATIC_PROGRESS = "epoch_loop.automatic_optimization.optim_progress"


def count_manual_steps_as_automatic(checkpoint: dict) -> None:
    """Checkpoints written while the module stepped its optimizer by hand (manual optimization) count their
    optimizer steps in the manual loop's progress, which Lightning's automatic optimization does not read: moved
    to the automatic loop's step progress, in place, so that such a checkpoint resumes at its own step."""
    loops = checkpoint.get("loops")
    fit = loops.get("fit_loop") if isinstance(loops, dict) else None
    manual = fit.get(MANUAL_STEPS) if isinstance(fit, dict) else None
    automatic = fit.get(AUTOMATIC_PROGRESS) if isinstance(fit, dict) else None
    optimizer = automatic.get("optimizer") if isinstance(automatic, dict) else None
    step = optimizer.get("step") if isinstance(optimizer, dict) else None
    if not isinstance(manual, dict) or not isinstance(step, dict):
        return
    counts = [manual.get("total"), manual.get("current"), step.get("total")]
    if not all(isinstance(c, dict) and all(isinstance(v, int) for v in c.values()) for c in counts):
        return  # not counters: `check_training_state` refuses such loops before this runs
    if step["total"].get("completed", 0) == 0:
        step["total"], step["current"] = dict(manual["total"]), dict(manual["current"])


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
    """The first entry of a loop state that is not a non-negative integer (or a flag, or a nested state). The
    state of a stateful training loader (`combined_loader`: a streaming data set's position in its epoch) is
    the loader's own to check: here it need only be plain data."""
    if key.endswith(".combined_loader"):
        return None if is_plain(tree) else f"{key} is not plain data"
    if isinstance(tree, dict):
        return next((m for k, v in tree.items() if (m := _counters(v, f"{key}.{k}")) is not None), None)
    if isinstance(tree, bool) or (isinstance(tree, int) and tree >= 0):
        return None
    return f"{key} is not a count"


def check_training_state(checkpoint: dict, module: Any, path: str | os.PathLike | None = None) -> None:
    """Refuse, in one line, a checkpoint whose training state does not fit the model it resumes: optimizer states
    whose tensors are not the shape and dtype of their parameters (the fused Adam would read and write out of
    bounds), scheduler states of another form, counters that are not counts, a random state torch cannot take.
    Entries of a parameter group or a schedule that this torch does not know are removed from `checkpoint`. The
    module runs it as Lightning loads a checkpoint to resume (before the optimizer and the schedule take it);
    `train` runs it before `fit` too, for a refusal before anything starts. `module` has `configure_optimizers`
    and `parameters`."""
    optimizer_and_schedule = module.configure_optimizers()
    optimizer = optimizer_and_schedule["optimizer"]
    schedule = optimizer_and_schedule["lr_scheduler"]["scheduler"]
    problem = _optimizer_misfit(checkpoint.get("optimizer_states"), optimizer)
    if problem is None:
        saved = checkpoint.get("lr_schedulers", [])  # none: written before schedules, which then start afresh
        problem = "lr_schedulers is not one state" if not isinstance(saved, list) or len(saved) > 1 else None
        if problem is None and saved:
            problem = _known_entries(saved[0], schedule.state_dict(), "lr_schedulers[0]")
    for name, default in (("epoch", None), ("global_step", None), ("beta_total_steps", 1)):  # the last may be absent
        if problem is None:
            problem = _counters(checkpoint.get(name, default), name)
    if problem is None:
        problem = _counters(checkpoint.get("loops", {}), "loops")
    if problem is None:
        problem = _misfit(checkpoint.get("trained_to", {"step": 0, "epoch": 0}), {"step": 0, "epoch": 0}, "trained_to")
    if problem is None and "random_state" in checkpoint:
        saved = checkpoint["random_state"]
        fresh = {"cpu": torch.get_rng_state()}
        if isinstance(saved, dict) and "cuda" in saved and torch.cuda.is_available():  # restored on a GPU only
            fresh["cuda"] = torch.cuda.get_rng_state_all()
        kept = {name: saved.get(name) for name in fresh} if isinstance(saved, dict) else saved
        problem = _misfit(kept, fresh, "random_state")
    if problem is not None:
        where = f"ckpt_path={path}" if path is not None else "The checkpoint to resume from"
        raise CheckpointError(
            f"{where} was refused: its training state does not fit this model ({problem}). Nothing was trained. "
            "Resume from a checkpoint this run wrote, or start afresh."
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
