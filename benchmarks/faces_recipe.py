"""The speed levers of the faces recipe (`experiment=faces_dogs_conv`: the 64x64 conv VAE, batch 64), measured
side by side in one process: the framework's training steps per second (VAEModule in a Lightning Trainer, as
`train.py` builds them, on random uint8 images of the preset's shape) with float32 or bfloat16 autocast, and
with the conv net's tensors in the default or the channels-last memory order; optionally batch 128 and
torch.compile. The variants take turns, `--rounds` times, and each reports its median, so that a drift in the
machine's speed hits all alike. The quality side (what the learning-rate and KL schedules buy per step) is in
`benchmarks/faces_recipe_scan.sh` and the time-to-quality runs of `benchmarks/results.py`.

    python -m benchmarks.faces_recipe [--rounds 3] [--steps 60] [--compile]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
from pathlib import Path

import torch

from benchmarks.common import RandomImages, StepClock, compose_run, data_shape, save
from vae_lightning.core.config import build
from vae_lightning.run.trainer import build_trainer

RECIPE = ["experiment=faces_dogs_conv", "~callbacks.diagnostics", "logger=csv"]
VARIANTS = {
    "float32": ["trainer.precision=32-true", "model.channels_last=false"],
    "float32, channels-last": ["trainer.precision=32-true", "model.channels_last=true"],
    "bf16 autocast": ["trainer.precision=bf16-mixed", "model.channels_last=false"],
    "bf16 autocast, channels-last (the preset)": ["trainer.precision=bf16-mixed", "model.channels_last=true"],
}
EXTRA = {
    "batch 128": ["trainer.precision=bf16-mixed", "model.channels_last=true", "dataset.batch_size=128"],
}
COMPILED = {
    "compiled": ["trainer.precision=bf16-mixed", "model.channels_last=true", "compile=true"],
}


def steps_per_second(overrides: list[str], steps: int, warmup: int, tmp: Path) -> tuple[float, int]:
    """(training steps per second after `warmup` steps, batch size) of one fit of `steps` steps."""
    cfg = compose_run([*RECIPE, *overrides], tmp)
    batch_size = cfg.dataset.batch_size
    shape, uint8 = data_shape(cfg.dataset)
    datamodule = RandomImages(shape, batch_size * 100, batch_size, batch_size, uint8, batch_size)
    datamodule.setup("fit")
    torch.manual_seed(0)
    module = build(cfg.module, None, input_shape=shape)
    cfg.trainer.max_steps, cfg.trainer.max_epochs = warmup + steps + 1, -1
    cfg.trainer.limit_val_batches, cfg.trainer.num_sanity_val_steps = 0, 0
    clock = StepClock(warmup)
    trainer = build_trainer(cfg, extra_callbacks=(clock,))
    with contextlib.redirect_stdout(sys.stderr):  # Lightning's tables go to stdout; keep it for the JSON
        trainer.fit(module, datamodule=datamodule)
    return clock.steps / clock.seconds, batch_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--compile", action="store_true", help="also torch.compile (its compilation is not timed)")
    args = parser.parse_args()
    variants = VARIANTS | EXTRA | (COMPILED if args.compile else {})
    rates: dict[str, list[float]] = {name: [] for name in variants}
    batch: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.rounds):
            for name, overrides in variants.items():
                warmup = args.warmup + (30 if "compile=true" in overrides else 0)
                rate, batch[name] = steps_per_second(overrides, args.steps, warmup, Path(tmp) / f"{round_}-{name}")
                rates[name].append(rate)
                print(f"round {round_}: {name}: {rate:.2f} steps/s", file=sys.stderr, flush=True)
    base = statistics.median(rates["float32"]) * batch["float32"]
    result = {
        "benchmark": "faces_recipe",
        "setup": "experiment=faces_dogs_conv, 64x64x3, training steps only, medians of interleaved fits",
        "rounds": args.rounds,
        "steps": args.steps,
        "variants": {
            name: {
                "steps_per_s": round(statistics.median(r), 2),
                "images_per_s": round(statistics.median(r) * batch[name]),
                "images_per_s_vs_float32": round(statistics.median(r) * batch[name] / base, 2),
                "rounds": [round(x, 2) for x in r],
            }
            for name, r in rates.items()
        },
    }
    save("faces_recipe", result)


if __name__ == "__main__":
    main()
