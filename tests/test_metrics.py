"""Metrics on models whose answers are known in closed form."""

import math

import pytest
import torch

from vae_lightning.distributions import DiagonalGaussian
from vae_lightning.metrics import (
    LatentStats,
    active_units,
    best_gaussian_elbo,
    discriminator_total_correlation,
    importance_sampled_log_likelihood,
    mutual_info_lower_bound,
)
from vae_lightning.priors import StandardNormal

D_X, D_Z, SIGMA = 5, 2, 0.5


class LinearGaussian:
    """p(z) = N(0, I), p(x|z) = N(W z + b, SIGMA^2 I): log p(x) = log N(x; b, W W^T + SIGMA^2 I) exactly.
    The encoder is the exact posterior deliberately distorted (shifted mean, inflated diagonal scale). `tie`
    adds that much of W's first column to its second, which correlates the posterior's two dimensions."""

    latent_dim = D_Z

    def __init__(self, seed=0, tie=0.0):
        g = torch.Generator().manual_seed(seed)
        self.w = torch.randn(D_X, D_Z, generator=g, dtype=torch.float64)
        self.w[:, 1] += tie * self.w[:, 0]
        self.b = torch.randn(D_X, generator=g, dtype=torch.float64)
        precision = torch.eye(D_Z, dtype=torch.float64) + self.w.T @ self.w / SIGMA**2
        self.post_cov = torch.linalg.inv(precision)

    def encode(self, x):
        mean = (x - self.b) @ self.w @ self.post_cov.T / SIGMA**2
        return DiagonalGaussian(0.8 * mean + 0.1, 1.5 * self.post_cov.diagonal().sqrt().expand_as(mean))

    def infer(self, x):  # the posterior is the network's Gaussian
        return self.encode(x)

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
        estimate = importance_sampled_log_likelihood(
            model, StandardNormal(model), IdentityMeanGaussian(), x, k, chunk=128, generator=g
        )
        errors[k] = float((exact - estimate).abs().mean())
        assert float((estimate - exact).mean()) < 0.05, k  # a lower bound in expectation: never above, but noise
    assert errors[1] > errors[10] > errors[100] > errors[1000]
    assert errors[1000] < 0.1, errors


def test_the_inference_gap_estimates_the_posteriors_kl_from_the_exact_posterior():
    """`test/inference_gap` is log p(x) (importance sampled) minus the one-code ELBO, as the module's test computes
    them; for the linear Gaussian model the exact posterior is Gaussian, so its mean over images must approach
    the mean of KL(q(z|x) || p(z|x)) in closed form (from below by the importance sampling's small bias)."""
    model = LinearGaussian()
    x = model.sample_x(1000)
    g = torch.Generator().manual_seed(0)
    prior, likelihood = StandardNormal(model), IdentityMeanGaussian()
    log_px = importance_sampled_log_likelihood(model, prior, likelihood, x, 500, chunk=512, generator=g)
    posterior = model.encode(x)
    z = posterior.rsample(generator=g)
    elbo = likelihood.log_prob(x, model.decode(z)) - prior.kl(posterior, z)
    gap = log_px - elbo

    exact_mean = (x - model.b) @ model.w @ model.post_cov.T / SIGMA**2
    exact = torch.distributions.MultivariateNormal(exact_mean, covariance_matrix=model.post_cov)
    q = torch.distributions.MultivariateNormal(posterior.loc, scale_tril=torch.diag_embed(posterior.scale))
    kl = torch.distributions.kl_divergence(q, exact)
    assert float(kl.mean()) > 0.3  # the distorted encoder is measurably off
    standard_error = float(gap.std() / len(gap) ** 0.5)
    assert float(gap.mean()) == pytest.approx(float(kl.mean()), abs=3 * standard_error + 0.02)


