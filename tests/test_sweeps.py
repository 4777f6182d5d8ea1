"""Sweeps and scale (slow): multirun, joblib, submitit_local, Optuna, DDP on CPU, kill -9 and resume."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
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
        (run,) = (job_dir / "tensorboard").iterdir()
        accumulator = EventAccumulator(str(run))
        accumulator.Reload()
        assert "val/loss" in accumulator.Tags()["scalars"]
        assert "hp/val_loss" in accumulator.Tags()["scalars"]  # the HPARAMS tab's metric
        hparams = accumulator.PluginTagToContent("hparams")
        assert {"_hparams_/experiment", "_hparams_/session_start_info"} <= set(hparams)
        assert b"model/latent_dim" in hparams["_hparams_/session_start_info"]


def test_a_failing_job_does_not_stop_the_others(tmp_path):
    sweep = tmp_path / "sweep"
    result = run_sweep(["model.latent_dim=0,2", "debug=fast"], sweep)
    assert result.returncode == 1
    assert "model.latent_dim=0" in result.stdout + result.stderr
    assert status(sweep / "0") == "failed" and status(sweep / "1") == "completed"


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
        assert f"Using {threads} CPU threads" in (sweep / job / "train.log").read_text()
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


def test_ddp_on_two_cpu_processes_writes_once(tmp_path):
    run_dir = tmp_path / "run"
    result = run_train(
        ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "debug=fast", "trainer.max_epochs=2"], run_dir
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "Starting with 2 processes" in output
    assert status(run_dir) == "completed"
    events = list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert len({p.name.split(".")[5] for p in events}) == 1  # one writer process
    accumulator = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"images": 0})
    accumulator.Reload()
    assert len(accumulator.Images("val/reconstructions")) == 3  # each epoch and the end, not once per rank


def test_kill_9_then_resume_finishes_exactly_like_an_uninterrupted_run(tmp_path):
    args = ["trainer.max_epochs=12", "logger=csv"]
    straight = tmp_path / "straight"
    assert run_train(args, straight).returncode == 0
    # run again, kill it with SIGKILL once it has saved a checkpoint and is in the middle of later epochs
    killed = tmp_path / "killed"
    env = os.environ | {"VAE_DATA_DIR": str(tmp_path / "data")}
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), *args, f"hydra.run.dir={killed}"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    last = killed / "checkpoints" / "last.ckpt"
    deadline = time.time() + 120
    while not last.is_file() and time.time() < deadline and process.poll() is None:
        time.sleep(0.05)
    time.sleep(0.5)
    process.send_signal(signal.SIGKILL)
    process.wait()
    saved_epoch = torch.load(last, map_location="cpu", weights_only=False)["epoch"]
    assert saved_epoch < 11, "the run finished before it was killed; the test needs a slower run"
    assert not (killed / "metrics.json").exists()

    result = run_train([*args, "resume=true"], killed)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Resuming from" in result.stdout + result.stderr
    final = {
        name: torch.load(d / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
        for name, d in (("straight", straight), ("killed", killed))
    }
    assert final["killed"]["global_step"] == final["straight"]["global_step"] == 12 * 23
    expected = json.loads((straight / "metrics.json").read_text())
    got = json.loads((killed / "metrics.json").read_text())
    assert got["val/loss"] == pytest.approx(expected["val/loss"], abs=1e-6)
    assert got["test/loss"] == pytest.approx(expected["test/loss"], abs=1e-6)


def test_same_config_and_seed_give_the_same_val_loss(tmp_path):
    losses = []
    for name in ("a", "b"):
        result = run_train(["debug=fast", "trainer.max_epochs=2", "logger=csv"], tmp_path / name)
        assert result.returncode == 0, result.stderr[-3000:]
        losses.append(json.loads((tmp_path / name / "metrics.json").read_text())["val/loss"])
    assert losses[0] == pytest.approx(losses[1], abs=1e-6)


def test_compile_and_bf16_mixed_precision_train(tmp_path):
    """The options trainer=gpu offers, checked here on the CPU (torch.compile with inductor, bf16 autocast)."""
    run_dir = tmp_path / "run"
    result = run_train(
        ["compile=true", "trainer.precision=bf16-mixed", "debug=fast", "logger=csv"], run_dir, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert status(run_dir) == "completed"
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert "net.encoder.0.weight" in checkpoint["state_dict"]  # compiled in place: the keys are unchanged
