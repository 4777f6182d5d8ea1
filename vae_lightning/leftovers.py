"""Temporary files of interrupted writes. Every atomic write here goes to `.<name>.<pid>.tmp` (downloads:
`.<name>.<pid>.part`) and is renamed when complete; a killed process leaves its temporary file behind."""

from __future__ import annotations

import os
from pathlib import Path


def _writer_alive(path: Path) -> bool:
    pid = path.name.split(".")[-2]
    if not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_leftovers(folder: str | os.PathLike, pattern: str = ".*.tmp") -> int:
    """Delete the temporary files in `folder` whose writing process is gone (another run's live write is
    left alone); returns how many were removed."""
    removed = 0
    for leftover in Path(folder).glob(pattern):
        if leftover.is_file() and not _writer_alive(leftover):
            leftover.unlink(missing_ok=True)
            removed += 1
    return removed
