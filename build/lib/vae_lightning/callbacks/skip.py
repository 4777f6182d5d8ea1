"""The callback that skips an optimizer step whose gradient is far too large (`callbacks.skip_large_updates`)."""

from __future__ import annotations

from typing import Any

import torch
from lightning import Callback, LightningModule, Trainer

from vae_lightning.core import checks


class SkipLargeUpdates(Callback):
    """Skips every optimizer step whose gradient norm (over all the optimizer's parameters, after the backward
    pass; under DDP the averaged gradient, so every process agrees) is above `max_norm`: the weights and the
    optimizer's state stay as they were, since torch's optimizers pass over parameters without a gradient. Deep
    hierarchical VAEs meet rare gradients thousands of times the usual, from their KL terms, and one such step
    can ruin a run (Child 2021 skips them; Vahdat & Kautz 2020 bound them by spectral regularisation). None: off.
    A non-finite gradient is not skipped here: the loss guard stops the run with its last good checkpoint.
    `train/skipped_updates` counts the skipped steps (kept across a resume)."""

    def __init__(self, max_norm: float | None = None) -> None:
        self.max_norm = None if max_norm is None else checks.number("max_norm", max_norm, low=0.0, low_inclusive=False)
        self.skipped = 0

    def on_before_optimizer_step(self, trainer: Trainer, pl_module: LightningModule, optimizer: Any) -> None:
        if self.max_norm is None:
            return
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if not grads:
            return
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.detach().float()) for g in grads]))
        if bool(torch.isfinite(norm)) and float(norm) > self.max_norm:
            for group in optimizer.param_groups:
                for parameter in group["params"]:
                    parameter.grad = None
            self.skipped += 1
        pl_module.log("train/skipped_updates", float(self.skipped), on_step=True, on_epoch=False, batch_size=1)

    def state_dict(self) -> dict[str, Any]:
        return {"skipped": self.skipped}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """A count that is not a non-negative integer (a stranger's checkpoint) starts again from 0."""
        skipped = state_dict.get("skipped", 0) if isinstance(state_dict, dict) else 0
        self.skipped = skipped if type(skipped) is int and skipped >= 0 else 0
