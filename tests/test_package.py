"""The package as users install it, in real processes: a wheel installed outside the clone, its console commands
started from an empty folder, and a user's own config folder (`examples/my_project`) that adds an experiment and
a network class, trains it, and has its checkpoint evaluated, morphed and resumed."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import ROOT, one_line_error, run_command

pytestmark = pytest.mark.slow

EXAMPLE = ROOT / "examples" / "my_project"
FAST = ["debug=fast", "trainer.max_epochs=2"]


def run(args: list[str], cwd: Path, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        args,
        cwd=cwd,
        env=os.environ | {"PYTHONWARNINGS": "ignore"} | (env or {}),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_together(commands: list[tuple[list[str], Path, dict | None]], timeout: int = 300):
    """Several independent commands at once (each spends most of its time importing), results in order."""
    started = [
        subprocess.Popen(
            args,
            cwd=cwd,
            env=os.environ | {"PYTHONWARNINGS": "ignore"} | (env or {}),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for args, cwd, env in commands
    ]
    results = []
    for (args, _, _), process in zip(commands, started, strict=True):
        out, err = process.communicate(timeout=timeout)
        results.append(subprocess.CompletedProcess(args, process.returncode, out, err))
    return results


def ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    return result


@pytest.fixture(scope="module")
def wheel_env(tmp_path_factory) -> Path:
    """A new virtual environment holding the built wheel of this checkout (and nothing of the clone); its
    dependencies are this environment's, seen through a path file, so that no download is needed."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "source"
    listed = ok(run(["git", "ls-files", "-co", "--exclude-standard"], ROOT)).stdout.split()
    for name in listed:
        if (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp), "."]
    ok(run(build, source))
    (wheel,) = tmp.glob("vae_lightning-*.whl")
    venv = tmp / "venv"
    ok(run([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp))
    python = venv / "bin" / "python"
    site = ok(run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp)).stdout
    (Path(site.strip()) / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    ok(run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q", str(wheel)], tmp))
    return venv


@pytest.fixture(scope="module")
def wheel_run(wheel_env, tmp_path_factory) -> Path:
    """An empty folder in which the wheel's `vae-train` made `run/`."""
    folder = tmp_path_factory.mktemp("user")
    ok(run([str(wheel_env / "bin" / "vae-train"), *FAST, "hydra.run.dir=run"], folder, {"VAE_DATA_DIR": "data"}))
    return folder


def test_the_wheel_trains_evaluates_and_morphs_from_an_empty_folder(wheel_env, wheel_run):
    bin_, tmp_path = wheel_env / "bin", wheel_run
    env = {"VAE_DATA_DIR": str(tmp_path / "data")}
    where = ok(run([str(bin_ / "python"), "-c", "import vae_lightning; print(vae_lightning.__file__)"], tmp_path))
    assert where.stdout.strip().startswith(str(wheel_env)), "the wheel's copy is imported, not the clone's"
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["status"] == "completed"
    ckpt = "run/checkpoints/last.ckpt"
    script = ROOT / "examples" / "use_a_trained_model.py"
    evaluated, morphed, api = run_together(
        [
            ([str(bin_ / "vae-evaluate"), f"ckpt_path={ckpt}", "output=eval.json"], tmp_path, env),
            ([str(bin_ / "vae-morph"), f"ckpt_path={ckpt}", "output=morph.gif", "steps=4"], tmp_path, env),
            ([str(bin_ / "python"), str(script), ckpt, "."], tmp_path, env),
        ]
    )
    assert "test/nll" in json.loads(ok(evaluated).stdout)  # stdout: the results only
    assert "test: done" in evaluated.stderr  # its progress, as log lines on stderr
    assert ok(morphed) and (tmp_path / "morph.gif").is_file() and (tmp_path / "morph.png").is_file()
    assert "codes (8, 2)" in ok(api).stdout and (tmp_path / "samples.png").is_file()
    pictures = {f"{name}.png" for name in ("inputs", "reconstructions", "samples", "interpolation")}
    written = {p.name for p in tmp_path.iterdir()}
    assert written == {"run", "eval.json", "morph.gif", "morph.png", *pictures}  # all of it where it was started


def served_endpoints(command: list[str], cwd: Path, tmpdir: Path) -> set[str]:
    """The named API endpoints of the page `command` (a `vae-demo ...`) serves, read once it answers; the server
    is then stopped with `kill` and must exit cleanly."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = os.environ | {"GRADIO_ANALYTICS_ENABLED": "False", "TMPDIR": str(tmpdir)}
    demo = subprocess.Popen(
        [*command, f"port={port}"], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline, info = time.monotonic() + 180, None
        while info is None and time.monotonic() < deadline and demo.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/gradio_api/info", timeout=2) as answer:
                    info = json.loads(answer.read())
            except OSError:
                time.sleep(0.3)
        assert info is not None, demo.communicate(timeout=30)[1][-3000:]
    finally:
        demo.send_signal(signal.SIGTERM)
        _, err = demo.communicate(timeout=60)
    assert demo.returncode == 0, err[-3000:]
    return set(info["named_endpoints"])


def test_the_wheel_serves_the_demo_from_an_empty_folder(wheel_env, wheel_run, tmp_path):
    """`vae-demo` of the installed wheel serves a checkpoint's page, writes nothing where it was started, and
    stops cleanly on `kill`."""
    if importlib.util.find_spec("gradio") is None:
        pytest.skip('the demo extra is not installed: pip install -e ".[demo]"')
    user = tmp_path / "empty"
    user.mkdir()
    ckpt = f"ckpt_path={wheel_run / 'run' / 'checkpoints' / 'last.ckpt'}"
    endpoints = served_endpoints([str(wheel_env / "bin" / "vae-demo"), ckpt], user, tmp_path)
    assert {"/samples", "/explore_photo", "/grid_z1", "/between_first"} <= endpoints
    assert not list(user.iterdir()) and not list(tmp_path.glob("vae-demo-*"))


def test_every_packaged_preset_composes_from_the_wheel(wheel_env, tmp_path):
    presets = sorted(p.stem for p in (ROOT / "vae_lightning" / "conf" / "experiment").glob("*.yaml"))
    code = (
        "import sys; from hydra import compose, initialize_config_module\n"
        "with initialize_config_module('vae_lightning.conf', version_base='1.3'):\n"
        "    for name in sys.argv[1:]:\n"
        "        cfg = compose('train', overrides=[f'experiment={name}'])\n"
        "        print(name, cfg.module.net._target_, cfg.dataset._target_)\n"
    )
    composed = ok(run([str(wheel_env / "bin" / "python"), "-c", code, *presets], tmp_path)).stdout.splitlines()
    assert [line.split()[0] for line in composed] == presets
    help_ = ok(run([str(wheel_env / "bin" / "vae-train"), "--help"], tmp_path)).stdout
    assert "experiment: " + ", ".join(presets) in help_


def test_the_worked_user_config_folder_trains_evaluates_morphs_and_resumes(wheel_env, tmp_path):
    """examples/my_project as docs/configuration.md runs it: its own experiment and network class, trained by the
    wheel's console command, its checkpoint trusted by evaluate, morph and a resume given the same config folder
    (and refused without it), with the commands of the wheel and of this checkout alike."""
    project = tmp_path / "my_project"
    shutil.copytree(EXAMPLE, project, ignore=shutil.ignore_patterns("__pycache__", "outputs"))
    bin_ = wheel_env / "bin"
    env = {"PYTHONPATH": str(project), "VAE_DATA_DIR": str(tmp_path / "data")}
    conf = ["--config-dir", "conf"]
    run_dir = "hydra.run.dir=outputs/residual"
    ok(run([str(bin_ / "vae-train"), *conf, "experiment=residual_digits", *FAST, run_dir], project, env))
    assert "_target_: my_nets.ResidualMLPVAE" in (project / "outputs/residual/.hydra/config.yaml").read_text()
    first = json.loads((project / "outputs" / "residual" / "metrics.json").read_text())
    ckpt = "ckpt_path=outputs/residual/checkpoints/last.ckpt"
    # and this checkout's commands, as `python -m` (the current folder on the path, no PYTHONPATH needed)
    clone_env = {"VAE_DATA_DIR": str(tmp_path / "data")}
    morph = [sys.executable, "-m", "vae_lightning.morph", *conf, ckpt, "output=residual.gif", "steps=4"]
    evaluated, refused, morphed = run_together(
        [
            ([str(bin_ / "vae-evaluate"), *conf, ckpt, "output=eval.json"], project, env),
            ([str(bin_ / "vae-evaluate"), ckpt], project, env),
            (morph, project, clone_env),
        ]
    )
    assert json.loads(ok(evaluated).stdout)["test/active_units"] >= 1
    message = one_line_error(refused)
    assert "names `my_nets.ResidualMLPVAE`" in message and "--config-dir" in message
    assert ok(morphed) and (project / "residual.gif").is_file()
    train = ["-m", "vae_lightning.train", *conf, "experiment=residual_digits", *FAST, run_dir]
    resumed = ok(run_command([*train, "trainer.max_epochs=3", "resume=true"], cwd=project, env=clone_env))
    assert "Resuming from" in resumed.stderr + resumed.stdout
    after = json.loads((project / "outputs" / "residual" / "metrics.json").read_text())
    assert after["status"] == "completed" and after["tested_step"] >= first["tested_step"]


def test_the_wheel_exports_a_model_that_works_without_its_data(wheel_env, tmp_path):
    """From the installed wheel, in an empty folder: a model trained on a photo folder with two classes is
    exported by `vae-export`; with the photos deleted, `TrainedVAE.from_pretrained` encodes a photo, decodes,
    samples and morphs along the exported attribute, from the folder and, placed in a Hugging Face cache, by repo
    id with HF_HUB_OFFLINE=1; `vae-demo` serves it with its attribute tab; the folder holds no pickle."""
    if importlib.util.find_spec("safetensors") is None or importlib.util.find_spec("huggingface_hub") is None:
        pytest.skip('the hub extra is not installed: pip install -e ".[hub]"')
    from tests.test_sharing import SAFE, write_photos

    user, bin_ = tmp_path / "user", wheel_env / "bin"
    write_photos(user / "photos")
    train = ["dataset=images", "dataset.root=photos", "dataset.image_size=16", "model.channels=[8,16]"]
    train += ["model.latent_dim=3", "debug=fast", "~callbacks.diagnostics", "hydra.run.dir=run"]
    ok(run([str(bin_ / "vae-train"), *train], user, {"VAE_DATA_DIR": "data"}))
    export = [str(bin_ / "vae-export"), "ckpt_path=run/checkpoints/last.ckpt", "output=shared", "dataset.root=photos"]
    ok(run(export, user))
    shutil.copy(user / "photos" / "dogs" / "0.png", user / "friend.png")
    shutil.rmtree(user / "photos")
    assert {p.suffix for p in (user / "shared").iterdir()} <= SAFE
    assert "train.py dataset=images dataset.root=photos" in (user / "shared" / "README.md").read_text()
    use = (  # the folder, then the same files by repo id from a Hugging Face cache, offline
        "import sys\nfrom vae_lightning.api import TrainedVAE\n"
        "for source in sys.argv[1:]:\n"
        "    vae = TrainedVAE.from_pretrained(source)\n"
        "    z = vae.encode('friend.png')\n"
        "    print(tuple(z.shape), tuple(vae.decode(z).shape), tuple(vae.sample(2).shape),"
        " tuple(vae.morph_attribute('friend.png', 'dogs', steps=3).shape))\n"
    )
    expected = "(1, 3) (1, 3, 16, 16) (2, 3, 16, 16) (3, 3, 16, 16)"
    commit = "0123456789abcdef0123456789abcdef01234567"
    cached = tmp_path / "hub" / "models--friends--dogs"
    shutil.copytree(user / "shared", cached / "snapshots" / commit)
    (cached / "refs").mkdir()
    (cached / "refs" / "main").write_text(commit)
    offline = {"HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"}
    used = ok(run([str(bin_ / "python"), "-c", use, "shared", "friends/dogs"], user, offline)).stdout.split("\n")
    assert [line.strip() for line in used if line.strip()] == [expected, expected]
    if importlib.util.find_spec("gradio") is None:
        pytest.skip('the demo extra is not installed: pip install -e ".[demo]"')
    endpoints = served_endpoints([str(bin_ / "vae-demo"), "ckpt_path=shared"], user, tmp_path)
    assert {"/friend_photo", "/samples", "/between_first"} <= endpoints
