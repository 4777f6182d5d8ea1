"""The embedded default: scikit-learn's bundled 8x8 handwritten digits (1,797 real samples, no download)."""

from __future__ import annotations

import torch
from sklearn.datasets import load_digits

from vae_lightning.core import checks
from vae_lightning.data.in_memory import InMemoryDataModule, InMemoryDataset, split_indices

_MAX_GREY_LEVEL = 16.0  # the digits' pixels are counts 0..16


class DigitsDataModule(InMemoryDataModule):
    """8x8 grey digits scaled to [0, 1], labels 0-9; seeded train/val/test split (the set has no official one)."""

    input_shape = (1, 8, 8)
    class_names = {digit: str(digit) for digit in range(10)}  # also the attributes a morph can move along

    def __init__(
        self,
        batch_size: int = 64,
        num_workers: int = 0,
        split_seed: int = 0,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
    ) -> None:
        super().__init__(batch_size, num_workers, split_seed, val_fraction)
        self.test_fraction = self.problems.check(
            checks.number, "test_fraction", test_fraction, low=0.0, high=0.5, low_inclusive=False
        )
        self.problems.raise_if_any()

    def load_splits(self) -> tuple[InMemoryDataset, InMemoryDataset, InMemoryDataset]:
        digits = load_digits()
        images = torch.from_numpy(digits.images).float().div_(_MAX_GREY_LEVEL).unsqueeze(1)
        everything = InMemoryDataset(images.contiguous(), torch.from_numpy(digits.target).long())
        train, val, test = split_indices(len(everything), [self.val_fraction, self.test_fraction], self.split_seed)
        return everything.subset(train), everything.subset(val), everything.subset(test)
