"""The progress bar: Lightning's TQDM bar, redrawn at most every `min_interval` seconds while training."""

from __future__ import annotations

import time
from typing import Any

from lightning.pytorch.callbacks import TQDMProgressBar


class ProgressBar(TQDMProgressBar):
    """Lightning's TQDM bar, redrawn during training at most every `min_interval` seconds and at each epoch's
    last batch. Lightning redraws it (and gathers the metrics it shows) at the end of every `training_step` call
    that `refresh_rate` lets through; with the seed's small MLP that is every few milliseconds, and the positions
    where calls of several batches end (`module.batches_per_call`) need not be multiples of any `refresh_rate`."""

    def __init__(
        self, refresh_rate: int = 1, process_position: int = 0, leave: bool = False, min_interval: float = 0.1
    ):
        super().__init__(refresh_rate=refresh_rate, process_position=process_position, leave=leave)
        self.min_interval = min_interval
        self._drawn_at = -float("inf")

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        now = time.monotonic()
        last = batch_idx + 1 == self.train_progress_bar.total
        if now - self._drawn_at < self.min_interval and not last:
            return
        self._drawn_at = now
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
