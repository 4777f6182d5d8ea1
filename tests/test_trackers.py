"""The experiment trackers and the Ray launcher against the real things (slow): a real MLflow tracking server on
127.0.0.1 with an SQLite backend, read back through `MlflowClient`; Weights & Biases offline, its run files read
back (in the sweep, beside MLflow); a two-job sweep on a local Ray instance. Each test skips, with the reason,
where its extra is not installed."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import ROOT, run_command

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """A real `mlflow server` on 127.0.0.1 with an SQLite backend and its own artifact store; its URI."""
    pytest.importorskip("mlflow", reason="the MLflow tests need the extra: pip install -e '.[mlflow]'")
    folder = tmp_path_factory.mktemp("mlflow_server")
    port = free_port()
    command = [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}",
        "--artifacts-destination", str(folder / "artifacts"),
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    log = (folder / "server.log").open("w")
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=folder)
    uri = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while True:
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2) as answer:
                if answer.status == 200:
                    break
        except OSError:
            pass
        assert server.poll() is None and time.time() < deadline, (folder / "server.log").read_text()[-3000:]
        time.sleep(0.5)
    yield uri
    server.terminate()
    server.wait(timeout=30)
    log.close()


def train(args: list[str], folder: Path, uri: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {"VAE_DATA_DIR": str(folder / "data"), "MLFLOW_TRACKING_URI": uri}
    return run_command([str(ROOT / "train.py"), *args], cwd=folder, env=env, timeout=timeout)


def status(run_dir: Path) -> str:
    return json.loads((run_dir / "metrics.json").read_text())["status"]


def artifact_paths(client, run_id: str, path: str | None = None) -> list[str]:
    found = []
    for entry in client.list_artifacts(run_id, path):
        found += artifact_paths(client, run_id, entry.path) if entry.is_dir else [entry.path]
    return found


def test_mlflow_runs_a_resumed_run_and_a_sweep_on_a_tracking_server(mlflow_server, tmp_path):
    from mlflow import MlflowClient

    client = MlflowClient(mlflow_server)
    # 1. a run stopped by Ctrl-C (KILLED), then resumed to train longer (a changed override, the usual reason to
    # resume): the same MLflow run, FINISHED, each step logged once, and a tag says what changed (MLflow allows a
    # parameter one value)
    stopped = tmp_path / "stopped"
    args = ["logger=mlflow", "trainer.max_epochs=20", "trainer.log_every_n_steps=5", "~callbacks.diagnostics"]
    env = os.environ | {"VAE_DATA_DIR": str(tmp_path / "data"), "MLFLOW_TRACKING_URI": mlflow_server}
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), *args, f"hydra.run.dir={stopped}"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    deadline = time.time() + 120
    while not (stopped / "checkpoints" / "last.ckpt").is_file() and time.time() < deadline and process.poll() is None:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    output = process.communicate(timeout=120)[0]
    assert process.returncode == 130, output[-3000:]
    run_id = json.loads((stopped / "trackers.json").read_text())["mlflow"]
    assert client.get_run(run_id).info.status == "KILLED"
    longer = [a if a != "trainer.max_epochs=20" else "trainer.max_epochs=22" for a in args]
    result = train([*longer, "resume=true", f"hydra.run.dir={stopped}"], tmp_path, mlflow_server)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert "Traceback" not in result.stdout + result.stderr
    assert json.loads((stopped / "trackers.json").read_text())["mlflow"] == run_id
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "stopped" and "test/nll" in run.data.metrics
    assert run.data.params["choice/trainer.max_epochs"] == "20"
    assert run.data.tags["resumed/choice/trainer.max_epochs"] == "20 -> 22"
    steps = [m.step for m in client.get_metric_history(run_id, "val/loss")]
    assert len(steps) > 1 and steps == sorted(steps) and len(set(steps)) == len(steps), steps
    runs = client.search_runs([run.info.experiment_id], filter_string=f"tags.run_dir = '{stopped}'")
    assert len(runs) == 1  # one MLflow run for the run folder
    assert json.loads((stopped / "metrics.json").read_text())["status"] == "completed"

    # 2. a two-job sweep into one experiment of its own, with W&B (offline) beside MLflow; each job a finished
    # MLflow run with its choices, metrics, steps and pictures
    sweep = tmp_path / "sweep"
    result = train(
        ["-m", "logger=[mlflow,wandb]", "model.latent_dim=2,4", "debug=fast", f"hydra.sweep.dir={sweep}"],
        tmp_path,
        mlflow_server,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    experiment = client.get_experiment_by_name(f"vae_lightning {sweep}")
    jobs = client.search_runs([experiment.experiment_id])
    assert sorted(r.info.run_name for r in jobs) == ["debug=fast,model.latent_dim=2", "debug=fast,model.latent_dim=4"]
    assert all(r.info.status == "FINISHED" and r.data.tags["sweep"] == str(sweep) for r in jobs)
    run = next(r for r in jobs if r.data.params["choice/model.latent_dim"] == "2")
    assert run.data.params["choice/dataset"] == "digits" and run.data.params["module/net/latent_dim"] == "2"
    assert {"val/loss", "test/nll", "test/loss", "train/loss"} <= set(run.data.metrics)
    job_metrics = json.loads((sweep / "0" / "metrics.json").read_text())
    assert run.data.metrics["test/nll"] == pytest.approx(job_metrics["test/nll"])
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")] == [1, 2, 3, 4, 5]
    paths = artifact_paths(client, run.info.run_id)
    assert "metrics.json" in paths and "config/config.yaml" in paths and "images/samples.png" in paths
    assert "images/val/samples/step_0000005.png" in paths  # the pictures by tag and step, one file each
    assert any(p.startswith("images/val/latent_scatter/step_") for p in paths)
    assert not any(p.endswith(".webp") or "~" in p for p in paths)
    for job in ("0", "1"):
        assert status(sweep / job) == "completed"
        (wandb_run,) = (sweep / job / "wandb").glob("offline-run-*")
        assert wandb_run.name.endswith(json.loads((sweep / job / "trackers.json").read_text())["wandb"])
        check_wandb_run(wandb_run, group=str(sweep))


def check_wandb_run(run: Path, group: str) -> None:
    """An offline W&B run's files: the pictures as media, the run's files, and in its record log (`run-<id>.wandb`)
    the scalars, the choices, the group and the exit."""
    media = {p.name.rsplit("_", 2)[0] for p in (run / "files" / "media" / "images" / "val").glob("*.png")}
    assert {"reconstructions", "samples", "latent_scatter"} <= media, media
    files = run / "files"
    assert json.loads((files / "metrics.json").read_text())["status"] == "completed"
    assert (files / ".hydra" / "config.yaml").is_file() and (files / "images" / "samples.png").is_file()
    (record_log,) = run.glob("run-*.wandb")
    records = record_log.read_bytes()
    for text in (
        "train/loss",
        "val/loss",
        "test/nll",
        "trainer/global_step",
        "choice/dataset",
        *([group] if group else []),
    ):
        assert text.encode() in records, text


def test_a_two_job_sweep_on_a_local_ray_instance(tmp_path):
    pytest.importorskip(
        "hydra_plugins.hydra_ray_launcher", reason="the Ray test needs the extra: pip install -e '.[ray]'"
    )
    sweep = tmp_path / "sweep"
    result = run_command(
        [
            str(ROOT / "train.py"),
            "-m",
            "hydra/launcher=ray",
            "+hydra.launcher.ray.init.num_cpus=2",
            "model.latent_dim=0,2",  # 0 is a bad value: that job fails, the other runs
            "debug=fast",
            f"hydra.sweep.dir={sweep}",
        ],
        cwd=tmp_path,
        env={"VAE_DATA_DIR": str(tmp_path / "data"), "RAY_USAGE_STATS_ENABLED": "0"},
    )
    output = result.stdout + result.stderr
    assert result.returncode == 1, output[-3000:]
    assert "Bad config value `model.latent_dim=0`" in output
    assert status(sweep / "0") == "failed" and status(sweep / "1") == "completed"
    assert "Using 1 CPU thread: OMP_NUM_THREADS=1" in (sweep / "1" / "train.log").read_text()  # its share
    assert (sweep / "1" / "checkpoints" / "last.ckpt").is_file()
