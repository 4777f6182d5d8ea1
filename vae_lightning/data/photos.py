"""The base of the photo data modules (UTKFace, dogs, faces + dogs): shared preprocessing and stratified splits.

Preprocessing: a square crop (face box, or centre), resized with antialiasing to `image_size`, optionally grey,
stored as uint8 in a cache under `cache_dir` (see `cache.py`) and scaled to [0, 1] per batch.
"""

from __future__ import annotations

import torch

from vae_lightning.core import checks
from vae_lightning.core.errors import ConfigValueError
from vae_lightning.data.cache import Preprocessed, cached_preprocess
from vae_lightning.data.in_memory import InMemoryDataModule, InMemoryDataset
from vae_lightning.data.protocol import PhotoSource

MIN_IMAGE_SIZE = 8


def _held_out_sizes(n: int, val_fraction: float, test_fraction: float) -> tuple[int, int]:
    """(val, test) sizes for a group of n: proportional, at least one each where the group allows it."""
    n_val, n_test = round(n * val_fraction), round(n * test_fraction)
    if n >= 3:
        return max(n_val, 1), max(n_test, 1) if test_fraction > 0 else 0
    return (1, 0) if n == 2 else (0, 0)


def stratified_split(
    groups: torch.Tensor, labels: torch.Tensor, val_fraction: float, test_fraction: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(train, val, test) indices. Each group (e.g. humans and dogs) is split in the given proportions, with at
    least one sample in each split when the group has three (two: train and val; one: train); within a group
    the picks are spread evenly over its samples ordered by label, so each split holds the labels in proportion.
    Seeded: the same inputs give the same split."""
    generator = torch.Generator().manual_seed(seed)
    parts: tuple[list[torch.Tensor], ...] = ([], [], [])
    for group in groups.unique().tolist():
        members = torch.nonzero(groups == group).flatten()
        shuffled = members[torch.randperm(len(members), generator=generator)]
        ordered = shuffled[torch.argsort(labels[shuffled], stable=True)]  # by label, random within a label
        n_val, n_test = _held_out_sizes(len(ordered), val_fraction, test_fraction)
        held = n_val + n_test
        positions = ((torch.arange(held) + 0.5) * len(ordered) / max(held, 1)).long().tolist()
        val = positions[0::2][:n_val]  # every other position, topped up from the others if val needs more
        val += positions[1::2][: n_val - len(val)]
        test = sorted(set(positions) - set(val))
        train = torch.ones(len(ordered), dtype=torch.bool)
        train[positions] = False
        for part, chosen in zip(parts, (ordered[train], ordered[val], ordered[test]), strict=True):
            part.append(chosen)
    return tuple(torch.cat(part).sort().values for part in parts)  # type: ignore[return-value]


class PhotoDataModule(InMemoryDataModule):
    """Base class: a preprocessed set of photos split into train/val/test (an official test list if the source
    has one, else a seeded `test_fraction`; val is a seeded share of the rest), stratified by label.

    `preprocess_workers`: processes that decode and crop the photos once, into the cache (0: one per core);
    `num_workers`: DataLoader workers that feed the training batches (0: in the training process).
    `min_batches_per_epoch`: an epoch of a small training split draws at least this many batches, reshuffling the
    split as often as needed, so that a folder of a few dozen of one's own photos trains for a few hundred steps
    in the default number of epochs (a convolutional VAE needs about that many before its decoder uses z).
    """

    def __init__(
        self,
        cache_dir: str,
        image_size: int = 64,
        grayscale: bool = False,
        margin: float = 0.1,
        preprocess_workers: int = 0,
        batch_size: int = 64,
        num_workers: int = 0,
        split_seed: int = 0,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        min_batches_per_epoch: int = 10,
    ) -> None:
        super().__init__(batch_size, num_workers, split_seed, val_fraction)
        problems = self.problems
        self.min_batches_per_epoch = problems.check(
            checks.non_negative_int, "min_batches_per_epoch", min_batches_per_epoch
        )
        self.cache_dir = cache_dir
        self.image_size = problems.check(checks.integer, "image_size", image_size, low=MIN_IMAGE_SIZE)
        self.grayscale = problems.check(checks.boolean, "grayscale", grayscale)
        self.margin = problems.check(checks.number, "margin", margin, low=0.0, high=2.0)
        self.preprocess_workers = problems.check(checks.non_negative_int, "preprocess_workers", preprocess_workers)
        self.test_fraction = problems.check(
            checks.number, "test_fraction", test_fraction, low=0.0, high=0.5, low_inclusive=False
        )
        self.input_shape = (1 if self.grayscale else 3, image_size, image_size)

    def load_source(self, source: PhotoSource) -> Preprocessed:
        params = {"image_size": self.image_size, "grayscale": self.grayscale, "margin": self.margin}
        return cached_preprocess(source.name, source.items(), params, self.cache_dir, self.preprocess_workers)

    def split(
        self,
        data: Preprocessed,
        labels: torch.Tensor,
        test_paths: set[str] | None,
        groups: torch.Tensor | None = None,
        spread: torch.Tensor | None = None,
    ) -> tuple[InMemoryDataset, InMemoryDataset, InMemoryDataset]:
        """The three splits of `data` with batch label `labels`: each of `groups` (e.g. the domains human and
        dog; default: one group) split in proportion, and within a group spread over `spread` (default: the
        labels; the breeds of the dogs, the genders of the faces), so that every split holds them in proportion."""
        everything = InMemoryDataset(data.images, labels, label_table=data.labels)
        groups = torch.zeros_like(labels) if groups is None else groups
        spread = labels if spread is None else spread
        if test_paths:
            is_test = torch.tensor([p in test_paths for p in data.paths], dtype=torch.bool)
            pool = torch.nonzero(~is_test).flatten()
            train, val, _ = stratified_split(groups[pool], spread[pool], self.val_fraction, 0.0, self.split_seed)
            train, val, test = pool[train], pool[val], torch.nonzero(is_test).flatten()
        else:
            train, val, test = stratified_split(groups, spread, self.val_fraction, self.test_fraction, self.split_seed)
        if len(train) == 0 or len(val) == 0 or len(test) == 0:
            raise ConfigValueError(
                "dataset.val_fraction",
                f"leaves an empty split of {len(everything)} images (train {len(train)}, val {len(val)}, test "
                f"{len(test)}); at least 3 images are needed",
                self.val_fraction,
            )
        return everything.subset(train), everything.subset(val), everything.subset(test)
