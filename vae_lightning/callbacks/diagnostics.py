"""What the VAE learned, in TensorBoard and the other loggers that show pictures (`sinks`): one callback that
owns a fixed set of validation samples, encodes them once per drawing, and hands that view to small picture
functions (`pictures.py`).

It draws every `every_n_epochs` validation epochs and once more at the end of training, when it also saves
the pictures as PNG files in `<run dir>/images/` and fills the Projector. Only the process of rank 0 draws.
A picture is a view of the run and never ends it: a picture that fails is skipped for that drawing with one
warning naming it and the reason (`strict=true`, for tests, raises instead).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_only
from matplotlib.figure import Figure
from PIL import Image

from vae_lightning.callbacks.pictures import Picture, View
from vae_lightning.callbacks.sinks import sinks
from vae_lightning.core import checks

log = logging.getLogger(__name__)
ENCODE_BATCH = 256


class Diagnostics(Callback):
    """Draws `pictures` (name -> Picture) of the first `n_samples` validation samples the data module offers
    (`diagnostic_samples`), the same ones in every drawing."""

    def __init__(
        self, pictures: dict[str, Picture], every_n_epochs: int = 1, n_samples: int = 1000, strict: bool = False
    ) -> None:
        self.pictures = {name: picture for name, picture in pictures.items() if picture is not None}
        self.every_n_epochs = checks.positive_int("every_n_epochs", every_n_epochs)
        self.n_samples = checks.positive_int("n_samples", n_samples)
        self.strict = checks.boolean("strict", strict)
        self.samples: tuple[torch.Tensor, torch.Tensor] | None = None

    @rank_zero_only
    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking or (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        if sinks(trainer):  # else nowhere to show them before the end (e.g. logger=csv)
            self.draw(trainer, pl_module, final=False)

    @rank_zero_only
    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.draw(trainer, pl_module, final=True)

    def draw(self, trainer: Trainer, module: LightningModule, final: bool) -> None:
        try:
            view = self.view(trainer, module)
        except Exception as bad:
            self.skipped("every picture", trainer, bad)
            return
        for name, picture in self.pictures.items():
            if picture.final_only and not final:
                continue
            try:
                with torch.no_grad():
                    outputs = picture(view)
                write(trainer, outputs, Path(trainer.default_root_dir) / "images" if final else None)
            except Exception as bad:
                self.skipped(name, trainer, bad)

    def skipped(self, what: str, trainer: Trainer, bad: Exception) -> None:
        if self.strict:
            raise bad
        log.warning(
            "Diagnostics: %s skipped at epoch %d (%s: %s)", what, trainer.current_epoch, type(bad).__name__, bad
        )

    def view(self, trainer: Trainer, module: LightningModule) -> View:
        """The samples, their posteriors and losses under the model as it is now (in eval mode, with a fixed
        noise generator so that drawing does not change the run's random state)."""
        if self.samples is None:
            datamodule = trainer.datamodule
            if datamodule is None:
                raise RuntimeError("the pictures need the run's data module (trainer.fit(..., datamodule=...))")
            self.samples = datamodule.diagnostic_samples(self.n_samples)
        images, labels = self.samples
        if len(images) == 0:
            raise RuntimeError("the validation split is empty")
        was_training = module.training
        module.eval()
        try:
            with torch.no_grad():
                images = images.to(module.device)
                generator = torch.Generator(module.device).manual_seed(0)
                beta = module.beta_at("val")
                locs, scales, losses, kls = [], [], [], []
                for start in range(0, len(images), ENCODE_BATCH):
                    x = images[start : start + ENCODE_BATCH]
                    terms = module.objective(x, beta, generator)
                    posterior = terms.sample.posterior
                    locs.append(posterior.code)
                    scales.append(posterior.stddev)
                    losses.append(terms.per_sample.float().cpu())
                    kl = module.prior.kl_per_dim(posterior)
                    kls.append(None if kl is None else kl.float().cpu())
        finally:
            module.train(was_training)
        names, ends = dict(trainer.datamodule.class_names), trainer.datamodule.interpolation_ends
        loc, scale, loss = torch.cat(locs), torch.cat(scales), torch.cat(losses)
        kl_per_dim = None if kls[0] is None else torch.cat(kls).mean(0)
        return View(images, labels.cpu(), names, ends, loc, scale, loss, kl_per_dim, module, trainer.current_epoch)


def write(trainer: Trainer, outputs: list[tuple[str, Any]], png_folder: Path | None) -> None:
    """Each output to every logger that takes it (see `sinks`) at the current step; pictures also as PNG files
    into `png_folder` (at the end of training). A logger that fails to take an output (a tracking server gone
    away) is warned about and the others still get it."""
    step = trainer.global_step
    if png_folder is not None:
        png_folder.mkdir(parents=True, exist_ok=True)
    targets = sinks(trainer)
    for tag, output in outputs:
        for sink in targets:
            try:
                sink.write(tag, output, step)
            except Exception as bad:
                log.warning(
                    "Diagnostics: %s not written to %s (%s: %s)",
                    tag,
                    type(sink.logger).__name__,
                    type(bad).__name__,
                    bad,
                )
        png = png_folder / f"{tag.split('/')[-1]}.png" if png_folder is not None else None
        if png is not None and isinstance(output, np.ndarray):
            Image.fromarray(output).save(png)
        elif png is not None and isinstance(output, Figure):
            output.savefig(png)
    for sink in targets:
        sink.flush()
