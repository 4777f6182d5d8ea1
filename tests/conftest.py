"""Shared fixtures: configs composed as `train.py` composes them, in-process runs of `train(cfg)`, generated data
in the real on-disk formats, a loopback HTTP mirror, and a runner for the commands (slow tests)."""

from __future__ import annotations

import functools
import gzip
import http.server
import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict, read_write

import vae_lightning.core.config  # noqa: F401  (registers the config resolvers)
from vae_lightning.core.config import CONF_DIR
from vae_lightning.data import idx

ROOT = Path(__file__).resolve().parents[1]
# the tests' preprocessed data stays out of the user's cache (~/.cache/vae_lightning), in one folder per worker
os.environ.setdefault("VAE_CACHE_DIR", tempfile.mkdtemp(prefix="vae-test-cache-"))
SHARED_DATA = ROOT.parent / "shared" / "data"
MNIST_NAMES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
# The files with the most work first: `--dist loadfile` hands whole files to the workers in collection order, so
# a long file collected last leaves the other workers idle while it runs (each suite's longest, by --durations).
LONGEST_FIRST = ("test_processes.py", "test_package.py", "test_sweeps.py", "test_models.py", "test_config.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: each file's own order kept


# in-process runs: no progress bar (pytest captures it anyway) and strict pictures, so a failing one fails the test
QUIET = ["~callbacks.progress_bar", "+trainer.enable_progress_bar=false", "diagnostics.strict=true"]


def compose_train(overrides: list[str], output_dir: Path, config_name: str = "train") -> DictConfig:
    """The config `python train.py OVERRIDES` would run with, its outputs in `output_dir`; Hydra's runtime
    config is set as under `@hydra.main` (the config reads the group choices and overrides from it)."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name, overrides=overrides, return_hydra_config=True)
    with read_write(cfg), open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
        cfg.paths.data_dir = str(output_dir.parent / "data")
        cfg.paths.cache_dir = str(output_dir.parent / "cache")
        cfg.hydra.runtime.output_dir = str(output_dir)
    HydraConfig.instance().set_config(cfg)
    return cfg


def compose_tool(name: str, overrides: list[str]) -> DictConfig:
    """The config of `python -m vae_lightning.NAME OVERRIDES` (evaluate, morph)."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(name, overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    return cfg


def trained_data(checkpoint: Path) -> dict:
    """The data locations (roots) a checkpoint was trained with, nested as `TrainedVAE.datamodule` takes them: a
    checkpoint never chooses where a tool reads, so a test gives them as a user would."""
    import torch

    from vae_lightning.run.tools import _flat

    data = torch.load(checkpoint, weights_only=True, mmap=True)["hyper_parameters"]["data"]
    roots = {key: value for key, value in _flat(data).items() if key.endswith("root")}
    changes: dict = {}
    for key, value in roots.items():
        *parents, name = key.split(".")
        node = changes
        for parent in parents:
            node = node.setdefault(parent, {})
        node[name] = value
    return changes


def trained_data_args(checkpoint: Path) -> list[str]:
    """`trained_data` as a tool's command-line arguments (`dataset.faces.root=...`)."""
    from vae_lightning.run.tools import _flat

    return [f"dataset.{key}={value}" for key, value in _flat(trained_data(checkpoint)).items()]


def train_in_process(overrides: list[str], output_dir: Path) -> float | None:
    """`train(cfg)` as `python train.py OVERRIDES hydra.run.dir=OUTPUT_DIR` would call it, in this process."""
    from vae_lightning.train import train

    return train(compose_train([*QUIET, *overrides], output_dir))


def tensorboard_events(log_dir: Path, **size_guidance: int):
    """An EventAccumulator over `log_dir`'s event files, read in the order they were created.

    TensorBoard reads a folder's files in name order, and a name ends with the writer's count in its process:
    in a long-lived process (a pytest worker) the counter passes 9 to 10, ".10" sorts before ".9", and a
    test file written in the same second as the training file is read first, so its steps look like a restart
    and are purged. The files are linked here under names that sort by (second, count)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    def created(path: Path) -> tuple[int, int]:
        parts = path.name.split(".")
        return int(parts[3]), int(parts[-1])

    ordered = Path(tempfile.mkdtemp(prefix="events-"))
    for i, path in enumerate(sorted(log_dir.glob("events.out.tfevents.*"), key=created)):
        (ordered / f"events.out.tfevents.{i:06d}").symlink_to(path.resolve())
    accumulator = EventAccumulator(str(ordered), size_guidance=size_guidance or {"scalars": 0})
    accumulator.Reload()
    return accumulator


def write_mnist(folder: Path, n_train: int = 120, n_test: int = 40, compress: bool = True, seed: int = 0) -> Path:
    """Four IDX files with blob-like 28x28 'digits' (a bright square whose place depends on the label)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("test", n_test)):
        labels = rng.integers(0, 10, size=n).astype(np.uint8)
        images = rng.integers(0, 40, size=(n, 28, 28)).astype(np.uint8)
        for i, label in enumerate(labels):
            top, left = 2 + 2 * (label // 5) * 5, 2 + 4 * (label % 5)
            images[i, top : top + 8, left : left + 8] = 255
        for kind, array in (("images", images), ("labels", labels)):
            data = idx.encode_idx(array)
            name = MNIST_NAMES[f"{split}_{kind}"]
            if compress:
                (folder / f"{name}.gz").write_bytes(gzip.compress(data))
            else:
                (folder / name).write_bytes(data)
    return folder


@pytest.fixture
def mnist_dir(tmp_path: Path) -> Path:
    return write_mnist(tmp_path / "mnist")


@pytest.fixture
def shared_mnist_dir(tmp_path: Path) -> Path:
    """The real first 500 MNIST test images, also placed under the training names (a valid subset)."""
    source = SHARED_DATA / "mnist_t10k_first500"
    if not source.is_dir():
        pytest.skip(f"{source} is not present")
    folder = tmp_path / "real_mnist"
    folder.mkdir()
    for kind in ("images", "labels"):
        real = source / f"{MNIST_NAMES[f'test_{kind}']}.gz"
        (folder / real.name).symlink_to(real)
        (folder / f"{MNIST_NAMES[f'train_{kind}']}.gz").symlink_to(real)
    return folder


@pytest.fixture
def serve(tmp_path: Path):
    """`serve(folder)` -> the URL of a loopback HTTP server for `folder` (stopped after the test)."""
    servers = []

    def start(folder: Path) -> str:
        handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
        handler.log_message = lambda *args: None
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/"

    yield start
    for server in servers:
        server.shutdown()


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory) -> Path:
    """One finished default run (digits, two short epochs), shared by the tests that only read its outputs."""
    run_dir = tmp_path_factory.mktemp("digits") / "run"
    train_in_process(
        ["debug=fast", "trainer.max_epochs=2", "trainer.limit_val_batches=null", "diagnostics.every_n_epochs=1"],
        run_dir,
    )
    return run_dir


