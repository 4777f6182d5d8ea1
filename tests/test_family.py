"""The model family's parts against answers known in closed form: priors, objectives, likelihoods and the
measures of what each model is for."""

from __future__ import annotations

import itertools
import math
from functools import partial

import pytest
import torch
from torch.distributions import ContinuousBernoulli as TorchContinuousBernoulli
from torch.distributions import Independent, MultivariateNormal, Normal, kl_divergence

from tests.test_metrics import D_Z, SIGMA, IdentityMeanGaussian, LinearGaussian
from vae_lightning.core.errors import ConfigValueError
from vae_lightning.distributions import DiagonalGaussian
from vae_lightning.likelihoods import (
    Bernoulli,
    ContinuousBernoulli,
    DiscretisedLogistic,
    Gaussian,
    GaussianChannelSigma,
    likelihood_for_images,
)
from vae_lightning.losses import CIWAE, ELBO, IWAE, MIWAE, BetaTCVAE, InfoVAE, importance_weights, mmd_squared
from vae_lightning.metrics import mutual_information_gap
from vae_lightning.nets.mlp import MLPVAE
from vae_lightning.priors import MixtureOfGaussians, StandardNormal, VampPrior


def posterior(n=6, d=3, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return DiagonalGaussian(
        torch.randn(n, d, generator=g, dtype=dtype), 0.3 + torch.rand(n, d, generator=g, dtype=dtype)
    )


def tiny_net(latent=3, shape=(1, 4, 4)):
    torch.manual_seed(0)
    return MLPVAE(input_shape=shape, hidden_dims=[8], latent_dim=latent)


# -- priors ---------------------------------------------------------------------------------------------------
def test_the_standard_normal_kl_and_density_are_torch_distributions_own():
    q = posterior()
    prior = StandardNormal(tiny_net())
    reference = kl_divergence(q.as_distribution(), Independent(Normal(torch.zeros(3), torch.ones(3)), 1))
    torch.testing.assert_close(prior.kl(q, q.loc), reference.float(), check_dtype=False)
    z = torch.randn(5, 3)
    torch.testing.assert_close(prior.log_prob(z), Independent(Normal(torch.zeros(3), torch.ones(3)), 1).log_prob(z))
    assert prior.factorises and prior.kl_per_dim(q).shape == q.loc.shape


def test_a_one_component_mixture_is_that_gaussian_and_its_monte_carlo_kl_converges_to_the_closed_form():
    prior = MixtureOfGaussians(tiny_net(), n_components=1).double()
    with torch.no_grad():
        prior.loc.copy_(torch.tensor([[0.5, -1.0, 2.0]]))
    _, loc, scale = prior.components()
    gaussian = Independent(Normal(loc[0], scale[0]), 1)
    z = torch.randn(7, 3, dtype=torch.float64)
    torch.testing.assert_close(prior.log_prob(z), gaussian.log_prob(z))
    q = posterior(n=4)
    exact = kl_divergence(q.as_distribution(), gaussian)
    z = q.rsample(torch.Generator().manual_seed(0), k=200_000)  # (k, n, d): Monte Carlo over the first dimension
    torch.testing.assert_close(prior.kl(q, z), exact, rtol=0.02, atol=0.02)
    assert not prior.factorises and prior.kl_per_dim(q) is None


def test_mixture_samples_have_the_mixtures_moments():
    prior = MixtureOfGaussians(tiny_net(latent=2), n_components=3)
    with torch.no_grad():
        prior.logits.copy_(torch.tensor([0.0, 1.0, -1.0]))
    z = prior.sample(200_000, torch.Generator().manual_seed(0)).detach()
    torch.testing.assert_close(z.mean(0), prior.mean().detach(), atol=0.02, rtol=0)
    torch.testing.assert_close(z.std(0), prior.stddev().detach(), atol=0.02, rtol=0)
    again = prior.sample(5, torch.Generator().manual_seed(1))
    torch.testing.assert_close(again, prior.sample(5, torch.Generator().manual_seed(1)))  # reproducible


def test_the_vamp_prior_is_the_mean_of_the_pseudo_inputs_posteriors():
    net = tiny_net()
    prior = VampPrior(net, n_pseudo_inputs=4)
    z = torch.randn(5, 3)
    each = net.encode(prior.pseudo_inputs())
    by_hand = torch.stack([DiagonalGaussian(each.loc[k], each.scale[k]).log_prob(z) for k in range(4)])
    torch.testing.assert_close(prior.log_prob(z), torch.logsumexp(by_hand, 0) - math.log(4))
    torch.testing.assert_close(prior.log_prob(z), prior.distribution().log_prob(z))  # torch's own, at more memory
    z = torch.randn(2, 5, 3)  # leading sample dimensions
    torch.testing.assert_close(prior.log_prob(z), prior.distribution().log_prob(z))
    # its parameters are its own; the network's weights are not repeated under prior.*
    assert {name for name, _ in prior.named_parameters()} == {"raw_pseudo_inputs"}


# -- objectives -----------------------------------------------------------------------------------------------
class LinearGaussianNet(LinearGaussian, torch.nn.Module):
    """The linear Gaussian model of test_metrics, with the forward pass an objective calls."""

    def __init__(self):
        torch.nn.Module.__init__(self)
        LinearGaussian.__init__(self)

    def forward(self, x, generator=None):
        from vae_lightning.nets.base import VAEOutput

        q = self.encode(x)
        z = q.rsample(generator)
        return VAEOutput(q, z, self.decode(z))


def test_the_iwae_bound_tightens_towards_the_exact_log_likelihood_as_k_grows():
    model = LinearGaussianNet()
    prior = StandardNormal(model).double()
    x = model.sample_x(200)
    exact = float(model.exact_log_px(x).mean())
    gaps = {}
    for k in (1, 5, 50, 500):
        torch.manual_seed(0)
        bound = -float(IWAE(IdentityMeanGaussian(), k=k)(model, prior, x, 1.0).loss)
        gaps[k] = exact - bound
    assert gaps[1] > gaps[5] > gaps[50] > gaps[500] > -0.05, gaps
    assert gaps[500] < 0.1, gaps
    torch.manual_seed(0)
    elbo = -float(ELBO(IdentityMeanGaussian())(model, prior, x, 1.0).loss)
    assert elbo == pytest.approx(exact - gaps[1], abs=0.3)  # k = 1 is the ELBO (other draws, same expectation)


class ExactLinearGaussian(torch.nn.Module):
    """p(z) = N(0, I), p(x|z) = N(W z + b, SIGMA^2 I) with orthogonal columns of W, so that the exact posterior
    N(A^T (x - b), diag(cov)) is a diagonal Gaussian: an encoder x A + c, exp(log_scale) starts there, `offset`
    away from it in every parameter (0: exact)."""

    latent_dim = D_Z

    def __init__(self, offset: float = 0.0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        columns, _ = torch.linalg.qr(torch.randn(5, D_Z, generator=g, dtype=torch.float64))
        w = columns * torch.tensor([1.5, 0.7], dtype=torch.float64)
        b = torch.randn(5, generator=g, dtype=torch.float64)
        cov = 1 / (1 + w.pow(2).sum(0) / SIGMA**2)
        a = w * cov / SIGMA**2
        self.w, self.b = torch.nn.Parameter(w), torch.nn.Parameter(b)
        self.a = torch.nn.Parameter(a + offset)
        self.c = torch.nn.Parameter(-b @ a + offset)
        self.log_scale = torch.nn.Parameter(0.5 * cov.log() + offset)

    def infer(self, x):
        loc = x @ self.a + self.c
        return DiagonalGaussian(loc, self.log_scale.exp().expand_as(loc))

    def decode(self, z):
        return z @ self.w.T + self.b

    def sample_x(self, n, seed=1):
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            mean = self.decode(torch.randn(n, D_Z, generator=g, dtype=torch.float64))
        return mean + SIGMA * torch.randn(n, 5, generator=g, dtype=torch.float64)


def gradients(objective, model, prior, x, seed):
    model.zero_grad()
    torch.manual_seed(seed)
    terms = objective(model, prior, x, 1.0)
    terms.loss.backward()
    return terms, {name: p.grad.clone() for name, p in model.named_parameters()}


ENCODER, DECODER = ("a", "c", "log_scale"), ("w", "b")


def test_dreg_gives_the_encoder_no_gradient_at_the_exact_posterior_and_the_decoder_the_iwae_gradient():
    """At the exact posterior every log weight is log p(x), constant in z: the doubly reparameterised encoder
    gradient is exactly 0, while the IWAE's plain one is score-function noise; the decoder's gradient and the
    loss are the IWAE's."""
    model = ExactLinearGaussian()
    prior, x = StandardNormal(model).double(), model.sample_x(30)
    plain_terms, plain = gradients(IWAE(IdentityMeanGaussian(), k=5), model, prior, x, 0)
    dreg_terms, dreg = gradients(IWAE(IdentityMeanGaussian(), k=5, dreg=True), model, prior, x, 0)
    torch.testing.assert_close(dreg_terms.loss, plain_terms.loss)
    for name in DECODER:
        torch.testing.assert_close(dreg[name], plain[name])
    for name in ENCODER:
        assert float(dreg[name].abs().max()) < 1e-10, name
        assert float(plain[name].abs().max()) > 1e-3, name


def test_dreg_is_unbiased_with_less_variance_away_from_the_exact_posterior():
    """Off the exact posterior, the mean of 400 DReG encoder gradients equals the mean of 400 IWAE ones (within
    four standard errors of their difference), and DReG's spread is smaller."""
    model = ExactLinearGaussian(offset=0.3)
    prior, x = StandardNormal(model).double(), model.sample_x(8)
    draws = {}
    for dreg in (False, True):
        objective = IWAE(IdentityMeanGaussian(), k=10, dreg=dreg)
        draws[dreg] = torch.stack(
            [torch.cat([gradients(objective, model, prior, x, s)[1][n].flatten() for n in ENCODER]) for s in range(400)]
        )
    difference = draws[True].mean(0) - draws[False].mean(0)
    error = (draws[True].var(0) / 400 + draws[False].var(0) / 400).sqrt()
    assert bool((difference.abs() < 4 * error + 1e-9).all()), (difference, error)
    assert float(draws[True].var(0).sum()) < 0.5 * float(draws[False].var(0).sum())


def test_miwae_and_ciwae_reduce_to_the_iwae_and_the_elbo_at_their_ends():
    """MIWAE with m = 1 is the IWAE; with k = 1 the mean of m single-sample ELBOs; CIWAE's elbo_weight 0 is the
    IWAE of its k codes, 1 their mean log weight (the ELBO), and between, the convex combination."""
    model = ExactLinearGaussian(offset=0.2)
    prior, x, likelihood = StandardNormal(model).double(), model.sample_x(16), IdentityMeanGaussian()

    def loss(objective):
        torch.manual_seed(3)
        return objective(model, prior, x, 1.0).loss

    torch.manual_seed(3)
    log_w = importance_weights(model, prior, likelihood, x, 1.0, 6).log_w
    iwae, elbo = -(torch.logsumexp(log_w, 0) - math.log(6)).mean(), -log_w.mean()
    torch.testing.assert_close(loss(IWAE(likelihood, k=6)), iwae)
    torch.testing.assert_close(loss(MIWAE(likelihood, k=6, m=1)), iwae)
    torch.testing.assert_close(loss(MIWAE(likelihood, k=1, m=6)), elbo)
    torch.testing.assert_close(loss(CIWAE(likelihood, k=6, elbo_weight=0.0)), iwae)
    torch.testing.assert_close(loss(CIWAE(likelihood, k=6, elbo_weight=1.0)), elbo)
    torch.testing.assert_close(loss(CIWAE(likelihood, k=6, elbo_weight=0.25)), 0.25 * elbo + 0.75 * iwae)
    assert float(elbo) > float(iwae)  # the IWAE bound is the tighter
    grouped = log_w.view(2, 3, -1)
    two_bounds = -(torch.logsumexp(grouped, 1) - math.log(3)).mean()
    torch.testing.assert_close(loss(MIWAE(likelihood, k=3, m=2)), two_bounds)


def test_the_tcvae_parts_sum_to_the_kl_for_both_estimators_of_log_q_z():
    torch.manual_seed(0)
    net, n = tiny_net(latent=2), 256
    prior = StandardNormal(net)
    for stratified in (False, True):
        objective = BetaTCVAE(tc_weight=6.0, stratified=stratified)
        objective.fit_to_data(n)
        terms = objective(net, prior, torch.rand(n, 1, 4, 4), 1.0)
        parts = terms.terms["mi"] + terms.terms["tc"] + terms.terms["dw_kl"]
        q, z = terms.sample.posterior, terms.sample.z
        torch.testing.assert_close(parts, (q.log_prob(z) - prior.log_prob(z)).mean(), atol=1e-4, rtol=1e-4)
        assert terms.loss > terms.recon  # the TC weight counts
    with pytest.raises(Exception, match="training set's size"):
        BetaTCVAE()(net, prior, torch.rand(4, 1, 4, 4), 1.0)


def test_factorvaes_density_ratio_estimate_is_the_total_correlation_of_a_known_gaussian():
    """With the optimal discriminator, whose logits are log q(z) and log prod_j q(z_j) (here computed exactly for
    a 50-dimensional Gaussian with narrow, correlated dimensions, in float32), the estimate's mean over codes is
    the total correlation in closed form, 0.5 * (sum_j log Sigma_jj - log det Sigma)."""
    from vae_lightning.losses import density_ratio_tc

    g = torch.Generator().manual_seed(0)
    d = 50
    factor = torch.randn(d, 4, generator=g) * 0.05
    covariance = (factor @ factor.T + torch.diag(torch.rand(d, generator=g) * 1e-3 + 1e-4)).double()
    joint = MultivariateNormal(torch.zeros(d, dtype=torch.float64), covariance_matrix=covariance)
    marginals = Normal(torch.zeros(d, dtype=torch.float64), covariance.diagonal().sqrt())
    expected = 0.5 * (covariance.diagonal().log().sum() - torch.logdet(covariance))

    class Optimal(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.unused = torch.nn.Parameter(torch.zeros(()))  # a discriminator has weights: they are detached

        def forward(self, z):
            z = z.double()
            return torch.stack([joint.log_prob(z), marginals.log_prob(z).sum(-1)], dim=-1).float()

    torch.manual_seed(1)
    z = joint.sample((20000,)).float()
    tc = density_ratio_tc(Optimal(), z)
    error = float(tc.double().std()) / math.sqrt(len(z))
    assert expected > 10  # strongly correlated: the test can tell the estimate from zero or its negative
    assert float(tc.double().mean()) == pytest.approx(float(expected), abs=4 * error)


def test_the_mmd_estimate_matches_its_closed_form_between_two_gaussians():
    """For N(m1, s1^2 I) and N(m2, s2^2 I) in d dimensions and the kernel exp(-|x-y|^2 / (2 h^2)),
    E k(x, y) = (h^2 / (h^2 + s1^2 + s2^2))^(d/2) exp(-|m1 - m2|^2 / (2 (h^2 + s1^2 + s2^2)))."""
    d, h2 = 2, 2.0
    m1, s1, m2, s2 = torch.tensor([0.0, 0.0]), 1.0, torch.tensor([1.0, 0.5]), 0.6

    def expected_kernel(ma, sa, mb, sb):
        total = h2 + sa**2 + sb**2
        return (h2 / total) ** (d / 2) * math.exp(-float((ma - mb).pow(2).sum()) / (2 * total))

    exact = expected_kernel(m1, s1, m1, s1) + expected_kernel(m2, s2, m2, s2) - 2 * expected_kernel(m1, s1, m2, s2)
    g = torch.Generator().manual_seed(0)
    estimates = [
        float(mmd_squared(m1 + s1 * torch.randn(400, d, generator=g), m2 + s2 * torch.randn(400, d, generator=g), h2))
        for _ in range(40)
    ]
    assert sum(estimates) / len(estimates) == pytest.approx(exact, rel=0.05)


def test_the_mmd_vae_adds_the_batch_mmd_and_it_grows_with_the_distance_to_the_prior():
    torch.manual_seed(0)
    net = tiny_net(latent=2)
    prior = StandardNormal(net)
    objective = InfoVAE(mmd_weight=1.0)
    terms = objective(net, prior, torch.rand(64, 1, 4, 4), 1.0)
    torch.testing.assert_close(terms.loss, terms.recon + terms.terms["mmd"])  # kl_weight 0: recon + MMD only
    near = mmd_squared(torch.randn(64, 2), torch.randn(64, 2), 2.0)
    shifted = mmd_squared(torch.randn(64, 2) + 3.0, torch.randn(64, 2), 2.0)
    assert abs(float(near)) < 0.05 < 0.5 < float(shifted)


# -- likelihoods ----------------------------------------------------------------------------------------------
def test_the_discretised_logistic_is_a_distribution_over_the_pixel_values():
    likelihood = DiscretisedLogistic((1, 1, 1), bins=256)
    values = torch.arange(256, dtype=torch.float64).div(255).view(256, 1, 1, 1)
    for mean_logit, log_scale in ((0.0, -3.0), (2.5, -6.0), (-4.0, 0.5), (0.3, -7.0)):
        params = (
            torch.tensor([mean_logit, log_scale], dtype=torch.float64).view(1, 2, 1, 1, 1).expand(256, -1, -1, -1, -1)
        )
        total = torch.logsumexp(likelihood.log_prob(values, params), 0)
        assert float(total) == pytest.approx(0.0, abs=1e-4), (mean_logit, log_scale)


def test_the_discretised_logistic_is_exact_far_in_its_tails():
    """In float32, where the two sigmoids of a bin's edges round to the same number (a sharp logistic far from
    the pixel), against log(sigmoid(upper) - sigmoid(lower)) in 600-digit arithmetic (mpmath, torch's own
    dependency through sympy)."""
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 600
    likelihood = DiscretisedLogistic((1, 1, 1), bins=256)

    def exact(pixel, mean_logit, log_scale):
        sigmoid = lambda t: 1 / (1 + mpmath.e ** (-t))  # noqa: E731
        mean, inverse, half = sigmoid(mean_logit), mpmath.e ** (-mpmath.mpf(log_scale)), mpmath.mpf(1) / 510
        value = mpmath.mpf(pixel) / 255
        upper = 1 if pixel == 255 else sigmoid(inverse * (value - mean + half))
        lower = 0 if pixel == 0 else sigmoid(inverse * (value - mean - half))
        return float(mpmath.log(upper - lower))

    for pixel, mean_logit, log_scale in itertools.product((0, 1, 128, 255), (-20.0, 0.01, 20.0), (-7.0, -2.0, 1.0)):
        x = torch.tensor([[[[pixel / 255]]]])
        params = torch.tensor([mean_logit, log_scale]).view(1, 2, 1, 1, 1)
        expected = exact(pixel, mean_logit, log_scale)
        got = float(likelihood.log_prob(x, params))
        assert got == pytest.approx(expected, rel=1e-5, abs=1e-4), (pixel, mean_logit, log_scale)


def test_the_continuous_bernoulli_integrates_to_one_and_uses_torchs_mean():
    likelihood = ContinuousBernoulli()
    grid = torch.linspace(0, 1, 20001, dtype=torch.float64).view(-1, 1, 1, 1)
    for logit in (-3.0, 0.0, 0.01, 2.0):
        params = torch.full((len(grid), 1, 1, 1, 1), logit, dtype=torch.float64)
        density = likelihood.log_prob(grid, params).exp()
        assert float(torch.trapezoid(density, grid.flatten())) == pytest.approx(1.0, abs=1e-4)
    params = torch.tensor([0.7]).view(1, 1, 1, 1, 1)
    torch.testing.assert_close(likelihood.mean(params), TorchContinuousBernoulli(logits=params[:, 0]).mean)


def test_a_learned_sigma_is_the_gaussian_of_that_sigma_and_a_parameter_of_the_model():
    likelihood = GaussianChannelSigma((3, 2, 2), sigma=0.2)
    with torch.no_grad():
        likelihood.log_sigma.copy_(torch.log(torch.tensor([0.1, 0.2, 0.3]) - 1e-3).view(3, 1, 1))
    x, params = torch.rand(4, 3, 2, 2), torch.randn(4, 1, 3, 2, 2)
    sigma = torch.tensor([0.1, 0.2, 0.3]).view(3, 1, 1)
    reference = Normal(torch.sigmoid(params[:, 0]), sigma).log_prob(x).flatten(1).sum(-1)
    torch.testing.assert_close(likelihood.log_prob(x, params), reference)
    assert [name for name, _ in likelihood.named_parameters()] == ["log_sigma"]


# -- measures -------------------------------------------------------------------------------------------------
def test_each_labelled_factor_gets_its_mig_on_the_test_loaders_first_samples():
    """A network whose first latent dimension is the pixel that holds the factor `age` (and the second a pixel
    of noise): MIG 1 for it; unknown labels (-1) left out; a factor with one known value gets none."""
    from vae_lightning.metrics import factor_information_gaps

    g = torch.Generator().manual_seed(0)
    age = torch.randint(0, 5, (3000,), generator=g)
    images = torch.rand(3000, 1, 1, 2, generator=g)
    images[:, 0, 0, 0] = age / 4
    unknown = torch.rand(3000, generator=g) < 0.3

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.anchor = torch.nn.Parameter(torch.zeros(()))

        def infer(self, x):
            return DiagonalGaussian(x.flatten(1) + self.anchor, torch.ones(len(x), 2))

    class Data:
        def test_factors(self):
            return {"age": age.masked_fill(unknown, -1), "one": torch.where(unknown, -1, 3)}

        def test_dataloader(self):
            return [(chunk, None) for chunk in images.split(500)]

    gaps = factor_information_gaps(Net(), Data(), 2500)
    assert set(gaps) == {"mig_age"} and gaps["mig_age"] == pytest.approx(1.0, abs=0.05)
    assert factor_information_gaps(Net(), Data(), 1) == {}


def test_mig_is_one_for_a_code_that_is_the_label_and_near_zero_for_noise():
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 10, (3000,), generator=g)
    noise = torch.randn(3000, 3, generator=g)
    encoded = torch.cat([labels[:, None].float() + 0.01 * noise[:, :1], noise[:, 1:]], dim=1)
    assert mutual_information_gap(encoded, labels) == pytest.approx(1.0, abs=0.02)
    assert mutual_information_gap(noise, labels) < 0.02
    assert mutual_information_gap(noise, torch.zeros(3000)) is None  # one value: no factor to find


def test_every_estimator_uses_the_prior_it_is_given():
    """test/nll's importance sampling with a mixture prior equals the same estimate with its density by hand."""
    from vae_lightning.metrics import importance_sampled_log_likelihood

    model = LinearGaussianNet()
    prior = MixtureOfGaussians(model, n_components=1, min_scale=1e-9).double()
    with torch.no_grad():
        prior.raw_scale.fill_(math.log(math.e - 1))  # unit scale
        prior.loc.zero_()
    x = model.sample_x(20)
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    mixture = importance_sampled_log_likelihood(model, prior, IdentityMeanGaussian(), x, 50, generator=g())
    standard = importance_sampled_log_likelihood(
        model, StandardNormal(model), IdentityMeanGaussian(), x, 50, generator=g()
    )
    assert D_Z == 2
    torch.testing.assert_close(mixture, standard)


@pytest.mark.parametrize("scale", [1e-2, 1e-3])
def test_the_mixture_density_keeps_float32_precision_at_small_scales(scale):
    """200 components in 50 dimensions, means ~ N(0, 4), every scale `scale` (the mixture prior's min_scale is
    1e-3), codes drawn from the mixture: float32 within 1e-3 nats of the same density in float64 on average."""
    from tests.test_calibration import FixedMixture as Fixed

    g = torch.Generator().manual_seed(0)
    logits, loc = (
        torch.randn(200, generator=g, dtype=torch.float64),
        2 * torch.randn(200, 50, generator=g, dtype=torch.float64),
    )
    scales = torch.full((200, 50), scale, dtype=torch.float64)
    chosen = torch.randint(0, 200, (1000,), generator=g)
    z = loc[chosen] + scales[chosen] * torch.randn(1000, 50, generator=g, dtype=torch.float64)
    exact = Fixed(logits, loc, scales).log_prob(z)
    assert torch.allclose(exact, Fixed(logits, loc, scales).distribution().log_prob(z))  # the reference itself
    single = Fixed(logits.float(), loc.float(), scales.float())
    assert (single.log_prob(z.float()).double() - exact).abs().mean() < 1e-3


def test_the_automatic_likelihood_picks_by_pixel_count_and_names_its_key_under_the_loss():
    assert isinstance(likelihood_for_images((1, 28, 28)), Bernoulli)
    assert isinstance(likelihood_for_images((3, 64, 64)), Gaussian)
    loss = ELBO(partial(likelihood_for_images, max_bernoulli_values=0))
    with pytest.raises(ConfigValueError) as bad:  # as the model tells the objective its images
        loss.fit_to_images((1, 4, 4))
    assert bad.value.key == "loss.likelihood.max_bernoulli_values"
