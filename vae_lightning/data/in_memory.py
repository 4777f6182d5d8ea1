"""Data sets held as tensors, fetched a whole batch at a time, and the LightningDataModule base for them."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from lightning import LightningDataModule
from torch.utils.data import DataLoader, Dataset, Sampler

from vae_lightning import checks
from vae_lightning.errors import ConfigValueError

Batch = tuple[torch.Tensor, torch.Tensor]


class InMemoryDataset(Dataset):
    """Images (N, C, H, W), float in [0, 1] or uint8 (scaled to [0, 1] per batch), and integer labels (N,).

    `__getitems__` fetches a batch with one tensor index instead of one `__getitem__` per sample and a
    collate; `batch_transform` (e.g. dynamic binarisation) is applied to each fetched batch.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images = images
        self.labels = labels
        self.batch_transform = batch_transform
        self.label_table: torch.Tensor | None = None  # every label of each sample (N, K), where a set has several

    def __len__(self) -> int:
        return len(self.images)

    def __getitems__(self, indices: Sequence[int]) -> Batch:
        index = torch.as_tensor(indices, dtype=torch.long)
        images = self.images.index_select(0, index)  # 4x faster than images[index] for a batch of 32 MNIST images
        if images.dtype == torch.uint8:
            images = images.float().div_(255.0)
        if self.batch_transform is not None:
            images = self.batch_transform(images)
        return images, self.labels.index_select(0, index)

    def __getitem__(self, i: int) -> Batch:
        images, labels = self.__getitems__([i])
        return images[0], labels[0]

    def subset(self, index: torch.Tensor) -> InMemoryDataset:
        subset = InMemoryDataset(self.images[index], self.labels[index], self.batch_transform)
        if self.label_table is not None:
            subset.label_table = self.label_table[index]
        return subset


class EpochShuffle(Sampler[int]):
    """A random order of range(n) that depends only on (seed, epoch), not on the global random state.

    Lightning calls `set_epoch` before every epoch, also after resuming from a checkpoint, so a resumed run
    sees exactly the batches the uninterrupted run would have seen.
    """

    def __init__(self, n: int, seed: int) -> None:
        self.n = n
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def permutation(self) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return torch.randperm(self.n, generator=generator)

    def __iter__(self):
        return iter(self.permutation().tolist())

    def __len__(self) -> int:
        return self.n


class EpochBatches(Sampler[torch.Tensor]):
    """Index batches (tensors) of the (seed, epoch) permutation of EpochShuffle, for SampledBatches.

    Under DDP, `rank` takes every `world_size`-th sample of the permutation, padded by repeating its start so
    that every process has as many batches (as Lightning's DistributedSampler does for a DataLoader, which it
    does not build for SampledBatches).
    """

    def __init__(self, n: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1) -> None:
        self.shuffle = EpochShuffle(n, seed)
        self.batch_size = batch_size
        self.rank, self.world_size = rank, world_size
        self.per_process = math.ceil(n / world_size)

    def set_epoch(self, epoch: int) -> None:
        self.shuffle.set_epoch(epoch)

    def __len__(self) -> int:
        return math.ceil(self.per_process / self.batch_size)

    def __iter__(self):
        order = self.shuffle.permutation()
        total = self.per_process * self.world_size
        if total > len(order):
            order = order.repeat(math.ceil(total / len(order)))[:total]
        return iter(order[self.rank : total : self.world_size].split(self.batch_size))


class SampledBatches:
    """The batches of an in-memory data set at the index batches of `sampler` (a batch sampler with
    `set_epoch`, which Lightning calls before every epoch as it does for a DataLoader's sampler), without a
    DataLoader: each batch is one `index_select`. A DataLoader's sampler, fetcher and collate cost ~0.1 ms a
    batch in Lightning's loop, 3% of a step of the seed's MLP on a CPU."""

    def __init__(self, dataset: InMemoryDataset, sampler: Sampler) -> None:
        self.dataset = dataset
        self.sampler = sampler

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self):
        for index in self.sampler:
            yield self.dataset.__getitems__(index)


