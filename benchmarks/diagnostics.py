"""What the diagnostics callbacks cost: wall time of a `haskell_mnist` epoch (100 training batches, validation
on 6,000 samples, checkpoints) with the default callbacks, against the same run without the diagnostics.
Target: at most 10% more. Uses MNIST files from --mnist, or generated IDX files of the full size (60,000 +
10,000 images) when none are given. Prints JSON.

    python benchmarks/diagnostics.py [--mnist /path/to/mnist] [--epochs 12]
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path

import lightning as L
import torch
from hydra import compose, initialize_config_dir

from vae_lightning.config import build
from vae_lightning.training import build_trainer

ROOT = Path(__file__).resolve().parents[1]
DIAGNOSTICS = ["reconstructions", "latent_scatter", "latent_grid", "interpolations", "best_worst", "projector"]


class EpochClock(L.Callback):
    """Epoch starts, and the end of the last epoch's validation (before any end-of-training work)."""

    def __init__(self) -> None:
        self.starts: list[float] = []
        self.last_validation_end = 0.0

    def on_train_epoch_start(self, trainer, module) -> None:
        self.starts.append(time.perf_counter())

    def on_validation_epoch_end(self, trainer, module) -> None:
        self.last_validation_end = time.perf_counter()


def epoch_seconds(mnist: Path, out: Path, epochs: int, diagnostics: bool) -> tuple[float, float]:
    """(mean wall time of a whole epoch, training + validation + per-epoch callbacks, after the first;
    the time from the last validation to the end of fit, where the end-of-training pictures are made)."""
    overrides = [
        "experiment=haskell_mnist",
        f"dataset.root={mnist}",
        f"trainer.max_epochs={epochs}",
        f"paths.output_dir={out}",
        "~callbacks.progress_bar",
        "+trainer.enable_progress_bar=false",
    ]
    if not diagnostics:
        overrides += [f"~callbacks.{name}" for name in DIAGNOSTICS]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    L.seed_everything(0)
    datamodule = build(cfg.dataset, "dataset")
    module = build(cfg.module, "module", keys_are_absolute=True, input_shape=datamodule.input_shape)
    clock = EpochClock()
    trainer = build_trainer(cfg, extra_callbacks=(clock,))  # as train.py builds it
    trainer.fit(module, datamodule=datamodule)
    fit_end = time.perf_counter()
    durations = [b - a for a, b in zip(clock.starts[1:], clock.starts[2:], strict=False)]  # skip the first epoch
    return sum(durations) / len(durations), fit_end - clock.last_validation_end


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mnist", default=None)
    parser.add_argument(
        "--epochs", type=int, default=12, help="12 covers two drawing epochs of haskell_mnist (every 5th)"
    )
    args = parser.parse_args()
    logging.getLogger("lightning").setLevel(logging.ERROR)
    logging.getLogger("vae_lightning").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    with tempfile.TemporaryDirectory() as tmp:
        mnist = Path(args.mnist) if args.mnist else None
        if mnist is None:
            sys.path.insert(0, str(ROOT))
            from tests.conftest import write_mnist

            mnist = write_mnist(Path(tmp) / "mnist", n_train=60_000, n_test=10_000)
        with_diag, without = [], []
        for repeat in range(2):  # alternate, so drifts in machine load hit both alike
            without.append(epoch_seconds(mnist, Path(tmp) / f"plain{repeat}", args.epochs, diagnostics=False))
            with_diag.append(epoch_seconds(mnist, Path(tmp) / f"diag{repeat}", args.epochs, diagnostics=True))
    best_with, best_without = min(e for e, _ in with_diag), min(e for e, _ in without)
    end_cost = min(t for _, t in with_diag) - min(t for _, t in without)
    print(
        json.dumps(
            {
                "benchmark": "diagnostics_cost",
                "setup": "experiment=haskell_mnist epoch: 100 train batches of 32, validation of 6,000, checkpoints",
                "data": "given MNIST files" if args.mnist else "generated IDX files of MNIST size",
                "epoch_s_without_diagnostics": round(best_without, 3),
                "epoch_s_with_diagnostics": round(best_with, 3),
                "overhead": round(best_with / best_without - 1, 3),
                "target_overhead": 0.10,
                "end_of_training_s": round(end_cost, 3),
                "note": "end_of_training_s is paid once per run: the final pictures, PNG files and the Projector",
                "all_without": [round(e, 3) for e, _ in without],
                "all_with": [round(e, 3) for e, _ in with_diag],
                "machine": {
                    "platform": platform.platform(),
                    "threads": torch.get_num_threads(),
                    "torch": torch.__version__,
                },
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
