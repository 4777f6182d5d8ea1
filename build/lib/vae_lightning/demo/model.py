"""What the web demo does with a trained model, with no web page in it (so it is tested without Gradio).

A photo is read, cropped and encoded once (`DemoModel.photo`); every slider move afterwards only decodes a code
(`along`, `between`, `traverse`, `grid`), which is what keeps a slider live on a CPU. Everything returns
PIL images, enlarged for the page, and messages a user can read; a bad upload is a `DemoInputError` whose text
the page shows.
"""

from __future__ import annotations

import base64
import binascii
import logging
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image, ImageDraw
from torch.distributions import Normal, kl_divergence

from vae_lightning.api import TrainedVAE
from vae_lightning.callbacks.grid import enlarge, make_grid, strip, to_pil, write_morph
from vae_lightning.core.errors import VAELightningError
from vae_lightning.data.faces import Crop, open_photo
from vae_lightning.distributions import DiagonalGaussian

log = logging.getLogger(__name__)

SHOWN_SIDE = 256  # pixels: decoded images are enlarged (nearest neighbour, by an integer factor) to this
MORPH_SIDE = 128  # pixels: the GIF's and the strip's images, as `morph`'s default `min_side`
GRID_SIZE = 15  # the seed's latent grid of a 2-D latent space
GRID_CELL = 48  # pixels per cell of that grid as shown


class DemoInputError(VAELightningError):
    """An upload the demo cannot use; its text is shown in the page."""


@dataclass
class Photo:
    """An uploaded photo, encoded: its crop as the model sees it, its code and the posterior's standard deviation
    (latent,), on the CPU, and a line saying how it was cropped."""

    name: str
    crop: Crop
    loc: torch.Tensor
    scale: torch.Tensor
    message: str


def shown(images: torch.Tensor, side: int = SHOWN_SIDE) -> Image.Image:
    """Images (N, C, H, W) in [0, 1] side by side, each enlarged to at least `side` pixels."""
    return strip(images, side)


