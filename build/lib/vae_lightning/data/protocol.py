"""The contracts of the data layer: what a data module gives a VAE run (`VAEData`, with the defaults of
`VAEDataModule` for a user's own), and what a source of photos gives the photo data modules (`PhotoSource`)."""

from __future__ import annotations

import itertools
from typing import Any, Protocol, runtime_checkable

import torch
from lightning import LightningDataModule

from vae_lightning.core.errors import DataNotFoundError
from vae_lightning.data.images import Item


@runtime_checkable
class VAEData(Protocol):
    """What the model, its pictures, the tools and the Python API ask of a data module, beside Lightning's own
    hooks (`setup`, `train_dataloader`, `val_dataloader`, `test_dataloader`), whose batches are `(images,
    labels)`: images (N, *input_shape), floats in [0, 1]; labels (N,) int64 (all 0 where there are none).
    The package's data modules implement it; a user's own LightningDataModule does by subclassing
    `VAEDataModule` and declaring `input_shape`."""

    input_shape: tuple[int, int, int]  # (C, H, W): the model is built for it
    class_names: dict[int, str]  # label -> name, for legends and the attributes a morph moves along
    default_attribute: str | None  # the attribute a morph moves along when none is named
    interpolation_ends: tuple[int, int] | None  # the labels (from, to) interpolations join; None: any two

    def diagnostic_samples(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(images, labels) of up to `n` validation samples, the same ones every epoch: the pictures draw them."""

    def test_factors(self) -> dict[str, torch.Tensor]:
        """Labelled factors of the test samples, in the test loader's order, beyond their label (name -> (N,)
        int64, negative where unknown), scored by `test/mig_<name>`; {} where there are none."""


class VAEDataModule(LightningDataModule):
    """A LightningDataModule with `VAEData`'s defaults: subclass it, set `input_shape` and write the loaders
    (of `(images, labels)` batches); the pictures draw the first validation samples, nothing is named."""

    input_shape: tuple[int, int, int]
    class_names: dict[int, str] = {}
    default_attribute: str | None = None
    interpolation_ends: tuple[int, int] | None = None

    def diagnostic_samples(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The first `n` samples of the validation loader."""
        batches = list(itertools.islice(first_samples(self.val_dataloader()), n))
        images, labels = zip(*batches, strict=True) if batches else ((), ())
        shape = (0, *self.input_shape)
        return (torch.stack(images) if images else torch.zeros(shape)), torch.as_tensor(labels, dtype=torch.long)

    def test_factors(self) -> dict[str, torch.Tensor]:
        return {}


def training_images(trainer: Any) -> Any:
    """The training set of a run, for the parts that read its images (`images_at(indices)`, with `labels`): the
    loader Lightning holds while fitting, else the data module's. Raises ValueError, naming what is missing, where
    there is none with images (no data module, or a user's without `images_at`)."""
    if trainer.datamodule is None:
        raise ValueError("the run has no data module")
    loader = trainer.train_dataloader if trainer.training and trainer.train_dataloader is not None else None
    try:
        dataset = (loader or trainer.datamodule.train_dataloader()).dataset
    except (AttributeError, RuntimeError, TypeError, ValueError) as bad:  # a user's module not set up for it
        raise ValueError(f"the training images cannot be read ({type(bad).__name__}: {bad})") from None
    if not hasattr(dataset, "images_at"):
        raise ValueError("the training set has no images_at() method")
    return dataset


def first_samples(loader: Any) -> Any:
    """The (image, label) samples of a loader of batches, one by one."""
    for images, labels in loader:
        yield from zip(images, labels, strict=True)


def not_vae_data(datamodule: Any) -> str | None:
    """What `datamodule` lacks of `VAEData` (None: nothing)."""
    if isinstance(datamodule, VAEData):
        return None
    wanted = ("input_shape", "class_names", "default_attribute", "interpolation_ends")
    missing = [name for name in (*wanted, "diagnostic_samples", "test_factors") if not hasattr(datamodule, name)]
    return ", ".join(missing)


class PhotoSource(Protocol):
    """A folder of photos in a known layout, read into `Item`s (a path, a crop box, labels)."""

    name: str  # for messages and the preprocessing cache's file name, e.g. "dogs"

    def missing(self) -> DataNotFoundError | None:
        """What is wrong with the folder itself (absent, empty, an unknown or ambiguous layout), before any
        image is read; None when it can be read. Data modules report every source's problem at once."""

    def prepare(self) -> None:
        """Download the data if the source can and was asked to (once per node, in `prepare_data`)."""

    def items(self) -> list[Item]:
        """Every photo with its crop box and labels; logs which layout was found and how many images it took."""

    def test_paths(self) -> set[str] | None:
        """The paths of the official test split, where the layout has one."""

    def class_names(self) -> dict[int, str]:
        """The names of the labels of `items()` (the first label of each item is its batch label)."""


def require_present(source: PhotoSource) -> None:
    """Raise the source's `missing()` error, if it has one: what `items()` does before it reads anything."""
    problem = source.missing()
    if problem is not None:
        raise problem
