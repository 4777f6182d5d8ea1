"""Turn a friend into a dog: the decoded path between two encoded images, as an animated GIF and a PNG strip.

    python -m vae_lightning.morph ckpt_path=<file.ckpt> output=<file.gif> steps=25 [source=<image>] [target=<image>]

Any photo works as `source` or `target`: it gets the checkpoint's preprocessing (centre crop, resize, grey or
colour as trained). Without them, a human and a dog from the validation split of the checkpoint's data set are
used (for other data sets, two validation samples with different labels). The GIF goes there and back with a
pause at each end; the strip (`<output>.png`) shows the source, the `steps` frames and the target.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import MISSING, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from PIL import Image

from vae_lightning import checks
from vae_lightning.callbacks.grid import enlarge, make_grid, to_uint8_hwc
from vae_lightning.checkpoints import load_module
from vae_lightning.errors import DataNotFoundError, VAELightningError

log = logging.getLogger("morph")


@dataclass
class MorphConfig:
    ckpt_path: str = MISSING
    output: str = "morph.gif"
    steps: int = 25
    source: str | None = None
    target: str | None = None
    frame_ms: int = 80  # duration of each frame
    pause_ms: int = 800  # how long the GIF rests on each end
    min_side: int = 128  # frames are enlarged to at least this size
    seed: int = 0


def read_photo(path: str, input_shape: tuple[int, ...]) -> torch.Tensor:
    """A photo as the model's input (1, C, H, W) in [0, 1]: centre crop, resize, grey or colour."""
    from vae_lightning.data.images import Item, decode_crop_resize

    if not Path(path).expanduser().is_file():
        raise DataNotFoundError(f"The image {path} does not exist.")
    channels, size = input_shape[0], input_shape[-1]
    result = decode_crop_resize(Item(str(Path(path).expanduser())), size, grayscale=channels == 1)
    if isinstance(result, str):
        raise DataNotFoundError(f"The image {path} could not be read ({result}).")
    return torch.from_numpy(result).float().div(255).unsqueeze(0)


def validation_pair(module) -> tuple[torch.Tensor, torch.Tensor, str]:
    """A human and a dog (or two differently labelled samples) from the checkpoint's validation split."""
    from vae_lightning.callbacks.diagnostics import interpolation_pairs
    from vae_lightning.config import build

    data = module.hparams.get("data")
    if not data:
        raise DataNotFoundError(
            "The checkpoint does not say which data set it was trained on: give source=<image> and target=<image>."
        )
    datamodule = build(data, "dataset")
    datamodule.prepare_data()
    datamodule.setup("fit")
    labels = datamodule.val_set.labels
    names = dict(getattr(datamodule, "class_names", {}) or {})
    ((a, b),) = interpolation_pairs(labels, names, 1)
    pick = datamodule.val_set.__getitems__([a, b])[0]
    describe = (
        f"validation samples {a} ({names.get(int(labels[a]), int(labels[a]))}) and {b} "
        f"({names.get(int(labels[b]), int(labels[b]))})"
    )
    return pick[:1], pick[1:], describe


def morph_frames(module, source: torch.Tensor, target: torch.Tensor, steps: int) -> torch.Tensor:
    """`steps` decodes (steps, C, H, W) along the line between the two latent means."""
    with torch.no_grad():
        z = module.net.encode(torch.cat([source, target]).to(module.device)).loc
        t = torch.linspace(0.0, 1.0, steps, device=z.device)[:, None]
        return module.decode_image((1 - t) * z[0] + t * z[1]).float().cpu()


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


def run(cfg) -> tuple[Path, Path]:
    steps = checks.positive_int("steps", cfg.steps)
    if steps < 2:
        raise checks.ConfigValueError("steps", "must be at least 2", steps)
    torch.manual_seed(cfg.seed)
    module = load_module(cfg.ckpt_path)
    shape = tuple(module.hparams["input_shape"])
    if (cfg.source is None) != (cfg.target is None):
        raise checks.ConfigValueError(
            "source", "give both source=<image> and target=<image>, or neither", cfg.source or cfg.target
        )
    if cfg.source is not None:
        source, target = read_photo(cfg.source, shape), read_photo(cfg.target, shape)
        what = f"{cfg.source} -> {cfg.target}"
    else:
        source, target, what = validation_pair(module)
    frames = morph_frames(module, source, target, steps)
    frames = enlarge(frames, cfg.min_side)
    gif = Path(cfg.output).expanduser()
    strip = gif.with_suffix(".png")
    try:
        gif.parent.mkdir(parents=True, exist_ok=True)
        write_gif(frames, gif, cfg.frame_ms, cfg.pause_ms)
        row = torch.cat([enlarge(source, cfg.min_side), frames, enlarge(target, cfg.min_side)])
        to_pil(make_grid(row, nrow=len(row))).save(strip)
    except OSError as bad:
        raise VAELightningError(f"Could not write {gif} or {strip}: {bad}. Choose another output=<file.gif>.") from None
    log.info("Morphed %s in %d steps: %s and %s", what, steps, gif, strip)
    return gif, strip


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if any(arg in ("-h", "--help") for arg in argv):
        print(__doc__)
        return 0
    try:
        cfg = OmegaConf.merge(OmegaConf.structured(MorphConfig), OmegaConf.from_dotlist(argv))
        if OmegaConf.is_missing(cfg, "ckpt_path"):
            raise checks.ConfigValueError("ckpt_path", "is required: ckpt_path=<file.ckpt>", None)
        run(cfg)
    except VAELightningError as error:
        print(f"Error: {error}", file=sys.stderr)
        return 1
    except OmegaConfBaseException as error:
        print(
            f"Error: bad argument ({str(error).splitlines()[0]}). Usage: python -m vae_lightning.morph "
            "ckpt_path=<file.ckpt> output=<file.gif> steps=25 [source=<image> target=<image>]",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
