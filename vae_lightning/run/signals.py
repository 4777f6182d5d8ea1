"""Ctrl-C (SIGINT) and SIGTERM (a cluster's pre-emption) as a normal way to stop a run.

`train.py` installs `StopRequest.handle` for both signals for the whole run. While the model trains, a signal
is only recorded: `StopOnSignal` ends the run at the end of the current batch, saves `checkpoints/last.ckpt`
at the step reached and raises `RunInterrupted`, which `train.py` turns into `metrics.json` with
`status: interrupted`, the command that resumes the run, and exit code 128 + the signal (130, 143). Outside
training (preparing data, testing) the signal raises `RunInterrupted` at once. A further signal while the
run stops is ignored, so it cannot interrupt the checkpoint save (which is atomic anyway).
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lightning import Callback, LightningModule, Trainer
from lightning.pytorch.utilities.exceptions import SIGTERMException

log = logging.getLogger(__name__)

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class RunInterrupted(Exception):
    """The run was stopped by a signal; `exit_code` is the shell's convention, 128 + the signal number."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        self.exit_code = 128 + signum
        super().__init__(f"stopped by {signal.Signals(signum).name}")


class StopRequest:
    """The signal received (None so far) and whether the run is in a phase that stops at a batch's end."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.graceful = False

    def handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None:
            log.warning("Already stopping: the checkpoint and metrics.json are being written.")
            return
        self.signum = signum
        if not self.graceful:
            raise RunInterrupted(signum)
        log.warning("%s received: stopping after this batch.", signal.Signals(signum).name)


@contextlib.contextmanager
def stop_on_signals() -> Iterator[StopRequest]:
    """Install the handlers of a new StopRequest for SIGINT and SIGTERM (main thread only); restore the old ones."""
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return
    previous = {signum: signal.getsignal(signum) for signum in SIGNALS}
    for signum in SIGNALS:
        signal.signal(signum, request.handle)
    try:
        yield request
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


class StopOnSignal(Callback):
    """Stops training at the end of the batch during which a signal arrived and saves `checkpoint` there.

    Under DDP the processes agree first (the signal may reach them at different batches), at every training
    batch's end; a single process also stops during validation."""

    def __init__(self, request: StopRequest, checkpoint: str | Path) -> None:
        self.request = request
        self.checkpoint = Path(checkpoint)

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

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args: Any) -> None:
        self._stop_if_asked(trainer)

    def on_validation_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args: Any) -> None:
        if self.request.graceful and trainer.world_size == 1:
            self._stop_if_asked(trainer)

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        stopped_training = self.request.graceful and isinstance(exception, RunInterrupted | SIGTERMException)
        self.request.graceful = False
        if stopped_training and trainer.global_step > 0:
            trainer.save_checkpoint(self.checkpoint)
            log.info("Saved %s at optimizer step %d.", self.checkpoint, trainer.global_step)
