"""Training-step speed: vae_lightning (Trainer + VAEModule + in-memory datamodule) vs a plain PyTorch loop.

Same network, loss, optimizer (fused Adam), batch size and in-memory data; both measured in this one run,
alternating, after a warm-up. Prints JSON with steps/s of each and their ratio (target >= 0.90).

    python benchmarks/train_step.py                       # the seed's 784-1000-2 MLP, batch 32
    python benchmarks/train_step.py --batch-size 256
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import time
import warnings

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger

from vae_lightning.data.in_memory import InMemoryDataModule, InMemoryDataset
from vae_lightning.losses import SeedLoss
from vae_lightning.module import VAEModule
from vae_lightning.optim import adam

MODELS = {  # name: (network config, image shape)
    "mlp": ({"_target_": "vae_lightning.nets.mlp.MLPVAE", "hidden_dims": [1000], "latent_dim": 2}, (1, 28, 28)),
    "conv": ({"_target_": "vae_lightning.nets.conv.ConvVAE", "latent_dim": 128}, (3, 64, 64)),
}
NET, SHAPE = MODELS["mlp"]
LOSS = {"_target_": "vae_lightning.losses.SeedLoss"}
BETA = {"_target_": "vae_lightning.schedules.DelayedRamp", "_partial_": True, "max": 1e-4}
OPTIMIZER = {"_target_": "vae_lightning.optim.adam", "_partial_": True, "lr": 1e-3, "eps": 1e-6}
SEED_HASKELL_BATCHES_PER_S = (4.5, 12.0)  # the seed, 784-1000-2 batch 32, this machine (SEED_SPEC.md)


class RandomImages(InMemoryDataModule):
    input_shape = SHAPE

    def __init__(self, n: int, batch_size: int) -> None:
        super().__init__(batch_size=batch_size)
        self.n = n

    def load_splits(self):
        g = torch.Generator().manual_seed(0)
        data = InMemoryDataset(torch.rand(self.n, *SHAPE, generator=g), torch.zeros(self.n, dtype=torch.long))
        return data, data.subset(torch.arange(64)), data.subset(torch.arange(64))


class StepTimer(L.Callback):
    """Wall time from the start of step `warmup` to the end of the last step."""

    def __init__(self, warmup: int) -> None:
        self.warmup = warmup
        self.start = self.end = 0.0
        self.steps = 0

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if trainer.global_step == self.warmup:
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.end = time.perf_counter()
        self.steps = trainer.global_step - self.warmup


def framework(steps: int, warmup: int, batch_size: int, log_dir: str) -> float:
    torch.manual_seed(0)
    module = VAEModule(NET, LOSS, BETA, OPTIMIZER, input_shape=SHAPE)
    timer = StepTimer(warmup)
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=steps + warmup,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer],
        logger=TensorBoardLogger(log_dir, name="bench"),
        log_every_n_steps=50,
    )
    trainer.fit(module, datamodule=RandomImages(n=batch_size * 200, batch_size=batch_size))
    return timer.steps / (timer.end - timer.start)


def plain_loop(steps: int, warmup: int, batch_size: int) -> float:
    """What a user would write by hand: shuffled in-memory batches, forward, loss, backward, step."""
    torch.manual_seed(0)
    module = VAEModule(NET, LOSS, BETA, OPTIMIZER, input_shape=SHAPE)
    net, loss_fn = module.net, SeedLoss()
    optimizer = adam(net.parameters(), lr=1e-3, eps=1e-6)
    data = torch.rand(batch_size * 200, *SHAPE, generator=torch.Generator().manual_seed(0))
    order = torch.randperm(len(data)).split(batch_size)
    start = 0.0
    for step in range(steps + warmup):
        if step == warmup:
            start = time.perf_counter()
        x = data[order[step % len(order)]]
        terms = loss_fn(x, net(x), 1e-4 * max(0.0, step / (steps + warmup) - 0.5) * 2)
        optimizer.zero_grad(set_to_none=True)
        terms.loss.backward()
        optimizer.step()
    return steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--log-dir", default="outputs/benchmarks")
    parser.add_argument("--model", choices=sorted(MODELS), default="mlp")
    args = parser.parse_args()
    global NET, SHAPE
    NET, SHAPE = MODELS[args.model]
    logging.getLogger("lightning").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    plain, ours = [], []
    for _ in range(args.repeats):  # alternate, so drifts in machine load hit both alike
        plain.append(plain_loop(args.steps, args.warmup, args.batch_size))
        ours.append(framework(args.steps, args.warmup, args.batch_size, args.log_dir))
    best_plain, best_ours = max(plain), max(ours)
    print(
        json.dumps(
            {
                "benchmark": "train_step",
                "model": "mlp 784-1000-2",
                "batch_size": args.batch_size,
                "plain_steps_per_s": round(best_plain, 1),
                "framework_steps_per_s": round(best_ours, 1),
                "ratio": round(best_ours / best_plain, 3),
                "target_ratio": 0.9,
                "all_plain": [round(v, 1) for v in plain],
                "all_framework": [round(v, 1) for v in ours],
                "machine": {
                    "cpu_count": torch.get_num_threads(),
                    "platform": platform.platform(),
                    "torch": torch.__version__,
                    "lightning": L.__version__,
                },
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
