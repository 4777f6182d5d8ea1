"""Streamed against in-memory training on the same photos: peak memory and training steps per second.

The corpus's UTKFace faces (`crop_part1`, 7,660 photos) at `--image-size` (128) are trained on twice, each run a
`train.py` process of its own, one after the other on a quiet machine: from the in-memory cache of
`dataset=images` (the cache written once beforehand, not timed), and from shards written by `vae-shards`
(conversion timed once). Both runs train the conv preset's network for `--steps` steps with batch 64 and the
same seed, no validation, pictures or test. Measured: each process's peak resident memory (the kernel's
`ru_maxrss` of the child; file pages litdata maps count as they are touched), and steps per second between the
10th and the last step (a callback of this module writes the times). The ratios are streamed / in-memory.

    python -m benchmarks.shards --source ../shared/data/corpus/utkface/crop_part1 --steps 60
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

from lightning.pytorch.callbacks import Callback

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


# runs train.py in this process's child and writes the child's own peak resident memory (kB) when it exits
CHILD = """
import atexit, resource, runpy, sys
peak_file = sys.argv.pop(1)
atexit.register(lambda: open(peak_file, "w").write(str(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)))
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def run(args: list[str], out: Path, name: str) -> dict:
    """One training process; its peak memory (GB) and steps per second."""
    clock_file, memory_file = out / f"{name}_clock.json", out / f"{name}_peak_kb.txt"
    command = [sys.executable, "-c", CHILD, str(memory_file), str(ROOT / "train.py"), *args]
    command += [f"hydra.run.dir={out / name}", "+callbacks.step_clock._target_=benchmarks.shards.StepClock"]
    command += [f"+callbacks.step_clock.path={clock_file}"]
    start = time.perf_counter()
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"{name} failed:\n{result.stderr[-3000:]}")
    times = json.loads(clock_file.read_text())
    return {
        "peak_memory_gb": round(int(memory_file.read_text()) / 2**20, 3),
        "steps_per_second": round((len(times) - 1) / (times[-1] - times[0]), 3),
        "wall_seconds": round(seconds, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, required=True)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "benchmarks" / "shards")
    args = parser.parse_args()
    out, size, source = args.out.resolve(), args.image_size, args.source.resolve()
    out.mkdir(parents=True, exist_ok=True)
    quiet = ["~callbacks.diagnostics", "~callbacks.fit_sampler", "eval.nll_samples=0", "eval.mutual_info=false"]
    quiet += ["trainer.limit_val_batches=0", "trainer.limit_test_batches=0", "logger=csv", "seed=1", "threads=2"]
    common = ["model=conv", "dataset.batch_size=64", f"trainer.max_steps={args.steps}", *quiet]
    results = {"machine": platform.machine(), "image_size": size, "steps": args.steps, "source": source.name}
    shards = out / f"shards_{size}"
    if not (shards / "vae_shards.json").is_file():
        start = time.perf_counter()
        command = ["-m", "vae_lightning.shards", f"source={source}", f"output={shards}", f"image_size={size}"]
        subprocess.run([sys.executable, *command], cwd=ROOT, check=True, capture_output=True)
        results["conversion_seconds"] = round(time.perf_counter() - start, 1)
    memory = ["dataset=images", f"dataset.root={source}", f"dataset.image_size={size}"]
    memory += [f"dataset.cache_dir={out / 'cache'}"]
    warm = [*memory, "model=conv", "trainer.max_steps=1", *quiet, f"hydra.run.dir={out / 'warm'}"]
    subprocess.run([sys.executable, str(ROOT / "train.py"), *warm], cwd=ROOT, check=True, capture_output=True)
    results["memory"] = run([*memory, *common], out, "memory")
    results["streamed"] = run(["dataset=shards", f"dataset.root={shards}", *common], out, "streamed")
    for key, measure in (("memory_ratio", "peak_memory_gb"), ("speed_ratio", "steps_per_second")):
        results[key] = round(results["streamed"][measure] / results["memory"][measure], 3)
    RESULTS.write_text(json.dumps(results, indent=1) + "\n")
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
