"""Files written so that nothing half-written is ever read: a temporary file, flushed, then renamed.

Every write goes to `.<name>.<pid>.tmp` beside its target and is renamed over it once complete; a process
killed mid-write leaves only its temporary file, which `remove_leftovers` deletes once that process is gone.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

# `running` is written when a run starts: a folder whose metrics.json still says so after its process is gone
# (the `pid` it names) was killed without a chance to write anything (`kill -9`, a power cut)
STATUSES = ("completed", "diverged", "failed", "interrupted", "running")


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None], verify=None) -> Path:
    """Write `path` through `write(file)`; `verify(temporary path)` may refuse the result by raising. A failure
    at any point leaves the previous file untouched and no temporary file behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if verify is not None:
            verify(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


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


def remove_leftovers(folder: str | os.PathLike) -> int:
    """Delete the temporary files in `folder` whose writing process is gone (another run's live write is
    left alone); returns how many were removed."""
    removed = 0
    for leftover in Path(folder).glob(".*.tmp"):
        if leftover.is_file() and not _writer_alive(leftover):
            leftover.unlink(missing_ok=True)
            removed += 1
    return removed


def is_global_rank_zero() -> bool:
    """Whether this process is the first of its run: not a further DDP or SLURM task."""
    return all(int(os.environ.get(name, 0) or 0) == 0 for name in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID"))


def _plain(value: Any) -> Any:
    value = float(value.item() if hasattr(value, "item") else value)
    return value if math.isfinite(value) else str(value)


def read_metrics(path: str | os.PathLike) -> dict[str, Any] | None:
    """The record of a `metrics.json`, or None where there is none or it cannot be read as one."""
    try:
        record = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def write_metrics(
    folder: str | os.PathLike, metrics: dict[str, Any], status: str, name: str = "metrics.json", **extra: Any
) -> Path | None:
    """`folder/metrics.json` (or `name`): a flat JSON object of the final `val/*` and `test/*` metrics, `status`,
    and `extra` (e.g. the command that resumes an interrupted run). Only the first process of a run writes.

    No record is lost: while the file holds a completed run, a later attempt in the folder that has not completed
    (a resume that is running, failed, diverged or was interrupted) is added to its `attempts` list instead of
    replacing it; a completed attempt becomes the record, and the attempts before it are kept. A `running`
    record names its process (`pid`), so that the attempt is found again when it ends."""
    if status not in STATUSES:
        raise ValueError(f"status must be one of {STATUSES}")
    if not is_global_rank_zero():
        return None
    path = Path(folder) / name
    payload = {name: _plain(value) for name, value in sorted(metrics.items())} | {"status": status} | extra
    if status == "running":
        payload["pid"] = os.getpid()
    previous = read_metrics(path) or {}
    attempts = [
        attempt
        for attempt in previous.get("attempts", [])
        if isinstance(attempt, dict) and not (attempt.get("status") == "running" and attempt.get("pid") == os.getpid())
    ]
    if previous.get("status") == "completed" and status != "completed":
        payload = previous | {"attempts": [*attempts, payload | {"at": time.strftime("%Y-%m-%dT%H:%M:%S")}]}
    elif attempts:
        payload["attempts"] = attempts
    text = json.dumps(payload, indent=2) + "\n"
    return atomic_write(path, lambda f: f.write(text.encode()))
