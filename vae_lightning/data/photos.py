"""LightningDataModules of photos: UTKFace faces, dog faces, and the mixed faces + dogs set.

Shared preprocessing: a square crop (face box, or centre), resized with antialiasing to `image_size`,
optionally grey, stored as uint8 in a cache under `cache_dir` (see `cache.py`) and scaled to [0, 1] per batch.
"""

from __future__ import annotations

import logging
import math

import torch
from torch.utils.data import BatchSampler, DataLoader, DistributedSampler, Sampler, SequentialSampler

from vae_lightning import checks
from vae_lightning.data.cache import Preprocessed, cached_preprocess
from vae_lightning.data.dogs import DogsSource
from vae_lightning.data.in_memory import InMemoryDataModule, InMemoryDataset, SampledBatches, split_indices
from vae_lightning.data.utkface import UTKFaceSource
from vae_lightning.errors import ConfigValueError

log = logging.getLogger(__name__)

HUMAN, DOG = 0, 1
DOMAIN_NAMES = ("human", "dog")


class PhotoDataModule(InMemoryDataModule):
    """Base class: a preprocessed set of photos split into train/val/test (an official test list if the
    source has one, else a seeded `test_fraction`; val is a seeded share of the rest)."""

    def __init__(
        self,
        cache_dir: str,
        image_size: int = 64,
        grayscale: bool = False,
        margin: float = 0.1,
        workers: int = 0,
        batch_size: int = 64,
        num_workers: int = 0,
        split_seed: int = 0,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
    ) -> None:
        super().__init__(batch_size, num_workers, split_seed, val_fraction)
        self.cache_dir = cache_dir
        self.image_size = checks.positive_int("image_size", image_size)
        if self.image_size < 8:
            raise ConfigValueError("image_size", "must be at least 8 pixels", image_size)
        self.grayscale = bool(grayscale)
        self.margin = checks.number("margin", margin, low=0.0, high=2.0)
        self.workers = checks.non_negative_int("workers", workers)
        self.test_fraction = checks.number("test_fraction", test_fraction, low=0.0, high=0.5, low_inclusive=False)
        self.input_shape = (1 if self.grayscale else 3, self.image_size, self.image_size)
        self.label_names: tuple[str, ...] = ()

    @property
    def params(self) -> dict:
        return {"image_size": self.image_size, "grayscale": self.grayscale, "margin": self.margin}

    def _load_source(self, source) -> Preprocessed:
        items = source.items()
        return cached_preprocess(
            source.name, items, self.params | {"source": source.name}, self.cache_dir, self.workers
        )

    def _split(
        self,
        data: Preprocessed,
        test_paths: set[str] | None,
        primary_label: int,
        extra_labels: torch.Tensor | None = None,
    ) -> tuple[InMemoryDataset, InMemoryDataset, InMemoryDataset]:
        labels = data.labels[:, primary_label] if extra_labels is None else extra_labels
        everything = InMemoryDataset(data.images, labels)
        everything.label_table = data.labels
        if test_paths:
            is_test = torch.tensor([p in test_paths for p in data.paths], dtype=torch.bool)
            pool, test = torch.nonzero(~is_test).flatten(), torch.nonzero(is_test).flatten()
            order = pool[torch.randperm(len(pool), generator=torch.Generator().manual_seed(self.split_seed))]
            n_val = round(len(order) * self.val_fraction)
            train, val = order[n_val:], order[:n_val]
        else:
            train, val, test = split_indices(len(everything), [self.val_fraction, self.test_fraction], self.split_seed)
        if min(len(train), len(val), len(test)) == 0:
            raise ConfigValueError(
                "dataset.val_fraction",
                f"leaves an empty split of {len(everything)} images "
                f"(train {len(train)}, val {len(val)}, test {len(test)})",
                self.val_fraction,
            )
        return everything.subset(train), everything.subset(val), everything.subset(test)


class UTKFaceDataModule(PhotoDataModule):
    """UTKFace faces; the batch label is gender (-1 unknown); age and race stay in `label_table`."""

    def __init__(self, root: str, cache_dir: str, landmarks: str | None = None, **kwargs) -> None:
        super().__init__(cache_dir, **kwargs)
        self.source = UTKFaceSource(root, landmarks)
        self.label_names = self.source.label_names
        self.class_names = {0: "male", 1: "female", -1: "gender unknown"}

    def load_splits(self):
        return self._split(self._load_source(self.source), None, primary_label=1)


class DogsDataModule(PhotoDataModule):
    """Dog faces (CU Dogs, Oxford-IIIT Pet or a plain folder); the batch label is the breed."""

    def __init__(self, root: str, cache_dir: str, download: bool = False, **kwargs) -> None:
        super().__init__(cache_dir, **kwargs)
        self.source = DogsSource(root, download)
        self.label_names = self.source.label_names

    def prepare_data(self) -> None:
        self.source.prepare()

    def load_splits(self):
        data = self._load_source(self.source)
        self.class_names = dict(self.source.breeds)
        return self._split(data, self.source.test_paths(), primary_label=0)


