"""What the VAE learned, in TensorBoard: one callback per picture, each on a fixed set of validation samples.

Every callback writes every `every_n_epochs` validation epochs and once more at the end of training, when it
also saves its pictures as PNG files in `<run dir>/images/`. Only the process of rank 0 writes.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np
import torch
from lightning import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only
from PIL import Image
from sklearn.decomposition import PCA
from tensorboard.compat.proto.summary_pb2 import Summary

from vae_lightning import checks
from vae_lightning.callbacks.drawing import captioned_grid, scatter
from vae_lightning.callbacks.grid import enlarge, make_grid, to_uint8_hwc

log = logging.getLogger(__name__)
Pictures = dict[str, np.ndarray]  # tag -> (H, W, 3 or 1) uint8


def tensorboard_writers(trainer: Trainer) -> list:
    return [logger.experiment for logger in trainer.loggers if isinstance(logger, TensorBoardLogger)]


def png_bytes(picture: np.ndarray) -> bytes:
    """A fast PNG: grey pictures as one channel, light compression (add_image's default level costs 3-5x more)."""
    grey = (
        picture.shape[2] == 3
        and (picture[:, :, 0] == picture[:, :, 1]).all()
        and (picture[:, :, 1] == picture[:, :, 2]).all()
    )
    image = Image.fromarray(picture[:, :, 0] if grey else picture)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def add_picture(writer, tag: str, picture: np.ndarray, step: int) -> None:
    """`writer.add_image` with the PNG made by `png_bytes`."""
    encoded = png_bytes(picture)
    channels = 1 if Image.open(io.BytesIO(encoded)).mode == "L" else 3
    summary = Summary(
        value=[
            Summary.Value(
                tag=tag,
                image=Summary.Image(
                    height=picture.shape[0], width=picture.shape[1], colorspace=channels, encoded_image_string=encoded
                ),
            )
        ]
    )
    writer._get_file_writer().add_summary(summary, step)


def as_picture(grid: torch.Tensor) -> np.ndarray:
    """A (C, H, W) grid in [0, 1] as an (H, W, 3) uint8 picture."""
    return to_uint8_hwc(grid.expand(3, *grid.shape[1:])).numpy()


def picture_grid(images: torch.Tensor, nrow: int, padding: int = 2) -> np.ndarray:
    """Images (N, C, H, W) in [0, 1], tiny ones (digits' 8x8) enlarged to 24 px, as a picture."""
    return as_picture(make_grid(enlarge(images.float().cpu(), 24), nrow=nrow, padding=padding))


def class_names(trainer: Trainer) -> dict[int, str]:
    return dict(getattr(trainer.datamodule, "class_names", None) or {})


_shared_samples: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = {}


class Diagnostic(Callback):
    """Base class: subclasses implement `pictures` (and optionally `histograms`)."""

    def __init__(self, every_n_epochs: int = 1, n_samples: int = 2000) -> None:
        self.every_n_epochs = checks.positive_int("every_n_epochs", every_n_epochs)
        self.n_samples = checks.positive_int("n_samples", n_samples)
        self._samples: tuple[torch.Tensor, torch.Tensor] | None = None

    def samples(self, trainer: Trainer) -> tuple[torch.Tensor, torch.Tensor]:
        """The first `n_samples` validation samples (images, labels), the same at every call and shared by the
        callbacks that ask for as many (so that they can share one encoding of them too)."""
        key = (id(trainer), self.n_samples)
        if self._samples is None and key in _shared_samples:
            self._samples = _shared_samples[key]
        if self._samples is None:
            images, labels, count = [], [], 0
            for x, y in trainer.val_dataloaders:
                images.append(x)
                labels.append(y)
                count += len(x)
                if count >= self.n_samples:
                    break
            self._samples = (torch.cat(images)[: self.n_samples], torch.cat(labels)[: self.n_samples])
            _shared_samples[key] = self._samples
        return self._samples

    def pictures(self, trainer: Trainer, module: LightningModule, x: torch.Tensor, y: torch.Tensor) -> Pictures:
        raise NotImplementedError

    def histograms(self, trainer: Trainer, module: LightningModule, x: torch.Tensor, y: torch.Tensor):
        return {}

    def _render(self, trainer: Trainer, module: LightningModule):
        x, y = self.samples(trainer)
        was_training = module.training
        module.eval()
        try:
            with torch.no_grad():
                x = x.to(module.device)
                return self.pictures(trainer, module, x, y), self.histograms(trainer, module, x, y)
        finally:
            module.train(was_training)

    def _write(self, trainer: Trainer, module: LightningModule, final: bool) -> None:
        writers = tensorboard_writers(trainer)
        if not writers and not final:
            return  # nowhere to show them before the end (e.g. logger=csv): the PNG files come at the end
        pictures, histograms = self._render(trainer, module)
        for writer in writers:
            for tag, picture in pictures.items():
                add_picture(writer, tag, picture, trainer.global_step)
            for tag, values in histograms.items():
                writer.add_histogram(tag, values, global_step=trainer.global_step)
        if final:
            folder = Path(trainer.default_root_dir) / "images"
            folder.mkdir(parents=True, exist_ok=True)
            for tag, picture in pictures.items():
                Image.fromarray(picture).save(folder / f"{tag.split('/')[-1]}.png")

    @rank_zero_only
    def on_validation_epoch_end(self, trainer: Trainer, module: LightningModule) -> None:
        if trainer.sanity_checking or (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        self._write(trainer, module, final=False)

    @rank_zero_only
    def on_train_end(self, trainer: Trainer, module: LightningModule) -> None:
        self._write(trainer, module, final=True)


_last_encoding: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}


def encode(module: LightningModule, x: torch.Tensor, batch: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior means and standard deviations of `x`, in batches. The callbacks of one epoch share the
    result (they encode the same validation samples)."""
    key = (id(module), module.global_step, x.data_ptr(), tuple(x.shape), module.training)
    if key in _last_encoding:
        return _last_encoding[key]
    locs, scales = [], []
    for start in range(0, len(x), batch):
        posterior = module.net.encode(x[start : start + batch])
        locs.append(posterior.loc)
        scales.append(posterior.scale)
    _last_encoding.clear()
    _last_encoding[key] = (torch.cat(locs), torch.cat(scales))
    return _last_encoding[key]


class ReconstructionsAndSamples(Diagnostic):
    """`val/reconstructions`: inputs in the top row of each pair, their reconstructions (decoded posterior
    means) below; `val/samples`: decodes of a fixed z ~ N(0, I)."""

    def __init__(self, n_images: int = 16, every_n_epochs: int = 1, sample_seed: int = 0) -> None:
        super().__init__(every_n_epochs, n_images)
        self.sample_seed = sample_seed

    def pictures(self, trainer, module, x, y) -> Pictures:
        recon = module.decode_image(module.net.encode(x).loc)
        n_cols = min(8, len(x))
        pairs = []
        for start in range(0, len(x), n_cols):
            pairs += [x[start : start + n_cols], recon[start : start + n_cols]]
        generator = torch.Generator().manual_seed(self.sample_seed)
        z = torch.randn(self.n_samples, module.net.latent_dim, generator=generator).to(module.device)
        return {
            "val/reconstructions": picture_grid(torch.cat(pairs), nrow=n_cols),
            "val/samples": picture_grid(module.decode_image(z), nrow=n_cols),
        }


class LatentScatter(Diagnostic):
    """`val/latent_scatter`: the latent means coloured by label; the first two principal components when the
    latent space has more than two dimensions (the axes say which)."""

    def pictures(self, trainer, module, x, y) -> Pictures:
        loc = encode(module, x)[0].float().cpu().numpy()
        if loc.shape[1] == 1:
            loc = np.concatenate([loc, np.zeros_like(loc)], axis=1)
            axes = ("z1", "(none)")
        elif loc.shape[1] == 2:
            axes = ("z1", "z2")
        else:
            pca = PCA(n_components=2).fit(loc)
            loc = pca.transform(loc)
            ratio = pca.explained_variance_ratio_
            axes = (f"PC1 of z ({ratio[0]:.0%} of variance)", f"PC2 of z ({ratio[1]:.0%})")
        title = f"latent means of {len(loc)} validation samples, epoch {trainer.current_epoch}"
        return {"val/latent_scatter": scatter(loc, y.numpy(), class_names(trainer), axes, title)}


class LatentGrid(Diagnostic):
    """Latent dimension 2: `val/latent_grid`, the seed's `grid_size` x `grid_size` decodes spanning the occupied
    range (1st to 99th percentile) of the latent means. More dimensions: `val/latent_traversal`, one row per
    most active dimension (by KL), decoding a sweep of it from -3 to 3 around a validation sample's mean."""

    def __init__(
        self, grid_size: int = 15, n_dims: int = 8, steps: int = 11, every_n_epochs: int = 1, n_samples: int = 2000
    ) -> None:
        super().__init__(every_n_epochs, n_samples)
        self.grid_size = checks.positive_int("grid_size", grid_size)
        self.n_dims = checks.positive_int("n_dims", n_dims)
        self.steps = checks.positive_int("steps", steps)

    def pictures(self, trainer, module, x, y) -> Pictures:
        loc, scale = encode(module, x)
        if loc.shape[1] == 2:
            low = torch.quantile(loc, 0.01, dim=0)
            high = torch.quantile(loc, 0.99, dim=0)
            z1 = torch.linspace(float(low[0]), float(high[0]), self.grid_size, device=loc.device)
            z2 = torch.linspace(float(high[1]), float(low[1]), self.grid_size, device=loc.device)  # up = +z2
            grid = torch.stack(torch.meshgrid(z2, z1, indexing="ij")[::-1], dim=-1).reshape(-1, 2)
            return {"val/latent_grid": picture_grid(module.decode_image(grid), nrow=self.grid_size, padding=1)}
        kl = (0.5 * (loc.pow(2) + scale.pow(2) - 1) - scale.log()).mean(0)
        dims = kl.argsort(descending=True)[: min(self.n_dims, loc.shape[1])]
        sweep = torch.linspace(-3.0, 3.0, self.steps, device=loc.device)
        rows = []
        for dim in dims.tolist():
            z = loc[:1].repeat(self.steps, 1)
            z[:, dim] = loc[0, dim] + sweep
            rows.append(module.decode_image(z))
        captions = [f"z{d}" if j == 0 else "" for d in dims.tolist() for j in range(self.steps)]
        title = "rows: most active dimensions (by KL); columns: -3 .. +3 around a validation sample's mean"
        return {"val/latent_traversal": captioned_grid(torch.cat(rows).float().cpu(), captions, self.steps, title)}


def interpolation_pairs(y: torch.Tensor, names: dict[int, str], n_pairs: int) -> list[tuple[int, int]]:
    """Human-to-dog pairs when the labels are those domains; else pairs of samples with different labels."""
    if set(names.values()) >= {"human", "dog"}:
        human = next(k for k, v in names.items() if v == "human")
        dog = next(k for k, v in names.items() if v == "dog")
        humans = torch.nonzero(y == human).flatten().tolist()
        dogs = torch.nonzero(y == dog).flatten().tolist()
        return list(zip(humans, dogs, strict=False))[:n_pairs]
    pairs = []
    labels = y.tolist()
    for a in range(len(labels)):
        b = next((j for j in range(a + 1, len(labels)) if labels[j] != labels[a]), None)
        if b is not None:
            pairs.append((a, b))
        if len(pairs) == n_pairs:
            break
    return pairs or [(0, min(1, len(y) - 1))]


class Interpolations(Diagnostic):
    """`val/interpolations`: per row, an input, `steps` decodes along the straight line between the two latent
    means, and the other input (human to dog for faces_dogs). `steps=25` is the seed's latent path."""

    def __init__(self, n_pairs: int = 4, steps: int = 10, every_n_epochs: int = 1, n_samples: int = 256) -> None:
        super().__init__(every_n_epochs, n_samples)
        self.n_pairs = checks.positive_int("n_pairs", n_pairs)
        self.steps = checks.positive_int("steps", steps)

    def pictures(self, trainer, module, x, y) -> Pictures:
        pairs = interpolation_pairs(y, class_names(trainer), self.n_pairs)
        loc = encode(module, x)[0]
        t = torch.linspace(0.0, 1.0, self.steps, device=loc.device)[:, None]
        rows = []
        for a, b in pairs:
            path = module.decode_image((1 - t) * loc[a] + t * loc[b])
            rows.append(torch.cat([x[a : a + 1], path, x[b : b + 1]]))
        return {"val/interpolations": picture_grid(torch.cat(rows), nrow=self.steps + 2)}


class BestWorst(Diagnostic):
    """`val/best_worst`: the `n` best and `n` worst reconstructed validation samples (inputs over outputs,
    each with its loss); histograms `val/per_sample_loss` and `val/kl_per_dim` (the KL of each latent
    dimension averaged over the samples: collapsed dimensions sit at 0)."""

    def __init__(self, n: int = 8, every_n_epochs: int = 1, n_samples: int = 2000) -> None:
        super().__init__(every_n_epochs, n_samples)
        self.n = checks.positive_int("n", n)
        self._last: dict[str, torch.Tensor] = {}

    def _losses(self, module, x):
        """The validation loop's per-sample losses (its first samples are `x`) and per-dimension KL; computed
        here only when there is no record (e.g. validation was skipped)."""
        record = module.validation_record
        losses = record.per_sample_losses()
        if len(losses) >= len(x):
            return losses, record.kl_per_dim()
        out = module.net(x)
        return module.loss_fn(
            x, out, module.beta_at("val")
        ).per_sample, out.posterior.kl_to_standard_normal_per_dim().mean(0)

    def pictures(self, trainer, module, x, y) -> Pictures:
        all_losses, kl_per_dim = self._losses(module, x)
        self._last = {"val/per_sample_loss": all_losses.float().cpu(), "val/kl_per_dim": kl_per_dim.float().cpu()}
        losses = all_losses[: len(x)]
        n = min(self.n, len(x) // 2)
        order = losses.argsort()
        chosen = torch.cat([order[:n], order[-n:].flip(0)])
        recon = module.decode_image(module.net.encode(x[chosen]).loc)
        images = torch.cat([x[chosen[:n]], recon[:n], x[chosen[n:]], recon[n:]]).float().cpu()
        values = losses[chosen].tolist()
        captions = [f"{v:.4g}" for v in values[:n]] + [""] * n + [f"{v:.4g}" for v in values[n:]] + [""] * n
        title = f"best {n} (rows 1-2) and worst {n} (rows 3-4): inputs over reconstructions, with their loss"
        return {"val/best_worst": captioned_grid(images, captions, n, title)}

    def histograms(self, trainer, module, x, y):
        return self._last


class Projector(Diagnostic):
    """TensorBoard's Projector (at the end of training): the latent means of up to `n_samples` validation
    samples with their labels as metadata and the images as a sprite, for PCA or t-SNE views."""

    def __init__(self, n_samples: int = 2000) -> None:
        super().__init__(every_n_epochs=1, n_samples=n_samples)

    def on_validation_epoch_end(self, trainer: Trainer, module: LightningModule) -> None:
        """Only at the end: the projector files are large."""

    @rank_zero_only
    def on_train_end(self, trainer: Trainer, module: LightningModule) -> None:
        x, y = self.samples(trainer)
        module.eval()
        with torch.no_grad():
            loc = encode(module, x.to(module.device))[0].float().cpu()
        names = class_names(trainer)
        metadata = [str(names.get(int(label), int(label))) for label in y]
        thumbnails = x.float().cpu()
        if thumbnails.shape[1] == 1:
            thumbnails = thumbnails.expand(-1, 3, -1, -1)
        for writer in tensorboard_writers(trainer):
            writer.add_embedding(
                loc, metadata=metadata, label_img=thumbnails, global_step=trainer.global_step, tag="val/latent_means"
            )
            writer.flush()
