"""What the pictures cost: one drawing (every `diagnostics.every_n_epochs` epochs) and the end of a run (the
pictures again, the PNG files and the Projector), for each preset as shipped, on random images of its shape,
and their share of the preset's whole run (its configured epochs of training steps). Target: under 10% for the
`haskell_*` presets, which draw less often to stay there.

    python -m benchmarks.diagnostics [--presets haskell_mnist ...]
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import statistics
import sys
import tempfile
import warnings
from pathlib import Path

import torch

from benchmarks.common import RandomImages, StepClock, clock, compose_run, data_shape, save
from benchmarks.run_overhead import SIZES, epoch_steps
from vae_lightning.callbacks.diagnostics import Diagnostics
from vae_lightning.core.config import build
from vae_lightning.run.trainer import build_trainer


def measure(preset: str, tmp: Path, steps: int) -> dict:
    cfg = compose_run([f"experiment={preset}"], tmp / preset)
    shape, uint8 = data_shape(cfg.dataset)
    train, val, test = SIZES[preset]
    datamodule = RandomImages(shape, train, val, test, uint8, cfg.dataset.batch_size)
    torch.manual_seed(0)
    module = build(cfg.module, None, input_shape=shape)
    configured_epochs = cfg.trainer.max_epochs  # the run as shipped, before the short fit replaces it
    cfg.trainer.max_steps, cfg.trainer.max_epochs = steps, -1
    step_clock = StepClock(warmup=5)
    trainer = build_trainer(cfg, extra_callbacks=(step_clock,))
    with contextlib.redirect_stdout(sys.stderr):
        trainer.fit(module, datamodule=datamodule)
    (diagnostics,) = (c for c in trainer.callbacks if isinstance(c, Diagnostics))
    drawing = []
    for _ in range(3):
        start = clock()
        diagnostics.draw(trainer, module, final=False)
        drawing.append(clock() - start)
    start = clock()
    diagnostics.draw(trainer, module, final=True)
    end = clock() - start
    step = step_clock.seconds / step_clock.steps
    run_steps = step * epoch_steps(cfg, preset) * configured_epochs
    drawings = configured_epochs // cfg.diagnostics.every_n_epochs
    return {
        "preset": preset,
        "samples_drawn": cfg.diagnostics.n_samples,
        "pictures": list(diagnostics.pictures),
        "seconds_per_drawing": round(statistics.median(drawing), 3),
        "end_of_run_seconds": round(end, 3),
        "drawings_per_run": drawings,
        "run_steps_seconds": round(run_steps, 1),
        "share_of_run": round((drawings * statistics.median(drawing) + end) / run_steps, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="*", default=list(SIZES))
    parser.add_argument("--steps", type=int, default=40, help="training steps before drawing (and to time a step)")
    args = parser.parse_args()
    logging.getLogger("lightning").setLevel(logging.ERROR)
    logging.getLogger("vae_lightning").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    with tempfile.TemporaryDirectory() as tmp:
        rows = [measure(preset, Path(tmp), args.steps) for preset in args.presets]
    save("diagnostics", {"benchmark": "diagnostics", "target_share_haskell": 0.10, "presets": rows})


if __name__ == "__main__":
    main()
