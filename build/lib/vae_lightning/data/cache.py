"""Preprocess a list of images once, in parallel worker processes, into a cache file of uint8 tensors.

The cache file's name holds a hash of everything that produced it: every source file's path, size and
modification time, its crop box and labels, and every preprocessing parameter. A later run with the same
inputs loads it (a memory-mapped read); a change of any input gives another name, so the set is rebuilt.
The file is written to a temporary name and renamed, so a killed run never leaves a cache that is read.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import signal
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import torch

from vae_lightning.core.errors import DataNotFoundError
from vae_lightning.core.files import atomic_write
from vae_lightning.core.progress import progress
from vae_lightning.core.threads import free_cores
from vae_lightning.data.images import Item, decode_crop_resize

log = logging.getLogger(__name__)

CACHE_FORMAT = 1  # bump when the preprocessing code changes what it produces
_CHUNK = 32
_SHOW_SKIPPED = 5


@dataclass
class Preprocessed:
    images: torch.Tensor  # (N, C, H, W) uint8
    labels: torch.Tensor  # (N, K) int64, the items' labels
    paths: list[str]
    skipped: list[tuple[str, str]]  # (path, reason)


def fingerprint(items: Sequence[Item], params: dict) -> str:
    digest = hashlib.sha256(json.dumps({"format": CACHE_FORMAT, **params}, sort_keys=True).encode())
    for item in items:
        try:
            stat = os.stat(item.path)
            signature = (stat.st_size, stat.st_mtime_ns)
        except OSError:
            signature = (-1, -1)
        digest.update(repr((item.path, item.box, item.labels, signature)).encode())
    return digest.hexdigest()[:20]


def _decode_all(items: Sequence[Item], size: int, grayscale: bool, margin: float, workers: int, desc: str):
    work = functools.partial(_decode, size=size, grayscale=grayscale, margin=margin)
    if workers <= 1 or len(items) < 4 * _CHUNK:
        yield from progress(map(work, items), len(items), desc, unit="image")
        return
    # fork: the workers need nothing but this function and the items, and start in milliseconds
    with get_context("fork").Pool(workers, initializer=_worker_signals) as pool:
        yield from progress(pool.imap(work, items, chunksize=_CHUNK), len(items), desc, unit="image")


def _worker_signals() -> None:
    """A worker leaves Ctrl-C to the run (which stops it) and dies on SIGTERM, as the pool ends it with one; the
    run's own handlers (see `core.signals`), inherited through fork, are not for it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _decode(item: Item, size: int, grayscale: bool, margin: float) -> np.ndarray | str:
    return decode_crop_resize(item, size, grayscale, margin)


def preprocess(
    items: Sequence[Item],
    size: int,
    grayscale: bool,
    margin: float = 0.0,
    workers: int = 0,
    desc: str = "Preprocessing",
) -> Preprocessed:
    """Decode, crop and resize every item; failures are skipped and listed, never fatal."""
    workers = workers or free_cores()  # 0: one per core that other work leaves free
    channels = 1 if grayscale else 3
    images = np.empty((len(items), channels, size, size), dtype=np.uint8)
    kept: list[int] = []
    skipped: list[tuple[str, str]] = []
    for index, (item, result) in enumerate(
        zip(items, _decode_all(items, size, grayscale, margin, workers, desc), strict=True)
    ):
        if isinstance(result, str):
            skipped.append((item.path, result))
        else:
            images[len(kept)] = result
            kept.append(index)
    if skipped and not kept:
        shown = "; ".join(f"{path} ({reason})" for path, reason in skipped[:_SHOW_SKIPPED])
        raise DataNotFoundError(
            f"None of the {len(skipped)} files found could be read as an image ({shown}"
            f"{' ...' if len(skipped) > _SHOW_SKIPPED else ''}). Point the data set's root at a folder of images."
        )
    width = len(items[0].labels) if items else 0
    labels = np.array([items[i].labels for i in kept], dtype=np.int64).reshape(len(kept), width)
    return Preprocessed(
        torch.from_numpy(images[: len(kept)].copy()), torch.from_numpy(labels), [items[i].path for i in kept], skipped
    )


def report_skipped(skipped: Sequence[tuple[str, str]], total: int, what: str) -> None:
    if skipped:
        shown = "; ".join(f"{path} ({reason})" for path, reason in skipped[:_SHOW_SKIPPED])
        more = f" and {len(skipped) - _SHOW_SKIPPED} more" if len(skipped) > _SHOW_SKIPPED else ""
        log.warning(
            "%s: skipped %d of %d files that could not be read as images: %s%s", what, len(skipped), total, shown, more
        )


def cached_preprocess(
    name: str, items: Sequence[Item], params: dict, cache_dir: str | os.PathLike, workers: int = 0
) -> Preprocessed:
    """`preprocess` with the result stored under `cache_dir/<name>-<fingerprint>.pt` and reused."""
    size, grayscale, margin = params["image_size"], params["grayscale"], params.get("margin", 0.0)
    path = Path(cache_dir) / f"{name}-{fingerprint(items, params)}.pt"
    if path.is_file():
        try:
            stored = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            result = Preprocessed(
                stored["images"], stored["labels"], stored["paths"], [tuple(s) for s in stored["skipped"]]
            )
            log.info("%s: %d images from the cache %s", name, len(result.paths), path)
            report_skipped(result.skipped, len(items), name)
            return result
        except (OSError, RuntimeError, KeyError, EOFError) as unreadable:
            log.warning("%s: the cache %s is unreadable (%s); rebuilding it", name, path, unreadable)
    result = preprocess(items, size, grayscale, margin, workers, desc=f"Preprocessing {name}")
    report_skipped(result.skipped, len(items), name)
    stored = {
        "images": result.images,
        "labels": result.labels,
        "paths": result.paths,
        "skipped": [list(s) for s in result.skipped],
    }
    atomic_write(path, lambda f: torch.save(stored, f))
    log.info("%s: %d images preprocessed into %s", name, len(result.paths), path)
    return result
