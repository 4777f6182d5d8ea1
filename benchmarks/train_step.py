"""Training-step speed in three columns: a plain PyTorch loop, the leanest LightningModule, and the framework.

- plain: what a user writes by hand for the same network, objective (the same plain-torch function as the bare
  column), optimizer (fused Adam) and batch size: index a shuffled in-memory tensor, forward, loss, backward,
  step;
- bare Lightning: a LightningModule with manual optimization and nothing else (no logging, no callbacks, no
  logger, no progress bar), computing the network's layers and the objective with plain torch operations (the
  MLP's `nn.Sequential`s, `torch.nn.functional`, `torch.distributions`; none of our classes), fed by the same
  data module as the framework;
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
import copy
import logging
import math
import statistics
import sys
import tempfile
import threading
import warnings
from collections.abc import Callable
from pathlib import Path

import lightning as L
import torch
from omegaconf import OmegaConf
from torch.distributions import Normal
from torch.nn import functional as F

from benchmarks.common import RandomImages, clock, compose_run, data_shape, save, training_only_trainer
from vae_lightning.core.config import build, call
from vae_lightning.run.trainer import build_trainer

BETA = 1.0  # the plain columns' KL weight (the cost of a step does not depend on it)
HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)
TARGETS = {"framework/bare": 0.97, "framework/plain (MLP, batch 32)": 0.85, "framework/plain (conv)": 0.95}


def plain_objective(cfg, net) -> Callable[[torch.Tensor], torch.Tensor]:
    """The experiment's objective written with plain torch operations on the network's own torch layers (no
    class of ours): the seed's MSE + KL, the Bernoulli or Gaussian ELBO, or the Bernoulli IWAE, each with the
    standard normal prior; `x -> loss`."""
    target = cfg.loss._target_.rsplit(".", 1)[-1]
    likelihood = str(OmegaConf.select(cfg, "loss.likelihood._target_", default="")).rsplit(".", 1)[-1]
    softplus = cfg.model.posterior_scale._target_.endswith("SoftplusScale")
    sigma = float(OmegaConf.select(cfg, "loss.likelihood.sigma", default=0.1))
    if cfg.prior._target_.rsplit(".", 1)[-1] != "StandardNormal" or target not in ("SeedLoss", "ELBO", "IWAE"):
        raise SystemExit(f"no plain-torch column for {cfg.prior._target_} with {cfg.loss._target_} yet")
    k = int(cfg.loss.get("k", 1))

    conv = hasattr(net, "encoder_convs")  # the conv model's layers, else the MLP's

    def decoder(z):
        if not conv:
            return net.decoder(z)
        side, width = net.map_side, net.channels[-1]
        return net.decoder_convs(net.decoder_head(z).view(len(z), width, side, side)).flatten(1)

    def encode(x):
        features = net.encoder_head(net.encoder_convs(x)) if conv else net.encoder(x.flatten(1))
        loc, raw = features.chunk(2, dim=-1)
        scale = F.softplus(raw) + 1e-6 if softplus else torch.exp(0.5 * raw.clamp(max=40.0)) + 1e-6
        return loc, scale

    def log_px(x, logits):
        if likelihood == "Gaussian":
            return (-0.5 * ((x - torch.sigmoid(logits)) / sigma).pow(2) - math.log(sigma) - HALF_LOG_2PI).sum(-1)
        return -F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)

    def loss(x):
        loc, scale = encode(x)
        x = x.flatten(1)
        kl = 0.5 * (loc.pow(2) + scale.pow(2) - 1.0) - scale.log()
        if target == "SeedLoss":
            logits = decoder(loc + scale * torch.randn_like(loc))
            return (torch.sigmoid(logits) - x).pow(2).mean() + BETA * kl.sum()
        if target == "ELBO":
            logits = decoder(loc + scale * torch.randn_like(loc))
            return (kl.sum(-1) - log_px(x, logits)).mean()
        z = loc + scale * torch.randn(k, *loc.shape)
        logits = decoder(z.flatten(0, 1)).view(k, len(x), -1)
        log_q = Normal(loc, scale).log_prob(z).sum(-1)
        log_p = Normal(0.0, 1.0).log_prob(z).sum(-1)
        return -(torch.logsumexp(log_px(x, logits) + log_p - log_q, dim=0) - math.log(k)).mean()

    return loss


class BareModule(L.LightningModule):
    """The leanest LightningModule for the same network and objective in plain torch: manual optimization, no
    logging."""

    def __init__(self, cfg, net, optimizer_factory) -> None:
        super().__init__()
        self.net, self.optimizer_factory = net, optimizer_factory
        self.loss = plain_objective(cfg, net)
        self.automatic_optimization = False

    def training_step(self, batch, batch_idx) -> None:
        x, _ = batch
        loss = self.loss(x)
        optimizer = self.optimizers()
        optimizer.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        optimizer.step()

    def configure_optimizers(self):
        return call(self.optimizer_factory, "optimizer", self.parameters())


class Plain:
    """The hand-written loop, one step at a time."""

    def __init__(self, cfg, net, images: torch.Tensor, batch_size: int) -> None:
        self.net, self.loss = net, plain_objective(cfg, net)
        self.optimizer = call(build(cfg.optimizer, "optimizer"), "optimizer", self.net.parameters())
        self.images, self.order, self.i = images, torch.randperm(len(images)).split(batch_size), 0

    def step(self) -> None:
        x = self.images[self.order[self.i % len(self.order)]]
        self.i += 1
        if x.dtype == torch.uint8:
            x = x.float().div_(255.0)
        with torch.enable_grad():
            loss = self.loss(x)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
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

    torch.manual_seed(1)
    module = build(cfg.module, None, input_shape=shape)
    bare = BareModule(cfg, copy.deepcopy(module.net), build(cfg.optimizer, "optimizer"))
    bare_trainer = training_only_trainer(max_steps, [BareTurns(turns, columns["bare"])], tmp / "bare")
    thread = threading.Thread(target=bare_trainer.fit, args=(bare,), kwargs={"datamodule": datamodule})

    cfg.trainer.max_steps, cfg.trainer.max_epochs = max_steps, -1
    plain = Plain(cfg, copy.deepcopy(module.net), datamodule.train_set.images, batch_size)
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
