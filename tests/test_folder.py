"""A run folder belongs to one live run; default folder names are unique even within a second."""

from __future__ import annotations

import os

import pytest

from tests.checkpoint_payloads import hostile_checkpoints
from tests.conftest import compose_train
from vae_lightning.core.errors import VAELightningError
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


def test_a_new_run_is_refused_the_folder_of_an_earlier_one_and_a_resume_is_not(tmp_path, capsys):
    folder = tmp_path / "old_run"
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "checkpoints" / "best-epoch001.ckpt").write_bytes(b"an earlier run's weights")
    before = snapshot(folder)
    with pytest.raises(SystemExit):
        RunFolderGuard().on_run_start(compose_train([f"hydra.run.dir={folder}"], tmp_path / "unused"))
    assert f"{folder} holds the checkpoints of an earlier run. Continue that run with resume=true" in (
        capsys.readouterr().err
    )
    assert snapshot(folder) == before
    guard = RunFolderGuard()
    guard.on_run_start(compose_train([f"hydra.run.dir={folder}", "resume=true"], tmp_path / "unused"))
    guard.on_run_end(None)


def test_a_new_sweep_is_refused_a_sweep_folder_whose_jobs_left_checkpoints(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    guard = RunFolderGuard()
    guard.on_multirun_start(compose_train([f"hydra.sweep.dir={sweep}"], tmp_path / "unused"))
    guard.on_multirun_end(None)
    (sweep / "0" / "checkpoints").mkdir(parents=True)
    (sweep / "0" / "checkpoints" / "last.ckpt").write_bytes(b"job 0's weights")
    with pytest.raises(SystemExit):
        RunFolderGuard().on_multirun_start(compose_train([f"hydra.sweep.dir={sweep}"], tmp_path / "unused"))
    assert "holds the checkpoints of an earlier run" in capsys.readouterr().err


def test_an_unexpected_error_while_checking_the_folder_stops_the_run_in_one_line(capsys):
    """Hydra would report it as a warning and start the run unguarded."""
    from omegaconf import OmegaConf

    with pytest.raises(SystemExit) as stopped:
        RunFolderGuard().on_run_start(OmegaConf.create({"hydra": {"run": {"dir": None}}}))
    assert stopped.value.code == 1
    assert capsys.readouterr().err.startswith("Error: The run folder could not be checked before the run (")
