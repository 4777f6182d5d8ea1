"""Training-step speed: vae_lightning as `train.py` runs it vs a plain PyTorch loop, side by side in one run.

The framework side is an experiment composed from `conf/` and built as `train.py` builds it (module, Trainer,
every callback and logger of the config); only the data set is replaced by random images of its shape held in
memory, so no download is needed. The plain side is what a user would write by hand for the same network,
loss, optimizer and batch size: index a shuffled in-memory tensor, forward, loss, backward, step.

The two are interleaved: after each call of the framework's `training_step` (which takes `module.batches_per_call`
batches, an optimizer step each) a callback runs as many plain steps and times them. So both meet the same
machine state (a shared, noisy 2-core VM drifts by 10-30% within seconds); the framework's time is the wall time
from one `on_train_batch_start` to the next in the same epoch, minus the plain steps run in between, over the
optimizer steps taken. Epoch ends (validation, checkpoints, pictures) are left out: `benchmarks/diagnostics.py`
measures those. Prints JSON: per-step times of both, their ratio (target >= 0.90), the median over `--repeats` fits.

    python benchmarks/train_step.py                                   # haskell_mnist: 784-1000-2, batch 32
    python benchmarks/train_step.py --batch-size 256
    python benchmarks/train_step.py --experiment faces_dogs_conv      # conv VAE, 64x64 colour, batch 64
    python benchmarks/train_step.py --overrides '~callbacks'          # without callbacks
    python benchmarks/train_step.py --overrides module.batches_per_call=1   # one batch per training_step call
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import platform
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import lightning as L
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import get_class
from omegaconf import DictConfig

import vae_lightning.config  # noqa: F401  (registers the config resolvers)
from vae_lightning.config import build, call
from vae_lightning.data.in_memory import InMemoryDataModule, InMemoryDataset
from vae_lightning.training import build_trainer

CONF = Path(__file__).resolve().parents[1] / "conf"
SEED_HASKELL_BATCHES_PER_S = (4.5, 12.0)  # the seed, 784-1000-2 batch 32, this machine (SEED_SPEC.md)
clock = time.perf_counter


class RandomImages(InMemoryDataModule):
    """Random images of a data set's shape and storage type (float like MNIST, uint8 like the photo sets)."""

    def __init__(self, shape: tuple[int, int, int], n_train: int, n_val: int, uint8: bool, batch_size: int):
        super().__init__(batch_size=batch_size)
        self.input_shape = shape
        self.n_train, self.n_val, self.uint8 = n_train, n_val, uint8

    def load_splits(self):
        g = torch.Generator().manual_seed(0)

        def split(n: int) -> InMemoryDataset:
            if self.uint8:
                images = torch.randint(0, 256, (n, *self.input_shape), generator=g, dtype=torch.uint8)
            else:
                images = torch.rand(n, *self.input_shape, generator=g)
            return InMemoryDataset(images, torch.zeros(n, dtype=torch.long))

        return split(self.n_train), split(self.n_val), split(self.batch_size)


def data_shape(dataset: DictConfig) -> tuple[tuple[int, int, int], bool]:
    """(C, H, W) of a data set config and whether it stores uint8 pixels, without loading any data."""
    shape = getattr(get_class(dataset._target_), "input_shape", None)
    if shape is not None:
        return tuple(shape), False
    return (1 if dataset.grayscale else 3, dataset.image_size, dataset.image_size), True


class PlainLoop:
    """The hand-written loop: the same network, loss and optimizer, built from the same config."""

    def __init__(self, cfg: DictConfig, shape: tuple[int, ...], images: torch.Tensor, batch_size: int) -> None:
        torch.manual_seed(1)
        self.net = build(cfg.model, "model", input_shape=shape)
        self.loss_fn = build(cfg.loss, "loss")
        self.optimizer = call(build(cfg.optimizer, "optimizer"), "optimizer", self.net.parameters())
        self.images = images
        self.batches = torch.randperm(len(images)).split(batch_size)
        self.i = 0

    def step(self) -> None:
        x = self.images[self.batches[self.i % len(self.batches)]]
        self.i += 1
        if x.dtype == torch.uint8:
            x = x.float().div_(255.0)
        with torch.enable_grad():
            terms = self.loss_fn(x, self.net(x), 1.0)
            self.optimizer.zero_grad(set_to_none=True)
            terms.loss.backward()
            self.optimizer.step()


