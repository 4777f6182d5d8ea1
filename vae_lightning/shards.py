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
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from vae_lightning.core import checks
from vae_lightning.core.config import build, check_command_line
from vae_lightning.core.errors import ConfigValueError, DataNotFoundError, VAELightningError
from vae_lightning.data.celeba import CelebASource
from vae_lightning.data.folder import ImageFolderSource
from vae_lightning.data.images import Item, decode_crop_resize
from vae_lightning.data.photos import stratified_split
from vae_lightning.data.shards import METADATA, SHARDS_FORMAT, SPLITS, is_url, litdata_module
from vae_lightning.data.utkface import GENDERS, UTKFaceSource

log = logging.getLogger(__name__)


class ToSample:
    """litdata's `fn`: one input (an `Item`'s path, crop box, labels and pad as plain values, which litdata's
    checkpoints store as JSON, then the batch label) as a stored sample, or None (skipped) for a file that is not
    a readable image."""

    def __init__(self, image_size: int, grayscale: bool, with_table: bool = False) -> None:
        self.image_size, self.grayscale, self.with_table = image_size, grayscale, with_table

    def __call__(self, entry: list[Any]) -> dict[str, Any] | None:
        path, box, labels, pad, label = entry
        item = Item(path, tuple(box) if box is not None else None, tuple(labels), pad)
        pixels = decode_crop_resize(item, self.image_size, self.grayscale)
        if isinstance(pixels, str):
            return None
        sample = {"image": pixels, "label": label}
        # every label of the photo (UTKFace's age, gender, race; CelebA's attributes), -1 where unknown
        return sample | {"table": np.asarray(item.labels, dtype=np.int64)} if self.with_table else sample


class FolderLabels:
    """`labels=folder`: any image folder, labelled as `dataset=images` labels it (the first sub-folder)."""

    kind = "folder"

    def source(self, root: str, fit: str) -> Any:
        return ImageFolderSource(root, fit, name="shards")

    def label(self, item: Item) -> int:
        return item.labels[0]

    def class_names(self, source: Any) -> dict[int, str]:
        return source.class_names()

    def official_splits(self, source: Any, items: list[Item]) -> None:
        return None  # split by the seeded, label-stratified rule

    def extra_metadata(self, source: Any) -> dict[str, Any]:
        return {}


class UTKFaceLabels(FolderLabels):
    """`labels=utkface`: UTKFace's aligned faces, each file's (age, gender, race) from its name kept with the
    shards (the attribute morph's age, female, male and race directions, the test's MIG factors); the batch
    label is the gender, as `dataset=utkface` has it."""

    kind = "utkface"

    def source(self, root: str, fit: str) -> Any:
        return UTKFaceSource(root)

    def label(self, item: Item) -> int:
        return item.labels[1]

    def class_names(self, source: Any) -> dict[int, str]:
        return {k: v for k, v in GENDERS.items() if k >= 0}


class CelebALabels(FolderLabels):
    """`labels=celeba`: CelebA's release (`img_align_celeba/`, `list_attr_celeba.txt`, and where present
    `list_eval_partition.txt` and `identity_CelebA.txt`), its 40 attributes kept with the shards, its official
    partition as the splits (a seeded split where the partition leaves one empty), the centre `crop` of
    each aligned face, and the attribute `label` as the batch label, as `dataset=celeba` has them."""

    kind = "celeba"

    def __init__(self, label: str = "Male", crop: int = 148) -> None:
        self.label_name, self.crop = str(label), crop
        self.column = 0

    def source(self, root: str, fit: str) -> Any:
        return CelebASource(root, self.crop)

    def label(self, item: Item) -> int:
        return max(item.labels[self.column], 0)

    def class_names(self, source: Any) -> dict[int, str]:
        if self.label_name not in source.attribute_names:
            names = ", ".join(source.attribute_names)
            raise ConfigValueError("labels.label", f"must be one of CelebA's attributes: {names}", self.label_name)
        self.column = source.attribute_names.index(self.label_name)
        return {0: f"not {self.label_name}", 1: self.label_name}

    def official_splits(self, source: Any, items: list[Item]) -> list[torch.Tensor] | None:
        return source.official_splits([item.path for item in items])

    def extra_metadata(self, source: Any) -> dict[str, Any]:
        return {"attribute_names": list(source.attribute_names)}


