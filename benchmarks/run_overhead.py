"""What a run spends beyond its training steps: validation, checkpoints, pictures and Lightning's epoch ends.

Each preset is composed from the packaged configs as shipped and built as `train.py` builds it (every callback,
the TensorBoard logger), on random images of its data set's shape and size (the seed's MNIST: 54,000 training and 6,000
validation images; faces and dogs: 3,500 of each), so no download is needed. A step clock records when each
training batch starts. Over a steady window of whole epochs (one full period of its validation, checkpoint and
picture schedules), the overhead is the window's wall time over the time of its training steps, minus one;
the end of the run (the last pictures, the Projector) is reported apart, in seconds and as a share of the
preset's whole configured run. Target: at most 10% for every preset.

    python benchmarks/run_overhead.py                      # every preset
    python benchmarks/run_overhead.py --presets haskell_mnist
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import sys
import tempfile
import warnings
from pathlib import Path

import lightning as L
import torch

from benchmarks.common import RandomImages, clock, compose_run, data_shape, save
from vae_lightning.core.config import build
from vae_lightning.run.trainer import build_trainer

# preset -> (train, val, test) sizes of the data it is meant for
SIZES = {
    "haskell_mnist": (54_000, 6_000, 10_000),
    "haskell_mnist_ramp": (54_000, 6_000, 10_000),
    "mnist_nll": (54_000, 6_000, 10_000),
    "haskell_dogpeople": (5_600, 700, 700),
    "faces_dogs_conv": (5_600, 700, 700),
}


class EpochClock(L.Callback):
    """When each epoch starts, how long its training steps took, and when training ends."""

    def __init__(self) -> None:
        self.epoch_starts: list[float] = []
        self.step_seconds: list[float] = []
        self.last: float | None = None
        self.end_of_steps = self.train_end = 0.0

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.epoch_starts.append(clock())
        self.step_seconds.append(0.0)
        self.last = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        now = clock()
        if self.last is not None:
            self.step_seconds[-1] += now - self.last
        self.last = now

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.end_of_steps = clock()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self.last is not None:  # the epoch's last step ends here
            self.step_seconds[-1] += self.end_of_steps - self.last

    def on_train_end(self, trainer, pl_module) -> None:
        self.train_end = clock()


def period(cfg) -> int:
    """Epochs after which the schedules of validation, checkpoints and pictures repeat."""
    every = [cfg.trainer.check_val_every_n_epoch or 1, cfg.diagnostics.every_n_epochs]
    every += [c.every_n_epochs for c in (cfg.callbacks or {}).values() if c.get("every_n_epochs")]
    return math.lcm(*(int(e) for e in every))


def epoch_steps(cfg, preset: str) -> int:
    """Training steps in an epoch of `preset` on the data it is meant for (`SIZES`)."""
    return cfg.trainer.limit_train_batches or math.ceil(SIZES[preset][0] / cfg.dataset.batch_size)


def measure(preset: str, tmp: Path, max_window: int, overrides: list[str]) -> dict:
    cfg = compose_run([f"experiment={preset}", *overrides], tmp / preset)
    shape, uint8 = data_shape(cfg.dataset)
    window = min(period(cfg), max_window)
    configured = cfg.trainer.max_epochs  # the run as configured, before the window replaces it
    cfg.trainer.max_epochs = window + 2  # the first epoch warms up, then one whole period, then the last epoch
    datamodule = RandomImages(shape, *SIZES[preset], uint8, cfg.dataset.batch_size)
    torch.manual_seed(0)
    module = build(cfg.module, None, input_shape=shape)
    epoch_clock = EpochClock()
    trainer = build_trainer(cfg, extra_callbacks=(epoch_clock,))
    with contextlib.redirect_stdout(sys.stderr):
        trainer.fit(module, datamodule=datamodule)
    starts = epoch_clock.epoch_starts
    window_seconds = starts[window + 1] - starts[1]  # epochs 1 .. window, each with its epoch end
    steps = sum(epoch_clock.step_seconds[1 : window + 1])
    last_epoch_end = epoch_clock.train_end - epoch_clock.end_of_steps  # last epoch's end + end of training
    per_epoch_steps = steps / window
    end_of_run = max(last_epoch_end - (window_seconds - steps) / window, 0.0)
    whole_run_steps = per_epoch_steps * configured
    return {
        "preset": preset,
        "epoch_steps": epoch_steps(cfg, preset),
        "window_epochs": window,
        "seconds_of_steps_per_epoch": round(per_epoch_steps, 3),
        "overhead_in_window": round(window_seconds / steps - 1, 3),
        "end_of_run_seconds": round(end_of_run, 2),
        "overhead_of_whole_run": round(
            (window_seconds / steps - 1) + end_of_run / whole_run_steps if whole_run_steps else 0.0, 3
        ),
        "configured_epochs": configured,
        "validation_every": cfg.trainer.check_val_every_n_epoch,
        "pictures_every": cfg.diagnostics.every_n_epochs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="*", default=list(SIZES))
    parser.add_argument("--max-window", type=int, default=25, help="at most this many epochs measured")
    parser.add_argument("--overrides", nargs="*", default=[], help="Hydra overrides, to see what costs what")
    args = parser.parse_args()
    logging.getLogger("lightning").setLevel(logging.ERROR)
    logging.getLogger("vae_lightning").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for preset in args.presets:
            rows.append(measure(preset, Path(tmp), args.max_window, args.overrides))
            print(rows[-1], file=sys.stderr)
    if not args.overrides:
        save("run_overhead", {"benchmark": "run_overhead", "target": 0.10, "presets": rows})


if __name__ == "__main__":
    main()
