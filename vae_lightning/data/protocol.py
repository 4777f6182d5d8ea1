"""What a source of photos provides to the photo data modules (`UTKFaceSource`, `DogsSource`)."""

from __future__ import annotations

from typing import Protocol

from vae_lightning.core.errors import DataNotFoundError
from vae_lightning.data.images import Item


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
