"""The callback that sets a run's CPU threads when training starts and follows other work's load while it goes on
(the choice itself is `core.threads.choose_threads`)."""

from __future__ import annotations

import copy
import logging
import os
import time
from collections.abc import Callable
from typing import Any

import torch
from lightning import Callback, LightningModule, Trainer

from vae_lightning.core import checks
from vae_lightning.core.threads import OthersLoad, ThreadChoice, choose_threads, free_cores, usable_cores

log = logging.getLogger(__name__)


def step_timer(module: Any, batch_size: int) -> Callable[[int], float]:
    """`time_step(n)`: the seconds of one training step's forward and backward pass on n threads, on a copy of the
    module's network, prior and objective (the module, its gradients and the random state stay as they were)."""
    net, prior, loss_fn = copy.deepcopy((module.net, module.prior, module.loss_fn))  # the prior may use the net
    net.train()
    loss_fn.fit_to_data(batch_size)
    x = torch.zeros(batch_size, *module.hparams["input_shape"])

    def time_step(threads: int) -> float:
        torch.set_num_threads(threads)
        with torch.random.fork_rng():
            start = time.perf_counter()
            loss_fn(net, prior, x, 1.0).loss.backward()
            return time.perf_counter() - start

    return time_step


def plural(threads: int) -> str:
    return f"{threads} CPU thread{'' if threads == 1 else 's'}"


class CpuThreads(Callback):
    """Sets the intra-op CPU threads when the run is set up: `requested` (the `threads` key) when given, else
    chosen from the cores that other work leaves free and from timed steps of the network (see `core.threads`);
    the log line says which and why. A choice made from the free cores is then followed: every `every` seconds
    of training the cores that others kept busy over that time are read again, and the threads become the cores
    they left free (up to all of them), as a second experiment started later would otherwise make every
    operation's threads wait for the one that is not running; they come back when it ends."""

    def __init__(self, requested: int | None = None, every: float = 1.0) -> None:
        self.requested = None if requested is None else checks.positive_int("requested", requested)
        self.every = every
        self.choice: ThreadChoice | None = None
        self.load: OthersLoad | None = None
        self.due = 0.0

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self.choice is not None:  # chosen for fitting; testing afterwards keeps it
            return
        on_cpu = trainer.strategy.root_device.type == "cpu"
        processes = trainer.num_devices if on_cpu else 1  # DDP on CPU: its processes share the cores
        batch_size = getattr(trainer.datamodule, "batch_size", None)
        timer = step_timer(pl_module, batch_size) if self.requested is None and batch_size and processes == 1 else None
        self.choice = choose_threads(self.requested, timer, processes)
        torch.set_num_threads(self.choice.threads)
        policy = os.environ.get("OMP_WAIT_POLICY", "OpenMP's default")
        log.info("Using %s: %s; wait policy %s", plural(self.choice.threads), self.choice.why, policy)

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.choice is not None and self.choice.follow_load:
            self.load = OthersLoad()
            self.due = time.monotonic() + self.every

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args: Any) -> None:
        if self.load is None or time.monotonic() < self.due:
            return
        self.due = time.monotonic() + self.every
        busy = self.load.read()
        threads = free_cores(usable_cores(), busy)
        if threads != torch.get_num_threads():
            torch.set_num_threads(threads)
            step = trainer.global_step
            log.info("Using %s from optimizer step %d: others keep %.1f cores busy", plural(threads), step, busy)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.load = None
