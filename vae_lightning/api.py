"""A trained model from Python: load a checkpoint safely, then encode, decode, sample, reconstruct, interpolate and
move along an attribute, a batch in and a batch out.

    from vae_lightning.api import TrainedVAE

    vae = TrainedVAE.load("outputs/.../checkpoints/last.ckpt")
    z = vae.encode(["friend.jpg", "dog.jpg"])        # paths, PIL images or tensors -> (N, latent_dim) codes
    images = vae.decode(z)                          # (N, C, H, W) in [0, 1]
    frames = vae.interpolate("friend.jpg", "dog.jpg", steps=10)
    older = vae.morph_attribute("friend.jpg", "age", scale=2.0)

Loading reads the file as `evaluate` and `morph` do: `torch.load(weights_only=True)`, and only the classes the
packaged configs (or the config folders given as `config_dirs`) offer are built. Images are preprocessed as the
model's input: a photo (a path or a PIL image) upright, its centre square (or, with `find_face=True`, the square
that frames the face as UTKFace does) resized to the model's size, grey or colour as trained; a tensor must
already have the model's shape, with values in [0, 1] (float) or 0..255 (uint8). Codes are the posterior means.
Every result is on the model's device.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from PIL import Image

from vae_lightning.callbacks.grid import strip
from vae_lightning.callbacks.pictures import interpolation_pairs
from vae_lightning.core.errors import ConfigValueError, DataNotFoundError
from vae_lightning.core.files import atomic_write
from vae_lightning.data.faces import photo_tensor, read_photo
from vae_lightning.data.in_memory import Attribute
from vae_lightning.module import VAEModule
from vae_lightning.run.checkpoints import load_module
from vae_lightning.run.tools import checkpoint_datamodule

log = logging.getLogger(__name__)

ImageLike = str | os.PathLike | Image.Image | torch.Tensor
Images = ImageLike | Sequence[ImageLike]


class TrainedVAE:
    """A trained VAE (a `VAEModule` in eval mode) with the operations one wants in a notebook."""

    def __init__(
        self,
        module: VAEModule,
        checkpoint: str | os.PathLike | None = None,
        config_dirs: Sequence[str | os.PathLike] = (),
    ) -> None:
        self.module = module.eval()
        self.config_dirs = tuple(config_dirs)
        self.checkpoint = None if checkpoint is None else Path(checkpoint).expanduser()
        self.input_shape: tuple[int, int, int] = tuple(module.hparams["input_shape"])
        self.latent_dim: int = int(module.net.latent_dim)

    @classmethod
    def load(
        cls,
        path: str | os.PathLike,
        device: str | torch.device = "cpu",
        config_dirs: Sequence[str | os.PathLike] = (),
    ) -> TrainedVAE:
        """The model in the checkpoint file `path` on `device` ("cpu", "cuda", "cuda:1", ...), read without running
        code from it. `config_dirs`: the user's own config folders whose classes the checkpoint may name."""
        module = load_module(path, "cpu", config_dirs)
        return cls(module.to(device), path, config_dirs)

    @property
    def device(self) -> torch.device:
        return self.module.device

    # -- images in ----------------------------------------------------------------------------------------
    def images(self, images: Images, find_face: bool = False) -> torch.Tensor:
        """`images` as one (N, C, H, W) float batch in [0, 1] on the model's device: a path, a PIL image, a
        tensor (C, H, W) or (N, C, H, W), or a list of any of these."""
        if isinstance(images, torch.Tensor):
            return self._tensor(images)
        items = [images] if isinstance(images, str | os.PathLike | Image.Image) else list(images)
        if not items:
            raise ValueError("no images given")
        return torch.cat([self._one(item, find_face) for item in items])

    def _one(self, item: ImageLike, find_face: bool) -> torch.Tensor:
        if isinstance(item, torch.Tensor):
            return self._tensor(item)
        if isinstance(item, Image.Image):
            return photo_tensor(item, self.input_shape, find_face).unsqueeze(0).to(self.device)
        if isinstance(item, str | os.PathLike):
            return read_photo(item, self.input_shape, find_face).unsqueeze(0).to(self.device)
        raise TypeError(f"an image must be a path, a PIL image or a tensor, not {type(item).__name__}")

    def _tensor(self, images: torch.Tensor) -> torch.Tensor:
        batch = images.unsqueeze(0) if images.dim() == 3 else images
        if batch.dim() != 4 or tuple(batch.shape[1:]) != self.input_shape:
            raise ValueError(
                f"images of shape {tuple(images.shape)} do not fit this model: it takes (N, *{self.input_shape})"
            )
        batch = batch.float().div(255) if batch.dtype == torch.uint8 else batch.float()
        return batch.to(self.device)

    # -- the model ----------------------------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, images: Images, find_face: bool = False) -> torch.Tensor:
        """The posterior means (N, latent_dim) of `images`."""
        return self.module.net.encode(self.images(images, find_face)).loc

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Images (N, C, H, W) in [0, 1] (the likelihood's mean) of codes `z` (N, latent_dim) or (latent_dim,)."""
        z = z.unsqueeze(0) if z.dim() == 1 else z
        if z.dim() != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"codes of shape {tuple(z.shape)} do not fit this model: it takes (N, {self.latent_dim})")
        return self.module.decode_image(z.to(self.device, torch.float32)).float()

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """`n` images decoded from codes drawn from the model's prior, (n, C, H, W) in [0, 1]; `generator` (on the
        CPU or the model's device) makes them reproducible."""
        return self.decode(self.module.prior.sample(n, generator))

    def reconstruct(self, images: Images, find_face: bool = False) -> torch.Tensor:
        """The decodes of the posterior means of `images`, (N, C, H, W) in [0, 1]."""
        return self.decode(self.encode(images, find_face))

    def interpolate(self, a: ImageLike, b: ImageLike, steps: int = 10, find_face: bool = False) -> torch.Tensor:
        """`steps` decodes (steps, C, H, W) along the straight line from the code of `a` to the code of `b`."""
        if steps < 2:
            raise ValueError(f"steps={steps}: an interpolation needs at least 2 steps")
        ends = self.encode([a, b], find_face)
        t = torch.linspace(0.0, 1.0, steps, device=ends.device)[:, None]
        return self.decode((1 - t) * ends[0] + t * ends[1])

    # -- attributes ---------------------------------------------------------------------------------------
    def datamodule(self, changes: Mapping[str, Any] | None = None, paths: Any = None) -> Any:
        """The data module the checkpoint was trained on, set up, with `changes` (e.g. {"root": "/data/mnist"})
        to the keys it has. Where its data is read, cached or downloaded is never the checkpoint's choice: the
        data set's default under `paths` (None: `VAE_DATA_DIR`, default ./data) unless `changes` names it."""
        changes = changes if OmegaConf.is_config(changes) else OmegaConf.create(dict(changes or {}))
        return checkpoint_datamodule(self.module, changes, paths, self.config_dirs)

    @torch.no_grad()
    def validation_pair(self, datamodule: Any) -> tuple[torch.Tensor, torch.Tensor, str]:
        """Two images (1, C, H, W) of the validation split of `datamodule` to interpolate between, chosen as the
        `val/interpolations` picture chooses its first pair (from the data set's `interpolation_ends` when it names
        them, faces and dogs: a human and a dog), and a phrase saying which they are."""
        val = datamodule.val_set
        names = dict(getattr(datamodule, "class_names", {}) or {})
        ends = getattr(datamodule, "interpolation_ends", None)
        present = set(val.labels.tolist())
        if ends is not None and not set(ends) <= present:
            missing = [str(names.get(label, label)) for label in ends if label not in present]
            raise DataNotFoundError(
                f"The checkpoint's validation split has no {' and no '.join(missing)} image: give both images "
                "(source=<photo> and target=<photo>)."
            )
        codes = self.codes(val)
        ((a, b),), how = interpolation_pairs(val.labels, names, codes, 1, ends)
        if b < 0:
            raise DataNotFoundError("The checkpoint's validation split has one image only: give both images.")
        images = val.__getitems__([a, b])[0].to(self.device)
        return images[:1], images[1:], f"validation samples {a} and {b} ({how})"

    def attributes(self, datamodule: Any) -> dict[str, Attribute]:
        """The attributes of the training split of `datamodule` (name -> values per sample)."""
        return datamodule.attributes(datamodule.train_set)

    def attribute_direction(
        self, name: str | None = None, datamodule: Any = None, cache: bool = True
    ) -> tuple[torch.Tensor, str]:
        """The direction in latent space along which attribute `name` grows (None: the data set's default, e.g.
        `dog` for faces and dogs) and what one unit of it is, from the training split of the checkpoint's data
        (`datamodule`, default `self.datamodule()`). Cached beside the checkpoint
        (`<checkpoint>.attribute_<name>.pt`, recomputed when the checkpoint file changes)."""
        datamodule = datamodule if datamodule is not None else self.datamodule()
        attributes = self.attributes(datamodule)
        name = str(name) if name is not None else datamodule.default_attribute  # `attribute=0`: the digit 0
        if name not in attributes:
            offered = ", ".join(attributes) or "none (it has no labels)"
            raise ConfigValueError(
                "attribute", f"must be one of the attributes of the checkpoint's data set: {offered}", name
            )
        cache_file = self._cache_file(name) if cache else None
        stamp = None
        if cache_file is not None:
            stamp = [self.checkpoint.stat().st_size, self.checkpoint.stat().st_mtime_ns]
            stored = read_cached_direction(cache_file, self.latent_dim)
            if stored is not None and stored.get("stamp") == stamp and stored.get("name") == name:
                return stored["direction"].to(self.device), stored["what"]
        direction, what = attribute_direction(self.codes(datamodule.train_set), attributes[name], name)
        if cache_file is not None:
            record = {"direction": direction.cpu(), "what": what, "name": name, "stamp": stamp}
            try:
                atomic_write(cache_file, lambda f: torch.save(record, f))
            except OSError as bad:
                log.warning("Could not cache the direction of %s in %s (%s).", name, cache_file, bad)
        return direction.to(self.device), what

    def morph_attribute(
        self,
        image: ImageLike,
        name: str | None = None,
        scale: float = 1.0,
        steps: int = 10,
        find_face: bool = False,
        datamodule: Any = None,
    ) -> torch.Tensor:
        """`steps` decodes (steps, C, H, W) of the code of `image` plus s * the direction of attribute `name`, s
        from 0 to `scale` (see `attribute_direction`)."""
        direction, _ = self.attribute_direction(name, datamodule)
        return self.along(self.encode(image, find_face)[0], direction, scale, steps)

    def along(self, z: torch.Tensor, direction: torch.Tensor, scale: float, steps: int) -> torch.Tensor:
        """Decodes of z + s * direction, s from 0 to `scale` in `steps` steps."""
        s = torch.linspace(0.0, scale, steps, device=self.device)[:, None]
        return self.decode(z.to(self.device) + s * direction.to(self.device))

    @staticmethod
    def picture(images: torch.Tensor, min_side: int = 64) -> Image.Image:
        """Images (N, C, H, W) in [0, 1] side by side as one PIL image (small ones enlarged to `min_side`), to
        show in a notebook or `.save("row.png")`."""
        return strip(images, min_side)

    def _cache_file(self, name: str) -> Path | None:
        if self.checkpoint is None or not self.checkpoint.is_file():
            return None
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in name)
        return self.checkpoint.with_name(f"{self.checkpoint.name}.attribute_{safe}.pt")

    @torch.no_grad()
    def codes(self, split: Any) -> torch.Tensor:
        """The posterior means of every sample of a data module's split, in batches of 256, on the CPU."""
        batches = (split.__getitems__(range(i, min(i + 256, len(split))))[0] for i in range(0, len(split), 256))
        return torch.cat([self.module.net.encode(x.to(self.device)).loc.float().cpu() for x in batches])


