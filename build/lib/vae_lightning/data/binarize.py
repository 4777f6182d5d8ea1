"""Binarisation of grey-level images in [0, 1]. One class per `conf/dataset/binarize/*.yaml`.

Each has `fixed(images, train, seed)`, applied once to a split when it is loaded, and `train_transform`,
applied to every fetched training batch (or None).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

BatchTransform = Callable[[torch.Tensor], torch.Tensor] | None


def sample_once(images: torch.Tensor, seed: int) -> torch.Tensor:
    """Each pixel drawn as Bernoulli(grey level) with a seeded generator."""
    return torch.bernoulli(images, generator=torch.Generator().manual_seed(seed))


class NoBinarization:
    """Keep the grey levels."""

    train_transform: BatchTransform = None

    def fixed(self, images: torch.Tensor, train: bool, seed: int) -> torch.Tensor:
        return images


class StaticBinarization:
    """Every split is drawn once, seeded, and kept for all epochs."""

    train_transform: BatchTransform = None

    def fixed(self, images: torch.Tensor, train: bool, seed: int) -> torch.Tensor:
        return sample_once(images, seed)


class DynamicBinarization:
    """Training batches are drawn afresh each time they are fetched (the usual set-up for MNIST likelihood
    benchmarks); validation and test splits are drawn once, seeded, so their metrics compare across epochs."""

    train_transform: BatchTransform = staticmethod(torch.bernoulli)

    def fixed(self, images: torch.Tensor, train: bool, seed: int) -> torch.Tensor:
        return images if train else sample_once(images, seed)
