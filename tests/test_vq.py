"""The VQ-VAE (`posterior=vq`, `prior=codes`, `loss=vqvae`, `sampler=code_transformer`): its quantiser, the moving
averages of its codebook and its restarts against their formulas, its prior's closed forms, the codebook figures
on known uses, the second stage against a distribution of known entropy, and the pairings it refuses."""

from __future__ import annotations

import math

import pytest
import torch

from vae_lightning.core.errors import ConfigValueError, VAELightningError
from vae_lightning.distributions import DiagonalGaussian
from vae_lightning.losses import ELBO, VQVAE
from vae_lightning.metrics import LatentStats
from vae_lightning.module import VAEModule
from vae_lightning.nets.mlp import MLPVAE
from vae_lightning.posteriors import DiagonalGaussianPosterior, VectorQuantiser
from vae_lightning.priors import StandardNormal, UniformCodes
from vae_lightning.samplers import CodeTransformer


def quantiser(latent_dim: int = 6, **keys) -> VectorQuantiser:
    torch.manual_seed(0)
    return VectorQuantiser(latent_dim, **({"n_codes": 5, "code_dim": 2} | keys))


def test_each_position_takes_its_nearest_code_with_the_gradient_straight_through():
    q = quantiser().eval()
    z = torch.randn(7, 6, requires_grad=True)
    code = q(DiagonalGaussian(z, torch.ones_like(z)))
    distances = (z.detach().view(7, 3, 1, 2) - q.codebook).pow(2).sum(-1)  # (rows, positions, codes)
    assert torch.equal(code.indices, distances.argmin(-1))
    assert torch.equal(code.code, q.codebook[code.indices].flatten(1))
    drawn, log_q = code.draw()
    torch.testing.assert_close(drawn, code.code)
    assert torch.equal(log_q, torch.zeros(7))  # a point mass: log q = 0
    (drawn * torch.arange(6.0)).sum().backward()
    assert torch.equal(z.grad, torch.arange(6.0).expand(7, 6))  # straight through: d z_q / d z_e = I
    many, log_q = code.rsample_with_log_prob(k=3)
    assert many.shape == (3, 7, 6) and log_q.shape == (3, 7)


def test_the_codebook_follows_the_moving_averages_of_its_assignments():
    """After the start: counts <- decay counts + (1 - decay) n_i, sums <- decay sums + (1 - decay) s_i, and each
    code (all in use) is sums_i / counts_i with the counts Laplace-smoothed (van den Oord et al., appendix)."""
    q = quantiser(decay=0.9, restart_below=0.5, epsilon=1e-3).train()
    q.started.fill_(True)
    q.counts.copy_(torch.tensor([4.0, 3.0, 2.0, 1.0, 1.0]))
    q.sums.copy_(torch.randn(5, 2))
    counts, sums = q.counts.clone(), q.sums.clone()
    z = torch.randn(4, 6)
    indices = torch.tensor([[0, 1, 2], [0, 0, 3], [4, 1, 0], [2, 2, 2]])
    q.update(z, indices)
    flat, chosen = z.view(-1, 2), indices.flatten()
    n = torch.stack([(chosen == i).sum() for i in range(5)]).float()
    s = torch.stack([flat[chosen == i].sum(0) for i in range(5)])
    expected_counts, expected_sums = 0.9 * counts + 0.1 * n, 0.9 * sums + 0.1 * s
    smoothed = (expected_counts + 1e-3) / (expected_counts.sum() + 5e-3) * expected_counts.sum()
    torch.testing.assert_close(q.counts, expected_counts)
    torch.testing.assert_close(q.sums, expected_sums)
    torch.testing.assert_close(q.codebook, expected_sums / smoothed[:, None])


def test_a_code_out_of_use_restarts_at_an_encoder_output_and_the_first_batch_starts_every_code():
    q = quantiser(restart_below=1.0).train()
    z = torch.randn(8, 6) * 10 + 50  # far from the random start: nothing but a restart brings a code here
    q(DiagonalGaussian(z, torch.ones_like(z)))
    outputs = z.view(-1, 2)
    assert all(bool((outputs == code).all(-1).any()) for code in q.codebook)  # every code is one of the outputs
    assert torch.equal(q.counts, torch.ones(5)) and bool(q.started)
    q.counts.copy_(torch.tensor([5.0, 5.0, 5.0, 5.0, 0.0]))  # code 4 falls out of use
    q.sums.copy_(q.codebook * 5)
    kept = q.codebook[:4].clone()
    z = torch.randn(8, 6) - 50
    q.update(z, q.nearest(z))
    assert bool((z.view(-1, 2) == q.codebook[4]).all(-1).any()) and float(q.counts[4]) == 1.0
    assert not any(bool((z.view(-1, 2) == code).all(-1).any()) for code in q.codebook[:4])  # kept, averaged
    assert float(q.counts[:4].min()) >= 1.0 and not torch.equal(q.codebook[:4], kept)


def test_the_codebook_is_still_in_evaluation():
    q = quantiser().eval()
    before = q.codebook.clone()
    z = torch.randn(8, 6)
    q(DiagonalGaussian(z, torch.ones_like(z)))
    assert torch.equal(q.codebook, before)


