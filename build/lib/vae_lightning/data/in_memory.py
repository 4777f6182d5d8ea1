"""Data sets held as tensors, fetched a whole batch at a time, and the LightningDataModule base for them."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from vae_lightning.core import checks
from vae_lightning.data.protocol import VAEDataModule
from vae_lightning.data.samplers import EpochShuffle

log = logging.getLogger(__name__)
Batch = tuple[torch.Tensor, torch.Tensor]


class InMemoryDataset(Dataset):
    """Images (N, C, H, W), float in [0, 1] or uint8 (scaled to [0, 1] per batch), and integer labels (N,).

    `__getitems__` fetches a batch with one tensor index instead of one `__getitem__` per sample and a
    collate; `batch_transform` (e.g. dynamic binarisation) is applied to each fetched batch. `label_table`
    holds every label of each sample (N, K) where a set has several (age, gender, race).
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        label_table: torch.Tensor | None = None,
    ) -> None:
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images = images
        self.labels = labels
        self.batch_transform = batch_transform
        self.label_table = label_table

    def __len__(self) -> int:
        return len(self.images)

    def mean_image(self) -> torch.Tensor:
        """The mean of the images, (C, H, W) in [0, 1] (of the stored grey levels: before `batch_transform`,
        so the mean of dynamically binarised pixels too)."""
        total = self.images.sum(0, dtype=torch.float64)
        return (total / (len(self.images) * (255.0 if self.images.dtype == torch.uint8 else 1.0))).float()

    def images_at(self, index: torch.Tensor) -> torch.Tensor:
        """The images at `index` (a long tensor) in [0, 1], as stored: before `batch_transform`."""
        images = self.images.index_select(0, index)
        return images.float().div_(255.0) if images.dtype == torch.uint8 else images

    def __getitems__(self, indices: Sequence[int]) -> Batch:
        index = torch.as_tensor(indices, dtype=torch.long)
        images = self.images_at(index)
        if self.batch_transform is not None:
            images = self.batch_transform(images)
        return images, self.labels.index_select(0, index)

    def __getitem__(self, i: int) -> Batch:
        images, labels = self.__getitems__([i])
        return images[0], labels[0]

    def subset(self, index: torch.Tensor) -> InMemoryDataset:
        table = self.label_table[index] if self.label_table is not None else None
        return InMemoryDataset(self.images[index], self.labels[index], self.batch_transform, table)


def keep_batch(batch: Batch) -> Batch:
    """The collate function for `__getitems__` batches: they are already stacked."""
    return batch


def split_indices(n: int, fractions: Sequence[float], seed: int) -> list[torch.Tensor]:
    """A seeded random partition of range(n): one index tensor per fraction, the remainder first."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    sizes = [round(n * f) for f in fractions]
    return list(torch.split(order, [n - sum(sizes), *sizes]))


@dataclass(frozen=True)
class Attribute:
    """A property of each sample of a split, for the attribute morph (`morph mode=attribute attribute=NAME`):
    1 or 0 for has it or not (its direction: the mean code of those with it minus that of those without), or a
    quantity such as age (`numeric`: the regression direction of the codes on it). NaN: unknown."""

    values: torch.Tensor  # (N,) float
    numeric: bool = False


def one_vs_rest(labels: torch.Tensor, names: dict[int, str]) -> dict[str, Attribute]:
    """One attribute per named label: 1 for the samples with that label, 0 for the others (NaN: label < 0)."""
    known = labels >= 0
    unknown = torch.full(labels.shape, float("nan"))
    return {name: Attribute(torch.where(known, (labels == label).float(), unknown)) for label, name in names.items()}


class InMemoryDataModule(VAEDataModule):
    """Base class: subclasses load the splits in `load_splits` and declare `input_shape` (C, H, W).

    Training batches are shuffled per (seed, epoch); validation and test batches come in order. A batch size
    larger than the training split is cut to the split's size, with a warning.
    """

    def __init__(
        self, batch_size: int = 64, num_workers: int = 0, split_seed: int = 0, val_fraction: float = 0.1
    ) -> None:
        super().__init__()
        problems = checks.Problems()
        self.batch_size = problems.check(checks.positive_int, "batch_size", batch_size)
        self.num_workers = problems.check(checks.non_negative_int, "num_workers", num_workers)
        self.split_seed = problems.check(checks.non_negative_int, "split_seed", split_seed)
        self.val_fraction = problems.check(
            checks.number, "val_fraction", val_fraction, low=0.0, high=1.0, low_inclusive=False, high_inclusive=False
        )
        self.problems = problems  # subclasses add theirs, then call `self.problems.raise_if_any()`
        self.min_batches_per_epoch = 0  # see PhotoDataModule
        self.train_set: InMemoryDataset | None = None
        self.val_set: InMemoryDataset | None = None
        self.test_set: InMemoryDataset | None = None

    def load_splits(self) -> tuple[InMemoryDataset, InMemoryDataset, InMemoryDataset]:
        """(train, val, test) data sets; called once, in `setup`."""
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        self.train_set, self.val_set, self.test_set = self.load_splits()
        if self.batch_size > len(self.train_set):
            log.warning(
                "dataset.batch_size=%d is larger than the training split (%d samples): using batches of %d.",
                self.batch_size,
                len(self.train_set),
                len(self.train_set),
            )
            self.batch_size = len(self.train_set)

    def attributes(self, split: InMemoryDataset) -> dict[str, Attribute]:
        """The attributes each sample of `split` has (name -> `Attribute`), for the attribute morph; by default
        one per named class (`class_names`). Data sets with richer labels (ages, CelebA's 40) say more."""
        return one_vs_rest(split.labels, dict(self.class_names))

    def factors(self, split: InMemoryDataset) -> dict[str, torch.Tensor]:
        """Labelled factors of variation of each sample of `split` beyond its label (name -> (N,) int64 labels,
        negative where unknown), scored by `test/mig_<name>`; none by default (`test/mig` scores the label)."""
        return {}

    def test_factors(self) -> dict[str, torch.Tensor]:
        return self.factors(self._set_up(self.test_set))

    def diagnostic_samples(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The first `n` validation samples (images, labels): the same ones in every epoch and process, so that
        pictures of them compare across epochs. Subclasses with several domains mix them."""
        val = self._set_up(self.val_set)
        return val.__getitems__(range(min(n, len(val))))

    @staticmethod
    def data_seed() -> int:
        """The seed of the data order and of the workers: the run's seed (set by seed_everything before setup),
        never the global random state that training draws from."""
        return torch.initial_seed() % 2**31

    @staticmethod
    def _set_up(dataset: InMemoryDataset | None) -> InMemoryDataset:
        if dataset is None:
            raise RuntimeError("setup() must run before the data is asked for")
        return dataset

    def _loader(self, dataset: InMemoryDataset | None, sampler: Sampler | None = None, **batching) -> DataLoader:
        dataset = self._set_up(dataset)
        batching = batching or {"batch_size": self.batch_size, "sampler": sampler}
        return DataLoader(
            dataset,
            **batching,
            num_workers=self.num_workers,
            collate_fn=keep_batch,
            persistent_workers=self.num_workers > 0,
            generator=torch.Generator().manual_seed(self.data_seed()),
        )

    def train_dataloader(self) -> DataLoader:
        train = self._set_up(self.train_set)
        length = self.min_batches_per_epoch * self.batch_size
        return self._loader(train, EpochShuffle(len(train), self.data_seed(), length))

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set)
