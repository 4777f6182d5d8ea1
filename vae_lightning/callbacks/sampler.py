"""The callback that fits the model's sampler (`sampler=gmm`) to the training images' codes at every validation,
before the pictures are drawn and the checkpoints saved, so that each checkpoint holds the fit of its own
weights and the final weights (validated once more at the end of training) carry theirs."""

from __future__ import annotations

import logging

import torch
from lightning import Callback, LightningModule, Trainer

log = logging.getLogger(__name__)

ENCODE_BATCH = 500


class FitSampler(Callback):
    """Fits `module.sampler` (where it `fits_codes`) to the codes (`PosteriorDistribution.code`: a Gaussian
    posterior's mean) of the training images as stored (the grey levels of binarised sets), at most `max_images`
    of them (the first ones), in eval mode. Costs one encoder pass over them per validation."""

    def __init__(self, max_images: int = 50_000) -> None:
        self.max_images = max_images

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        sampler = getattr(pl_module, "sampler", None)
        if trainer.sanity_checking or sampler is None or not sampler.fits_codes:
            return
        loader = trainer.train_dataloader or trainer.datamodule.train_dataloader()
        dataset = loader.dataset
        if not hasattr(dataset, "images_at"):
            log.warning("sampler: the training set has no images_at() method; samples still come from the prior")
            return
        n = min(len(dataset), self.max_images)
        was_training = pl_module.training
        pl_module.eval()
        try:
            with torch.no_grad():
                batches = (
                    dataset.images_at(torch.arange(i, min(i + ENCODE_BATCH, n))) for i in range(0, n, ENCODE_BATCH)
                )
                codes = [pl_module.net.infer(x.to(pl_module.device)).code for x in batches]
            sampler.fit(torch.cat(codes))
        finally:
            pl_module.train(was_training)
