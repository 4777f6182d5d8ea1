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
`pip install "vae_lightning[faces]"`; without it, or when no face is found, the centre square, with a warning);
a target photo is centre-cropped. Without photos, the two ends come from the validation split of the
checkpoint's data set as the `val/interpolations` picture chooses them (faces and dogs: a human and a dog; other
data sets: two samples with different labels). The GIF goes there
and back with a pause at each end; the strip (`<output>.png`) shows the source, the frames and the target.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from vae_lightning.core import checks
from vae_lightning.core.config import check_command_line, user_config_dirs
from vae_lightning.core.errors import ConfigValueError, VAELightningError
from vae_lightning.run.tools import run_tool

log = logging.getLogger("morph")


def morph(cfg: DictConfig) -> tuple[Path, Path]:
    """Writes the GIF `cfg.output` and the strip beside it (`.png`); returns both paths."""
    # Deferred for start-up time: Lightning and torch take seconds to import; `--help` and a bad value need neither.
    import torch

    from vae_lightning.api import TrainedVAE
    from vae_lightning.callbacks.grid import write_morph
    from vae_lightning.run.trainer import quiet_libraries

    quiet_libraries()
    problems = checks.Problems()  # every bad value in one message, before anything is loaded
    steps = problems.check(checks.integer, "steps", cfg.steps, low=2)
    scale = problems.check(checks.number, "scale", cfg.scale)
    seed = problems.check(checks.non_negative_int, "seed", cfg.seed)
    for key in ("min_side", "frame_ms", "pause_ms"):
        problems.check(checks.positive_int, key, cfg[key])
    if cfg.mode not in ("interpolate", "attribute"):
        problems.add(ConfigValueError("mode", "must be interpolate or attribute", cfg.mode))
    problems.raise_if_any()
    torch.manual_seed(seed)
    vae = TrainedVAE.open(cfg.ckpt_path, config_dirs=user_config_dirs())  # a checkpoint or an exported model
    exported = vae.exported is not None  # it carries its attribute directions: no data needed for them
    if cfg.mode == "attribute":  # the direction (unless exported with the model) and a source to move
        needs_data = not exported or cfg.source is None
    else:  # the ends that are not given come from the validation split
        needs_data = cfg.source is None or cfg.target is None
    # the photos first: a file that is not an image is said before the data set is loaded
    source = vae.images(cfg.source, find_face=bool(cfg.detect_face)) if cfg.source is not None else None
    target = vae.images(cfg.target) if cfg.target is not None else None
    datamodule = vae.datamodule(cfg.dataset, cfg.paths) if needs_data else None
    what = f"{cfg.source} -> {cfg.target}" if cfg.mode == "interpolate" else str(cfg.source)
    if source is None and cfg.mode == "attribute":  # the first diagnostic sample (faces and dogs: a human)
        source = datamodule.diagnostic_samples(1)[0]
        what = "validation sample 0"
    if source is None or (cfg.mode == "interpolate" and target is None):
        val_source, val_target, what = vae.validation_pair(datamodule)
        source = val_source if source is None else source
        target = val_target if target is None else target
    if cfg.mode == "attribute":
        direction, how = vae.attribute_direction(cfg.attribute, datamodule)
        frames = vae.along(vae.encode(source)[0], direction, scale, steps)
        ends = [source]
        what += f" plus {how}, s from 0 to {scale:g}"
    else:
        frames = vae.interpolate(source, target, steps)
        ends = [source, target]
    gif = Path(cfg.output).expanduser()
    png = gif.with_suffix(".png")
    try:
        gif.parent.mkdir(parents=True, exist_ok=True)
        write_morph(frames, ends, gif, png, cfg.min_side, cfg.frame_ms, cfg.pause_ms)
    except OSError as bad:
        raise VAELightningError(f"Could not write {gif} or {png}: {bad}. Choose another output=<file.gif>.") from None
    log.info("Morphed %s in %d steps (%s): %s and %s", what, steps, cfg.mode, gif, png)
    return gif, png


@hydra.main(version_base="1.3", config_path="conf", config_name="morph")
def hydra_app(cfg: DictConfig) -> None:
    run_tool(morph, cfg)


def main() -> None:
    """The `vae-morph` command."""
    check_command_line(sys.argv[1:], "morph")  # a mistyped name is one line, before Hydra composes anything
    hydra_app()


if __name__ == "__main__":
    main()
