"""The callback that ends training at a batch's end when Ctrl-C or SIGTERM arrived (see `core.signals`)."""

from __future__ import annotations

import logging
import signal
from pathlib import Path
from typing import Any

from lightning import Callback, LightningModule, Trainer
from lightning.pytorch.utilities.exceptions import SIGTERMException

from vae_lightning.core.signals import RunInterrupted, StopRequest, installed_request

log = logging.getLogger(__name__)


class StopOnSignal(Callback):
    """Stops training at the end of the batch during which a signal arrived and saves `checkpoint` there.

    `request`: the signals' record (None: the one `core.signals.stop_on_signals` installed for this process,
    when it starts training). Under DDP the processes agree first (the signal may reach them at different
    batches), at every training batch's end; a single process also stops during validation. Without this
    callback a signal ends the run at once, without a checkpoint."""

    def __init__(self, checkpoint: str | Path, request: StopRequest | None = None) -> None:
        self.checkpoint = Path(checkpoint)
        self.request = request or StopRequest()
        self.given = request is not None

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if not self.given:
            self.request = installed_request()

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.request.graceful = True

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.request.graceful = False

    def _stop_if_asked(self, trainer: Trainer) -> None:
        asked = self.request.signum is not None
        if trainer.world_size > 1:
            asked = trainer.strategy.reduce_boolean_decision(asked, all=False)
        if asked:
            raise RunInterrupted(self.request.signum or signal.SIGTERM)

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, *args: Any) -> None:
        self._stop_if_asked(trainer)  # a signal that came after the last batch's end (from another callback)

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args: Any) -> None:
        self._stop_if_asked(trainer)

    def on_validation_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args: Any) -> None:
        if self.request.graceful and trainer.world_size == 1:
            self._stop_if_asked(trainer)

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        stopped_training = self.request.graceful and isinstance(exception, RunInterrupted | SIGTERMException)
        self.request.graceful = False
        if stopped_training and trainer.global_step > 0:
            trainer.save_checkpoint(self.checkpoint, weights_only=False)
            log.info("Saved %s at optimizer step %d.", self.checkpoint, trainer.global_step)
