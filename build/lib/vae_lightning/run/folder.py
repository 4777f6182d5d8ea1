"""The run folder: it can be written, and it belongs to one live run at a time.

`RunFolderGuard` is a Hydra callback, so it runs before Hydra writes anything into the folder. A run (or a
sweep) takes an exclusive `flock` on `<folder>/.run.lock` for as long as its process lives and writes its
process id there; a second run given the same folder while the first is alive stops with one line naming the
folder and that process id, having changed nothing in it. The kernel drops the lock when a process dies, even
by `kill -9`, so the folder of a killed run is free for `resume=true`. A resume or `ckpt_path` is checked here
too (see `checkpoints.check_resume`), so that a refused one leaves the folder as it was. A new run (not a
resume) is refused a folder that holds the checkpoints of an earlier run, which it would otherwise mix with its
own; so is a new sweep a sweep folder whose jobs left checkpoints.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from vae_lightning.core.checkpoint_io import MODEL_PARTS
from vae_lightning.core.config import given_overrides
from vae_lightning.core.errors import VAELightningError
from vae_lightning.core.files import is_global_rank_zero
from vae_lightning.run.checkpoints import check_resume, set_on_command_line

try:
    import fcntl
except ImportError:  # Windows: no flock; folders are not guarded there
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = ".run.lock"


class FolderBusyError(VAELightningError):
    """The run folder is held by another live run."""


def _holder(lock: Path) -> str:
    """The process id written in a held lock file (its holder may still be writing it)."""
    for _ in range(20):
        text = lock.read_text().strip() if lock.is_file() else ""
        if text:
            return text
        time.sleep(0.05)
    return "unknown"


def _busy(folder: Path, key: str) -> FolderBusyError:
    return FolderBusyError(
        f"The folder {folder} is in use by another run (process {_holder(folder / LOCK_NAME)}), which is still "
        f"alive. Choose another {key}=<folder>, or wait for that run to end."
    )


def refuse_if_busy(folder: Path, key: str) -> None:
    """Raise FolderBusyError when a live run holds `folder`; reads only, changes nothing."""
    lock = folder / LOCK_NAME
    if fcntl is None or not lock.is_file():
        return
    try:
        with open(lock, "rb") as probe:
            fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise _busy(folder, key) from None
    except OSError:
        pass  # unreadable: `hold` reports it


def hold(folder: Path, key: str) -> int | None:
    """Take the run folder for this process: the descriptor of its exclusively locked lock file, to keep open for
    the run (None where locks are unavailable). Refuses a folder held by a live run, or one that cannot be
    written. (A descriptor rather than a file object, so that launchers can pickle the callback holding it.)"""
    refuse_if_busy(folder, key)
    lock = folder / LOCK_NAME
    try:
        folder.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as bad:
        raise VAELightningError(
            f"The output folder {folder} cannot be written ({bad.strerror or bad}). Choose another one with "
            f"{key}=<folder>, or check its permissions and free disk space."
        ) from None
    if fcntl is None:
        return descriptor
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:  # another run took it in the meantime
        os.close(descriptor)
        raise _busy(folder, key) from None
    os.ftruncate(descriptor, 0)
    os.write(descriptor, f"{os.getpid()}\n".encode())
    return descriptor


def refuse_earlier_run(folder: Path, config: DictConfig, key: str, pattern: str) -> None:
    """Raise VAELightningError when a new run (neither `resume` nor `ckpt_path`) would write into a folder that
    already holds checkpoints (`pattern`, relative to `folder`) of an earlier run."""
    if config.get("resume") or config.get("ckpt_path") or not any(folder.glob(pattern)):
        return
    raise VAELightningError(
        f"The folder {folder} holds the checkpoints of an earlier run. Continue that run with resume=true, choose "
        f"another {key}=<folder>, or delete {folder} to start afresh there."
    )


def _refuse(error: VAELightningError) -> None:
    print(f"Error: {error}", file=sys.stderr)
    sys.exit(1)


class RunFolderGuard(Callback):
    """Before a run: check its resume, then hold its folder (a sweep: the sweep folder) for the run's lifetime."""

    def __init__(self) -> None:
        self.lock: int | None = None

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Hydra reports an exception from a callback as a warning and goes on: so any error here, ours or not,
        stops the run before it starts (unguarded, it could write over an earlier run)."""
        if not is_global_rank_zero():  # DDP and SLURM tasks share the folder of their first process
            return
        try:
            folder = Path(config.hydra.run.dir).expanduser()
            refuse_if_busy(folder, "hydra.run.dir")
            refuse_earlier_run(folder, config, "hydra.run.dir", "checkpoints/*.ckpt")
            check_resume_before_start(config)
            self.lock = hold(folder, "hydra.run.dir")
        except VAELightningError as error:
            _refuse(error)
        except Exception as unexpected:  # see the docstring
            _refuse(VAELightningError(f"The run folder could not be checked before the run ({unexpected!r})."))

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if not is_global_rank_zero():
            return
        folder = Path(config.hydra.sweep.dir).expanduser()
        try:
            refuse_if_busy(folder, "hydra.sweep.dir")
            refuse_earlier_run(folder, config, "hydra.sweep.dir", "**/checkpoints/*.ckpt")
            self.lock = hold(folder, "hydra.sweep.dir")
        except VAELightningError as error:
            _refuse(error)

    def on_run_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self.lock is not None:
            os.close(self.lock)
            self.lock = None

    on_multirun_end = on_run_end


def resume_path(cfg: DictConfig, output_dir: Path) -> Path | None:
    """`ckpt_path` if given; with `resume=true`, the run folder's checkpoints/last.ckpt if it exists."""
    if cfg.get("ckpt_path"):
        return Path(cfg.ckpt_path).expanduser()
    if cfg.get("resume"):
        last = output_dir / "checkpoints" / "last.ckpt"
        return last if last.is_file() else None
    return None


def check_resume_before_start(config: DictConfig) -> None:
    """The checks of `checkpoints.check_resume` for a run that will resume, before its folder is touched."""
    folder = Path(config.hydra.run.dir).expanduser()
    if config.get("resume") and not config.get("ckpt_path") and not folder.is_dir():
        raise VAELightningError(
            f"resume=true, but the run folder {folder} does not exist: give the folder of the run to continue, "
            "hydra.run.dir=<run folder> (or leave out resume=true to start a new run)."
        )
    path = resume_path(config, folder)
    if path is None:
        return
    module = {name: OmegaConf.to_container(config.module[name], resolve=True) for name in MODEL_PARTS}
    trainer = {name: config.trainer.get(name) for name in ("max_epochs", "max_steps")}
    config_dirs = [source.path for source in config.hydra.runtime.config_sources if source.schema == "file"]
    check_resume(path, module, trainer, config_dirs, set_on_command_line(given_overrides(config.hydra)))