def read_cached_direction(path: Path, latent_dim: int) -> dict[str, Any] | None:
    """A cached attribute direction, or None where there is none or it cannot be used (damaged, of another
    form): it is then computed again and the cache rewritten."""
    if not path.is_file():
        return None
    try:
        stored = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as bad:  # a truncated or foreign file: any error of torch's reader
        log.warning("The cached direction %s cannot be read (%s); computing it again.", path, type(bad).__name__)
        return None
    direction = stored.get("direction") if isinstance(stored, dict) else None
    if not isinstance(direction, torch.Tensor) or tuple(direction.shape) != (latent_dim,):
        log.warning("The cached direction %s does not fit this model; computing it again.", path)
        return None
    if not isinstance(stored.get("what"), str) or not bool(direction.isfinite().all()):
        return None
    return stored


def attribute_direction(codes: torch.Tensor, attribute: Attribute, name: str) -> tuple[torch.Tensor, str]:
    """The direction in latent space along which `attribute` grows, and what one unit of it is. Present or not:
    the mean code of the samples with it minus that of those without. A quantity (age): the least-squares slope
    of the codes on it, times its standard deviation, so that one unit is one standard deviation ("older")."""
    known = ~torch.isnan(attribute.values)
    values, codes = attribute.values[known], codes[known]
    if attribute.numeric:
        if len(values) < 2 or values.std() == 0:
            raise DataNotFoundError(f"attribute={name}: the training split has too few distinct values of it.")
        centred = values - values.mean()
        slope = (centred[:, None] * (codes - codes.mean(0))).sum(0) / centred.pow(2).sum()
        std = float(values.std())
        return slope * std, f"s * (one standard deviation, {std:.3g}, more {name})"
    with_it, without = codes[values == 1], codes[values == 0]
    if len(with_it) == 0 or len(without) == 0:
        missing = "with" if len(with_it) == 0 else "without"
        raise DataNotFoundError(f"attribute={name}: the checkpoint's training split has no image {missing} it.")
    return with_it.mean(0) - without.mean(0), f"s * (mean code with {name} - without)"
