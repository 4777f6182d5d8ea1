"""MNIST from its four official IDX files, downloaded with MD5 checks when absent."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from vae_lightning.core import checks
from vae_lightning.core.errors import DataFormatError, DataNotFoundError
from vae_lightning.data import idx
from vae_lightning.data.binarize import NoBinarization
from vae_lightning.data.download import DownloadError, download
from vae_lightning.data.in_memory import InMemoryDataModule, InMemoryDataset, split_indices

log = logging.getLogger(__name__)

# Official names and the published MD5s of the gzip files.
FILES = {
    "train_images": ("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
    "train_labels": ("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432"),
    "test_images": ("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3"),
    "test_labels": ("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c"),
}
MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)


def find_file(root: Path, gz_name: str) -> Path | None:
    """The file under `root` with its official name, compressed (`.gz`) or not."""
    for candidate in (root / gz_name, root / gz_name.removesuffix(".gz")):
        if candidate.is_file():
            return candidate
    return None


def read_split(root: Path, images_name: str, labels_name: str, missing: str) -> tuple[np.ndarray, np.ndarray]:
    """(images, labels) of one split's two IDX files; `missing` is the message when a file is absent."""
    images_path = find_file(root, images_name)
    labels_path = find_file(root, labels_name)
    if images_path is None or labels_path is None:
        raise DataNotFoundError(missing)
    images = idx.read_idx(images_path, idx.IMAGES_MAGIC)
    labels = idx.read_idx(labels_path, idx.LABELS_MAGIC)
    if images.ndim != 3 or labels.ndim != 1:
        raise DataFormatError(f"{images_path} must hold (count, rows, cols) and {labels_path} (count,).")
    if len(images) != len(labels):
        raise DataFormatError(f"{images_path} has {len(images)} images but {labels_path} {len(labels)} labels.")
    return images, labels


class MNISTDataModule(InMemoryDataModule):
    """28x28 grey digits. Train/val split is seeded from the training file; test is the t10k file.

    `pixel_scale`: pixels are divided by it (255 maps to [0, 1]; the seed divided by 256). Data sets in the same
    four-file IDX layout (Fashion-MNIST) are subclasses that name their files, checksums and mirrors.
    """

    input_shape = (1, 28, 28)
    class_names = {digit: str(digit) for digit in range(10)}  # also the attributes a morph can move along
    title = "MNIST"
    files = FILES
    mirrors = MIRRORS

    def __init__(
        self,
        root: str,
        download: bool = True,
        batch_size: int = 64,
        num_workers: int = 0,
        split_seed: int = 0,
        val_fraction: float = 0.1,
        pixel_scale: float = 255.0,
        binarize: NoBinarization | None = None,
    ) -> None:
        super().__init__(batch_size, num_workers, split_seed, val_fraction)
        self.root = Path(root).expanduser()
        self.download = self.problems.check(checks.boolean, "download", download)
        self.pixel_scale = self.problems.check(checks.number, "pixel_scale", pixel_scale, low=255.0)
        self.binarize = binarize if binarize is not None else NoBinarization()
        self.problems.raise_if_any()

    def missing_message(self) -> str:
        names = ", ".join(name for name, _ in self.files.values())
        return (
            f"{self.title} files are missing in {self.root}. Place the four official files there ({names}; gzip "
            f"or not), or set `dataset.download=true` on a machine with internet access, or point `dataset.root` "
            f"at the folder that holds them."
        )

    def prepare_data(self) -> None:
        missing = [(name, md5) for name, md5 in self.files.values() if find_file(self.root, name) is None]
        if not missing:
            return
        if not self.download:
            raise DataNotFoundError(self.missing_message())
        for name, md5 in missing:
            try:
                download(name, self.mirrors, self.root, md5)
            except DownloadError as failure:
                raise DataNotFoundError(f"{self.missing_message()} (Download failed: {failure})") from None

    def _tensors(self, images: np.ndarray, labels: np.ndarray, train: bool) -> InMemoryDataset:
        pixels = torch.from_numpy(images.copy()).float().div_(self.pixel_scale).unsqueeze(1)
        pixels = self.binarize.fixed(pixels, train, self.split_seed)
        transform = self.binarize.train_transform if train else None
        return InMemoryDataset(pixels, torch.from_numpy(labels.astype(np.int64)), transform)

    def load_splits(self) -> tuple[InMemoryDataset, InMemoryDataset, InMemoryDataset]:
        if not self.root.is_dir():
            raise DataNotFoundError(self.missing_message())
        files, message = self.files, self.missing_message()
        train_images, train_labels = read_split(self.root, files["train_images"][0], files["train_labels"][0], message)
        test_images, test_labels = read_split(self.root, files["test_images"][0], files["test_labels"][0], message)
        train_index, val_index = split_indices(len(train_images), [self.val_fraction], self.split_seed)
        train_index, val_index = train_index.numpy(), val_index.numpy()
        log.info(
            "%s from %s: %d train, %d val, %d test",
            self.title,
            self.root,
            len(train_index),
            len(val_index),
            len(test_images),
        )
        return (
            self._tensors(train_images[train_index], train_labels[train_index], train=True),
            self._tensors(train_images[val_index], train_labels[val_index], train=False),
            self._tensors(test_images, test_labels, train=False),
        )


class FashionMNISTDataModule(MNISTDataModule):
    """Fashion-MNIST (Zalando Research): 28x28 grey photos of 10 kinds of clothing, in MNIST's four-file IDX
    layout under the same names, with their own published MD5s."""

    title = "Fashion-MNIST"
    files = {
        "train_images": ("train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
        "train_labels": ("train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe"),
        "test_images": ("t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79"),
        "test_labels": ("t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310"),
    }
    mirrors = ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",)
    class_names = dict(
        enumerate(
            ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
        )
    )
