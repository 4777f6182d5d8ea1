"""Write a folder of images as streaming shards for `dataset=shards` (litdata's format).

    vae-shards source=<image folder> output=<shard folder> image_size=128      (python -m vae_lightning.shards)

The images are found and labelled as `dataset=images` finds them (every image file at any depth; the label is the
first sub-folder; odd files are skipped and counted), cropped or padded to squares of `image_size` pixels, split
into train, val and test by the same seeded, label-stratified rule, and written split by split with
`litdata.optimize` in parallel over the free cores, with its progress bar. A conversion that is interrupted
resumes where it stopped when run again with the same settings (litdata's checkpoints; a finished split is not
written twice). The shards hold uint8 images: no decoding when training.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from vae_lightning.core import checks
from vae_lightning.core.config import check_command_line
from vae_lightning.core.errors import DataNotFoundError, VAELightningError
from vae_lightning.data.folder import ImageFolderSource
from vae_lightning.data.images import Item, decode_crop_resize
from vae_lightning.data.photos import stratified_split
from vae_lightning.data.shards import METADATA, SHARDS_FORMAT, SPLITS, litdata_module

log = logging.getLogger(__name__)


class ToSample:
    """litdata's `fn`: one (path, label, pad) input as a stored sample, or None (skipped) for a file that is not
    a readable image."""

    def __init__(self, image_size: int, grayscale: bool) -> None:
        self.image_size, self.grayscale = image_size, grayscale

    def __call__(self, entry: tuple[str, int, bool]) -> dict[str, Any] | None:
        path, label, pad = entry
        pixels = decode_crop_resize(Item(path, None, (label,), pad), self.image_size, self.grayscale)
        return None if isinstance(pixels, str) else {"image": pixels, "label": label}


def settings(cfg: DictConfig) -> dict[str, Any]:
    """What the shards depend on: a folder written with other settings is not resumed into."""
    keys = ("image_size", "grayscale", "fit", "val_fraction", "test_fraction", "split_seed")
    return {"source": str(Path(cfg.source).expanduser().resolve()), **{key: cfg[key] for key in keys}}


def written_labels(litdata: Any, folder: Path) -> list[int]:
    """The labels of a written split in its stored order (one pass over it)."""
    stream = litdata.StreamingDataset(str(folder))
    return [int(stream[i]["label"]) for i in range(len(stream))]


def write_shards(cfg: DictConfig) -> dict[str, Any]:
    litdata = litdata_module()
    image_size = checks.integer("image_size", cfg.image_size, low=8)
    checks.number("val_fraction", cfg.val_fraction, low=0.0, high=1.0, high_inclusive=False)
    checks.number("test_fraction", cfg.test_fraction, low=0.0, high=1.0, high_inclusive=False)
    workers = checks.non_negative_int("workers", cfg.workers) or max(len(os.sched_getaffinity(0)), 1)
    source = ImageFolderSource(str(cfg.source), str(cfg.fit), name="shards")
    problem = source.missing()
    if problem is not None:
        raise DataNotFoundError(str(problem).replace("Point `dataset.root`", "Point `source`"))
    output = Path(cfg.output).expanduser()
    wanted = settings(cfg)
    progress_file = output / ".vae_shards_progress.json"
    try:
        progress = json.loads(progress_file.read_text()) if progress_file.is_file() else None
    except (OSError, ValueError):
        progress = {}  # unreadable: not ours to resume into
    if progress is not None and (not isinstance(progress, dict) or progress.get("settings") != wanted):
        raise VAELightningError(
            f"{output} holds shards written with other settings, or an unreadable record of them: give another output."
        )
    if (output / METADATA).is_file() and progress is not None and progress.get("done") == list(SPLITS):
        log.info("%s is already written with these settings.", output)
        return json.loads((output / METADATA).read_text())
    if progress is None and output.exists() and any(output.iterdir()):
        raise VAELightningError(f"{output} is not empty and holds no shards of vae-shards: give another output.")
    items = source.items()
    labels = torch.tensor([item.labels[0] for item in items])
    splits = stratified_split(
        torch.zeros(len(items), dtype=torch.long), labels, cfg.val_fraction, cfg.test_fraction, cfg.split_seed
    )
    progress = progress or {"settings": wanted, "done": []}
    output.mkdir(parents=True, exist_ok=True)
    progress_file.write_text(json.dumps(progress))
    to_sample = ToSample(image_size, bool(cfg.grayscale))
    for split, index in zip(SPLITS, splits, strict=True):
        if split in progress["done"]:
            continue
        inputs = [(items[i].path, int(labels[i]), items[i].pad) for i in index.tolist()]
        log.info("Writing the %s split: %d images", split, len(inputs))
        if inputs:
            litdata.optimize(
                fn=to_sample,
                inputs=inputs,
                output_dir=str(output / split),
                chunk_bytes=str(cfg.chunk_bytes),
                num_workers=min(workers, len(inputs)),
                use_checkpoint=True,
                start_method="fork",  # the workers only decode images: no re-import of torch and the package
            )
        progress["done"].append(split)
        progress_file.write_text(json.dumps(progress))
    stored = {split: written_labels(litdata, output / split) if (output / split).is_dir() else [] for split in SPLITS}
    skipped = len(items) - sum(len(v) for v in stored.values())
    if skipped:
        log.warning("Skipped %d of %d files that are not readable images.", skipped, len(items))
    channels = 1 if cfg.grayscale else 3
    meta = {
        "format": SHARDS_FORMAT,
        "input_shape": [channels, image_size, image_size],
        "class_names": {str(k): v for k, v in source.class_names().items()},
        "labels": stored,
        "sizes": {split: len(v) for split, v in stored.items()},
        "skipped": skipped,
        "settings": wanted,
    }
    (output / METADATA).write_text(json.dumps(meta))
    log.info("Wrote %s: %s samples of %dx%d", output, meta["sizes"], image_size, image_size)
    print(json.dumps({"output": str(output), "sizes": meta["sizes"], "skipped": skipped}))
    return meta


@hydra.main(version_base="1.3", config_path="conf", config_name="shards")
def hydra_app(cfg: DictConfig) -> None:
    try:
        for key in ("source", "output"):
            if OmegaConf.is_missing(cfg, key):
                raise VAELightningError(f"{key} is required: vae-shards source=<image folder> output=<shard folder>")
        write_shards(cfg)
    except VAELightningError as error:
        print(f"Error: {error}", file=sys.stderr)
        sys.exit(1)


def main() -> None:
    """The `vae-shards` command."""
    check_command_line(sys.argv[1:], "shards")
    hydra_app()


if __name__ == "__main__":
    main()
