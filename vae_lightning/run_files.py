"""Files a run leaves beside its logs: `metrics.json`."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

STATUSES = ("completed", "diverged", "failed")


def _plain(value: Any) -> Any:
    value = float(value.item() if hasattr(value, "item") else value)
    return value if math.isfinite(value) else str(value)


def write_metrics(folder: str | os.PathLike, metrics: dict[str, Any], status: str) -> Path | None:
    """A flat JSON object of the final `val/*` and `test/*` metrics plus `status`, written atomically.

    Only the process of global rank 0 writes (returns None elsewhere)."""
    if status not in STATUSES:
        raise ValueError(f"status must be one of {STATUSES}")
    if int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", 0))) != 0:
        return None
    path = Path(folder) / "metrics.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {name: _plain(value) for name, value in sorted(metrics.items())} | {"status": status}
    tmp = path.with_name(".metrics.json.tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    os.replace(tmp, path)
    return path