@pytest.fixture
def one_thread():
    """Small networks train fastest on one thread, and pytest-xdist's workers share the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_the_best_gaussian_per_image_splits_the_gap_as_the_closed_form_does(one_thread):
    """For the linear Gaussian model the exact posterior N(m, P^-1) is a full-covariance Gaussian, and the best
    diagonal Gaussian of each image is known: mean m, variances 1 / P_ii, at a KL of 0.5 (sum_i log P_ii - log det
    P) from the posterior (the approximation gap, the same for every image). The distorted encoder's gap beyond
    that, KL(q || p(z|x)) minus it, is the amortisation gap."""
    model = LinearGaussian(tie=1.0)
    x = model.sample_x(200)
    prior, likelihood = StandardNormal(model), IdentityMeanGaussian()
    g = torch.Generator().manual_seed(0)
    parts = best_gaussian_elbo(model, prior, likelihood, x, k=1000, steps=600, draws=10, lr=2e-2, generator=g)
    precision = torch.linalg.inv(model.post_cov)
    approximation = 0.5 * float(precision.diagonal().log().sum() - torch.logdet(precision))
    exact_mean = (x - model.b) @ model.w @ model.post_cov.T / SIGMA**2
    exact = torch.distributions.MultivariateNormal(exact_mean, covariance_matrix=model.post_cov)
    q = model.encode(x)
    kl = torch.distributions.kl_divergence(
        torch.distributions.MultivariateNormal(q.loc, scale_tril=torch.diag_embed(q.scale)), exact
    )
    assert approximation == pytest.approx(
        0.639, abs=1e-3
    )  # the posterior is correlated enough for a diagonal family to miss some of it
    assert abs(float((parts["log_px"] - model.exact_log_px(x)).mean())) < 0.03
    found = parts["log_px"] - parts["elbo_best_gaussian"]
    # q* is fitted by noisy gradients: a little short of the optimum, so its gap a little above the closed form
    assert float(found.mean()) == pytest.approx(approximation, abs=3 * float(found.std()) / len(x) ** 0.5 + 0.03)
    amortisation = parts["elbo_best_gaussian"] - parts["elbo"]
    assert float(amortisation.mean()) == pytest.approx(float(kl.mean()) - approximation, abs=0.05)


def test_the_discriminator_total_correlation_finds_the_closed_form_and_what_a_covariance_misses(one_thread):
    """A 10-dimensional Gaussian whose dimensions are correlated in pairs (rho 0.6): TC = -0.5 log det R exactly;
    independent dimensions: 0; and two dimensions uncorrelated but dependent (z2 a function of z1^2 plus noise),
    which the Gaussian estimate puts near 0 and the discriminator does not."""
    g = torch.Generator().manual_seed(1)
    correlation = torch.eye(10, dtype=torch.float64)
    for i in range(0, 10, 2):
        correlation[i, i + 1] = correlation[i + 1, i] = 0.6
    codes = torch.randn(2000, 10, generator=g, dtype=torch.float64) @ torch.linalg.cholesky(correlation).T
    exact = -0.5 * float(torch.logdet(correlation))
    estimate, error = discriminator_total_correlation(codes, hidden_dims=(64, 64), steps=600)
    assert exact == pytest.approx(1.116, abs=1e-3) and 0 < error < 0.1
    assert estimate == pytest.approx(exact, abs=3 * error + 0.05)
    small = {"hidden_dims": (32, 32), "steps": 300, "batch_size": 128}
    independent, error = discriminator_total_correlation(torch.randn(2000, 10, generator=g), **small)
    assert abs(independent) < 3 * error + 0.05

    z1 = torch.randn(1000, generator=g)
    z2 = 0.64 * (z1**2 - 1) + 0.3 * torch.randn(1000, generator=g)
    dependent = torch.stack([z1, z2], 1)
    assert abs(float(torch.corrcoef(dependent.T)[0, 1])) < 0.1
    estimate, error = discriminator_total_correlation(dependent, **small)
    assert estimate > 0.4 and error < 0.1


def test_a_posterior_equal_to_the_prior_has_no_active_units_no_kl_and_no_information():
    n, d = 2000, 4
    posterior = DiagonalGaussian(torch.zeros(n, d), torch.ones(n, d))
    stats = LatentStats(keep=2000)
    stats.add(posterior, posterior.kl_to_standard_normal_per_dim())
    results = stats.results()
    assert results["active_units"] == 0 and all(results[f"kl_dim_{i:03d}"] == 0.0 for i in range(d))
    # exactly 0 in expectation; the Monte Carlo estimate of the entropy term has a std of about 0.03 here
    assert abs(results["mutual_info_lower"]) < 0.1
    assert abs(results["mutual_info"]) < 0.01 and abs(results["total_correlation"]) < 0.01


def test_an_identity_like_encoder_has_every_unit_active_and_high_information():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1000, 3, generator=g)
    posterior = DiagonalGaussian(x, torch.full_like(x, 0.05))  # z ~ N(x, 0.05^2): nearly the identity
    assert active_units(x.var(0)) == 3
    mi = mutual_info_lower_bound(posterior, generator=g)
    assert mi > 0.9 * math.log(1000)  # close to its ceiling for 1000 samples, log N
    assert mi <= math.log(1000) + 1e-4


def direct_mutual_information(posterior, generator):
    """The textbook computation, every sample against every component at once: O(N^2 d) memory."""
    loc, scale = posterior.loc, posterior.scale
    n = len(loc)
    z = loc + scale * torch.randn(loc.shape, generator=generator, dtype=loc.dtype)
    log_density = torch.distributions.Normal(loc[None], scale[None]).log_prob(z[:, None]).sum(-1)  # (z_i, x_j)
    return float((log_density.diagonal() - torch.logsumexp(log_density, 1) + math.log(n)).mean())


def test_the_blocked_mutual_information_equals_the_direct_computation():
    g = torch.Generator().manual_seed(0)
    loc = torch.randn(300, 5, generator=g, dtype=torch.float64)
    posterior = DiagonalGaussian(loc, 0.3 + torch.rand(300, 5, generator=g, dtype=torch.float64))
    blocked = mutual_info_lower_bound(posterior, torch.Generator().manual_seed(1), sample_block=7, component_block=64)
    assert blocked == pytest.approx(direct_mutual_information(posterior, torch.Generator().manual_seed(1)), abs=1e-9)


def test_streamed_latent_statistics_equal_the_whole_set_at_once():
    g = torch.Generator().manual_seed(0)
    loc = torch.randn(1000, 4, generator=g) * torch.tensor([1.0, 0.5, 0.05, 0.01])
    scale = 0.2 + torch.rand(1000, 4, generator=g)
    streamed = LatentStats(keep=0)
    for start in range(0, 1000, 64):
        posterior = DiagonalGaussian(loc[start : start + 64], scale[start : start + 64])
        streamed.add(posterior, posterior.kl_to_standard_normal_per_dim())
    results = streamed.results()
    assert results["active_units"] == active_units(loc.var(0)) == 2
    kl = DiagonalGaussian(loc, scale).kl_to_standard_normal_per_dim().mean(0)
    assert [results[f"kl_dim_{i:03d}"] for i in range(4)] == pytest.approx(kl.tolist(), rel=1e-5)
    assert "mutual_info_lower" not in results  # keep=0: the subsample's bound is not estimated
    assert results["mutual_info"] > 0 and "total_correlation" in results  # the streamed estimates are


def test_the_mutual_information_subsample_is_uniform_seeded_and_bounded():
    loc = torch.arange(10_000.0)[:, None]
    kept = []
    for _ in range(2):
        stats = LatentStats(keep=500, seed=3)
        for start in range(0, 10_000, 128):
            stats.add(DiagonalGaussian(loc[start : start + 128], torch.ones(len(loc[start : start + 128]), 1)))
        kept.append(stats.kept[1].flatten())
    assert torch.equal(kept[0], kept[1]) and len(kept[0]) == 500  # seeded, and never more than `keep`
    assert 4_000 < float(kept[0].mean()) < 6_000 and float(kept[0].max()) > 9_000  # spread over the whole set


def test_active_units_threshold():
    loc = torch.stack([torch.linspace(-1, 1, 100), torch.linspace(-0.05, 0.05, 100)], dim=1)
    assert active_units(loc.var(0)) == 1  # variance 0.34 counts, variance 0.0009 does not


def test_small_chunks_give_the_same_accuracy():
    model = LinearGaussian()
    x = model.sample_x(20)
    estimate = importance_sampled_log_likelihood(
        model,
        StandardNormal(model),
        IdentityMeanGaussian(),
        x,
        1000,
        chunk=7,
        generator=torch.Generator().manual_seed(3),
    )
    assert float((model.exact_log_px(x) - estimate).abs().mean()) < 0.1