class BalancedBatches(BatchSampler):
    """Batches of half humans, half dogs; the order depends only on (seed, epoch). An epoch covers the larger
    domain once; the smaller one is reshuffled as often as needed.

    `sampler` says which samples this process may use: all of them (a SequentialSampler), or under DDP the
    DistributedSampler share that Lightning injects through this argument (it re-creates BatchSampler subclasses
    made in a `*_dataloader` hook with their arguments). Every process yields the same number of batches,
    computed from the whole set, so no process waits for another at the end of an epoch.
    """

    def __init__(self, sampler: Sampler[int], domain: torch.Tensor, batch_size: int, seed: int) -> None:
        super().__init__(sampler, batch_size, drop_last=False)
        self.domain = domain
        self.half = max(1, batch_size // 2)
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if callable(getattr(self.sampler, "set_epoch", None)):
            self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        processes = getattr(self.sampler, "num_replicas", 1)
        largest = max(int((self.domain == d).sum()) for d in (HUMAN, DOG))
        return math.ceil(largest / processes / self.half)

    def _stream(self, indices: torch.Tensor, generator: torch.Generator, needed: int) -> torch.Tensor:
        rounds = math.ceil(needed / len(indices))
        return torch.cat([indices[torch.randperm(len(indices), generator=generator)] for _ in range(rounds)])[:needed]

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        allowed = torch.as_tensor(list(self.sampler), dtype=torch.long)
        needed = len(self) * self.half
        humans, dogs = (self._stream(allowed[self.domain[allowed] == d], generator, needed) for d in (HUMAN, DOG))
        for b in range(len(self)):
            part = slice(b * self.half, (b + 1) * self.half)
            yield torch.cat([humans[part], dogs[part]]).tolist()


class FacesDogsDataModule(PhotoDataModule):
    """The seed's mixed set: `n_per_domain` human faces and as many dog faces (fewer if fewer exist), labels
    0 human / 1 dog (the source labels stay in `label_table`), each training batch balanced between them."""

    label_names = ("domain",)
    class_names = dict(enumerate(DOMAIN_NAMES))

    def __init__(
        self, faces: UTKFaceSource, dogs: DogsSource, cache_dir: str, n_per_domain: int = 3500, **kwargs
    ) -> None:
        super().__init__(cache_dir, **kwargs)
        self.faces, self.dogs = faces, dogs
        self.n_per_domain = checks.positive_int("n_per_domain", n_per_domain)

    def prepare_data(self) -> None:
        self.dogs.prepare()

    def _take(self, data: Preprocessed, name: str) -> Preprocessed:
        if len(data.paths) < self.n_per_domain:
            log.warning(
                "faces_dogs: only %d %s images are available (n_per_domain=%d); using all of them.",
                len(data.paths),
                name,
                self.n_per_domain,
            )
            return data
        keep = torch.randperm(len(data.paths), generator=torch.Generator().manual_seed(self.split_seed))
        keep = keep[: self.n_per_domain].sort().values
        return Preprocessed(data.images[keep], data.labels[keep], [data.paths[i] for i in keep], data.skipped)

    def load_splits(self):
        faces = self._take(self._load_source(self.faces), "human")
        dogs = self._take(self._load_source(self.dogs), "dog")
        domain = torch.cat([torch.full((len(faces.paths),), HUMAN), torch.full((len(dogs.paths),), DOG)])
        width = max(faces.labels.shape[1], dogs.labels.shape[1])
        source_labels = torch.full((len(domain), width), -1, dtype=torch.long)
        source_labels[: len(faces.paths), : faces.labels.shape[1]] = faces.labels
        source_labels[len(faces.paths) :, : dogs.labels.shape[1]] = dogs.labels
        merged = Preprocessed(torch.cat([faces.images, dogs.images]), source_labels, faces.paths + dogs.paths, [])
        return self._split(merged, None, primary_label=0, extra_labels=domain)

    def train_dataloader(self) -> SampledBatches | DataLoader:
        """Balanced batches; through a DataLoader only with `num_workers` > 0, where Lightning injects the
        DistributedSampler share under DDP. Without one, the share is made here as Lightning would make it."""
        train = self._set_up(self.train_set)
        if self.num_workers > 0:
            sampler = BalancedBatches(SequentialSampler(train), train.labels, self.batch_size, self.data_seed())
            return self._loader(train, batch_sampler=sampler)
        rank, world_size = self.process()
        share = SequentialSampler(train) if world_size == 1 else DistributedSampler(train, world_size, rank, False)
        return SampledBatches(train, BalancedBatches(share, train.labels, self.batch_size, self.data_seed()))