class SideBySide(L.Callback):
    """Runs as many plain steps as the framework took after each of its `training_step` calls and times both
    (see the module docstring)."""

    def __init__(self, plain: PlainLoop, warmup: int) -> None:
        self.plain, self.warmup = plain, warmup
        self.call_start: tuple[float, int, int] | None = None  # (time, epoch, global step)
        self.plain_in_between = 0.0
        self.framework_time = self.plain_time = 0.0
        self.framework_steps = self.plain_steps = 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        now = clock()
        previous = self.call_start
        if previous is not None and previous[1] == trainer.current_epoch and previous[2] >= self.warmup:
            self.framework_time += now - previous[0] - self.plain_in_between
            self.framework_steps += trainer.global_step - previous[2]
        self.call_start, self.plain_in_between = (now, trainer.current_epoch, trainer.global_step), 0.0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        steps = trainer.global_step - self.call_start[2]
        start = clock()
        for _ in range(steps):
            self.plain.step()
        self.plain_in_between = clock() - start
        if self.call_start[2] >= self.warmup:
            self.plain_time += self.plain_in_between
            self.plain_steps += steps


def one_fit(args: argparse.Namespace, out: Path) -> dict:
    overrides = [f"experiment={args.experiment}", f"paths.output_dir={out}", *args.overrides]
    if args.batch_size:
        overrides.append(f"dataset.batch_size={args.batch_size}")
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    batch_size = cfg.dataset.batch_size
    shape, uint8 = data_shape(cfg.dataset)
    per_epoch = cfg.trainer.limit_train_batches or 200
    total = args.warmup + args.steps + cfg.module.batches_per_call
    cfg.trainer.max_steps, cfg.trainer.max_epochs = total, math.ceil(total / per_epoch) + 1
    L.seed_everything(cfg.seed, verbose=False)
    datamodule = RandomImages(shape, batch_size * 200, batch_size * 10, uint8, batch_size)
    datamodule.setup("fit")
    model = build(cfg.module, "module", keys_are_absolute=True, input_shape=shape)
    side = SideBySide(PlainLoop(cfg, shape, datamodule.train_set.images, batch_size), args.warmup)
    trainer = build_trainer(cfg, extra_callbacks=(side,))
    start = clock()
    with contextlib.redirect_stdout(sys.stderr):  # the progress bar writes to stdout; keep it for the JSON
        trainer.fit(model, datamodule=datamodule)
    fit_seconds = clock() - start
    framework = side.framework_time / side.framework_steps
    plain = side.plain_time / side.plain_steps
    return {
        "framework_us_per_step": round(framework * 1e6),
        "plain_us_per_step": round(plain * 1e6),
        "ratio": round(plain / framework, 3),
        "steps_measured": side.framework_steps,
        "fit_seconds": round(fit_seconds, 1),
        "batch_size": batch_size,
        "shape": list(shape),
        "batches_per_call": cfg.module.batches_per_call,
        "callbacks": [type(c).__name__ for c in trainer.callbacks if c is not side],
        "loggers": [type(lg).__name__ for lg in trainer.loggers],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiment", default="haskell_mnist")
    parser.add_argument("--batch-size", type=int, default=None, help="default: the experiment's")
    parser.add_argument("--steps", type=int, default=1000, help="measured steps per fit")
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3, help="fits; the median ratio is reported")
    parser.add_argument("--overrides", nargs="*", default=[], help="more Hydra overrides, e.g. '~callbacks'")
    args = parser.parse_args()
    logging.getLogger("lightning").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeats):
            runs.append(one_fit(args, Path(tmp) / f"run{i}"))
    ratios = [r["ratio"] for r in runs]
    median = sorted(runs, key=lambda r: r["ratio"])[len(runs) // 2]
    result = {
        "benchmark": "train_step",
        "experiment": args.experiment,
        "overrides": args.overrides,
        "batch_size": median["batch_size"],
        "image_shape": median["shape"],
        "method": "interleaved call by call in one process; epoch ends excluded",
        "batches_per_call": median["batches_per_call"],
        "framework_steps_per_s": round(1e6 / median["framework_us_per_step"], 1),
        "plain_steps_per_s": round(1e6 / median["plain_us_per_step"], 1),
        "framework_us_per_step": median["framework_us_per_step"],
        "plain_us_per_step": median["plain_us_per_step"],
        "overhead_us_per_step": median["framework_us_per_step"] - median["plain_us_per_step"],
        "ratio": statistics.median(ratios),
        "target_ratio": 0.9,
        "all_ratios": ratios,
        "steps_measured_per_fit": median["steps_measured"],
        "fit_seconds": [r["fit_seconds"] for r in runs],
        "callbacks": median["callbacks"],
        "loggers": median["loggers"],
        "machine": {
            "threads": torch.get_num_threads(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "lightning": L.__version__,
        },
    }
    if args.experiment.startswith("haskell_mnist") and median["batch_size"] == 32:
        result["seed_haskell_batches_per_s"] = list(SEED_HASKELL_BATCHES_PER_S)
        result["vs_seed_haskell"] = [round(result["framework_steps_per_s"] / v, 1) for v in SEED_HASKELL_BATCHES_PER_S]
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