@pytest.fixture(scope="session")
def faces_dogs_run(tmp_path_factory) -> Path:
    """The last checkpoint of a short faces-and-dogs run on generated photos (30 faces, 20 dogs, 32x32)."""
    from tests.photo_fixtures import write_oxford_pet, write_utkface

    tmp = tmp_path_factory.mktemp("faces_dogs")
    faces, dogs = write_utkface(tmp / "faces", n=30, bad=False), write_oxford_pet(tmp / "dogs", dogs=20, cats=0)
    args = [
        "dataset=faces_dogs",
        f"dataset.faces.root={faces}",
        f"dataset.dogs.root={dogs}",
        "dataset.image_size=32",
        "model.latent_dim=4",
        "debug=fast",
        "~callbacks.diagnostics",
    ]
    train_in_process(args, tmp / "run")
    return tmp / "run" / "checkpoints" / "last.ckpt"


def run_command(args: list[str], cwd: Path = ROOT, env: dict | None = None, timeout: int = 300):
    """A command of the project (`train.py ...`, `-m vae_lightning.evaluate ...`) in a real process."""
    return subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        env=os.environ | {"PYTHONWARNINGS": "ignore"} | (env or {}),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_commands(commands: list[list[str]], timeout: int = 300) -> list[subprocess.CompletedProcess]:
    """Several commands of the project at once (each pays a few seconds of imports), their results in order."""
    env = os.environ | {"PYTHONWARNINGS": "ignore"}
    processes = [
        subprocess.Popen(
            [sys.executable, *c], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for c in commands
    ]
    results = []
    for command, process in zip(commands, processes, strict=True):
        out, err = process.communicate(timeout=timeout)
        results.append(subprocess.CompletedProcess(command, process.returncode, out, err))
    return results


def run_train(args: list[str], run_dir: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    """`python train.py ARGS hydra.run.dir=RUN_DIR`, data and cache kept beside the run folder."""
    env = {"VAE_DATA_DIR": str(run_dir.parent / "data")}
    return run_command([str(ROOT / "train.py"), *args, f"hydra.run.dir={run_dir}"], env=env, timeout=timeout)


def one_line_error(result: subprocess.CompletedProcess) -> str:
    """The error a command printed, checked to be one clear message: exit code 1, no traceback."""
    output = result.stdout + result.stderr
    assert result.returncode == 1, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    assert "Error: " in result.stderr, output[-3000:]  # in one voice, on stderr
    return output
