"""Each objective equals its hand-written formula on a fixed batch."""

import math

import pytest
import torch

from vae_lightning.distributions import DiagonalGaussian
from vae_lightning.likelihoods import Bernoulli, Gaussian
from vae_lightning.losses import ELBO, SeedLoss
from vae_lightning.nets.base import VAENet, VAEOutput
from vae_lightning.priors import StandardNormal

SHAPE = (1, 3, 4)


class FixedNet(VAENet):
    """A network whose forward pass returns one fixed output, so that an objective sees known values."""

    def __init__(self, out: VAEOutput) -> None:
        super().__init__()
        self.out, self.latent_dim, self.input_shape = out, out.z.shape[1], SHAPE

    def forward(self, x, generator=None):
        return self.out


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(5, *SHAPE, generator=g)
    logits = torch.randn(5, 1, *SHAPE, generator=g)
    mu = torch.randn(5, 2, generator=g)
    sigma = torch.rand(5, 2, generator=g) + 0.1
    out = VAEOutput(DiagonalGaussian(mu, sigma), mu.clone(), logits)
    return x, out


def run(objective, x, out, beta):
    net = FixedNet(out)
    return objective(net, StandardNormal(net), x, beta)


def hand_kl(mu, sigma):
    """The seed's formula: -0.5 * (1 + log sigma^2 - mu^2 - sigma^2), per sample and dim."""
    return -0.5 * (1 + torch.log(sigma**2) - mu**2 - sigma**2)


def test_kl_matches_torch_distributions(batch):
    _, out = batch
    reference = torch.distributions.kl_divergence(
        torch.distributions.Normal(out.posterior.loc, out.posterior.scale), torch.distributions.Normal(0.0, 1.0)
    )
    torch.testing.assert_close(out.posterior.kl_to_standard_normal_per_dim(), reference)


def test_seed_loss_equals_its_formula(batch):
    x, out = batch
    beta = 1e-4
    terms = run(SeedLoss(), x, out, beta)
    p = torch.sigmoid(out.params[:, 0])
    n_batch, n_pixels = 5, 12
    mse = sum(float((p[b] - x[b]).pow(2).sum()) for b in range(n_batch)) / (n_batch * n_pixels)
    kl = float(hand_kl(out.posterior.loc, out.posterior.scale).sum())  # over batch AND latent dims
    assert float(terms.recon) == pytest.approx(mse, rel=1e-6)
    assert float(terms.kl) == pytest.approx(kl, rel=1e-6)
    assert float(terms.loss) == pytest.approx(mse + beta * kl, rel=1e-6)


def test_bernoulli_elbo_equals_its_formula(batch):
    x, out = batch
    beta = 0.7
    terms = run(ELBO(Bernoulli(SHAPE)), x, out, beta)
    p = torch.sigmoid(out.params[:, 0]).double()
    xd = x.double()
    log_lik = (xd * torch.log(p) + (1 - xd) * torch.log(1 - p)).flatten(1).sum(1)  # summed over pixels
    kl = hand_kl(out.posterior.loc, out.posterior.scale).double().sum(1)  # summed over latent dims
    assert float(terms.recon) == pytest.approx(float(-log_lik.mean()), rel=1e-5)  # averaged over batch
    assert float(terms.kl) == pytest.approx(float(kl.mean()), rel=1e-5)
    assert float(terms.loss) == pytest.approx(float((-log_lik + beta * kl).mean()), rel=1e-5)
    torch.testing.assert_close(terms.per_sample.double(), -log_lik + beta * kl, rtol=1e-5, atol=1e-5)


def test_gaussian_elbo_equals_its_formula(batch):
    x, out = batch
    sigma = 0.2
    terms = run(ELBO(Gaussian(SHAPE, sigma=sigma)), x, out, 1.0)
    mean = torch.sigmoid(out.params[:, 0]).double()
    per_pixel = -0.5 * ((x.double() - mean) / sigma) ** 2 - math.log(sigma) - 0.5 * math.log(2 * math.pi)
    log_lik = per_pixel.flatten(1).sum(1)
    kl = hand_kl(out.posterior.loc, out.posterior.scale).double().sum(1)
    assert float(terms.recon) == pytest.approx(float(-log_lik.mean()), rel=1e-5)
    assert float(terms.loss) == pytest.approx(float((kl - log_lik).mean()), rel=1e-5)


def test_seed_beta_relates_to_per_sample_beta(batch):
    """n_pixels * seed loss = mean over the batch of (squared error summed over pixels + beta' * KL), with the
    per-sample beta' = seed beta * n_pixels * batch_size (the conversion SEED_SPEC states)."""
    x, out = batch
    seed_beta = 1e-4
    seed = run(SeedLoss(), x, out, seed_beta)
    n_pixels, n_batch = 12, 5
    sse = (torch.sigmoid(out.params[:, 0]) - x).pow(2).flatten(1).sum(1)
    kl = hand_kl(out.posterior.loc, out.posterior.scale).sum(1)
    per_sample_beta = seed_beta * n_pixels * n_batch
    assert float(seed.loss) * n_pixels == pytest.approx(float((sse + per_sample_beta * kl).mean()), rel=1e-6)
