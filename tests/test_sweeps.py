"""Sweeps (slow): the basic launcher, joblib, submitit_local and Optuna; a failing or interrupted job."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.conftest import ROOT, run_train

pytestmark = pytest.mark.slow


def run_sweep(args, sweep_dir, timeout=300):
    return run_train(["-m", *args, f"hydra.sweep.dir={sweep_dir}"], sweep_dir.parent / "unused", timeout)


def status(job_dir):
    return json.loads((job_dir / "metrics.json").read_text())["status"]


def test_basic_multirun_runs_four_comparable_jobs(tmp_path):
    sweep = tmp_path / "sweep"
    result = run_sweep(["model.latent_dim=2,8", "beta=constant,ramp", "debug=fast"], sweep)
    assert result.returncode == 0, result.stderr[-3000:]
    names = sorted(p.name for job in range(4) for p in (sweep / str(job) / "tensorboard").iterdir() if p.is_dir())
    assert names == sorted(f"beta={b},debug=fast,model.latent_dim={d}" for d in (2, 8) for b in ("constant", "ramp"))
    for job in range(4):
        job_dir = sweep / str(job)
        assert status(job_dir) == "completed" and (job_dir / "checkpoints" / "last.ckpt").is_file()
        (run,) = (p for p in (job_dir / "tensorboard").iterdir() if p.is_dir())
        accumulator = EventAccumulator(str(run))
        accumulator.Reload()
        assert "val/loss" in accumulator.Tags()["scalars"]
        hparams = accumulator.PluginTagToContent("hparams")
        assert {"_hparams_/experiment", "_hparams_/session_start_info"} <= set(hparams)
        session = hparams["_hparams_/session_start_info"]
        assert b"model.latent_dim" in session and b"beta" in session and b"paths" not in session  # the swept keys


def test_an_interrupted_sweep_records_the_job_and_stops(tmp_path):
    sweep = tmp_path / "sweep"
    env = os.environ | {"VAE_DATA_DIR": str(tmp_path / "data"), "PYTHONWARNINGS": "ignore"}
    process = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "train.py"),
            "-m",
            "model.latent_dim=2,4",
            "trainer.max_epochs=300",
            "~callbacks.diagnostics",
            f"hydra.sweep.dir={sweep}",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    last = sweep / "0" / "checkpoints" / "last.ckpt"
    deadline = time.time() + 120
    while not last.is_file() and time.time() < deadline and process.poll() is None:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    output = process.communicate(timeout=120)[0]
    assert process.returncode == 130 and "Traceback" not in output, output[-3000:]
    assert status(sweep / "0") == "interrupted" and not (sweep / "1").exists()


def test_a_failing_job_does_not_stop_the_others(tmp_path):
    sweep = tmp_path / "sweep"
    result = run_sweep(["model.latent_dim=0,2", "debug=fast"], sweep)
    assert result.returncode == 1
    assert "model.latent_dim=0" in result.stdout + result.stderr
    assert status(sweep / "0") == "failed" and status(sweep / "1") == "completed"


def test_a_diverging_job_is_recorded_with_its_first_bad_step_and_the_sweep_goes_on(tmp_path):
    sweep = tmp_path / "sweep"
    result = run_sweep(["optimizer.lr=1e20,1e-3", "debug=fast", "~callbacks.diagnostics"], sweep)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output[-3000:]
    assert re.search(
        r"Training diverged at optimizer step \d+: the loss is not finite \(loss=\S+, recon=\S+, kl=\S+, "
        r"beta=1\)",
        output,
    ), output[-3000:]
    assert status(sweep / "0") == "diverged" and status(sweep / "1") == "completed"
    assert not list((sweep / "0" / "checkpoints").glob("*.ckpt"))  # nothing saved from the diverged weights


def test_joblib_runs_jobs_in_parallel_with_one_thread_share_each(tmp_path):
    sweep = tmp_path / "sweep"
    result = run_sweep(
        ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "model.latent_dim=2,4", "debug=fast"], sweep
    )
    assert result.returncode == 0, result.stderr[-3000:]
    threads = max(1, (os.cpu_count() or 1) // 2)
    pids = set()
    for job in ("0", "1"):
        assert status(sweep / job) == "completed"
        assert f"Using {threads} CPU thread" in (sweep / job / "train.log").read_text()
        pids |= {p.name.split(".")[5] for p in (sweep / job / "tensorboard").rglob("events.out.tfevents.*")}
    assert len(pids) == 2  # two worker processes


def test_submitit_local_launcher(tmp_path):
    sweep = tmp_path / "sweep"
    result = run_sweep(["hydra/launcher=submitit_local", "model.latent_dim=2,4", "debug=fast"], sweep)
    assert result.returncode == 0, result.stderr[-3000:]
    assert status(sweep / "0") == "completed" and status(sweep / "1") == "completed"
    assert (sweep / ".submitit").is_dir()


def test_optuna_study_with_sqlite_storage_records_failed_trials(tmp_path):
    optuna = pytest.importorskip("optuna")
    sweep = tmp_path / "sweep"
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    args = [
        "hparams_search=optuna",
        "hydra.sweeper.n_trials=3",
        f"hydra.sweeper.storage={storage}",
        "model.latent_dim=choice(0,2)",
        "debug=fast",
    ]  # latent_dim 0 is a bad value: that trial fails
    result = run_sweep(args, sweep)
    assert result.returncode == 0, result.stderr[-3000:]
    trials = optuna.load_study(study_name="vae", storage=storage).trials
    states = [t.state.name for t in trials]
    assert len(trials) == 3 and "FAIL" in states and "COMPLETE" in states, states
    best = (sweep / "optimization_results.yaml").read_text()
    assert "best_params" in best and "optimizer.lr" in best
    # the study survives: running again continues it
    result = run_sweep([*args[:1], "hydra.sweeper.n_trials=1", *args[2:]], tmp_path / "sweep2")
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(optuna.load_study(study_name="vae", storage=storage).trials) == 4
