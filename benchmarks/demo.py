"""How live the web demo is: `vae-demo` serving a checkpoint of the 64x64 conv preset (`faces_dogs_conv`) in its
own process, driven through its HTTP API with `gradio_client`, as the page drives it.

Two figures for each action:
- **server work**: what the server computes for it, timed in this process on one thread as the server runs it:
  the handler's own calls (`DemoModel`) and Gradio's encoding of the images it returns
  (`gr.Image.postprocess`, which writes the PNG the page fetches);
- **round trip**: from the client's request to its result downloaded, through the real server (the upload,
  Gradio's queue and server-sent events, the image download): what a user waits for on this machine.

The actions: an upload of a 12-megapixel JPEG (4000x3000, made of the shared real photos) to the first decoded
image (crop, face detection, encoding, the first frame); a slider move (one decode); the GIF and strip (25
frames). Targets: a slider update within 100 ms of server time, and the whole upload-to-first-image within 1 s.
Weights do not change these times, so by default the checkpoint is the preset trained two steps on the shared
samples; `--ckpt` times one of your own.

    python -m benchmarks.demo
    python -m benchmarks.demo --ckpt outputs/.../checkpoints/last.ckpt
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import torch

from benchmarks.common import clock, save
from tests.photo_fixtures import SHARED_DATA, camera_photo

ROOT = Path(__file__).resolve().parents[1]
TARGETS = {"slider server work (ms)": 100, "upload to first image, 12 MP (s)": 1.0}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_checkpoint(folder: Path) -> Path:
    """The `faces_dogs_conv` preset as shipped (64x64, 128-D), two training steps on the shared samples."""
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "train.py"),
            "experiment=faces_dogs_conv",
            f"paths.data_dir={SHARED_DATA}",
            f"paths.cache_dir={folder / 'cache'}",
            f"dataset.dogs.root={SHARED_DATA / 'dogs' / 'oxford_iiit_pet'}",
            "trainer.max_epochs=1",
            "trainer.limit_train_batches=2",
            "trainer.limit_val_batches=1",
            "trainer.limit_test_batches=1",
            "~callbacks.diagnostics",
            f"hydra.run.dir={folder / 'run'}",
        ],
        check=True,
        capture_output=True,
    )
    return folder / "run" / "checkpoints" / "last.ckpt"


def serve(ckpt: Path, port: int, env: dict, data: list[str]) -> subprocess.Popen:
    """`vae-demo` on `port` with the data set arguments `data` (a checkpoint does not say where its data is),
    returned once its page answers."""
    server = subprocess.Popen(
        [sys.executable, "-m", "vae_lightning.demo", f"ckpt_path={ckpt}", f"port={port}", *data],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"vae-demo exited: {server.stderr.read()}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2).close()
            return server
        except OSError:
            time.sleep(0.5)
    server.kill()
    raise SystemExit("vae-demo did not answer within 180 s")


def timed(fn, repeats: int) -> list[float]:
    """Seconds of each of `repeats` calls of `fn`, after one warm-up call."""
    fn()
    seconds = []
    for _ in range(repeats):
        start = clock()
        fn()
        seconds.append(clock() - start)
    return seconds


def server_work(ckpt: Path, photo: Path, repeats: int) -> dict:
    """The server's own work for each action, in this process on one thread."""
    import gradio as gr

    from vae_lightning.api import TrainedVAE
    from vae_lightning.demo.model import DemoModel

    torch.set_num_threads(1)
    vae = TrainedVAE.load(ckpt)
    model = DemoModel(vae, vae.datamodule(), None, find_face=True)
    model.direction(None)
    image = gr.Image(format="png")
    found = model.photo(photo)

    def upload() -> None:
        encoded = model.photo(photo)
        image.postprocess(model.crop_image(encoded))
        image.postprocess(model.along(encoded, None, 1.0))

    steps = iter(range(10**9))

    def slide() -> None:
        image.postprocess(model.along(found, None, (next(steps) % 150) / 100))

    with tempfile.TemporaryDirectory() as folder:

        def gif() -> None:
            frames = model.along_frames(found, None, 1.0, 25)
            model.write_morph(frames, [found.crop.pixels], Path(folder), "friend_dog", 80, 800)
            image.postprocess(str(Path(folder) / "friend_dog.png"))

        return {
            "upload": statistics.median(timed(upload, repeats)),
            "slider": statistics.median(timed(slide, 5 * repeats)),
            "gif": statistics.median(timed(gif, max(3, repeats // 3))),
        }


def round_trips(url: str, photo: Path, repeats: int) -> dict:
    from gradio_client import Client, handle_file

    client = Client(url, verbose=False)
    steps = iter(range(10**9))
    upload = timed(lambda: client.predict(handle_file(str(photo)), "dog", 1.0, api_name="/friend_photo"), repeats)
    slide = timed(lambda: client.predict("dog", (next(steps) % 150) / 100, api_name="/friend_frame"), 5 * repeats)
    gif = timed(lambda: client.predict("dog", 1.0, api_name="/friend_gif"), max(3, repeats // 3))
    return {
        "upload": statistics.median(upload),
        "slider": statistics.median(slide),
        "slider_p90": statistics.quantiles(slide, n=10)[-1],
        "gif": statistics.median(gif),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", type=Path, help="a faces-and-dogs checkpoint (default: the preset, 2 steps)")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument(
        "--data",
        nargs="*",
        default=[
            f"dataset.faces.root={SHARED_DATA / 'utkface'}",
            f"dataset.dogs.root={SHARED_DATA / 'dogs' / 'oxford_iiit_pet'}",
        ],
        help="where the checkpoint's data is, as vae-demo's dataset.* arguments (default: the shared samples)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        ckpt = args.ckpt or train_checkpoint(folder)
        photo = camera_photo(folder / "camera.jpg", 4000, 3000)
        env = os.environ | {"GRADIO_ANALYTICS_ENABLED": "False", "TMPDIR": str(folder)}
        env["VAE_CACHE_DIR"] = str(folder / "cache")
        port = free_port()
        server = serve(ckpt, port, env, args.data)
        try:
            trips = round_trips(f"http://127.0.0.1:{port}/", photo, args.repeats)
        finally:
            server.terminate()
            server.wait(30)
        work = server_work(ckpt, photo, args.repeats)
    result = {
        "checkpoint": str(args.ckpt) if args.ckpt else "faces_dogs_conv, 2 steps on the shared samples",
        "photo": "4000x3000 JPEG (12 MP)",
        "server_work_ms": {k: round(1000 * v, 1) for k, v in work.items()},
        "round_trip_ms": {k: round(1000 * v, 1) for k, v in trips.items()},
        "targets": TARGETS,
    }
    result["met"] = {
        "slider": result["server_work_ms"]["slider"] <= TARGETS["slider server work (ms)"],
        "upload": result["round_trip_ms"]["upload"] <= 1000 * TARGETS["upload to first image, 12 MP (s)"],
    }
    save("demo", result)


if __name__ == "__main__":
    main()
