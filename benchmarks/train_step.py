"""Training-step speed in three columns: a plain PyTorch loop, the leanest LightningModule, and the framework.

- plain: what a user writes by hand for the same network, loss, optimizer (fused Adam) and batch size:
  index a shuffled in-memory tensor, forward, loss, backward, step;
- bare Lightning: a LightningModule with manual optimization and nothing else (no logging, no callbacks, no
  logger, no progress bar), fed by the same data module as the framework;
- framework: the experiment composed from the packaged configs and built as `train.py` builds it (VAEModule, every
  callback of the config, the TensorBoard logger), with only the data replaced by random images of its shape.

The three take turns step by step, so that they meet the same machine state (this VM's speed drifts by tens of
percent within seconds): after each framework step a callback runs one plain step, then hands the turn to the
bare Lightning fit, which runs in a second thread and hands it back after one step (only one of them runs at a
time). A Lightning step is the time from one batch's start to the next one's, less the other columns' turns;
steps across an epoch end are left out (`run_overhead.py` measures those). Prints steps per second of each
column and the ratios framework / bare Lightning (target >= 0.97) and framework / plain (>= 0.85 for the
seed's MLP at batch 32, >= 0.95 for the conv model), each the median of `--repeats` fits.

    python benchmarks/train_step.py                                   # haskell_mnist: 784-1000-2, batch 32
    python benchmarks/train_step.py --experiment faces_dogs_conv --steps 60 --warmup 5
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import statistics
import sys
import tempfile
import threading
import warnings
from pathlib import Path

import lightning as L
import torch

from benchmarks.common import RandomImages, clock, compose_run, data_shape, save, training_only_trainer
from vae_lightning.core.config import build, call
from vae_lightning.run.trainer import build_trainer

TARGETS = {"framework/bare": 0.97, "framework/plain (MLP, batch 32)": 0.85, "framework/plain (conv)": 0.95}


class BareModule(L.LightningModule):
    """The leanest LightningModule for the same network, loss and optimizer: manual optimization, no logging."""

    def __init__(self, net, loss_fn, optimizer_factory) -> None:
        super().__init__()
        self.net, self.loss_fn, self.optimizer_factory = net, loss_fn, optimizer_factory
        self.automatic_optimization = False

    def training_step(self, batch, batch_idx) -> None:
        x, _ = batch
        terms = self.loss_fn(x, self.net(x), 1.0)
        optimizer = self.optimizers()
        optimizer.zero_grad(set_to_none=True)
        self.manual_backward(terms.loss)
        optimizer.step()

    def configure_optimizers(self):
        return call(self.optimizer_factory, "optimizer", self.parameters())


class Plain:
    """The hand-written loop, one step at a time."""

    def __init__(self, cfg, shape, images: torch.Tensor, batch_size: int) -> None:
        torch.manual_seed(1)
        self.net = build(cfg.model, "model", input_shape=shape)
        self.loss_fn = build(cfg.loss, "loss")
        self.optimizer = call(build(cfg.optimizer, "optimizer"), "optimizer", self.net.parameters())
        self.images, self.order, self.i = images, torch.randperm(len(images)).split(batch_size), 0

    def step(self) -> None:
        x = self.images[self.order[self.i % len(self.order)]]
        self.i += 1
        if x.dtype == torch.uint8:
            x = x.float().div_(255.0)
        with torch.enable_grad():
            terms = self.loss_fn(x, self.net(x), 1.0)
            self.optimizer.zero_grad(set_to_none=True)
            terms.loss.backward()
            self.optimizer.step()


class Column:
    """Accumulated step times of one column, from `warmup` steps on."""

    def __init__(self, warmup: int) -> None:
        self.warmup, self.seconds, self.steps = warmup, 0.0, 0

    def add(self, seconds: float, step: int) -> None:
        if step > self.warmup:
            self.seconds += seconds
            self.steps += 1


class FrameworkTurns(L.Callback):
    """In the framework's fit: times its steps; after each, a plain step, then the bare fit's turn."""

    def __init__(self, plain: Plain, turns: dict, columns: dict, max_steps: int) -> None:
        self.plain, self.turns, self.columns, self.max_steps = plain, turns, columns, max_steps
        self.start: tuple[float, int] | None = None
        self.paused = 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        now = clock()
        if self.start is not None and self.start[1] == trainer.current_epoch:
            self.columns["framework"].add(now - self.start[0] - self.paused, trainer.global_step)
        self.start, self.paused = (now, trainer.current_epoch), 0.0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        pause = clock()
        self.plain.step()
        self.columns["plain"].add(clock() - pause, trainer.global_step)
        self.turns["bare"].release()
        if trainer.global_step < self.max_steps:
            self.turns["framework"].acquire()
        self.paused += clock() - pause


class BareTurns(L.Callback):
    """In the bare fit (a second thread): waits for its turn at each batch's start, and times its steps."""

    def __init__(self, turns: dict, column: Column) -> None:
        self.turns, self.column = turns, column
        self.resumed: float | None = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.resumed is not None:
            self.column.add(clock() - self.resumed, trainer.global_step)
            self.turns["framework"].release()
        self.turns["bare"].acquire()
        self.resumed = clock()


