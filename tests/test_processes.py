"""What needs real processes (slow): kill -9 and resume, Ctrl-C and SIGTERM, runs started together, DDP on two
CPU processes, torch.compile with bf16."""

from __future__ import annotations

import json
import math
import os
import shlex
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.conftest import ROOT, run_train
from tests.photo_fixtures import write_cu_dogs, write_utkface

pytestmark = pytest.mark.slow


def start_train(args, run_dir=None, data_dir=None, cwd=ROOT):
    folder = [f"hydra.run.dir={run_dir}"] if run_dir else []
    env = os.environ | {"PYTHONWARNINGS": "ignore", "VAE_DATA_DIR": str(data_dir or ROOT / "data")}
    return subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), *args, *folder],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_for(path, process, timeout=120):
    deadline = time.time() + timeout
    while not path.is_file() and time.time() < deadline and process.poll() is None:
        time.sleep(0.05)
    assert path.is_file(), process.communicate()[0][-3000:] if process.poll() is not None else "timed out"


def status(run_dir):
    return json.loads((run_dir / "metrics.json").read_text())["status"]


# a prior and a likelihood with parameters of their own (and Adam's state for them), and an objective with a
# network and optimizer settings of its own: FactorVAE's discriminator, its Adam group
MODEL_WITH_PARAMETERS = [
    "prior=vamp",
    "prior.n_pseudo_inputs=16",
    "loss=factor",
    "loss.hidden_dims=[64,64]",
    "loss/likelihood=gaussian_pixel_sigma",
    "model.latent_dim=4",
]


# a posterior with weights of its own (the IAF, with the encoder's context vector), a sampler with buffers of its
# own (the fitted mixture), CIWAE
FLOW_AND_SAMPLER = [
    "posterior=iaf",
    "posterior.hidden_dims=[16]",
    "posterior.h_dim=4",
    "sampler=gmm",
    "sampler.n_components=2",
    "loss=ciwae",
    "loss.k=3",
    "model.latent_dim=4",
]


# a hierarchical network and its top-down prior, with free bits per layer
LADDER = ["model=ladder", "prior=ladder", "model.hidden_dims=[64,32]", "model.latent_dims=[4,2]", "loss.free_bits=0.5"]


@pytest.mark.parametrize(
    "model",
    # the default model: streamed (test_shards.py); the VQ-VAE resumes in process (test_module.py)
    [MODEL_WITH_PARAMETERS, FLOW_AND_SAMPLER, LADDER],
    ids=["vamp_factor_learned_sigma", "iaf_gmm_ciwae", "ladder_free_bits"],
)
def test_kill_9_then_resume_finishes_exactly_like_an_uninterrupted_run(model, tmp_path):
    """With the delayed ramp, so that the schedule's position and length are restored too; a model whose prior
    and likelihood have parameters of their own (and Adam's state for them); and FactorVAE, whose discriminator
    and its optimizer group come back too."""
    args = ["trainer.max_epochs=8", "beta=ramp", "logger=csv", "~callbacks.diagnostics", *model]
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    uninterrupted = start_train(args, straight, tmp_path / "data")  # side by side, to share the imports' wait
    process = start_train(args, killed, tmp_path / "data")
    wait_for(killed / "checkpoints" / "last.ckpt", process)
    time.sleep(0.5)
    process.send_signal(signal.SIGKILL)
    process.communicate()
    saved_epoch = torch.load(killed / "checkpoints" / "last.ckpt", weights_only=True)["epoch"]
    assert saved_epoch < 7, "the run finished before it was killed; the test needs a slower run"
    record = json.loads((killed / "metrics.json").read_text())  # how to tell a killed run: its process is gone
    assert record["status"] == "running" and record["pid"] == process.pid
    output = uninterrupted.communicate(timeout=300)[0]
    assert uninterrupted.returncode == 0, output[-3000:]
    assert yaml.safe_load((straight / ".hydra" / "overrides.yaml").read_text()) == args  # what was typed
    assert yaml.safe_load((straight / ".hydra" / "config.yaml").read_text())["beta"]["_target_"].endswith("Ramp")

    result = run_train([*args, "resume=true"], killed)
    assert result.returncode == 0 and "Resuming from" in result.stdout + result.stderr, result.stderr[-3000:]
    expected, got = (json.loads((d / "metrics.json").read_text()) for d in (straight, killed))
    assert got["val/loss"] == pytest.approx(expected["val/loss"], abs=1e-6)
    assert got["test/loss"] == pytest.approx(expected["test/loss"], abs=1e-6)


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_is_a_clean_stop_that_resumes_to_completion(signum, code, tmp_path):
    run_dir = tmp_path / "run"
    args = ["trainer.max_epochs=300", "logger=csv", "~callbacks.diagnostics"]
    process = start_train(args, run_dir, tmp_path / "data")
    wait_for(run_dir / "checkpoints" / "last.ckpt", process)
    time.sleep(0.3)
    process.send_signal(signum)
    output = process.communicate(timeout=120)[0]
    assert process.returncode == code, output[-3000:]
    assert "Traceback" not in output
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "interrupted" and "val/loss" in metrics
    step = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]
    assert 0 < step < 300 * 23
    (command,) = [line.split("Resume with: ")[1] for line in output.splitlines() if "Resume with: " in line]
    assert command == metrics["resume_command"]
    if signum == signal.SIGTERM:
        return  # what follows does not depend on the signal: checked once, after Ctrl-C
    # the printed command finishes the run (a shorter length is refused: tests/test_train.py)
    finish = shlex.split(command.replace("trainer.max_epochs=300", f"trainer.max_epochs={step // 23 + 2}"))[1:]
    result = subprocess.run([sys.executable, *finish], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and status(run_dir) == "completed", result.stderr[-3000:]


def test_runs_started_together_never_share_a_folder(tmp_path):
    """The README's shell loop: two default runs in the same second get a folder each; two runs given one
    folder: the second is refused in one line and changes nothing there."""
    processes = [
        start_train(["debug=fast", f"beta={b}", "~callbacks.diagnostics"], data_dir=tmp_path / "data", cwd=tmp_path)
        for b in ("constant", "ramp")
    ]
    outputs = [p.communicate(timeout=300)[0] for p in processes]
    folders = sorted((tmp_path / "outputs").glob("*/*"))
    assert len(folders) == 2, outputs
    for folder in folders:
        assert status(folder) == "completed" and (folder / "checkpoints" / "last.ckpt").is_file()
        assert len(list((folder / "tensorboard").glob("events.out.tfevents.*"))) >= 1

    shared = tmp_path / "shared"
    first = start_train(["trainer.max_epochs=100", "~callbacks.diagnostics"], shared, tmp_path / "data")
    wait_for(shared / "checkpoints" / "last.ckpt", first)
    settings = [shared / ".run.lock", *(shared / ".hydra").iterdir()]
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in settings}
    second = start_train(["debug=fast"], shared, tmp_path / "data")
    output = second.communicate(timeout=120)[0]
    assert second.returncode == 1 and "Traceback" not in output
    assert f"is in use by another run (process {first.pid})" in output
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in settings} == before  # its config was not replaced
    assert not [p for p in shared.rglob("*") if str(second.pid) in p.name]  # and it wrote no file of its own
    first.send_signal(signal.SIGINT)
    first.communicate(timeout=120)


