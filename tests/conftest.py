"""Shared fixtures: generated data in the real on-disk formats, and a runner for train.py."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vae_lightning.data import idx

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
MNIST_NAMES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


def write_mnist(folder: Path, n_train: int = 120, n_test: int = 40, compress: bool = True, seed: int = 0) -> Path:
    """Four IDX files with blob-like 28x28 'digits' (a bright square whose place depends on the label)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("test", n_test)):
        labels = rng.integers(0, 10, size=n).astype(np.uint8)
        images = rng.integers(0, 40, size=(n, 28, 28)).astype(np.uint8)
        for i, label in enumerate(labels):
            top, left = 2 + 2 * (label // 5) * 5, 2 + 4 * (label % 5)
            images[i, top : top + 8, left : left + 8] = 255
        for kind, array in (("images", images), ("labels", labels)):
            data = idx.encode_idx(array)
            name = MNIST_NAMES[f"{split}_{kind}"]
            if compress:
                (folder / f"{name}.gz").write_bytes(gzip.compress(data))
            else:
                (folder / name).write_bytes(data)
    return folder


@pytest.fixture
def mnist_dir(tmp_path: Path) -> Path:
    return write_mnist(tmp_path / "mnist")


@pytest.fixture
def shared_mnist_dir(tmp_path: Path) -> Path:
    """The real first 500 MNIST test images, also placed under the training names (a valid subset)."""
    source = SHARED_DATA / "mnist_t10k_first500"
    if not source.is_dir():
        pytest.skip(f"{source} is not present")
    folder = tmp_path / "real_mnist"
    folder.mkdir()
    for kind in ("images", "labels"):
        real = source / f"{MNIST_NAMES[f'test_{kind}']}.gz"
        (folder / real.name).symlink_to(real)
        (folder / f"{MNIST_NAMES[f'train_{kind}']}.gz").symlink_to(real)
    return folder


def run_train(args: list[str], run_dir: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    """`python train.py ARGS hydra.run.dir=RUN_DIR` from the project root, data and cache kept in tmp."""
    env = os.environ | {"VAE_DATA_DIR": str(run_dir.parent / "data"), "PYTHONWARNINGS": "ignore"}
    return subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *args, f"hydra.run.dir={run_dir}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
