"""Peak memory (RSS, summed over the process and its worker processes) of `experiment=haskell_dogpeople`:
data preparation (3,500 faces and 3,500 dog photos preprocessed into the cache) and then training from the
cache. Target: under 2 GB. The photos are the real samples in ../shared/data copied under new names. Prints JSON.

    python -m benchmarks.memory [--epochs 2]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import save

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
N_PER_DOMAIN = 3500


def tree_rss_bytes(pid: int) -> int:
    """RSS of `pid` and all its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
                children.setdefault(int(fields[1]), []).append(int(entry))
            except (OSError, IndexError):
                continue
    total, stack = 0, [pid]
    while stack:
        current = stack.pop()
        stack.extend(children.get(current, []))
        try:
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


def peak_rss(command: list[str], env: dict) -> tuple[int, float, int]:
    """(peak tree RSS in bytes, wall seconds, exit code) of a command, sampled every 50 ms."""
    start = time.perf_counter()
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    peak = 0
    while process.poll() is None:
        peak = max(peak, tree_rss_bytes(process.pid))
        time.sleep(0.05)
    return peak, time.perf_counter() - start, process.returncode


def make_photos(folder: Path) -> tuple[Path, Path]:
    faces = [p for p in sorted((SHARED / "utkface" / "crop_part1").glob("*.chip.jpg"))]
    dogs = sorted((SHARED / "dogs" / "CU_Dogs" / "dogImages").rglob("*.jpg")) + sorted(
        (SHARED / "dogs" / "oxford_iiit_pet" / "images").glob("*.jpg")
    )
    face_dir, dog_dir = folder / "utkface", folder / "dogs" / "dog"
    face_dir.mkdir(parents=True)
    dog_dir.mkdir(parents=True)
    for i in range(N_PER_DOMAIN):
        shutil.copyfile(faces[i % len(faces)], face_dir / f"{20 + i % 60}_{i % 2}_{i % 5}_20170101{i:09d}.jpg.chip.jpg")
        shutil.copyfile(dogs[i % len(dogs)], dog_dir / f"dog_{i:05d}.jpg")
    return face_dir, folder / "dogs"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        faces, dogs = make_photos(Path(tmp) / "photos")
        env = os.environ | {"VAE_DATA_DIR": str(Path(tmp) / "data"), "PYTHONWARNINGS": "ignore"}
        prepare = [
            sys.executable,
            "-c",
            "import sys; from hydra import compose, initialize_config_dir;"
            "from vae_lightning.core.config import CONF_DIR, build;"
            "initialize_config_dir(config_dir=str(CONF_DIR), version_base='1.3');"
            f"cfg = compose('train', overrides=['experiment=haskell_dogpeople', 'dataset.faces.root={faces}',"
            f" 'dataset.dogs.root={dogs}', 'paths.output_dir={tmp}/o']);"
            "dm = build(cfg.dataset, 'dataset'); dm.prepare_data(); dm.setup('fit')",
        ]
        prep_peak, prep_s, prep_rc = peak_rss(prepare, env)
        train = [
            sys.executable,
            "train.py",
            "experiment=haskell_dogpeople",
            f"dataset.faces.root={faces}",
            f"dataset.dogs.root={dogs}",
            f"trainer.max_epochs={args.epochs}",
            f"hydra.run.dir={tmp}/run",
        ]
        train_peak, train_s, train_rc = peak_rss(train, env)
    gb = 1024**3
    save(
        "memory",
        {
            "benchmark": "memory",
            "experiment": "haskell_dogpeople (7,000 photos -> 50x50 grey, 2500-2000-60 MLP)",
            "data_preparation": {
                "peak_rss_gb": round(prep_peak / gb, 3),
                "seconds": round(prep_s, 1),
                "exit": prep_rc,
            },
            "training_from_cache": {
                "peak_rss_gb": round(train_peak / gb, 3),
                "seconds": round(train_s, 1),
                "epochs": args.epochs,
                "exit": train_rc,
            },
            "target_gb": 2.0,
        },
    )


if __name__ == "__main__":
    main()
