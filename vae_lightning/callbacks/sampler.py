"""The callback that fits the model's sampler (`sampler=gmm`) to the training images' codes: at the validations of
every `every_n_epochs`-th epoch and of the last one (before the pictures are drawn and the checkpoints saved),
at a validation of the final weights after training, and as the test starts (so that the test scores the
tested weights' own fit). A checkpoint of another epoch holds the fit of an earlier one (a fit costs an encoder
pass over the training images and an EM, seconds for MNIST)."""

from __future__ import annotations

import logging

import torch
from lightning import Callback, LightningModule, Trainer
from lightning.pytorch.trainer.states import TrainerFn

from vae_lightning.core import checks
from vae_lightning.data.protocol import training_images

log = logging.getLogger(__name__)

ENCODE_BATCH = 500


class FitSampler(Callback):
    """Fits `module.sampler` (where it `fits_codes`) to the codes (`PosteriorDistribution.code`: a Gaussian
    posterior's mean) of the training images as stored (the grey levels of binarised sets), at most `max_images`
    of them (the first ones), in eval mode. Costs one encoder pass over them per fit."""

    def __init__(self, every_n_epochs: int = 5, max_images: int = 20_000) -> None:
        self.every_n_epochs = checks.positive_int("every_n_epochs", every_n_epochs)
        self.max_images = checks.positive_int("max_images", max_images)

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        epoch, max_epochs, max_steps = trainer.current_epoch + 1, trainer.max_epochs, trainer.max_steps
        last = (max_epochs not in (None, -1) and epoch >= max_epochs) or (0 < max_steps <= trainer.global_step)
        due = epoch % self.every_n_epochs == 0 or last or trainer.state.fn != TrainerFn.FITTING  # or a validate()
        if due and not trainer.sanity_checking:
            self.fit(trainer, pl_module)

    def on_test_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.fit(trainer, pl_module)

    def fit(self, trainer: Trainer, pl_module: LightningModule) -> None:
        sampler = getattr(pl_module, "sampler", None)
        if sampler is None or not sampler.fits_codes:
            return
        try:
            dataset = training_images(trainer)
        except ValueError as missing:
            log.warning("sampler: %s; samples still come from the prior", missing)
            return
        n = min(len(dataset), self.max_images)
        was_training = pl_module.training
        pl_module.eval()
        try:
            with torch.inference_mode(False), torch.no_grad():
                batches = (
                    dataset.images_at(torch.arange(i, min(i + ENCODE_BATCH, n))) for i in range(0, n, ENCODE_BATCH)
                )
                codes = [pl_module.net.infer(x.to(pl_module.device)).code for x in batches]
            sampler.fit(torch.cat(codes))
        finally:
            pl_module.train(was_training)
