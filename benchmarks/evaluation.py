"""The test step's cost in memory and time: `python -m vae_lightning.evaluate` on an `experiment=mnist_nll`
checkpoint, over test sets of 10,000 images (the size of MNIST's) and 20,000 images.

Only the first 500 real MNIST test images are here, so the test files are made of them, repeated (the cost
does not depend on the pixels). The checkpoint is trained here for a few epochs on the given MNIST folder (or
given with --checkpoint). Each evaluation runs in its own process; its peak resident memory is the kernel's
high-water mark for that process (`getrusage` of the finished child). Reported with the mutual information
on (the default, on a 2,000-posterior subsample) and off, so the share of each metric shows. Target: under
1.5 GB for 10,000 images, and no growth with the test set beyond the images themselves.

    python -m benchmarks.evaluation --mnist data/mnist_5k [--nll-samples 100]
"""

from __future__ import annotations

import argparse
import gzip
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import save
from vae_lightning.data import idx

ROOT = Path(__file__).resolve().parents[1]
SHARED_TEST = ROOT.parent / "shared" / "data" / "mnist_t10k_first500"


def test_files(folder: Path, mnist: Path, n: int) -> Path:
    """`mnist`'s training files, and test files of `n` images made of the real test sample repeated."""
    folder.mkdir(parents=True)
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"):
        shutil.copy(mnist / name, folder / name)
    images = idx.read_idx(SHARED_TEST / "t10k-images-idx3-ubyte.gz", idx.IMAGES_MAGIC)
    labels = idx.read_idx(SHARED_TEST / "t10k-labels-idx1-ubyte.gz", idx.LABELS_MAGIC)
    repeats = -(-n // len(images))
    (folder / "t10k-images-idx3-ubyte.gz").write_bytes(
        gzip.compress(idx.encode_idx(np.tile(images, (repeats, 1, 1))[:n]))
    )
    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx.encode_idx(np.tile(labels, repeats)[:n])))
    return folder


WRAPPER = (
    "import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, capture_output=True); "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
)


def peak_and_seconds(command: list[str]) -> tuple[float, float]:
    """(peak resident memory in GB, wall seconds) of a command: run by a fresh wrapper process whose only child
    it is, so that the kernel's high-water mark of the wrapper's children is this command's."""
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-c", WRAPPER, *command], cwd=ROOT, check=True, capture_output=True, text=True
    )
    return int(result.stdout.split()[-1]) / 1024**2, time.perf_counter() - start


def mutual_info_spread(checkpoint: Path, folder: Path, draws: int = 10) -> dict:
    """`test/mutual_info` on `draws` seeded subsamples of 2,000 posteriors of the test set, and on all of them."""
    import statistics

    import torch
    from omegaconf import OmegaConf

    from vae_lightning.metrics import LatentStats
    from vae_lightning.run.checkpoints import load_module
    from vae_lightning.run.tools import checkpoint_datamodule

    module = load_module(checkpoint)
    datamodule = checkpoint_datamodule(module, OmegaConf.create({"root": str(folder)}))
    test = datamodule.test_set
    stats = [LatentStats(keep=2000, seed=seed) for seed in range(draws)] + [LatentStats(keep=len(test), seed=0)]
    with torch.no_grad():
        for start in range(0, len(test), 500):
            posterior = module.net.encode(test.__getitems__(range(start, min(start + 500, len(test))))[0])
            for stat in stats:
                stat.add(posterior)
    values = [stat.results()["mutual_info"] for stat in stats[:-1]]
    return {
        "subsample": 2000,
        "draws": draws,
        "mean": round(statistics.mean(values), 4),
        "std": round(statistics.stdev(values), 4),
        "all_posteriors": round(stats[-1].results()["mutual_info"], 4),
        "test_images": len(test),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mnist", type=Path, default=ROOT / "data" / "mnist_5k", help="MNIST IDX folder")
    parser.add_argument("--checkpoint", type=Path, default=None, help="an experiment=mnist_nll checkpoint")
    parser.add_argument("--nll-samples", type=int, default=100, help="importance samples per image")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = args.checkpoint
        if checkpoint is None:
            run = Path(tmp) / "run"
            subprocess.run(
                [
                    sys.executable,
                    "train.py",
                    "experiment=mnist_nll",
                    f"dataset.root={args.mnist}",
                    "trainer.max_epochs=3",
                    "~callbacks.diagnostics",
                    f"hydra.run.dir={run}",
                ],
                cwd=ROOT,
                check=True,
                capture_output=True,
            )
            checkpoint = run / "checkpoints" / "last.ckpt"
        for n in (10_000, 20_000):
            folder = test_files(Path(tmp) / f"mnist_{n}", args.mnist, n)
            for mutual_info in (False, True):
                command = [
                    sys.executable,
                    "-m",
                    "vae_lightning.evaluate",
                    f"ckpt_path={checkpoint}",
                    f"dataset.root={folder}",
                    f"eval.nll_samples={args.nll_samples}",
                    f"eval.mutual_info={str(mutual_info).lower()}",
                    f"output={Path(tmp) / 'metrics.json'}",
                ]
                peak, seconds = peak_and_seconds(command)
                rows.append(
                    {
                        "test_images": n,
                        "mutual_info": mutual_info,
                        "peak_rss_gb": round(peak, 3),
                        "seconds": round(seconds, 1),
                        "nll_samples": args.nll_samples,
                    }
                )
                print(rows[-1], file=sys.stderr)
        spread = mutual_info_spread(checkpoint, Path(tmp) / "mnist_10000")
    save(
        "evaluation",
        {
            "benchmark": "evaluation",
            "mutual_info_spread": spread,
            "model": "experiment=mnist_nll (784-200-200-50, Bernoulli, binarised)",
            "runs": rows,
            "test_images_bytes_per_10k": 10_000 * 784 * 4,
            "target_peak_gb_at_10k": 1.5,
        },
    )


if __name__ == "__main__":
    main()
