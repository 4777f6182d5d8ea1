"""The orders in which training batches are drawn. Each depends only on (seed, epoch), not on the global random
state, so a resumed run sees exactly the batches the uninterrupted run would have seen: Lightning calls
`set_epoch` on a loader's sampler and batch sampler before every epoch, also after resuming."""

from __future__ import annotations

import math

import torch
from torch.utils.data import BatchSampler, Sampler


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 100_003 + epoch)


class EpochShuffle(Sampler[int]):
    """A random order of range(n) for each epoch; with `length` > n, as many reshuffled passes as it takes."""

    def __init__(self, n: int, seed: int, length: int | None = None) -> None:
        self.n = n
        self.seed = seed
        self.length = max(n, length or 0)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        generator = epoch_generator(self.seed, self.epoch)
        passes = [torch.randperm(self.n, generator=generator) for _ in range(math.ceil(self.length / self.n))]
        return iter(torch.cat(passes)[: self.length].tolist())

    def __len__(self) -> int:
        return self.length


class BalancedBatches(BatchSampler):
    """Batches with an equal share of each group (`domain`, a group label per sample; faces and dogs: half
    humans, half dogs), the groups in ascending label order within a batch. An epoch covers the largest group
    once (or draws `min_batches` batches, if that is more); smaller ones are reshuffled as often as needed.

    `sampler` says which samples this process may use: all of them (a SequentialSampler), or under DDP the
    DistributedSampler share that Lightning injects through this argument (it re-creates BatchSampler subclasses
    made in a `*_dataloader` hook with their arguments). Every process yields the same number of batches,
    computed from the whole set, so no process waits for another at the end of an epoch.
    """

    def __init__(
        self, sampler: Sampler[int], domain: torch.Tensor, batch_size: int, seed: int, min_batches: int = 0
    ) -> None:
        super().__init__(sampler, batch_size, drop_last=False)
        self.domain = domain
        self.groups = domain.unique().tolist()
        self.share = max(1, batch_size // max(1, len(self.groups)))
        self.seed = seed
        self.min_batches = min_batches
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if callable(getattr(self.sampler, "set_epoch", None)):
            self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        processes = getattr(self.sampler, "num_replicas", 1)
        largest = max((int((self.domain == g).sum()) for g in self.groups), default=0)
        return max(math.ceil(largest / processes / self.share), self.min_batches)

    @staticmethod
    def _stream(indices: torch.Tensor, generator: torch.Generator, needed: int) -> torch.Tensor:
        rounds = math.ceil(needed / len(indices))
        return torch.cat([indices[torch.randperm(len(indices), generator=generator)] for _ in range(rounds)])[:needed]

    def __iter__(self):
        generator = epoch_generator(self.seed, self.epoch)
        allowed = torch.as_tensor(list(self.sampler), dtype=torch.long)
        needed = len(self) * self.share
        pools = [allowed[self.domain[allowed] == g] for g in self.groups]
        # a process whose share lacks a group (a tiny set under DDP) fills that group's part from what it has
        streams = [self._stream(pool if len(pool) else allowed, generator, needed) for pool in pools]
        for b in range(len(self)):
            part = slice(b * self.share, (b + 1) * self.share)
            yield torch.cat([stream[part] for stream in streams]).tolist()
