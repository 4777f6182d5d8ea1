"""TensorBoard image grids: reconstructions of a fixed validation batch, and samples from the prior."""

from __future__ import annotations

import torch
from lightning import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only

from vae_lightning import checks
from vae_lightning.callbacks.grid import make_grid


def tensorboard_writers(trainer: Trainer) -> list:
    return [logger.experiment for logger in trainer.loggers if isinstance(logger, TensorBoardLogger)]


class ImageLogger(Callback):
    """Logs `val/reconstructions` (inputs in the top row of each pair, reconstructions below) and
    `val/samples` (decodes of z ~ N(0, I), the same z every time) every `every_n_epochs` epochs."""

    def __init__(self, n_images: int = 16, every_n_epochs: int = 1, sample_seed: int = 0) -> None:
        self.n_images = checks.positive_int("n_images", n_images)
        self.every_n_epochs = checks.positive_int("every_n_epochs", every_n_epochs)
        self.sample_seed = sample_seed
        self._fixed_batch: torch.Tensor | None = None

    def _fixed_inputs(self, trainer: Trainer) -> torch.Tensor:
        if self._fixed_batch is None:
            loader = trainer.val_dataloaders
            images, _ = next(iter(loader))
            self._fixed_batch = images[: self.n_images].clone()
        return self._fixed_batch

    @torch.no_grad()
    def pictures(self, trainer: Trainer, module: LightningModule) -> dict[str, torch.Tensor]:
        """The grids, each (C, H, W) in [0, 1]."""
        x = self._fixed_inputs(trainer).to(module.device)
        posterior = module.net.encode(x)
        recon = module.decode_image(posterior.loc)
        n_cols = min(8, len(x))
        pairs = []
        for start in range(0, len(x), n_cols):
            pairs += [x[start : start + n_cols], recon[start : start + n_cols]]
        generator = torch.Generator(device="cpu").manual_seed(self.sample_seed)
        z = torch.randn(self.n_images, module.net.latent_dim, generator=generator).to(module.device)
        samples = module.decode_image(z)
        return {
            "val/reconstructions": make_grid(torch.cat(pairs).float().cpu(), nrow=n_cols),
            "val/samples": make_grid(samples.float().cpu(), nrow=n_cols),
        }

    @rank_zero_only
    def on_validation_epoch_end(self, trainer: Trainer, module: LightningModule) -> None:
        if trainer.sanity_checking or (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        writers = tensorboard_writers(trainer)
        if not writers:
            return
        was_training = module.training
        module.eval()
        try:
            pictures = self.pictures(trainer, module)
        finally:
            module.train(was_training)
        for writer in writers:
            for tag, grid in pictures.items():
                writer.add_image(tag, grid, global_step=trainer.global_step, dataformats="CHW")