class DemoModel:
    """A `TrainedVAE` with what the demo's tabs need: its training data's attributes (None where the data is not
    on this machine: `data_problem` says why) and the range of its codes for a 2-D grid."""

    def __init__(self, vae: TrainedVAE, datamodule: Any | None, data_problem: str | None, find_face: bool) -> None:
        self.vae = vae
        self.datamodule = datamodule
        self.data_problem = data_problem
        self.find_face = find_face and vae.input_shape[0] == 3  # faces are looked for in colour models' photos
        carried = datamodule is not None or vae.exported is not None  # an exported model carries its directions
        self.attributes: list[str] = vae.attribute_names(datamodule) if carried else []
        if vae.exported is not None:
            default = vae.exported.default_attribute
        else:
            default = datamodule.default_attribute if datamodule is not None else None
        self.default_attribute = default if default in self.attributes else next(iter(self.attributes), None)
        self._directions: dict[str, tuple[torch.Tensor, str]] = {}
        self._lock = threading.Lock()
        self.grid_range = self._grid_range() if vae.latent_dim == 2 else None
        self._grid: Image.Image | None = None  # the grid's decodes, drawn once

    @property
    def is_faces_and_dogs(self) -> bool:
        return self.default_attribute == "dog"

    # -- photos -------------------------------------------------------------------------------------------
    def photo(self, path: str | Path | None, name: str | None = None) -> Photo:
        """The upload at `path` (shown as `name`), cropped as `morph` crops a source photo and encoded."""
        if path is None:
            raise DemoInputError("Upload a photo first (or take one with the webcam).")
        name = name or Path(path).name
        try:
            crop = open_photo(path, self.vae.input_shape, self.find_face, name)
        except VAELightningError as bad:
            raise DemoInputError(str(bad)) from None
        with torch.no_grad():
            posterior = self.vae.module.net.infer(crop.pixels[None].to(self.vae.device))
            loc, scale = posterior.code[0].float().cpu(), posterior.stddev[0].float().cpu()
        width, height = crop.size
        how = "the face" if crop.faces else "the centre square"
        message = crop.note or f"Cropped to {how} of the {width}x{height} photo."
        return Photo(name, crop, loc, scale, message)

    def crop_image(self, photo: Photo) -> Image.Image:
        return shown(photo.crop.pixels[None])

    # -- decoding -----------------------------------------------------------------------------------------
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(z).float().cpu()

    def image(self, z: torch.Tensor) -> Image.Image:
        return shown(self.decode(z.reshape(1, -1)))

    def direction(self, attribute: str | None) -> tuple[torch.Tensor, str]:
        """The latent direction of `attribute` (None: the data set's default), computed once (and cached beside
        the checkpoint by `TrainedVAE.attribute_direction`)."""
        if self.datamodule is None and self.vae.exported is None:
            raise DemoInputError(f"Moving along an attribute needs the checkpoint's training data: {self.data_problem}")
        name = attribute or self.default_attribute
        if name not in self.attributes:
            raise DemoInputError(f"{name} is not an attribute of this model's data: {', '.join(self.attributes)}.")
        with self._lock:
            if name not in self._directions:
                try:
                    direction, what = self.vae.attribute_direction(name, self.datamodule)
                except VAELightningError as unusable:  # e.g. a data set of one class: nothing without it
                    raise DemoInputError(str(unusable)) from None
                self._directions[name] = (direction.float().cpu(), what)
            return self._directions[name]

    def along(self, photo: Photo, attribute: str | None, s: float) -> Image.Image:
        """The decode of the photo's code plus s times the attribute's direction."""
        direction, _ = self.direction(attribute)
        return self.image(photo.loc + s * direction)

    def between(self, a: Photo, b: Photo, t: float) -> Image.Image:
        """The decode of the point a fraction `t` of the way from the code of `a` to that of `b`."""
        return self.image((1 - t) * a.loc + t * b.loc)

    # -- GIF and strip ------------------------------------------------------------------------------------
    def write_morph(
        self, frames: torch.Tensor, ends: list[torch.Tensor], folder: Path, stem: str, frame_ms: int, pause_ms: int
    ) -> tuple[Path, Path]:
        """The frames as a GIF going there and back, and a PNG strip of the ends around them, in `folder`
        (as `morph` writes them)."""
        folder.mkdir(parents=True, exist_ok=True)
        gif, png = folder / f"{stem}.gif", folder / f"{stem}.png"
        write_morph(frames, ends, gif, png, MORPH_SIDE, frame_ms, pause_ms)
        return gif, png

    def along_frames(self, photo: Photo, attribute: str | None, scale: float, steps: int) -> torch.Tensor:
        direction, _ = self.direction(attribute)
        s = torch.linspace(0.0, scale, steps)[:, None]
        return self.decode(photo.loc + s * direction)

    def between_frames(self, a: Photo, b: Photo, steps: int) -> torch.Tensor:
        t = torch.linspace(0.0, 1.0, steps)[:, None]
        return self.decode((1 - t) * a.loc + t * b.loc)

    # -- the latent space ---------------------------------------------------------------------------------
    def samples(self, n: int, seed: int) -> Image.Image:
        """`n` decodes of codes drawn by the model's sampler (reproducible by `seed`), as one grid."""
        generator = torch.Generator().manual_seed(seed)
        images = self.decode(self.vae.module.sampler.sample(n, self.vae.module.prior, generator))
        return to_pil(make_grid(enlarge(images, 96), nrow=min(n, 8)))

    def activity(self, photo: Photo) -> tuple[torch.Tensor, str]:
        """Each latent dimension's KL(q(z_d|x) || p(z_d)) for the photo (nats): exact where the prior and the
        posterior factorise; with a flow posterior, of the Gaussian with its code and spread; else the KL to a
        Gaussian with the prior's mean and standard deviation of that dimension."""
        prior, exact = self.vae.module.prior, self.vae.module.net.posterior.factorised
        with torch.no_grad():
            if prior.factorises:
                posterior = DiagonalGaussian(photo.loc[None].to(self.vae.device), photo.scale[None].to(self.vae.device))
                return prior.kl_per_dim(posterior)[0].float().cpu(), "KL" if exact else "KL of a Gaussian of q's spread"
            mean, std = prior.mean().float().cpu(), prior.stddev().float().cpu()
        return kl_divergence(Normal(photo.loc, photo.scale), Normal(mean, std)), "KL to the prior's moments"

    def active_dims(self, photo: Photo, k: int) -> list[tuple[int, float, float, float]]:
        """The `k` dimensions with the largest KL for the photo: (dimension, KL, posterior mean, prior std)."""
        activity, _ = self.activity(photo)
        spread = self.vae.module.prior.stddev().detach().float().cpu()
        dims = activity.argsort(descending=True)[: min(k, len(activity))].tolist()
        return [(d, float(activity[d]), float(photo.loc[d]), float(spread[d])) for d in dims]

    def traverse(self, photo: Photo, dims: list[int], values: list[float]) -> Image.Image:
        """The decode of the photo's code with dimension dims[i] set to values[i]."""
        z = photo.loc.clone()
        for d, v in zip(dims, values, strict=False):
            z[d] = v
        return self.image(z)

    def _grid_range(self) -> tuple[tuple[float, float], tuple[float, float]]:
        """The span of the 2-D grid: the 1st to 99th percentile of the validation codes where the data is here,
        else the prior's mean +- 2.5 standard deviations."""
        if self.datamodule is not None:
            loc = self.vae.codes(self.datamodule.val_set)
            if len(loc) > 1:
                low, high = torch.quantile(loc, 0.01, dim=0), torch.quantile(loc, 0.99, dim=0)
                if bool((high - low > 1e-3).all()):
                    return (float(low[0]), float(high[0])), (float(low[1]), float(high[1]))
        mean = self.vae.module.prior.mean().detach().float().cpu()
        std = self.vae.module.prior.stddev().detach().float().cpu()
        low, high = mean - 2.5 * std, mean + 2.5 * std
        return (float(low[0]), float(high[0])), (float(low[1]), float(high[1]))

    @property
    def grid_picture_size(self) -> tuple[int, int]:
        """The width and height of the `grid` picture, in pixels."""
        side = self.vae.input_shape[-1]
        cell = side * max(1, -(-GRID_CELL // side))
        return cell * GRID_SIZE, cell * GRID_SIZE

    def grid(self, point: tuple[float, float] | None = None) -> Image.Image:
        """The seed's 15x15 grid of decodes over `grid_range` (z1 to the right, z2 up), with `point` marked; the
        decodes are made once, a click only draws its mark on a copy."""
        if self._grid is None:
            (x0, x1), (y0, y1) = self.grid_range
            z1 = torch.linspace(x0, x1, GRID_SIZE)
            z2 = torch.linspace(y1, y0, GRID_SIZE)  # top row: the largest z2
            codes = torch.stack(torch.meshgrid(z2, z1, indexing="ij")[::-1], dim=-1).reshape(-1, 2)
            images = enlarge(self.decode(codes), GRID_CELL)
            self._grid = to_pil(make_grid(images, nrow=GRID_SIZE, padding=0)).convert("RGB")
        picture = self._grid.copy()
        if point is not None:
            x, y = self.grid_pixel(point, picture.size)
            ImageDraw.Draw(picture).ellipse((x - 6, y - 6, x + 6, y + 6), outline=(230, 20, 20), width=3)
        return picture

    def grid_code(self, pixel: tuple[float, float], size: tuple[int, int]) -> tuple[float, float]:
        """The code at pixel (x, y) of a grid picture of `size`: each cell's centre is its code, linear between."""
        (x0, x1), (y0, y1) = self.grid_range
        u = pixel[0] / size[0] * GRID_SIZE - 0.5
        v = pixel[1] / size[1] * GRID_SIZE - 0.5
        return x0 + u * (x1 - x0) / (GRID_SIZE - 1), y1 - v * (y1 - y0) / (GRID_SIZE - 1)

    def grid_pixel(self, code: tuple[float, float], size: tuple[int, int]) -> tuple[float, float]:
        """The inverse of `grid_code`."""
        (x0, x1), (y0, y1) = self.grid_range
        u = (code[0] - x0) / (x1 - x0) * (GRID_SIZE - 1)
        v = (y1 - code[1]) / (y1 - y0) * (GRID_SIZE - 1)
        return (u + 0.5) / GRID_SIZE * size[0], (v + 0.5) / GRID_SIZE * size[1]


def upload_path(payload: Any, folder: Path, max_bytes: int) -> tuple[str | None, str | None]:
    """The server-side file of a raw image payload and its original name, through one gate for every way an
    image arrives (an upload, the clipboard, a webcam frame sent inline as a data URL): the file must be one this
    page received (inside `folder`'s parent, the demo's temporary folder where Gradio keeps uploads) and at most
    `max_bytes` long; a data URL is size-checked before it is decoded, then written to `folder`. Anything else
    is a `DemoInputError` whose text names no server path."""
    if payload is None:
        return None, None
    if isinstance(payload, str):
        path, url, name = payload, "", None
    elif isinstance(payload, dict):
        path, url, name = payload.get("path"), payload.get("url") or "", payload.get("orig_name")
    else:
        raise DemoInputError("The upload was not understood: send an image file.")
    name = name if isinstance(name, str) and name else None
    if path is None and isinstance(url, str) and url.startswith("data:"):
        path = inline_image(url, folder, max_bytes)
    if path is None:
        return None, None
    file = Path(str(path))
    if not file.is_file() or not file.resolve().is_relative_to(folder.parent.resolve()):
        raise DemoInputError("The upload was refused: it is not a file this page received. Upload the image again.")
    if file.stat().st_size > max_bytes:
        raise DemoInputError(f"The image is larger than this page takes ({max_bytes // 2**20} MB).")
    return str(file), name or file.name


def inline_image(url: str, folder: Path, max_bytes: int) -> str:
    """The image of a data URL (`data:image/png;base64,...`, as a webcam frame is sent) written to `folder`,
    refused before decoding when its text is longer than `max_bytes` of data can be."""
    header, _, data = url.partition(",")
    if not header.endswith(";base64") or not data:
        raise DemoInputError("The image sent inline could not be read: it is not a base64 data URL.")
    if len(data) > 4 * (max_bytes // 3 + 1):
        raise DemoInputError(f"The image is larger than this page takes ({max_bytes // 2**20} MB).")
    try:
        content = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise DemoInputError("The image sent inline could not be read: its base64 data is damaged.") from None
    folder.mkdir(parents=True, exist_ok=True)
    file = folder / f"webcam-{uuid.uuid4().hex}.png"
    file.write_bytes(content)
    return str(file)
