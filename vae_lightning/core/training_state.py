"""What the module's checkpoints carry beside Lightning's own state: the random state (so that a resumed run
draws the noise the uninterrupted one would) and which weights they hold (steps and epoch)."""

from __future__ import annotations

from typing import Any

import torch


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