def test_ddp_trains_the_stratified_tc_objective_and_reports_the_whole_splits_estimates(tmp_path):
    result = run_train(
        [
            "trainer=ddp",
            "trainer.accelerator=cpu",
            "trainer.devices=2",
            "debug=fast",
            "trainer.max_epochs=2",
            "loss=tcvae",
            "loss.stratified=true",
            "loss/likelihood=continuous_bernoulli",
            "eval.nll_samples=4",
        ],
        tmp_path / "run",
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert status(tmp_path / "run") == "completed"
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    estimates = ("test/nll", "test/nll_se", "test/tc", "test/total_correlation", "test/total_correlation_se")
    assert all(math.isfinite(metrics[key]) for key in estimates)


def test_a_diverging_model_of_the_family_stops_with_the_message_and_its_last_good_checkpoint(tmp_path):
    result = run_train(
        ["optimizer.lr=1e20", "prior=vamp", "prior.n_pseudo_inputs=8", "loss=mmd", "trainer.max_epochs=3"],
        tmp_path / "run",
    )
    output = result.stdout + result.stderr
    assert result.returncode == 1 and "Traceback" not in output, output[-3000:]
    assert "Training diverged at optimizer step" in output and "mmd=" in output, output[-2000:]  # its own terms
    assert status(tmp_path / "run") == "diverged"


def test_ddp_on_two_cpu_processes_balances_batches_and_writes_once(tmp_path):
    """Faces and dogs (the convolutional network) with the family's parts that hold state of their own across the
    processes: a flow posterior, the MIWAE objective and the mixture sampler fitted after training."""
    faces, dogs = write_utkface(tmp_path / "utkface", n=40), write_cu_dogs(tmp_path / "cu_dogs", per_breed=10)
    run_dir = tmp_path / "run"
    args = [
        "dataset=faces_dogs",
        f"dataset.faces.root={faces}",
        f"dataset.dogs.root={dogs}",
        "dataset.image_size=32",
        "dataset.batch_size=8",
        "model.latent_dim=8",
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "debug=fast",
        "trainer.max_epochs=2",
    ]
    args += ["posterior=iaf", "posterior.hidden_dims=[16]", "posterior.h_dim=4", "loss=miwae", "loss.k=2", "loss.m=2"]
    args += ["sampler=gmm", "sampler.n_components=2", "eval.nll_samples=4"]
    result = run_train(args, run_dir)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "Starting with 2 processes" in output or "distributed_backend=gloo" in output
    assert status(run_dir) == "completed"
    events = list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert len({p.name.split(".")[5] for p in events}) == 1  # one writer process
    accumulator = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"images": 0})
    accumulator.Reload()
    assert len(accumulator.Images("val/reconstructions")) == 3  # each epoch and the end, from rank 0 only
    assert len(list((run_dir / "tensorboard").rglob("tensors.tsv"))) == 1
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert all(math.isfinite(metrics[key]) for key in ("test/nll", "test/elbo"))
    assert bool(torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]["sampler.fitted"])


def test_compile_and_bf16_mixed_precision_train(tmp_path):
    """The options trainer=gpu offers, checked here on the CPU (torch.compile with inductor, bf16 autocast)."""
    run_dir = tmp_path / "run"
    args = ["compile=true", "trainer.precision=bf16-mixed", "debug=fast", "logger=csv", "~callbacks.diagnostics"]
    result = run_train(args, run_dir, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert status(run_dir) == "completed"
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert "net.encoder.0.weight" in checkpoint["state_dict"]  # compiled in place: the keys are unchanged