def test_the_uniform_prior_over_the_grids_in_closed_form():
    net = MLPVAE((1, 4, 4), [8], 6)
    net.use_posterior(quantiser())
    net.eval()  # the random codebook as it starts (a training batch would start it from the encoder's outputs)
    prior = UniformCodes(net)
    code = net.infer(torch.rand(3, 1, 4, 4))
    assert torch.allclose(prior.log_prob(torch.zeros(2, 3, 6)), torch.full((2, 3), -3 * math.log(5)))
    assert torch.allclose(prior.kl(code, code.code), torch.full((3,), 3 * math.log(5)))
    samples = prior.sample(5000, torch.Generator().manual_seed(0))
    indices = net.posterior.nearest(samples)
    share = torch.bincount(indices.flatten(), minlength=5).double() / indices.numel()
    assert (share - 0.2).abs().max() < 0.02  # uniform over the codes (15,000 draws: 3.5 standard errors)
    torch.testing.assert_close(prior.mean(), net.posterior.codebook.mean(0).repeat(3))


def test_the_codebook_figures_on_known_uses():
    """All K codes used equally: perplexity K, all used; two of them equally: perplexity 2, 2 / K used."""
    for indices, perplexity, used in (
        (torch.arange(40).remainder(8).view(10, 4), 8.0, 1.0),
        (torch.arange(40).remainder(2).view(10, 4), 2.0, 0.25),
    ):
        stats = LatentStats(keep=0)
        code = type("Code", (), {})()  # a quantised code's figures read its code, indices and codebook size
        code.code, code.gaussian, code.indices, code.n_codes = torch.randn(10, 4), None, indices, 8
        stats.add(code)
        results = stats.results()
        assert results["codebook_perplexity"] == pytest.approx(perplexity)
        assert results["codebook_used"] == pytest.approx(used)


def test_the_code_transformer_learns_a_distribution_of_known_entropy():
    """Grids of 3 positions over 8 codes: the first uniform over codes 0-3, the second a copy of it, the third
    always 5. The entropy is log 4 per grid, log(4) / 3 per position: the fitted cross-entropy comes within 0.05
    nats of it, and its samples keep the copy and the constant."""
    net = MLPVAE((1, 4, 4), [8], 3)
    net.use_posterior(VectorQuantiser(3, n_codes=8, code_dim=1))
    net.posterior.codebook.copy_(torch.arange(8.0)[:, None])  # code i is the value i
    prior = UniformCodes(net)
    torch.manual_seed(0)
    sampler = CodeTransformer(3, width=32, layers=1, heads=2, epochs=30, batch_size=100, lr=3e-3)
    sampler.fit_to_prior(prior)
    first = torch.randint(0, 4, (2000,))
    grids = torch.stack([first, first, torch.full_like(first, 5)], 1)
    sampler.fit(prior.vectors(grids))
    with torch.no_grad():
        logits = sampler.logits(grids)
        cross_entropy = float(torch.nn.functional.cross_entropy(logits.flatten(0, 1), grids.flatten()))
    assert abs(cross_entropy - math.log(4) / 3) < 0.05
    drawn = net.posterior.nearest(sampler.sample(500, prior, torch.Generator().manual_seed(1)))
    assert float((drawn[:, 0] == drawn[:, 1]).float().mean()) > 0.95 and float((drawn[:, 2] == 5).float().mean()) > 0.95
    assert set(drawn[:, 0].tolist()) == {0, 1, 2, 3}
    assert all(not p.requires_grad and p.grad is None for p in sampler.parameters())  # no part in the model's training


def vq_module(**parts):
    from functools import partial

    given = {
        "net": partial(MLPVAE, hidden_dims=[8], latent_dim=4),
        "posterior": partial(VectorQuantiser, n_codes=4, code_dim=2),
        "prior": UniformCodes,
        "loss": VQVAE(),
    }
    return VAEModule(**(given | parts), input_shape=(1, 4, 4))


def test_the_objective_is_the_reconstruction_the_constant_kl_and_the_commitment():
    module = vq_module(loss=VQVAE(commitment_weight=0.5))
    x = (torch.rand(6, 1, 4, 4) > 0.5).float()
    module.eval()
    terms = module.objective(x, 1.0)
    code = terms.sample.posterior
    recon = -module.loss_fn.likelihood.log_prob(x, module.net.decode(code.code))
    commitment = (code.continuous - code.quantised).pow(2).sum(-1)
    expected = (recon + 2 * math.log(4) + 0.5 * commitment).mean()
    torch.testing.assert_close(terms.loss, expected)
    assert float(terms.kl) == pytest.approx(2 * math.log(4))


def test_the_pairings_a_vq_vae_needs_are_refused_in_one_line():
    with pytest.raises(ConfigValueError, match=r"divide the code size 6 .*one of \[1, 2, 3, 6\]") as bad:
        VectorQuantiser(6, code_dim=4)
    assert bad.value.key == "code_dim"
    with pytest.raises(ConfigValueError, match="posterior=vq needs prior=codes") as bad:
        vq_module(prior=StandardNormal, loss=ELBO())
    assert bad.value.key == "prior"
    with pytest.raises(VAELightningError, match="prior of posterior=vq"):
        vq_module(posterior=DiagonalGaussianPosterior, loss=ELBO())
    with pytest.raises(ConfigValueError, match="needs posterior=vq") as bad:
        vq_module(posterior=DiagonalGaussianPosterior, prior=StandardNormal)
    assert (bad.value.key, bad.value.value) == ("posterior", "DiagonalGaussianPosterior")
    net = MLPVAE((1, 4, 4), [8], 4)
    with pytest.raises(ConfigValueError, match="needs prior=codes") as bad:
        CodeTransformer(4).fit_to_prior(StandardNormal(net))
    assert bad.value.key == "sampler"
