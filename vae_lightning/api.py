"""A trained model from Python: load a checkpoint safely, then encode, decode, sample, reconstruct, interpolate and
move along an attribute, a batch in and a batch out.

    from vae_lightning.api import TrainedVAE

    vae = TrainedVAE.load("outputs/.../checkpoints/last.ckpt")   # or .from_pretrained("folder" or "user/repo")
    z = vae.encode(["friend.jpg", "dog.jpg"])        # paths, PIL images or tensors -> (N, latent_dim) codes
    images = vae.decode(z)                          # (N, C, H, W) in [0, 1]
    frames = vae.interpolate("friend.jpg", "dog.jpg", steps=10)
    older = vae.morph_attribute("friend.jpg", "age", scale=2.0)

Loading reads the file as `evaluate` and `morph` do: `torch.load(weights_only=True)`, and only the classes the
packaged configs (or the config folders given as `config_dirs`) offer are built. Images are preprocessed as the
model's input: a photo (a path or a PIL image) upright, its centre square (or, with `find_face=True`, the square
that frames the face as UTKFace does) resized to the model's size, grey or colour as trained; a tensor must
already have the model's shape, with values in [0, 1] (float) or 0..255 (uint8). Codes are the posteriors' codes
(a Gaussian posterior's mean; a flow's: the flow at the network's mean).
Every result is on the model's device.

`save_pretrained(folder)` writes the model as a folder people share (safetensors weights, JSON settings, the
attribute directions of its training data and a model card; no pickle: see `run.exported`), and
`from_pretrained(folder or "user/repo")` reads one, with no training data needed (a repo id through
huggingface_hub's cache, `HF_HUB_OFFLINE=1` and `revision=` as usual). Both need the `hub` extra.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf
from PIL import Image

from vae_lightning.callbacks.grid import strip
from vae_lightning.callbacks.pictures import interpolation_pairs
from vae_lightning.core.errors import ConfigValueError, DataNotFoundError
from vae_lightning.core.files import atomic_write
from vae_lightning.core.progress import progress
from vae_lightning.data.faces import photo_tensor, read_photo
from vae_lightning.data.in_memory import Attribute
from vae_lightning.module import VAEModule
from vae_lightning.run.checkpoints import load_module
from vae_lightning.run.exported import ExportedData, read_exported, write_exported
from vae_lightning.run.tools import checkpoint_datamodule

log = logging.getLogger(__name__)

ImageLike = str | os.PathLike | Image.Image | torch.Tensor | np.ndarray
Images = ImageLike | Sequence[ImageLike]


class TrainedVAE:
    """A trained VAE (a `VAEModule` in eval mode) with the operations one wants in a notebook."""

    def __init__(
        self,
        module: VAEModule,
        checkpoint: str | os.PathLike | None = None,
        config_dirs: Sequence[str | os.PathLike] = (),
        exported: ExportedData | None = None,
    ) -> None:
        self.module = module.eval()
        self.config_dirs = tuple(config_dirs)
        self.exported = exported  # an exported model's data: its attribute directions and label names
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

    @classmethod
    def from_pretrained(
        cls,
        name: str | os.PathLike,
        revision: str | None = None,
        device: str | torch.device = "cpu",
        config_dirs: Sequence[str | os.PathLike] = (),
    ) -> TrainedVAE:
        """The exported model in folder `name`, or of the Hugging Face Hub repository `name` ("user/repo", at
        `revision`), read from safetensors and JSON only: nothing in it runs, and no training data is needed."""
        folder = Path(name).expanduser()
        if not folder.is_dir():
            folder = hub_snapshot(str(name), revision)
        module, _, data = read_exported(folder, config_dirs)
        return cls(module.to(device), None, config_dirs, data)

    @classmethod
    def open(
        cls, name: str | os.PathLike, device: str | torch.device = "cpu", config_dirs: Sequence[str | os.PathLike] = ()
    ) -> TrainedVAE:
        """What the tools' `ckpt_path=` names: a checkpoint file, an exported folder or a Hub repository id."""
        path = Path(name).expanduser()
        if path.is_file() or str(name).endswith(".ckpt"):
            return cls.load(path, device, config_dirs)
        if path.is_dir() and not (path / "config.json").is_file():
            return cls.load(path, device, config_dirs)  # a run folder: the checkpoint error names its last.ckpt
        return cls.from_pretrained(name, device=device, config_dirs=config_dirs)

    def save_pretrained(
        self,
        folder: str | os.PathLike,
        datamodule: Any = None,
        card: str | None = None,
        data: ExportedData | None = None,
    ) -> Path:
        """The model as a folder to share (see `run.exported`): with `datamodule` (its training data), the
        directions of every attribute, the label names and the mean code of each label go with it (`data`: that
        summary, when already computed); `card` is the model card's text (`README.md`; None: a short one), beside
        the samples and reconstructions pictures."""
        if data is None:
            data = self.data_summary(datamodule) if datamodule is not None else self.exported or ExportedData()
        folder = Path(folder).expanduser()
        write_exported(folder, self.module, self.preprocessing(), data)
        self.picture(self.sample(16, torch.Generator().manual_seed(0)), 32).save(folder / "samples.png")
        if datamodule is not None:
            originals = datamodule.diagnostic_samples(8)[0].to(self.device)
            both = torch.cat([originals, self.reconstruct(originals)])
            rows = [self.picture(both[:8], 32), self.picture(both[8:], 32)]
            sheet = Image.new("RGB", (rows[0].width, rows[0].height * 2))
            for i, row in enumerate(rows):
                sheet.paste(row.convert("RGB"), (0, i * row.height))
            sheet.save(folder / "reconstructions.png")
        (folder / "README.md").write_text(
            card or "# A vae_lightning model\n\nLoad it with `TrainedVAE.from_pretrained`.\n"
        )
        return folder

    def push_to_hub(self, repo_id: str, datamodule: Any = None, card: str | None = None, private: bool = False) -> str:
        """`save_pretrained` into the Hub repository `repo_id` (created if needed) for a user logged in with
        `hf auth login`; returns the commit's URL."""
        import tempfile

        from huggingface_hub import HfApi

        with tempfile.TemporaryDirectory() as folder:
            self.save_pretrained(folder, datamodule, card)
            api = HfApi()
            api.create_repo(repo_id, private=private, exist_ok=True)
            return str(api.upload_folder(repo_id=repo_id, folder_path=folder))

    def preprocessing(self) -> dict[str, Any]:
        """How images become the model's input: its shape, and a photo's crop and scaling."""
        channels, height, width = self.input_shape
        data = self.module.hparams.get("data") or {}
        return {
            "input_shape": [channels, height, width],
            "grayscale": channels == 1,
            "crop": f"the centre square ({data.get('fit', 'crop')}), or the face where one is found",
            "pixel_scale": float(data.get("pixel_scale", 255.0)),
        }

    @torch.no_grad()
    def data_summary(self, datamodule: Any) -> ExportedData:
        """What the model keeps of `datamodule` when shared: every attribute's direction, the label names, the
        mean code of each label of the training split, the default attribute."""
        data = ExportedData(class_names=dict(datamodule.class_names))
        codes = self.codes(datamodule.train_set, shown_as="Encoding the training images")  # once, for all of it
        for name, attribute in self.attributes(datamodule).items():
            try:
                data.directions[name] = attribute_direction(codes, attribute, name)
            except DataNotFoundError as unusable:  # e.g. no image without it: not exported
                log.warning("Attribute %s is not exported: %s", name, unusable)
        labels = datamodule.train_set.labels
        labels = labels if labels.dim() == 1 else labels[:, 0]
        for label in sorted(set(labels.tolist())):
            data.label_means[int(label)] = codes[labels == label].mean(0)
        default = datamodule.default_attribute
        data.default_attribute = default if default in data.directions else next(iter(data.directions), None)
        return data

    @property
    def device(self) -> torch.device:
        return self.module.device

    # -- images in ----------------------------------------------------------------------------------------
    def images(self, images: Images, find_face: bool = False) -> torch.Tensor:
        """`images` as one (N, C, H, W) float batch in [0, 1] on the model's device: a path, a PIL image, a
        tensor or numpy array (C, H, W) or (N, C, H, W) (floats in [0, 1] or bytes 0-255), or a list of any of
        these."""
        if isinstance(images, torch.Tensor | np.ndarray):
            return self._tensor(torch.as_tensor(images))
        items = [images] if isinstance(images, str | os.PathLike | Image.Image) else list(images)
        if not items:
            raise ValueError("no images given")
        return torch.cat([self._one(item, find_face) for item in items])

    def _one(self, item: ImageLike, find_face: bool) -> torch.Tensor:
        if isinstance(item, torch.Tensor | np.ndarray):
            return self._tensor(torch.as_tensor(item))
        if isinstance(item, Image.Image):
            return photo_tensor(item, self.input_shape, find_face).unsqueeze(0).to(self.device)
        if isinstance(item, str | os.PathLike):
            return read_photo(item, self.input_shape, find_face).unsqueeze(0).to(self.device)
        raise TypeError(f"an image must be a path, a PIL image, a tensor or an array, not {type(item).__name__}")

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
        """The codes (N, latent_dim) of `images`: the posteriors' `code`, a Gaussian posterior's mean."""
        return self.module.net.infer(self.images(images, find_face)).code

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Images (N, C, H, W) in [0, 1] (the likelihood's mean) of codes `z` (N, latent_dim) or (latent_dim,)."""
        z = z.unsqueeze(0) if z.dim() == 1 else z
        if z.dim() != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"codes of shape {tuple(z.shape)} do not fit this model: it takes (N, {self.latent_dim})")
        return self.module.decode_image(z.to(self.device, torch.float32)).float()

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """`n` images decoded from codes drawn by the model's sampler (its prior, or the mixture fitted to the
        training codes with `sampler=gmm`), (n, C, H, W) in [0, 1]; `generator` (on the CPU or the model's
        device) makes them reproducible."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"n={n!r}: the number of images must be an integer >= 0")
        return self.decode(self.module.sampler.sample(n, self.module.prior, generator))

    def reconstruct(self, images: Images, find_face: bool = False) -> torch.Tensor:
        """The decodes of the codes of `images`, (N, C, H, W) in [0, 1]."""
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
        names, ends = dict(datamodule.class_names), datamodule.interpolation_ends
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

    def attribute_names(self, datamodule: Any = None) -> list[str]:
        """The attributes one can morph along: those of `datamodule`, or those an exported model carries."""
        if datamodule is None and self.exported is not None:
            return list(self.exported.directions)
        return list(self.attributes(datamodule if datamodule is not None else self.datamodule()))

    def attribute_direction(
        self, name: str | None = None, datamodule: Any = None, cache: bool = True
    ) -> tuple[torch.Tensor, str]:
        """The direction in latent space along which attribute `name` grows (None: the data set's default, e.g.
        `dog` for faces and dogs) and what one unit of it is, from the training split of the checkpoint's data
        (`datamodule`, default `self.datamodule()`). Cached beside the checkpoint
        (`<checkpoint>.attribute_<name>.pt`, recomputed when the checkpoint file changes)."""
        if datamodule is None and self.exported is not None:  # an exported model: its stored directions
            name = str(name) if name is not None else self.exported.default_attribute
            if name not in self.exported.directions:
                offered = ", ".join(self.exported.directions) or "none"
                raise ConfigValueError("attribute", f"must be one of the exported model's attributes: {offered}", name)
            direction, what = self.exported.directions[name]
            return direction.to(self.device), what
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
    def codes(self, split: Any, shown_as: str | None = None) -> torch.Tensor:
        """The codes of every sample of a data module's split, in batches of 256, on the CPU; with `shown_as`,
        its progress is shown under that name (`core.progress`)."""
        starts = range(0, len(split), 256)
        batches = (split.__getitems__(range(i, min(i + 256, len(split))))[0] for i in starts)
        if shown_as is not None:
            batches = progress(batches, len(starts), f"{shown_as} (batches of 256)", unit="batch")
        return torch.cat([self.module.net.infer(x.to(self.device)).code.float().cpu() for x in batches])


def hub_snapshot(repo_id: str, revision: str | None = None) -> Path:
    """The local folder of Hub repository `repo_id` at `revision`, through huggingface_hub's cache (which
    honours `HF_HUB_OFFLINE=1` and `HF_HUB_CACHE`)."""
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import HFValidationError
    except ImportError:
        raise DataNotFoundError(
            f"{repo_id} is no folder here, and reading a Hub repository needs huggingface_hub: "
            'pip install "vae_lightning[hub]"'
        ) from None
    try:
        return Path(snapshot_download(repo_id, revision=revision))
    except HFValidationError:
        raise DataNotFoundError(f"{repo_id} is neither a folder nor a Hub repository id (user/repo).") from None
    except Exception as bad:  # offline without it in the cache, not found, no network: huggingface_hub's errors
        reason = str(bad).strip().splitlines()[0][:200] if str(bad).strip() else type(bad).__name__
        raise DataNotFoundError(f"{repo_id} is no folder here and could not be had from the Hub ({reason}).") from None


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
