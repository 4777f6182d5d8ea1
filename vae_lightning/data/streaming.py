"""The classes built on litdata for `dataset=shards` (imported only where litdata is installed)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from litdata import StreamingDataLoader, StreamingDataset


def to_pair(sample: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """A stored sample as the model takes it: the image in [0, 1] (float) and its label."""
    image = torch.as_tensor(np.asarray(sample["image"])).float().div_(255.0)
    return image, torch.as_tensor(int(sample["label"]), dtype=torch.long)


class ImageShards(StreamingDataset):
    """One split of a shard folder as (image, label) pairs, with what the model's parts read of a training set
    (`images_at`, `mean_image`, `labels`)."""

    def __init__(
        self,
        where: str,
        labels: list[int],
        shuffle: bool,
        seed: int,
        table: list[list[int]] | None = None,
        storage_options: dict[str, Any] | None = None,
    ) -> None:
        """`where`: the split's folder or URL; `storage_options`: litdata's, for a URL."""
        super().__init__(where, shuffle=shuffle, seed=seed, transform=to_pair, storage_options=storage_options or {})
        self.labels = torch.tensor(labels, dtype=torch.long)
        # each sample's full labels (UTKFace's, CelebA's) in the stored order, where the shards keep them
        self.label_table = torch.tensor(table, dtype=torch.long).view(len(labels), -1) if table else None

    def images_at(self, index: torch.Tensor) -> torch.Tensor:
        """The images at `index` (a long tensor), (len(index), C, H, W) in [0, 1]."""
        return torch.stack([self[int(i)][0] for i in index]) if len(index) else torch.zeros(0)

    def __getitems__(self, indices) -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.as_tensor(list(indices), dtype=torch.long)
        return self.images_at(index), self.labels.index_select(0, index)

    def mean_image(self, batch: int = 256) -> torch.Tensor:
        """The mean of the split's images (C, H, W), in one pass that holds one batch at a time."""
        total, n = None, len(self)
        for start in range(0, n, batch):
            images = self.images_at(torch.arange(start, min(start + batch, n))).sum(0, dtype=torch.float64)
            total = images if total is None else total + images
        return (total / max(n, 1)).float()


class EpochLoader(StreamingDataLoader):
    """litdata's loader, resumed from a checkpoint for one epoch only. A loader given a saved state replays the
    rest of that epoch from it, and keeps replaying it until an iteration runs to its end, which Lightning's
    resumed epoch does not (it stops at the epoch's batch count): so once an iteration has replayed the saved
    state, the next one starts the next epoch. Whether an iteration replays is known when it starts (its first
    batch), not when it is made: Lightning makes the first iterator before the checkpoint is read."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.replayed = False

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.replayed = False

    def __iter__(self) -> Any:
        if self.restore and self.replayed:
            self.restore = False  # the saved state was replayed: this is the next epoch
        return self._epoch(super().__iter__())

    def _epoch(self, batches: Any) -> Any:
        self.replayed = self.replayed or self.restore
        yield from batches