def settings(cfg: DictConfig) -> dict[str, Any]:
    """What the shards depend on: a folder written with other settings is not resumed into."""
    keys = ("image_size", "grayscale", "fit", "val_fraction", "test_fraction", "split_seed")
    labels = OmegaConf.to_container(cfg.labels) if "labels" in cfg else {}
    return {"source": str(Path(cfg.source).expanduser().resolve()), **{key: cfg[key] for key in keys}} | (
        {"labels": labels} if labels and labels != {"_target_": "vae_lightning.shards.FolderLabels"} else {}
    )


def written(litdata: Any, folder: Path, with_table: bool) -> tuple[list[int], list[list[int]]]:
    """The labels of a written split in its stored order, and each sample's full labels where it has them (one
    pass over it); ([], []) for a split with no folder (no images)."""
    if not folder.is_dir():
        return [], []
    stream = litdata.StreamingDataset(str(folder))
    samples = [stream[i] for i in range(len(stream))]
    tables = [[int(v) for v in sample["table"]] for sample in samples] if with_table else []
    return [int(sample["label"]) for sample in samples], tables


def write_shards(cfg: DictConfig) -> dict[str, Any]:
    litdata = litdata_module()
    image_size = checks.integer("image_size", cfg.image_size, low=8)
    checks.number("val_fraction", cfg.val_fraction, low=0.0, high=1.0, high_inclusive=False)
    checks.number("test_fraction", cfg.test_fraction, low=0.0, high=1.0, high_inclusive=False)
    checks.non_negative_int("split_seed", cfg.split_seed)
    workers = checks.non_negative_int("workers", cfg.workers) or max(len(os.sched_getaffinity(0)), 1)
    if is_url(str(cfg.output)):
        raise ConfigValueError(
            "output",
            "vae-shards writes to a local folder: write there, then copy the folder to the bucket as it is "
            "(aws s3 cp --recursive, gcloud storage cp --recursive, az storage blob upload-batch)",
            cfg.output,
        )
    reader = build(cfg.labels, "labels") if "labels" in cfg else FolderLabels()
    source = reader.source(str(cfg.source), str(cfg.fit))
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
    class_names = reader.class_names(source)
    labels = torch.tensor([reader.label(item) for item in items])
    splits = reader.official_splits(source, items) or stratified_split(
        torch.zeros(len(items), dtype=torch.long), labels, cfg.val_fraction, cfg.test_fraction, cfg.split_seed
    )
    progress = progress or {"settings": wanted, "done": []}
    output.mkdir(parents=True, exist_ok=True)
    progress_file.write_text(json.dumps(progress))
    with_table = reader.kind != "folder"  # every label of each photo kept, beside the batch label
    to_sample = ToSample(image_size, bool(cfg.grayscale), with_table)
    for split, index in zip(SPLITS, splits, strict=True):
        if split in progress["done"]:
            continue
        inputs = [
            (items[i].path, items[i].box, list(items[i].labels), items[i].pad, int(labels[i])) for i in index.tolist()
        ]
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
    read_back = {split: written(litdata, output / split, with_table) for split in SPLITS}
    stored = {split: split_labels for split, (split_labels, _) in read_back.items()}
    tables = {split: table for split, (_, table) in read_back.items()} if with_table else {}
    skipped = len(items) - sum(len(v) for v in stored.values())
    if skipped:
        log.warning("Skipped %d of %d files that are not readable images.", skipped, len(items))
    channels = 1 if cfg.grayscale else 3
    meta = {
        "format": SHARDS_FORMAT,
        "input_shape": [channels, image_size, image_size],
        "kind": reader.kind,
        "class_names": {str(k): v for k, v in class_names.items()},
        "labels": stored,
        **({"tables": tables} if tables else {}),
        **reader.extra_metadata(source),
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
