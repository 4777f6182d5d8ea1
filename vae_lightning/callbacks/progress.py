"""Progress where work takes time: Lightning's bars on a terminal, and a few plain log lines where the output goes
to a file or a pipe (a bar redrawn there is a wall of carriage returns, hundreds of lines a run)."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

from lightning import LightningModule, Trainer
from lightning.pytorch.callbacks import ProgressBar, TQDMProgressBar

from vae_lightning.core import checks

log = logging.getLogger("progress")


class PlainProgress(ProgressBar):
    """A log line per training epoch (the last step's `train/loss`, the epoch's `val/loss`, its seconds) and, for
    a test, a line at about every `test_lines`-th of its batches and one at its end; nothing per batch."""

    def __init__(self, test_lines: int = 4) -> None:
        super().__init__()
        self.enabled, self.test_lines, self.started = True, max(int(test_lines), 1), time.monotonic()

    def disable(self) -> None:
        self.enabled = False

    def enable(self) -> None:
        self.enabled = True

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.started = time.monotonic()

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self.enabled or not trainer.is_global_zero:
            return
        figures = {name: trainer.callback_metrics.get(name) for name in ("train/loss", "val/loss")}
        shown = ", ".join(f"{name} {float(value):.4g}" for name, value in figures.items() if value is not None)
        total = f"/{trainer.max_epochs}" if trainer.max_epochs and trainer.max_epochs > 0 else ""
        seconds = time.monotonic() - self.started
        log.info("epoch %d%s: %s (%.1f s, optimizer step %d)", trainer.current_epoch + 1, total, shown, seconds,
                 trainer.global_step)  # fmt: skip

    def on_test_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.started = time.monotonic()

    def on_test_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int, dataloader_idx=0
    ) -> None:
        total, done = trainer.num_test_batches[dataloader_idx], batch_idx + 1
        if not self.enabled or not trainer.is_global_zero or not total or total == float("inf") or done >= total:
            return
        every = max(int(total) // self.test_lines, 1)
        if done % every == 0:
            log.info("test: %d of %d batches (%.0f s)", done, int(total), time.monotonic() - self.started)

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.enabled and trainer.is_global_zero:
            log.info("test: done (%.0f s)", time.monotonic() - self.started)


def progress_bar(refresh_rate: int = 20) -> ProgressBar:
    """Lightning's bar (redrawn every `refresh_rate` batches) where it writes to a terminal, else `PlainProgress`."""
    refresh_rate = checks.non_negative_int("refresh_rate", refresh_rate)  # 0: no bar; checked where no bar is drawn
    return TQDMProgressBar(refresh_rate=refresh_rate) if sys.stdout.isatty() else PlainProgress()
