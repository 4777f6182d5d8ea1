"""Hydra callbacks: they run before Hydra creates the run folder, which a task function cannot do."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig


def _check_writable(folder: str, key: str) -> None:
    """Exit with one clear line when `folder` cannot be created or written."""
    path = Path(folder).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as bad:
        print(
            f"Error: the output folder {path} cannot be written ({bad.strerror or bad}). Choose another one "
            f"with {key}=<folder>, or check its permissions and free disk space.",
            file=sys.stderr,
        )
        sys.exit(1)


class CheckOutputWritable(Callback):
    """Checks that the run (or sweep) folder can be written before anything else happens."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        _check_writable(config.hydra.run.dir, "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        _check_writable(config.hydra.sweep.dir, "hydra.sweep.dir")
