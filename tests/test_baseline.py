"""Today's presets keep today's numbers: the test metrics of a few runs at a fixed seed, held to the values in
`fixtures/baseline_metrics.json` (written by `fixtures/make_baseline.py` before the model family was built).

The conv case is held to 1e-3 (5e-4 absolute, for its near-zero per-dimension KLs): oneDNN picks its
convolution kernels by the CPU's instruction set, and after twelve Adam steps the AVX2 and AVX-512 kernels end
2.4e-4 apart in the ELBO (`ONEDNN_MAX_CPU_ISA=AVX2` reproduces the recorded numbers on an AVX-512 machine). The
MLP cases match to 1e-4 on both."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import train_in_process

FIXTURES = Path(__file__).resolve().parent / "fixtures"
SHORT = [
    "trainer.max_epochs=2",
    "trainer.limit_train_batches=6",
    "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=3",
    "threads=1",
    "eval.nll_samples=20",
    "eval.mi_samples=200",
    "~callbacks.diagnostics",
]
CASES = {
    "elbo_bernoulli": [*SHORT, "model.latent_dim=4"],
    "elbo_gaussian": [*SHORT, "loss=elbo_gaussian", "beta=ramp"],
    "seed": [*SHORT, "loss=seed", "beta.value=1e-4"],
    # recorded with the maps in the default memory order; channels-last (the conv default now) rounds the
    # convolutions' sums differently (tests/test_nets.py holds the two to the same outputs)
    "conv": [
        *SHORT,
        "model=conv",
        "model.channels=[8,16]",
        "model.latent_dim=6",
        "loss=elbo_gaussian",
        "model.channels_last=false",
    ],
}
# measures whose estimator has changed since the fixture was written (docs/estimates.md): the recorded
# test/mutual_info was the lower bound now reported as test/mutual_info_lower, then with the posteriors' analytic
# entropy in place of the drawn codes' own densities (which let it pass its ceiling, log N)
REDEFINED = {"test/mutual_info"}
TINY = [
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
    "threads=1",
    "model.hidden_dims=[6]",
    "eval.nll_samples=4",
    "eval.mi_samples=20",
    "~callbacks.diagnostics",
]


@pytest.mark.parametrize("name", sorted(CASES))
def test_todays_presets_give_todays_numbers(name, tmp_path):
    expected = json.loads((FIXTURES / "baseline_metrics.json").read_text())[name]
    train_in_process(CASES[name], tmp_path / name)
    metrics = json.loads((tmp_path / name / "metrics.json").read_text())
    rel, abs_ = (1e-3, 5e-4) if name == "conv" else (1e-4, 1e-5)
    for key, value in expected.items():
        if key in REDEFINED:
            continue
        assert metrics[key] == pytest.approx(value, rel=rel, abs=abs_), key