def keep_batch(batch: Batch) -> Batch:
    """The collate function for `__getitems__` batches: they are already stacked."""
    return batch


def split_indices(n: int, fractions: Sequence[float], seed: int) -> list[torch.Tensor]:
    """A seeded random partition of range(n): one index tensor per fraction, the remainder first."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    sizes = [round(n * f) for f in fractions]
    first = n - sum(sizes)
    return list(torch.split(order, [first, *sizes]))


class InMemoryDataModule(LightningDataModule):
    """Base class: subclasses load the splits in `load_splits` and declare `input_shape` (C, H, W)."""

    input_shape: tuple[int, int, int]
    class_names: dict[int, str] = {}  # label -> name, for legends (labels without a name show as numbers)

    def __init__(
        self, batch_size: int = 64, num_workers: int = 0, split_seed: int = 0, val_fraction: float = 0.1
    ) -> None:
        super().__init__()
        self.batch_size = checks.positive_int("batch_size", batch_size)
        self.num_workers = checks.non_negative_int("num_workers", num_workers)
        self.split_seed = checks.non_negative_int("split_seed", split_seed)
        self.val_fraction = checks.number(
            "val_fraction", val_fraction, low=0.0, high=1.0, low_inclusive=False, high_inclusive=False
        )
        self.train_set: InMemoryDataset | None = None
        self.val_set: InMemoryDataset | None = None
        self.test_set: InMemoryDataset | None = None

    def load_splits(self) -> tuple[InMemoryDataset, InMemoryDataset, InMemoryDataset]:
        """(train, val, test) data sets; called once, in `setup`."""
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is None:
            self.train_set, self.val_set, self.test_set = self.load_splits()
            if self.batch_size > len(self.train_set):
                raise ConfigValueError(
                    "dataset.batch_size",
                    f"is larger than the training split ({len(self.train_set)} samples)",
                    self.batch_size,
                )

    @staticmethod
    def data_seed() -> int:
        """The seed of the data order and of the workers: the run's seed (set by seed_everything before setup),
        never the global random state that training draws from."""
        return torch.initial_seed() % 2**31

    @staticmethod
    def _set_up(dataset: InMemoryDataset | None) -> InMemoryDataset:
        if dataset is None:
            raise RuntimeError("setup() must run before the data loaders are asked for")
        return dataset

    def _loader(
        self, dataset: InMemoryDataset | None, shuffle: bool = False, batch_sampler: Sampler[list[int]] | None = None
    ) -> DataLoader:
        """A loader of `dataset`: shuffled per (seed, epoch), in order, or batched by `batch_sampler`."""
        dataset = self._set_up(dataset)
        seed = self.data_seed()
        if batch_sampler is not None:
            sampling = {"batch_sampler": batch_sampler}
        else:
            sampling = {"batch_size": self.batch_size, "sampler": EpochShuffle(len(dataset), seed) if shuffle else None}
        return DataLoader(
            dataset,
            **sampling,
            num_workers=self.num_workers,
            collate_fn=keep_batch,
            persistent_workers=self.num_workers > 0,
            generator=torch.Generator().manual_seed(seed),
        )

    def train_dataloader(self) -> SampledBatches | DataLoader:
        """Shuffled batches; through a DataLoader only with `num_workers` > 0 (workers for a `batch_transform`)."""
        if self.num_workers > 0:
            return self._loader(self.train_set, shuffle=True)
        train = self._set_up(self.train_set)
        return SampledBatches(train, EpochBatches(len(train), self.batch_size, self.data_seed(), *self.process()))

    def process(self) -> tuple[int, int]:
        """(rank, world size) of this process in the trainer it is attached to; (0, 1) without one."""
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, shuffle=False)