def one_fit(overrides: list[str], steps: int, warmup: int, tmp: Path) -> dict[str, float]:
    """Steps per second of each column in one interleaved fit."""
    cfg = compose_run(overrides, tmp / "framework")
    batch_size = cfg.dataset.batch_size
    shape, uint8 = data_shape(cfg.dataset)
    max_steps = warmup + steps + 1
    datamodule = RandomImages(shape, batch_size * 200, batch_size * 20, batch_size * 2, uint8, batch_size)
    datamodule.setup("fit")
    columns = {"plain": Column(warmup), "bare": Column(warmup), "framework": Column(warmup)}
    turns = {"bare": threading.Semaphore(0), "framework": threading.Semaphore(0)}

    net = build(cfg.model, "model", input_shape=shape)
    bare = BareModule(net, build(cfg.loss, "loss"), build(cfg.optimizer, "optimizer"))
    bare_trainer = training_only_trainer(max_steps, [BareTurns(turns, columns["bare"])], tmp / "bare")
    thread = threading.Thread(target=bare_trainer.fit, args=(bare,), kwargs={"datamodule": datamodule})

    torch.manual_seed(1)
    module = build(cfg.module, None, input_shape=shape)
    cfg.trainer.max_steps, cfg.trainer.max_epochs = max_steps, -1
    plain = Plain(cfg, shape, datamodule.train_set.images, batch_size)
    trainer = build_trainer(cfg, extra_callbacks=(FrameworkTurns(plain, turns, columns, max_steps),))
    with contextlib.redirect_stdout(sys.stderr):  # Lightning's tables go to stdout; keep it for the JSON
        thread.start()
        trainer.fit(module, datamodule=datamodule)
        thread.join()
    return {name: column.steps / column.seconds for name, column in columns.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiment", default="haskell_mnist")
    parser.add_argument("--batch-size", type=int, default=None, help="default: the experiment's")
    parser.add_argument("--steps", type=int, default=600, help="measured steps per fit")
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3, help="fits; medians are reported")
    parser.add_argument("--overrides", nargs="*", default=[], help="more Hydra overrides")
    parser.add_argument("--name", default=None, help="results file name (default: from the experiment)")
    args = parser.parse_args()
    logging.getLogger("lightning").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    overrides = [f"experiment={args.experiment}", *args.overrides]
    if args.batch_size:
        overrides.append(f"dataset.batch_size={args.batch_size}")
    fits = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeats):
            fits.append(one_fit(overrides, args.steps, args.warmup, Path(tmp) / str(i)))
            print(f"fit {i}: " + ", ".join(f"{k} {v:.1f}/s" for k, v in fits[-1].items()), file=sys.stderr)
        cfg = compose_run(overrides, Path(tmp) / "shown")
    result = {
        "benchmark": "train_step",
        "experiment": args.experiment,
        "overrides": args.overrides,
        "batch_size": cfg.dataset.batch_size,
        "image_shape": list(data_shape(cfg.dataset)[0]),
        "method": "three columns interleaved step by step in one process; epoch ends left out",
        "steps_per_s": {name: round(statistics.median(f[name] for f in fits), 1) for name in fits[0]},
        "framework_over_bare": round(statistics.median(f["framework"] / f["bare"] for f in fits), 3),
        "framework_over_plain": round(statistics.median(f["framework"] / f["plain"] for f in fits), 3),
        "bare_over_plain": round(statistics.median(f["bare"] / f["plain"] for f in fits), 3),
        "per_fit": [{name: round(v, 1) for name, v in f.items()} for f in fits],
        "targets": TARGETS,
        "steps_per_fit": args.steps,
    }
    save(args.name or f"train_step_{args.experiment}", result)


if __name__ == "__main__":
    main()
