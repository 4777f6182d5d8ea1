"""The end of training: the final weights are validated and on disk, and the test knows which weights it scores.

Validation and the checkpoints that follow it run every `trainer.check_val_every_n_epoch` epochs, so a run
whose length is not a multiple of that interval, or that `trainer.max_steps`, `trainer.max_time` or a signal-free
early stop cut short between two validations, ends with weights that no validation measured and no file holds.
`save_final_weights` closes that gap once, after `trainer.fit`: it validates the final weights (Lightning's
`trainer.validate`, so `val/*` reaches the loggers at the final step), lets the monitored checkpoint with
`save_top_k=1` (`best-epochNNN.ckpt`) take them when they are its best, and rewrites `checkpoints/last.ckpt`
with them. The periodic cadence stays as configured, so the run's overhead does not grow.

The ModelCheckpoint callbacks only save during `trainer.fit`; the best one is told of the file saved here
through its public `load_state_dict`, so that the state stored in the checkpoints (and restored by a resume)
names the best file that exists.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from lightning import LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint

from vae_lightning.core.training_state import trained_to

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainedWeights:
    """Which weights a checkpoint holds: its path, the optimizer steps taken and the epoch (counted from 0) of
    the last of them."""

    path: Path | None
    step: int
    epoch: int

    @classmethod
    def of_file(cls, path: str | Path) -> TrainedWeights:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        return cls(Path(path), *trained_to(checkpoint))

    def as_metrics(self, run_dir: Path) -> dict[str, Any]:
        """The keys `metrics.json` carries: `tested_checkpoint` (relative to the run folder when inside it; null
        for weights never saved), `tested_step` and `tested_epoch`."""
        path = None
        if self.path is not None:
            path = str(self.path.relative_to(run_dir)) if self.path.is_relative_to(run_dir) else str(self.path)
        return {"tested_checkpoint": path, "tested_step": self.step, "tested_epoch": self.epoch}


def _saved_step(path: Path) -> int | None:
    if not path.is_file():
        return None
    return int(torch.load(path, map_location="cpu", weights_only=True, mmap=True).get("global_step", -1))


def _best_callbacks(trainer: Trainer) -> list[ModelCheckpoint]:
    return [cb for cb in trainer.checkpoint_callbacks if isinstance(cb, ModelCheckpoint) and cb.monitor]


def save_final_weights(trainer: Trainer, module: LightningModule, datamodule: Any, last: Path) -> None:
    """After `trainer.fit` ended normally: validate the final weights if the last validation is older than the
    final step, give them to the best checkpoint if they are best, and write them to `last` (when the run keeps
    checkpoints at all). Does nothing when the last validation's checkpoint already holds them."""
    step = trainer.global_step
    validate = trainer.enable_validation and getattr(module, "validated_step", None) != step
    if validate:
        log.info("Validating the final weights (optimizer step %d; the last validation was before it).", step)
        with torch.random.fork_rng():  # its noise draws leave the random state a resume restores as it was
            trainer.validate(module, datamodule=datamodule, verbose=False)
    if not trainer.checkpoint_callbacks:
        return
    took_best = False
    metrics = dict(trainer.callback_metrics)
    for callback in _best_callbacks(trainer) if validate else ():
        current = metrics.get(callback.monitor)
        if callback.save_top_k != 1:
            log.info("The final weights are ranked by no checkpoint with save_top_k=%d", callback.save_top_k)
        elif current is not None and callback.check_monitor_top_k(trainer, current):
            _take_as_best(trainer, callback, metrics | {"epoch": module.trained_epoch, "step": step}, current)
            took_best = True
    # Lightning may have saved last.ckpt at the final step already (at the end of an epoch that `max_steps`
    # cut short); it is written again when it must name a new best checkpoint
    if took_best or _saved_step(last) != step:
        trainer.save_checkpoint(last, weights_only=False)
        log.info("Saved the final weights (optimizer step %d) to %s", step, last)


def _take_as_best(trainer: Trainer, callback: ModelCheckpoint, candidates: dict, score: torch.Tensor) -> None:
    """Save the final weights as `callback`'s best checkpoint and tell it so (it keeps one: `save_top_k=1`)."""
    path = callback.format_checkpoint_name({k: torch.as_tensor(v) for k, v in candidates.items()})
    previous = callback.best_model_path
    score = torch.as_tensor(score).detach().cpu()
    callback.load_state_dict(
        callback.state_dict()
        | {
            "best_model_path": path,
            "best_model_score": score,
            "best_k_models": {path: score},
            "kth_best_model_path": path,
            "kth_value": score,
        }
    )
    trainer.save_checkpoint(path, weights_only=False)
    if previous and previous != path:
        trainer.strategy.remove_checkpoint(previous)  # the checkpoint IO removes files of the run's folder only
    log.info("The final weights are the best by %s (%.6g): %s", callback.monitor, float(score), path)


def tested_weights(trainer: Trainer, module: LightningModule, last: Path) -> TrainedWeights:
    """The weights the test scores: the best checkpoint's where one is kept, else the final weights (named by
    `last` when it holds them; unnamed when the run keeps no checkpoints)."""
    best = next((cb.best_model_path for cb in _best_callbacks(trainer) if cb.best_model_path), "")
    if best:
        return TrainedWeights.of_file(best)
    if _saved_step(last) == trainer.global_step:
        return TrainedWeights.of_file(last)
    return TrainedWeights(None, trainer.global_step, module.trained_epoch)
