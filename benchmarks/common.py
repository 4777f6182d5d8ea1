"""What the benchmarks share: configs composed as `train.py` composes them, random in-memory data of a preset's
shape, a clock for training steps, the machine's description, and saving results for `summary.py`."""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import lightning as L
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import get_class
from omegaconf import DictConfig, open_dict, read_write

import vae_lightning.core.config  # noqa: F401  (registers the config resolvers)
from vae_lightning.core.config import CONF_DIR
from vae_lightning.data.in_memory import InMemoryDataModule, InMemoryDataset

RESULTS = Path(__file__).resolve().parent / "results"
clock = time.perf_counter


def compose_run(overrides: list[str], output_dir: Path) -> DictConfig:
    """The config of `python train.py OVERRIDES`, writing to `output_dir`, without a progress bar."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[*overrides, "~callbacks.progress_bar", "+trainer.enable_progress_bar=false"],
            return_hydra_config=True,
        )
    with read_write(cfg), open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
        cfg.hydra.runtime.output_dir = str(output_dir)
    HydraConfig.instance().set_config(cfg)
    return cfg


def data_shape(dataset: DictConfig) -> tuple[tuple[int, int, int], bool]:
    """(C, H, W) of a data set config and whether it stores uint8 pixels, without loading any data."""
    shape = getattr(get_class(dataset._target_), "input_shape", None)
    if shape is not None:
        return tuple(shape), False
    return (1 if dataset.grayscale else 3, dataset.image_size, dataset.image_size), True


class RandomImages(InMemoryDataModule):
    """Random images of a data set's shape and storage type (float like MNIST, uint8 like the photo sets)."""

    def __init__(self, shape, n_train: int, n_val: int, n_test: int, uint8: bool, batch_size: int) -> None:
        super().__init__(batch_size=batch_size)
        self.input_shape = tuple(shape)
        self.sizes, self.uint8 = (n_train, n_val, n_test), uint8

    def load_splits(self):
        g = torch.Generator().manual_seed(0)

        def split(n: int) -> InMemoryDataset:
            if self.uint8:
                images = torch.randint(0, 256, (n, *self.input_shape), generator=g, dtype=torch.uint8)
            else:
                images = torch.rand(n, *self.input_shape, generator=g)
            return InMemoryDataset(images, torch.randint(0, 2, (n,), generator=g))

        return tuple(split(n) for n in self.sizes)


class StepClock(L.Callback):
    """The wall time of training steps: from one batch's start to the next batch's start in the same epoch (so
    epoch ends, validation and checkpoints are left out), after `warmup` steps."""

    def __init__(self, warmup: int = 0) -> None:
        self.warmup = warmup
        self.seconds, self.steps = 0.0, 0
        self.last: tuple[float, int] | None = None

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.last = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        now = clock()
        if self.last is not None and trainer.global_step > self.warmup:
            self.seconds += now - self.last[0]
            self.steps += trainer.global_step - self.last[1]
        self.last = (now, trainer.global_step)


def training_only_trainer(
    max_steps: int,
    callbacks: list[L.Callback],
    root: Path | None = None,
    precision: str = "32-true",
    max_epochs: int | None = None,
) -> L.Trainer:
    """A CPU Trainer that only trains: no validation, logger, checkpoints, progress bar or model summary, so that
    a benchmark times the training steps and nothing else. `precision`: Lightning's (the experiment's, for a
    like-for-like column); `max_steps` -1 and `max_epochs`: a length in epochs instead."""
    return L.Trainer(
        accelerator="cpu",
        precision=precision,
        max_steps=max_steps,
        max_epochs=max_epochs,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=callbacks,
        default_root_dir=root,
    )


def machine() -> dict:
    return {
        "date": time.strftime("%Y-%m-%d"),
        "cpu_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "lightning": L.__version__,
    }


def save(name: str, result: dict) -> None:
    """Print the result as JSON and keep it in `benchmarks/results/NAME.json` for `summary.py`."""
    result = result | {"machine": machine()}
    text = json.dumps(result, indent=2)
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(text + "\n")
