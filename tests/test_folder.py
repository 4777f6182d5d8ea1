"""A run folder belongs to one live run; default folder names are unique even within a second."""

from __future__ import annotations

import os

import pytest

from tests.checkpoint_payloads import hostile_checkpoints
from tests.conftest import compose_train
from vae_lightning.run.errors import VAELightningError
from vae_lightning.run.folder import LOCK_NAME, FolderBusyError, RunFolderGuard, hold, refuse_if_busy


def snapshot(folder):
    return {p.relative_to(folder): (p.stat().st_mtime_ns, p.read_bytes()) for p in folder.rglob("*") if p.is_file()}


def test_a_held_folder_is_refused_naming_the_holder_and_left_unchanged(tmp_path):
    folder = tmp_path / "run"
    held = hold(folder, "hydra.run.dir")
    assert (folder / LOCK_NAME).read_text().strip() == str(os.getpid())
    before = snapshot(folder)
    for attempt in (refuse_if_busy, hold):
        with pytest.raises(FolderBusyError, match=rf"{folder} is in use by another run \(process {os.getpid()}\)"):
            attempt(folder, "hydra.run.dir")
    assert snapshot(folder) == before
    os.close(held)  # the process ends (or is killed): the kernel drops its lock
    os.close(hold(folder, "hydra.run.dir"))


def test_an_unwritable_folder_is_refused(tmp_path):
    (tmp_path / "a_file").write_text("")
    with pytest.raises(VAELightningError, match="cannot be written"):
        hold(tmp_path / "a_file" / "run", "hydra.run.dir")


def test_default_run_and_sweep_folders_differ_within_the_same_second(tmp_path):
    folders = {compose_train([], tmp_path).hydra.run.dir for _ in range(5)}
    assert len(folders) == 5
    sweep = compose_train([], tmp_path).hydra.sweep.dir
    assert sweep.startswith("multirun/") and "_" in sweep.rsplit("/", 1)[-1]


def test_a_refused_resume_leaves_the_folder_as_it_was(digits_run, tmp_path):
    marker = tmp_path / "marker"
    _, opens_a_file = hostile_checkpoints(digits_run / "checkpoints" / "last.ckpt", tmp_path, marker)
    folder = tmp_path / "old_run"
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "checkpoints" / "last.ckpt").write_bytes(opens_a_file.read_bytes())
    before = snapshot(folder)
    for resume in (["resume=true"], [f"ckpt_path={opens_a_file}"]):
        cfg = compose_train([*resume, f"hydra.run.dir={folder}"], tmp_path / "unused")
        with pytest.raises(SystemExit):
            RunFolderGuard().on_run_start(cfg)
    assert snapshot(folder) == before and not marker.exists()
