"""Streamed against in-memory training on the same photos: peak memory and training steps per second.

The corpus's UTKFace faces (`crop_part1`, 7,660 photos) at `--image-size` (128) are trained on twice, each run a
`train.py` process of its own, one after the other on a quiet machine: from the in-memory cache of
`dataset=images` (the cache written once beforehand, not timed), and from shards written by `vae-shards`
(conversion timed once). Both runs train the conv preset's network for `--steps` steps with batch 64 and the
same seed, no validation, pictures or test. Measured: each process's peak resident memory, all of it and its
anonymous part (sampled from /proc; see `run`), and steps per second between the 10th and the last step (a
callback of this module writes the times). The ratios are streamed / in-memory.

`--curve N ...`: the same comparison (20 steps) on synthetic JPEGs of `--curve-image-size` (32) pixels, N of them,
for peak memory against the set's size.

    python -m benchmarks.shards --source ../shared/data/corpus/utkface/crop_part1 --curve 10000 30000 100000
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from lightning.pytorch.callbacks import Callback
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "shards.json"


class StepClock(Callback):
    """Writes to `path` the wall time at the end of each training step after the first `skip`."""

    def __init__(self, path: str, skip: int = 10) -> None:
        self.path, self.skip, self.times = path, skip, []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step > self.skip:
            self.times.append(time.perf_counter())

    def on_train_end(self, trainer, pl_module) -> None:
        Path(self.path).write_text(json.dumps(self.times))


def resident(pid: int) -> tuple[int, int]:
    """(all, anonymous) resident memory of process `pid` now, kB (0, 0 once it is gone)."""
    try:
        fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
        return int(fields["VmRSS"].split()[0]), int(fields["RssAnon"].split()[0])
    except (OSError, ValueError, KeyError):  # gone, or exiting (a zombie has no memory lines)
        return 0, 0


def run(args: list[str], out: Path, name: str) -> dict:
    """One training process; its peak resident memory, all and anonymous (GB), sampled every 50 ms, and its
    steps per second. Anonymous memory is what the process cannot give back: the in-memory set's tensor is in it,
    the shard files litdata maps are not (their pages count in the resident total as they are read, and the
    kernel reclaims them when it needs the memory)."""
    clock_file = out / f"{name}_clock.json"
    shutil.rmtree(out / name, ignore_errors=True)  # a fresh run folder (train.py refuses one with checkpoints)
    command = [sys.executable, str(ROOT / "train.py"), *args, f"hydra.run.dir={out / name}"]
    command += ["+callbacks.step_clock._target_=benchmarks.shards.StepClock"]
    command += [f"+callbacks.step_clock.path={clock_file}"]
    log = open(out / f"{name}.log", "w")  # noqa: SIM115 (open while the child runs)
    start = time.perf_counter()
    child = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    peak_all = peak_anonymous = 0
    while child.poll() is None:
        total, anonymous = resident(child.pid)
        peak_all, peak_anonymous = max(peak_all, total), max(peak_anonymous, anonymous)
        time.sleep(0.05)
    seconds = time.perf_counter() - start
    log.close()
    if child.returncode != 0:
        raise SystemExit(f"{name} failed:\n{(out / f'{name}.log').read_text()[-3000:]}")
    times = json.loads(clock_file.read_text())
    return {
        "peak_memory_gb": round(peak_all / 2**20, 3),
        "peak_anonymous_memory_gb": round(peak_anonymous / 2**20, 3),
        "steps_per_second": round((len(times) - 1) / (times[-1] - times[0]), 3),
        "wall_seconds": round(seconds, 1),
    }


QUIET = ["~callbacks.diagnostics", "~callbacks.fit_sampler", "eval.nll_samples=0", "eval.mutual_info=false"]
QUIET += ["trainer.limit_val_batches=0", "trainer.limit_test_batches=0", "logger=csv", "seed=1", "threads=2"]


def compare(source: Path, size: int, steps: int, out: Path) -> dict:
    """Both paths on the images of `source` at `size` pixels: conversion time, each run's measures, the ratios."""
    out.mkdir(parents=True, exist_ok=True)
    common = ["model=conv", "dataset.batch_size=64", f"trainer.max_steps={steps}", *QUIET]
    results = {}
    shards = out / f"shards_{size}"
    if not (shards / "vae_shards.json").is_file():
        start = time.perf_counter()
        command = ["-m", "vae_lightning.shards", f"source={source}", f"output={shards}", f"image_size={size}"]
        subprocess.run([sys.executable, *command], cwd=ROOT, check=True, capture_output=True)
        results["conversion_seconds"] = round(time.perf_counter() - start, 1)
    results["images"] = json.loads((shards / "vae_shards.json").read_text())["sizes"]
    memory = ["dataset=images", f"dataset.root={source}", f"dataset.image_size={size}"]
    memory += [f"dataset.cache_dir={out / 'cache'}", "dataset.min_batches_per_epoch=0"]
    warm = [*memory, "model=conv", "trainer.max_steps=1", *QUIET, f"hydra.run.dir={out / 'warm'}"]
    shutil.rmtree(out / "warm", ignore_errors=True)
    subprocess.run([sys.executable, str(ROOT / "train.py"), *warm], cwd=ROOT, check=True, capture_output=True)
    results["memory"] = run([*memory, *common], out, "memory")
    results["streamed"] = run(["dataset=shards", f"dataset.root={shards}", *common], out, "streamed")
    ratios = ("memory_ratio", "peak_memory_gb"), ("anonymous_memory_ratio", "peak_anonymous_memory_gb")
    for key, measure in (*ratios, ("speed_ratio", "steps_per_second")):
        results[key] = round(results["streamed"][measure] / results["memory"][measure], 3)
    return results


def synthetic_folder(out: Path, n: int, size: int) -> Path:
    """`n` JPEG images of `size` pixels (smooth random colour fields) in folders of 1,000, written once; a folder
    of the first `n` of them as links."""
    pool, folder = out / "pool", out / f"images_{n}"
    rng = np.random.default_rng(0)
    for i in range(n):
        path = pool / f"{i // 1000:03d}" / f"{i:06d}.jpg"
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            corners = rng.integers(0, 256, (2, 2, 3)).astype(np.uint8)
            Image.fromarray(corners).resize((size, size), Image.BILINEAR).save(path, quality=90)
        link = folder / path.parent.name / path.name
        if not link.is_symlink():
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(path)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, required=True)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--curve", type=int, nargs="*", default=[], help="synthetic set sizes for the memory curve")
    parser.add_argument("--curve-image-size", type=int, default=32)
    parser.add_argument("--curve-only", action="store_true", help="keep the corpus's figures as they are")
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "benchmarks" / "shards")
    args = parser.parse_args()
    out, size = args.out.resolve(), args.image_size
    results = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    results |= {"machine": platform.machine(), "image_size": size, "steps": args.steps, "source": args.source.name}
    if not args.curve_only:
        results["corpus"] = compare(args.source.resolve(), size, args.steps, out / "corpus")
    side = args.curve_image_size
    for n in args.curve:
        folder = synthetic_folder(out / f"synthetic_{side}", n, side)
        measured = compare(folder, side, 20, out / f"curve_{n}_{side}")
        results.setdefault("curve", {})[f"{n} at {side}x{side}"] = measured
        print(n, json.dumps(measured), flush=True)
    RESULTS.write_text(json.dumps(results, indent=1) + "\n")
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
