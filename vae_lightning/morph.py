"""Turn a friend into a dog: decodes along a path in latent space, as an animated GIF and a PNG strip.

    python -m vae_lightning.morph ckpt_path=<file.ckpt> [source=friend.jpg] [target=dog.jpg] [output=morph.gif]
    python -m vae_lightning.morph ckpt_path=<file.ckpt> source=friend.jpg mode=attribute output=friend_dog.gif
    python -m vae_lightning.morph ckpt_path=<celeba.ckpt> source=friend.jpg mode=attribute attribute=Smiling

`mode=interpolate` (the default, the seed's morph) decodes the straight line from the source's latent code to
the target's. `mode=attribute` moves the source's code along the direction of an attribute of the checkpoint's
data set (`attribute`, `dog` by default for faces and dogs): s * (mean code of the samples with it - mean code
of those without), or for a quantity such as UTKFace's age, s standard deviations along the regression of the
codes on it ("older"), s from 0 to `scale`, so the friend's own pose and colouring carry over. The direction is
computed from the checkpoint's training data once and cached beside the checkpoint
(`<checkpoint>.attribute_<name>.pt`). Which attributes a data set has is its data module's `attributes()`.

A source photo of a person is cropped to the face as the training faces were (OpenCV's bundled face detector,
`pip install -e ".[faces]"`; without it, or when no face is found, the centre square, with a warning); a
target photo is centre-cropped. Without photos, a human and a dog come from the validation split of the
checkpoint's data set (for other data sets, two validation samples with different labels). The GIF goes there
and back with a pause at each end; the strip (`<output>.png`) shows the source, the frames and the target.
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig
from PIL import Image, ImageOps, UnidentifiedImageError

from vae_lightning.callbacks.grid import enlarge, make_grid, to_uint8_hwc
from vae_lightning.data.in_memory import Attribute
from vae_lightning.core import checks
from vae_lightning.core.errors import ConfigValueError, DataNotFoundError, VAELightningError
from vae_lightning.run.tools import run_tool

log = logging.getLogger("morph")

# Where UTKFace's aligned faces sit in their frame, as OpenCV's frontal-face detector sees them (the median
# over the real sample faces): the detected box is this fraction of the frame's side, its centre this far down.
FACE_FRACTION = 0.86
FACE_CENTRE_Y = 0.44


def detect_face(image: Image.Image) -> tuple[int, int, int, int] | None:
    """The largest frontal face (x, y, w, h) that OpenCV's bundled Haar cascade finds, or None."""
    try:
        import cv2
        import numpy as np
    except ImportError:
        log.warning('OpenCV is not installed (pip install -e ".[faces]"): using the centre of the photo.')
        return None
    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    grey = np.asarray(image.convert("L"))
    side = min(grey.shape)
    faces = cascade.detectMultiScale(grey, scaleFactor=1.1, minNeighbors=5, minSize=(side // 8, side // 8))
    if len(faces) == 0:
        return None
    x, y, w, h = max(faces, key=lambda box: box[2] * box[3])
    return int(x), int(y), int(w), int(h)


def face_square(face: tuple[int, int, int, int], width: int, height: int) -> tuple[float, float, float, float]:
    """The square crop that frames `face` as UTKFace frames its faces, shifted (or shrunk) into the image."""
    x, y, w, h = face
    side = min(w / FACE_FRACTION, width, height)
    left = min(max(x + w / 2 - side / 2, 0.0), width - side)
    top = min(max(y + h / 2 - FACE_CENTRE_Y * side, 0.0), height - side)
    return left, top, left + side, top + side


def read_photo(path: str, input_shape: tuple[int, ...], find_face: bool) -> torch.Tensor:
    """A photo as the model's input (1, C, H, W) in [0, 1]: upright (EXIF), cropped to the face (or the centre
    square), resized with antialiasing, grey or colour as the model was trained."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise DataNotFoundError(f"The image {path} does not exist.")
    try:
        with Image.open(file) as opened:
            image = ImageOps.exif_transpose(opened).convert("RGB")
    except (OSError, UnidentifiedImageError, ValueError) as bad:
        raise DataNotFoundError(f"The image {path} could not be read ({type(bad).__name__}: {bad}).") from None
    width, height = image.size
    side = min(width, height)
    box = ((width - side) / 2, (height - side) / 2, (width + side) / 2, (height + side) / 2)
    if find_face:
        face = detect_face(image)
        if face is None:
            log.warning("No face found in %s: using the centre square of the photo.", path)
        else:
            box = face_square(face, width, height)
    channels, size = input_shape[0], input_shape[-1]
    image = image.resize((size, size), Image.Resampling.BILINEAR, box=box, reducing_gap=2.0)
    if channels == 1:
        image = image.convert("L")
    pixels = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8).view(size, size, channels)
    return pixels.permute(2, 0, 1).float().div(255).unsqueeze(0)


def validation_pair(module, datamodule) -> tuple[torch.Tensor, torch.Tensor, str]:
    """A human and a dog from the validation split (or two samples with different labels)."""
    from vae_lightning.callbacks.pictures import interpolation_pairs

    val = datamodule.val_set
    names = dict(getattr(datamodule, "class_names", {}) or {})
    with torch.no_grad():
        loc = module.net.encode(val.__getitems__(range(len(val)))[0].to(module.device)).loc.cpu()
    if set(names.values()) >= {"human", "dog"}:
        missing = [d for d in ("human", "dog") if not any(names.get(int(v)) == d for v in val.labels.tolist())]
        if missing:
            raise DataNotFoundError(
                f"The checkpoint's validation split has no {' and no '.join(missing)} image: give source=<photo> "
                "and target=<photo>."
            )
    ((a, b),), how = interpolation_pairs(val.labels, names, loc, 1)
    if b < 0:
        raise DataNotFoundError("The checkpoint's validation split has one image only: give source= and target=.")
    images = val.__getitems__([a, b])[0]
    describe = f"validation samples {a} and {b} ({how})"
    return images[:1], images[1:], describe


def train_codes(module, datamodule) -> torch.Tensor:
    """The posterior means of the checkpoint's training split, in batches."""
    train = datamodule.train_set
    codes = []
    with torch.no_grad():
        for start in range(0, len(train), 256):
            x = train.__getitems__(range(start, min(start + 256, len(train))))[0].to(module.device)
            codes.append(module.net.encode(x).loc.cpu())
    return torch.cat(codes)


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


def cached_direction(module, datamodule, ckpt_path: Path, name: str | None) -> tuple[torch.Tensor, str]:
    """The direction of attribute `name` (None: `dog` where the data set has it), computed from the checkpoint's
    training split once and cached beside the checkpoint (`<checkpoint>.attribute_<name>.pt`, recomputed when the
    checkpoint file changes)."""
    attributes = datamodule.attributes(datamodule.train_set)
    if name is None and "dog" in attributes:
        name = "dog"
    if name not in attributes:
        offered = ", ".join(attributes) or "none (it has no labels)"
        raise ConfigValueError(
            "attribute", f"must be one of the attributes of the checkpoint's data set: {offered}", name
        )
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in name)
    cache = ckpt_path.with_name(f"{ckpt_path.name}.attribute_{safe}.pt")
    stamp = [ckpt_path.stat().st_size, ckpt_path.stat().st_mtime_ns]
    if cache.is_file():
        stored = torch.load(cache, weights_only=True)
        if stored.get("stamp") == stamp and stored.get("name") == name:
            return stored["direction"], stored["what"]
    direction, what = attribute_direction(train_codes(module, datamodule), attributes[name], name)
    from vae_lightning.core.files import atomic_write

    try:
        atomic_write(
            cache, lambda f: torch.save({"direction": direction, "what": what, "name": name, "stamp": stamp}, f)
        )
    except OSError as bad:
        log.warning("Could not cache the direction of %s in %s (%s).", name, cache, bad)
    return direction, what


def to_pil(image: torch.Tensor) -> Image.Image:
    array = to_uint8_hwc(image).numpy()
    return Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array)


