"""Metrics on models whose answers are known in closed form."""

import json
import math

import pytest
import torch

from vae_lightning.distributions import DiagonalGaussian
from vae_lightning.metrics import active_units, importance_sampled_log_likelihood, mutual_information

D_X, D_Z, SIGMA = 5, 2, 0.5


class LinearGaussian:
    """p(z) = N(0, I), p(x|z) = N(W z + b, SIGMA^2 I): log p(x) = log N(x; b, W W^T + SIGMA^2 I) exactly.
    The encoder is the exact posterior deliberately distorted (shifted mean, inflated diagonal scale)."""

    def __init__(self, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.w = torch.randn(D_X, D_Z, generator=g, dtype=torch.float64)
        self.b = torch.randn(D_X, generator=g, dtype=torch.float64)
        precision = torch.eye(D_Z, dtype=torch.float64) + self.w.T @ self.w / SIGMA**2
        self.post_cov = torch.linalg.inv(precision)

    def encode(self, x):
        mean = (x - self.b) @ self.w @ self.post_cov.T / SIGMA**2
        return DiagonalGaussian(0.8 * mean + 0.1, 1.5 * self.post_cov.diagonal().sqrt().expand_as(mean))

    def decode(self, z):
        return z @ self.w.T + self.b

    def exact_log_px(self, x):
        cov = self.w @ self.w.T + SIGMA**2 * torch.eye(D_X, dtype=torch.float64)
        return torch.distributions.MultivariateNormal(self.b, covariance_matrix=cov).log_prob(x)

    def sample_x(self, n, seed=1):
        g = torch.Generator().manual_seed(seed)
        z = torch.randn(n, D_Z, generator=g, dtype=torch.float64)
        return self.decode(z) + SIGMA * torch.randn(n, D_X, generator=g, dtype=torch.float64)


class IdentityMeanGaussian:
    """Gaussian pixels whose mean is the decoder output itself."""

    def log_prob(self, x, mean):
        return (-0.5 * ((x - mean) / SIGMA) ** 2 - math.log(SIGMA) - 0.5 * math.log(2 * math.pi)).sum(-1)


def test_importance_sampling_approaches_the_exact_log_likelihood():
    model = LinearGaussian()
    x = model.sample_x(40)
    exact = model.exact_log_px(x)
    g = torch.Generator().manual_seed(0)
    errors = {}
    for k in (1, 10, 100, 1000):
        estimate = importance_sampled_log_likelihood(model, IdentityMeanGaussian(), x, k, chunk=128, generator=g)
        errors[k] = float((exact - estimate).abs().mean())
        assert float((estimate - exact).mean()) < 0.05, k  # a lower bound in expectation: never above, but noise
    assert errors[1] > errors[10] > errors[100] > errors[1000]
    assert errors[1000] < 0.1, errors


def test_a_posterior_equal_to_the_prior_has_no_active_units_no_kl_and_no_information():
    n, d = 2000, 4
    posterior = DiagonalGaussian(torch.zeros(n, d), torch.ones(n, d))
    assert active_units(posterior.loc) == 0
    assert float(posterior.kl_to_standard_normal_per_dim().sum()) == 0.0
    # exactly 0 in expectation; the Monte Carlo estimate of the entropy term has a std of about 0.03 here
    assert abs(mutual_information(posterior, generator=torch.Generator().manual_seed(0))) < 0.1


def test_an_identity_like_encoder_has_every_unit_active_and_high_information():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1000, 3, generator=g)
    posterior = DiagonalGaussian(x, torch.full_like(x, 0.05))  # z ~ N(x, 0.05^2): nearly the identity
    assert active_units(posterior.loc) == 3
    mi = mutual_information(posterior, generator=g)
    assert mi > 0.9 * math.log(1000)  # close to its ceiling for 1000 samples, log N
    assert mi <= math.log(1000) + 1e-4


def test_active_units_threshold():
    loc = torch.stack([torch.linspace(-1, 1, 100), torch.linspace(-0.05, 0.05, 100)], dim=1)
    assert active_units(loc) == 1  # variance 0.34 counts, variance 0.0009 does not


def test_small_chunks_give_the_same_accuracy():
    model = LinearGaussian()
    x = model.sample_x(20)
    estimate = importance_sampled_log_likelihood(
        model, IdentityMeanGaussian(), x, 1000, chunk=7, generator=torch.Generator().manual_seed(3)
    )
    assert float((model.exact_log_px(x) - estimate).abs().mean()) < 0.1


@pytest.mark.slow
def test_evaluate_writes_every_metric_next_to_the_checkpoint(tmp_path, capsys):
    from tests.conftest import run_train, write_mnist
    from vae_lightning.evaluate import main as evaluate_main

    root = write_mnist(tmp_path / "mnist", n_train=200, n_test=50)
    run_dir = tmp_path / "run"
    result = run_train(["experiment=mnist_nll", f"dataset.root={root}", "debug=fast", "eval.nll_samples=20"], run_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    trained = json.loads((run_dir / "metrics.json").read_text())
    assert {"test/nll", "test/elbo", "test/active_units", "test/mutual_info", "test/kl_dim_049"} <= set(trained)
    assert trained["test/nll"] <= -trained["test/elbo"] + 1.0  # the IS bound is tighter than the ELBO

    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    moved = tmp_path / "moved"
    root.rename(moved)  # the data set is elsewhere now: a dataset override points at it
    assert evaluate_main([f"ckpt_path={checkpoint}", f"dataset.root={moved}", "eval.nll_samples=30"]) == 0
    metrics = json.loads((checkpoint.parent / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["test/active_units"] <= 50
    assert {"test/nll", "test/elbo", "test/loss", "test/kl", "test/mutual_info", "test/kl_dim_000"} <= set(metrics)
    assert (
        evaluate_main(
            [f"ckpt_path={checkpoint}", f"dataset.root={moved}", f"output={tmp_path / 'm.json'}", "eval.nll_samples=0"]
        )
        == 0
    )
    assert "test/nll" not in json.loads((tmp_path / "m.json").read_text())

    assert evaluate_main([f"ckpt_path={checkpoint}", "dataset.root=/no/such/folder", "dataset.download=false"]) == 1
    assert "/no/such/folder" in capsys.readouterr().err
    assert evaluate_main(["ckpt_path=/no/such.ckpt"]) == 1
    assert evaluate_main([f"ckpt_path={checkpoint}", "bogus=1"]) == 1
    err = capsys.readouterr().err
    assert "no such checkpoint" in err and "bogus" in err and "Traceback" not in err
