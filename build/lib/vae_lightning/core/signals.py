"""Ctrl-C (SIGINT) and SIGTERM (a cluster's pre-emption) as a normal way to stop a run.

`train.py` installs `StopRequest.handle` for both signals for the whole run. While the model trains, a signal
is only recorded: `callbacks.stop.StopOnSignal` ends the run at the end of the current batch, saves
`checkpoints/last.ckpt` at the step reached and raises `RunInterrupted`, which `train.py` turns into
`metrics.json` with `status: interrupted`, the command that resumes the run, and exit code 128 + the signal
(130, 143). Outside training (preparing data, testing) the signal raises `RunInterrupted` at once. A further
signal while the run stops is ignored, so it cannot interrupt the checkpoint save (which is atomic anyway).
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Iterator
from typing import Any

log = logging.getLogger(__name__)

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class RunInterrupted(Exception):
    """The run was stopped by a signal; `exit_code` is the shell's convention, 128 + the signal number."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        self.exit_code = 128 + signum
        super().__init__(f"stopped by {signal.Signals(signum).name}")


class StopRequest:
    """The signal received (None so far) and whether the run is in a phase that stops at a batch's end."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.graceful = False

    def handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None:
            log.warning("Already stopping: the checkpoint and metrics.json are being written.")
            return
        self.signum = signum
        if not self.graceful:
            raise RunInterrupted(signum)
        log.warning("%s received: stopping after this batch.", signal.Signals(signum).name)


def installed_request() -> StopRequest:
    """The StopRequest whose handler receives this process's SIGTERM now (installed by `stop_on_signals`), or a
    fresh one that never will (a run started without it, e.g. `train(cfg)` from Python)."""
    owner = getattr(signal.getsignal(signal.SIGTERM), "__self__", None)
    return owner if isinstance(owner, StopRequest) else StopRequest()


@contextlib.contextmanager
def stop_on_signals() -> Iterator[StopRequest]:
    """Install the handlers of a new StopRequest for SIGINT and SIGTERM (main thread only); restore the old ones."""
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return
    previous = {signum: signal.getsignal(signum) for signum in SIGNALS}
    for signum in SIGNALS:
        signal.signal(signum, request.handle)
    try:
        yield request
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
