"""Training speed beside other work: a run's steps/s next to one and two busy processes, as a ratio of its speed
on the idle machine, with torch's default threads and with the framework's choice.

Each case trains the preset as `train.py` builds it (its VAEModule, Trainer, callbacks and logger; no validation)
on random images of its data set's shape in a fresh process (OpenMP's wait policy is fixed when torch loads),
for `--seconds`; steps/s leave out the first steps and epoch ends:

- torch default: one intra-op thread per core, OpenMP's default wait policy (what a plain PyTorch script gets);
- framework: the thread count `callbacks.threads.CpuThreads` picks for the network when the run starts and then
  changes as other work takes or frees cores, and the wait policy `core.threads.passive_waiting` picks before
  torch loads (OpenMP threads that sleep while they wait where other work is already running), as `vae-train`
  does.

A busy process is a Python loop that keeps one core fully busy, started before the run and kept running ("1
later": started once the run has chosen its threads, as when a second experiment starts during the first). All
cases run one after another in `--repeats` rounds (medians reported), so that they meet the machine and its drift
alike; run it on an otherwise quiet one.

    python -m benchmarks.threads                      # the default preset (digits MLP) and faces_dogs_conv
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# preset -> (overrides, seconds per case: a conv step beside two busy processes takes over a second)
PRESETS = {
    "default (digits MLP)": ([], 6.0),
    "faces_dogs_conv (64x64 conv)": (["experiment=faces_dogs_conv"], 12.0),
}
BUSY = "while True: pass"


def child(overrides: list[str], mode: str, seconds: float, late: bool) -> None:
    """One case, in this process: the preset built as `train.py` builds it (the VAEModule, the Trainer with its
    callbacks and logger), on random images of its data set's shape, trained for `seconds`; prints JSON."""
    from vae_lightning.core.threads import passive_waiting

    if mode == "framework":
        passive_waiting()  # as vae-train does, before torch loads
    import lightning as L
    import torch

    from benchmarks.common import RandomImages, StepClock, compose_run, data_shape
    from vae_lightning.core.config import build
    from vae_lightning.run.trainer import build_trainer

    class BusyLater(L.Callback):
        """With `late`, a busy process that starts when training starts, after the run chose its threads (a second
        experiment started later)."""

        def __init__(self, late: bool) -> None:
            self.late, self.spinner = late, None

        def on_train_start(self, trainer, pl_module) -> None:
            if self.late:
                self.spinner = subprocess.Popen([sys.executable, "-c", BUSY])

        def stop(self) -> None:
            if self.spinner is not None:
                self.spinner.kill()
                self.spinner.wait()

    logging.getLogger("lightning").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    with tempfile.TemporaryDirectory() as tmp:
        limits = ["trainer.max_epochs=1000", "trainer.limit_val_batches=0", "trainer.num_sanity_val_steps=0"]
        limits.append(f"+trainer.max_time=00:00:00:{round(seconds):02d}")
        own_threads = [] if mode == "framework" else ["~callbacks.cpu_threads"]  # the framework chooses, or torch
        cfg = compose_run([*overrides, "~callbacks.diagnostics", *own_threads, *limits], Path(tmp))
        shape, uint8 = data_shape(cfg.dataset)
        batch = int(cfg.dataset.batch_size)
        datamodule = RandomImages(shape, 200 * batch, batch, batch, uint8, batch)
        L.seed_everything(0)
        module = build(cfg.module, None, input_shape=shape)
        clock, later = StepClock(warmup=2), BusyLater(late)
        trainer = build_trainer(cfg, extra_callbacks=(clock, later))
        try:
            with contextlib.redirect_stdout(sys.stderr):
                trainer.fit(module, datamodule=datamodule)
        finally:
            later.stop()
    policy = os.environ.get("OMP_WAIT_POLICY", "default")
    print(
        json.dumps({"steps_per_s": clock.steps / clock.seconds, "threads": torch.get_num_threads(), "policy": policy})
    )


def run_case(overrides: list[str], mode: str, seconds: float, busy: int, late: bool = False) -> dict:
    env = dict(os.environ)
    env.pop("OMP_NUM_THREADS", None)
    env.pop("OMP_WAIT_POLICY", None)
    spinners = [subprocess.Popen([sys.executable, "-c", BUSY]) for _ in range(0 if late else busy)]
    try:
        time.sleep(1.0 if spinners else 0.0)  # the spinners are running before the run chooses its threads
        command = [sys.executable, "-m", "benchmarks.threads", "--child", mode, "--seconds", str(seconds)]
        command += ["--late", "--"] if late else ["--"]
        out = subprocess.run([*command, *overrides], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=None, help="per case (default: the preset's)")
    parser.add_argument("--repeats", type=int, default=3, help="rounds over all cases; medians are reported")
    parser.add_argument("--child", choices=["default", "framework"])
    parser.add_argument("--late", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    if args.child:
        child(args.overrides, args.child, args.seconds, args.late)
        return
    results = {}
    for name, (overrides, seconds) in PRESETS.items():
        seconds = args.seconds or seconds
        runs: dict[tuple[str, str], list[dict]] = {}
        for _ in range(args.repeats):  # rounds over every case, so that the machine's drift meets each alike
            for busy in ("0", "1", "2", "1 later"):
                for mode in ("default", "framework"):
                    case = run_case(overrides, mode, seconds, int(busy[0]), busy == "1 later")
                    runs.setdefault((mode, busy), []).append(case)
        speeds = {
            key: {
                "steps_per_s": statistics.median(r["steps_per_s"] for r in cases),
                "threads": "/".join(sorted({str(r["threads"]) for r in cases})),
                "policy": "/".join(sorted({r["policy"] for r in cases})),
            }
            for key, cases in runs.items()
        }
        idle = speeds["default", "0"]["steps_per_s"]  # the ratios' common base: torch's default on the idle machine
        results[name] = {
            f"{label}, {busy} busy": {
                "steps_per_s": round(speeds[mode, busy]["steps_per_s"], 2),
                "threads": speeds[mode, busy]["threads"],
                "wait_policy": speeds[mode, busy]["policy"],
                "ratio_to_idle_default": round(speeds[mode, busy]["steps_per_s"] / idle, 2),
                "ratio_to_own_idle": round(speeds[mode, busy]["steps_per_s"] / speeds[mode, "0"]["steps_per_s"], 2),
            }
            for mode, label in (("default", "torch default"), ("framework", "framework"))
            for busy in ("0", "1", "2", "1 later")
        }
        print(json.dumps({name: results[name]}, indent=1), flush=True)
    from benchmarks.common import save

    save(
        "threads",
        {
            "seconds_per_case": {name: args.seconds or seconds for name, (_, seconds) in PRESETS.items()},
            "repeats": args.repeats,
            "cores": os.cpu_count(),
            "results": results,
        },
    )


if __name__ == "__main__":
    main()
