"""Data preparation speed: preprocessing images/s, cache load time, and training steps/s with the real
faces+dogs datamodule versus the same tensors already in memory (target >= 0.9: loading is never the
bottleneck). Uses the real sample photos in ../shared/data (or --faces/--dogs folders), repeated to --n images.

    python -m benchmarks.data
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
import warnings
from pathlib import Path

import PIL
import torch

from benchmarks.common import StepClock, save, training_only_trainer
from vae_lightning.data.cache import cached_preprocess, preprocess
from vae_lightning.data.dogs import DogsSource
from vae_lightning.data.faces_dogs import FacesDogsDataModule
from vae_lightning.data.in_memory import InMemoryDataModule, InMemoryDataset
from vae_lightning.data.utkface import UTKFaceSource
from vae_lightning.module import VAEModule

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
NET = {"_target_": "vae_lightning.nets.mlp.MLPVAE", "hidden_dims": [2000], "latent_dim": 60}
LOSS = {"_target_": "vae_lightning.losses.SeedLoss"}
BETA = {"_target_": "vae_lightning.schedules.DelayedRamp", "_partial_": True, "max": 1e-4}
OPTIMIZER = {"_target_": "vae_lightning.optim.adam", "_partial_": True, "eps": 1e-6}


def images_per_second(items, size, grayscale, workers, repeats):
    items = items * repeats
    start = time.perf_counter()
    result = preprocess(items, size, grayscale, 0.1, workers, desc="bench")
    elapsed = time.perf_counter() - start
    assert not result.skipped, result.skipped[:3]
    return len(items) / elapsed, items[0]


class Tensors(InMemoryDataModule):
    """The same preprocessed images as float tensors in memory, plain shuffled batches."""

    def __init__(self, splits, shape, batch_size):
        super().__init__(batch_size=batch_size)
        self.splits, self.input_shape = splits, shape

    def load_splits(self):
        return tuple(InMemoryDataset(d.images.float().div(255), d.labels) for d in self.splits)


def steps_per_second(datamodule, steps, warmup=30):
    torch.manual_seed(0)
    settings = {"net": NET, "loss": LOSS, "beta": BETA, "optimizer": OPTIMIZER}
    module = VAEModule.from_settings(settings, input_shape=datamodule.input_shape)
    step_clock = StepClock(warmup)
    training_only_trainer(warmup + steps + 1, [step_clock]).fit(module, datamodule=datamodule)
    return step_clock.steps / step_clock.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--faces", default=str(SHARED / "utkface" / "crop_part1"))
    parser.add_argument("--dogs", default=str(SHARED / "dogs" / "oxford_iiit_pet"))
    parser.add_argument("--cu-dogs", default=str(SHARED / "dogs" / "CU_Dogs"))
    parser.add_argument("--n", type=int, default=3000, help="images per domain (the samples repeated)")
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args()
    logging.getLogger("lightning").setLevel(logging.ERROR)
    logging.getLogger("vae_lightning").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")

    faces = [i for i in UTKFaceSource(args.faces).items() if i.path.endswith(".chip.jpg")]
    dogs = DogsSource(args.dogs).items()
    face_rate, face = images_per_second(faces, 64, False, args.workers, max(1, args.n // len(faces)))
    dog_rate, dog = images_per_second(dogs, 64, False, args.workers, max(1, args.n // len(dogs)))
    cu_dogs = DogsSource(args.cu_dogs).items()
    cu_rate, _ = images_per_second(cu_dogs, 64, False, args.workers, max(1, args.n // len(cu_dogs)))
    face_size, dog_size = PIL.Image.open(face.path).size, PIL.Image.open(dog.path).size
    cu_sizes = sorted({PIL.Image.open(i.path).size for i in cu_dogs})

    with tempfile.TemporaryDirectory() as cache:
        repeated = faces * max(1, args.n // len(faces))
        start = time.perf_counter()
        cached_preprocess("bench", repeated, {"image_size": 50, "grayscale": True}, cache, args.workers)
        build_s = time.perf_counter() - start
        start = time.perf_counter()
        cached_preprocess("bench", repeated, {"image_size": 50, "grayscale": True}, cache, args.workers)
        load_s = time.perf_counter() - start

        real = FacesDogsDataModule(
            UTKFaceSource(args.faces),
            DogsSource(args.dogs),
            cache,
            n_per_domain=args.n,
            image_size=50,
            grayscale=True,
            batch_size=32,
        )
        real.setup("fit")
        in_memory = Tensors((real.train_set, real.val_set, real.test_set), real.input_shape, 32)
        memory_rate, real_rate = [], []
        for _ in range(2):  # alternate, so drifts in machine load hit both alike
            memory_rate.append(steps_per_second(in_memory, args.steps))
            real_rate.append(steps_per_second(real, args.steps))

    save(
        "data",
        {
            "benchmark": "data",
            "preprocess_images_per_s": {
                f"utkface {face_size[0]}x{face_size[1]} -> 64x64 rgb": round(face_rate),
                f"oxford pet dogs {dog_size[0]}x{dog_size[1]}, head box -> 64x64 rgb": round(dog_rate),
                f"cu dogs {cu_sizes}, centre crop (no parts files) -> 64x64 rgb": round(cu_rate),
                "targets": {"utkface": 3000, "dogs ~500x375": 1000},
                "workers": args.workers,
            },
            "cache": {
                "images": len(repeated),
                "build_s": round(build_s, 2),
                "load_s": round(load_s, 3),
                "speedup": round(build_s / load_s, 1),
                "target_speedup": 10,
            },
            "training_steps_per_s": {
                "model": "mlp 2500-2000-60, 50x50 grey, batch 32 (haskell_dogpeople)",
                "in_memory_tensors": round(max(memory_rate), 1),
                "faces_dogs_datamodule": round(max(real_rate), 1),
                "ratio": round(max(real_rate) / max(memory_rate), 3),
                "target_ratio": 0.9,
            },
            "pillow": PIL.__version__,
        },
    )


if __name__ == "__main__":
    main()
