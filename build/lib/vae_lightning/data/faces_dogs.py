"""The seed's mixed set of human faces (UTKFace) and dog faces, labelled by domain."""

from __future__ import annotations

import logging

import torch
from torch.utils.data import DataLoader, SequentialSampler

from vae_lightning.core import checks
from vae_lightning.data.cache import Preprocessed
from vae_lightning.data.dogs import DogsSource
from vae_lightning.data.in_memory import Attribute, InMemoryDataset, one_vs_rest
from vae_lightning.data.photos import PhotoDataModule
from vae_lightning.data.samplers import BalancedBatches
from vae_lightning.data.utkface import UTKFaceSource, utkface_attributes, utkface_factors

log = logging.getLogger(__name__)

HUMAN, DOG = 0, 1
DOMAIN_NAMES = {HUMAN: "human", DOG: "dog"}


class FacesDogsDataModule(PhotoDataModule):
    """`n_per_domain` human faces and as many dog faces (fewer if fewer exist), labels 0 human / 1 dog (the
    source labels stay in `label_table`). Splits are stratified by domain and source label, so validation and
    test hold both; each training batch is half humans, half dogs."""

    class_names = DOMAIN_NAMES
    default_attribute = "dog"  # the seed's morph: a friend into a dog
    interpolation_ends = (HUMAN, DOG)  # interpolations go from a human (left) to a dog (right)

    def __init__(
        self, faces: UTKFaceSource, dogs: DogsSource, cache_dir: str, n_per_domain: int = 3500, **kwargs
    ) -> None:
        super().__init__(cache_dir, **kwargs)
        self.faces, self.dogs = faces, dogs
        self.n_per_domain = self.problems.check(checks.positive_int, "n_per_domain", n_per_domain)
        for source in (faces, dogs):
            problem = source.missing()
            if problem is not None:
                self.problems.add(problem)
        self.problems.raise_if_any()

    def prepare_data(self) -> None:
        self.dogs.prepare()

    def _take(self, data: Preprocessed, name: str) -> Preprocessed:
        if len(data.paths) < self.n_per_domain:
            log.info(
                "faces_dogs: %d %s images (fewer than n_per_domain=%d): using all.",
                len(data.paths),
                name,
                self.n_per_domain,
            )
            return data
        keep = torch.randperm(len(data.paths), generator=torch.Generator().manual_seed(self.split_seed))
        keep = keep[: self.n_per_domain].sort().values
        return Preprocessed(data.images[keep], data.labels[keep], [data.paths[i] for i in keep], data.skipped)

    def load_splits(self):
        faces = self._take(self.load_source(self.faces), "human")
        dogs = self._take(self.load_source(self.dogs), "dog")
        domain = torch.cat([torch.full((len(faces.paths),), HUMAN), torch.full((len(dogs.paths),), DOG)])
        width = max(faces.labels.shape[1], dogs.labels.shape[1])
        source_labels = torch.full((len(domain), width), -1, dtype=torch.long)
        source_labels[: len(faces.paths), : faces.labels.shape[1]] = faces.labels
        source_labels[len(faces.paths) :, : dogs.labels.shape[1]] = dogs.labels
        merged = Preprocessed(torch.cat([faces.images, dogs.images]), source_labels, faces.paths + dogs.paths, [])
        # stratified by domain; within a domain spread over gender (faces) or breed (dogs)
        spread = torch.where(domain == HUMAN, source_labels[:, min(1, width - 1)], source_labels[:, 0])
        return self.split(merged, domain, test_paths=None, groups=domain, spread=spread)

    def attributes(self, split: InMemoryDataset) -> dict[str, Attribute]:
        """`dog` (the seed's "friend into dog"; the default of `morph mode=attribute`), `human`, and among the
        humans UTKFace's `age`, `female`, `male` and races (unknown for the dogs)."""
        domains = one_vs_rest(split.labels, {DOG: "dog", HUMAN: "human"})
        faces = utkface_attributes(split.label_table[:, :3])
        dogs = split.labels == DOG
        for attribute in faces.values():
            attribute.values[dogs] = float("nan")
        return domains | faces

    def factors(self, split: InMemoryDataset) -> dict[str, torch.Tensor]:
        """Among the humans UTKFace's `age` (in decades), `gender` and `race`; among the dogs the `breed`."""
        dogs = split.labels == DOG
        faces = {name: labels.masked_fill(dogs, -1) for name, labels in utkface_factors(split.label_table).items()}
        return faces | {"breed": split.label_table[:, 0].masked_fill(~dogs, -1)}

    def diagnostic_samples(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Humans and dogs alternately from the start of the validation split (as many of each as there are)."""
        val = self._set_up(self.val_set)
        humans, dogs = (torch.nonzero(val.labels == d).flatten().tolist() for d in (HUMAN, DOG))
        order = [i for pair in zip(humans, dogs, strict=False) for i in pair]
        order += humans[len(order) // 2 :] + dogs[len(order) // 2 :]
        return val.__getitems__(order[:n])

    def train_dataloader(self) -> DataLoader:
        """Balanced batches; under DDP, Lightning hands each process its share through the batch sampler."""
        train = self._set_up(self.train_set)
        sampler = BalancedBatches(
            SequentialSampler(train), train.labels, self.batch_size, self.data_seed(), self.min_batches_per_epoch
        )
        return self._loader(train, batch_sampler=sampler)
