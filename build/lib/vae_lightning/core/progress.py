"""Progress of long loops: tqdm's bar where it draws on a terminal, and a few plain log lines where the output goes
to a file or a pipe (a bar redrawn there is one line of carriage returns that grows for the whole loop)."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm import tqdm

log = logging.getLogger("progress")
T = TypeVar("T")


def progress(items: Iterable[T], total: int, desc: str, unit: str = "item", lines: int = 4) -> Iterator[T]:
    """`items`, with a bar on a terminal (stderr) or else a log line at each `lines`-th of `total`."""
    if sys.stderr.isatty():
        yield from tqdm(items, total=total, desc=desc, unit=unit, mininterval=1.0)
        return
    units = unit + ("es" if unit.endswith(("ch", "sh", "s", "x")) else "s")
    marks, started = {round(total * k / lines) for k in range(1, lines + 1)}, time.monotonic()
    for done, item in enumerate(items, 1):
        yield item
        if done in marks:
            log.info("%s: %d of %d %s (%.0f s)", desc, done, total, units, time.monotonic() - started)
