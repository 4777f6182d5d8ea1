"""Downloads verified by MD5 and written atomically (see `core.files.atomic_write`)."""

from __future__ import annotations

import hashlib
import logging
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from vae_lightning.core.files import atomic_write, remove_leftovers

log = logging.getLogger(__name__)

_CHUNK = 1 << 20
_TIMEOUT_S = 30


class DownloadError(Exception):
    """Every mirror failed; the message lists what each one said."""


def md5_of(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _fetch(url: str, target: Path, md5: str | None) -> None:
    def stream(out) -> None:
        with urllib.request.urlopen(url, timeout=_TIMEOUT_S) as response:
            while chunk := response.read(_CHUNK):
                out.write(chunk)

    def verify(tmp: Path) -> None:
        if md5 is not None and (got := md5_of(tmp)) != md5:
            raise DownloadError(f"MD5 mismatch for {url}: got {got}, published {md5}")

    atomic_write(target, stream, verify)


def download(file_name: str, mirrors: Sequence[str], folder: Path, md5: str | None) -> Path:
    """Fetch `file_name` from the first mirror that serves it with the right MD5 into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    remove_leftovers(folder)
    target = folder / file_name
    failures = []
    for mirror in mirrors:
        url = mirror.rstrip("/") + "/" + file_name
        log.info("Downloading %s", url)
        try:
            _fetch(url, target, md5)
            return target
        except (OSError, urllib.error.URLError, DownloadError) as failure:
            log.warning("Download of %s failed: %s", url, failure)
            failures.append(f"{url}: {failure}")
    raise DownloadError("; ".join(failures))