def write_gif(frames: torch.Tensor, path: Path, frame_ms: int, pause_ms: int) -> None:
    """There and back: frames 0..n-1 then n-2..1, resting `pause_ms` on the first and the last."""
    pictures = [to_pil(f) for f in frames]
    n = len(pictures)
    order = list(range(n)) + list(range(n - 2, 0, -1))
    durations = [pause_ms if i in (0, n - 1) else frame_ms for i in order]
    first, *rest = (pictures[i] for i in order)
    first.save(path, save_all=True, append_images=rest, duration=durations, loop=0, disposal=1)


def morph(cfg: DictConfig) -> tuple[Path, Path]:
    from vae_lightning.run.checkpoints import load_module
    from vae_lightning.run.tools import checkpoint_datamodule
    from vae_lightning.run.trainer import quiet_libraries

    quiet_libraries()
    steps = checks.integer("steps", cfg.steps, low=2)
    scale = checks.number("scale", cfg.scale)
    if cfg.mode not in ("interpolate", "attribute"):
        raise ConfigValueError("mode", "must be interpolate or attribute", cfg.mode)
    torch.manual_seed(cfg.seed)
    module = load_module(cfg.ckpt_path)
    shape = tuple(module.hparams["input_shape"])
    needs_data = cfg.mode == "attribute" or cfg.source is None or cfg.target is None
    datamodule = checkpoint_datamodule(module, cfg.dataset) if needs_data else None
    source = read_photo(cfg.source, shape, bool(cfg.detect_face)) if cfg.source is not None else None
    target = read_photo(cfg.target, shape, find_face=False) if cfg.target is not None else None
    what = f"{cfg.source} -> {cfg.target}" if cfg.mode == "interpolate" else str(cfg.source)
    if source is None and cfg.mode == "attribute":  # the first validation sample (faces and dogs: a human)
        source, _ = datamodule.diagnostic_samples(1)
        what = "validation sample 0"
    if source is None or (cfg.mode == "interpolate" and target is None):
        val_source, val_target, what = validation_pair(module, datamodule)
        source = val_source if source is None else source
        target = val_target if target is None else target
    with torch.no_grad():
        z = module.net.encode(source.to(module.device)).loc[0]
        if cfg.mode == "attribute":
            direction, how = cached_direction(module, datamodule, Path(cfg.ckpt_path).expanduser(), cfg.attribute)
            path = z + torch.linspace(0.0, scale, steps, device=z.device)[:, None] * direction.to(z.device)
            ends = [source]
            what += f" plus {how}, s from 0 to {scale:g}"
        else:
            end = module.net.encode(target.to(module.device)).loc[0]
            t = torch.linspace(0.0, 1.0, steps, device=z.device)[:, None]
            path = (1 - t) * z + t * end
            ends = [source, target]
        frames = module.decode_image(path).float().cpu()
    frames = enlarge(frames, cfg.min_side)
    gif = Path(cfg.output).expanduser()
    strip = gif.with_suffix(".png")
    row = torch.cat([enlarge(ends[0], cfg.min_side), frames, *(enlarge(e, cfg.min_side) for e in ends[1:])])
    try:
        gif.parent.mkdir(parents=True, exist_ok=True)
        write_gif(frames, gif, cfg.frame_ms, cfg.pause_ms)
        to_pil(make_grid(row, nrow=len(row))).save(strip)
    except OSError as bad:
        raise VAELightningError(f"Could not write {gif} or {strip}: {bad}. Choose another output=<file.gif>.") from None
    log.info("Morphed %s in %d steps (%s): %s and %s", what, steps, cfg.mode, gif, strip)
    return gif, strip


@hydra.main(version_base="1.3", config_path="conf", config_name="morph")
def main(cfg: DictConfig) -> None:
    run_tool(morph, cfg)


if __name__ == "__main__":
    main()
