"""The calibration suite: each estimator against an answer known in closed form (or by quadrature in float64), at
the scales trained models reach: 50 latent dimensions, posterior scales down to 1e-2, 500 mixture components,
float32. Each test fails when its estimator is broken (docs/estimates.md lists what each estimator can miss)."""

import math
from functools import partial

import pytest
import torch

from vae_lightning.core.config import made
from vae_lightning.core.errors import ConfigValueError
from vae_lightning.distributions import DiagonalGaussian
from vae_lightning.likelihoods import (
    Bernoulli,
    ContinuousBernoulli,
    DiscretisedLogistic,
    Gaussian,
    GaussianChannelSigma,
    GaussianPixelSigma,
)
from vae_lightning.losses import ELBO, IWAE, BetaTCVAE
from vae_lightning.metrics import LatentStats, importance_sampled_log_likelihood
from vae_lightning.module import VAEModule
from vae_lightning.nets.conv import ConvVAE, group_norm
from vae_lightning.nets.mlp import MLPVAE
from vae_lightning.priors import GaussianMixturePrior, MixtureOfGaussians, StandardNormal, VampPrior


# -- total correlation and mutual information of Gaussian aggregates ------------------------------------------
def gaussian_aggregate(d: int, scale: float, rho: float, n: int, seed: int = 0):
    """Posteriors N(m_i, scale^2 I) with m_i ~ N(0, C), C with correlation `rho` within pairs of dimensions: the
    aggregate posterior is N(0, C + scale^2 I). Returns (posteriors in float32, its TC, its I(x; z))."""
    correlation = torch.eye(d, dtype=torch.float64)
    for i in range(0, d - 1, 2):
        correlation[i, i + 1] = correlation[i + 1, i] = rho
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(n, d, generator=g, dtype=torch.float64) @ torch.linalg.cholesky(correlation).T
    aggregate = correlation + scale**2 * torch.eye(d, dtype=torch.float64)
    log_det = float(torch.linalg.slogdet(aggregate)[1])
    total_correlation = 0.5 * (float(aggregate.diagonal().log().sum()) - log_det)
    information = 0.5 * log_det - d * math.log(scale)
    return means.float(), torch.full((n, d), scale), total_correlation, information


def streamed(loc: torch.Tensor, scale: torch.Tensor, keep: int = 0, batch: int = 128) -> dict[str, float]:
    stats = LatentStats(keep=keep)
    for start in range(0, len(loc), batch):
        stats.add(DiagonalGaussian(loc[start : start + batch], scale[start : start + batch]))
    return stats.results()


@pytest.mark.parametrize("d", [10, 50])
@pytest.mark.parametrize("scale", [1e-2, 0.3, 0.5])
@pytest.mark.parametrize("rho", [0.0, 0.9])
def test_the_total_correlation_and_mutual_information_of_gaussian_aggregates(d, scale, rho):
    """2,000 posteriors: the reported TC within max(0.5 nats, 25%) of the closed form (the mixture estimate gave
    32 nats for 50 independent dimensions at scale 0.5), the upper bound on I(x; z) within max(0.5 nats, 2%),
    the lower bound below both the truth and log N."""
    loc, scale_, total_correlation, information = gaussian_aggregate(d, scale, rho, 2000)
    results = streamed(loc, scale_, keep=500)
    assert abs(results["total_correlation"] - total_correlation) <= max(0.5, 0.25 * total_correlation)
    assert abs(results["mutual_info"] - information) <= max(0.5, 0.02 * information)
    assert results["mutual_info_lower"] <= min(information + 0.05, math.log(500) + 1e-4)  # log N: a hard ceiling
    # the standard errors are those of a mean of 2,000: small next to the tolerances above
    assert 0 < results["total_correlation_se"] < 0.2 and 0 < results["mutual_info_se"] < 0.3


def test_the_mutual_information_bounds_bracket_a_non_gaussian_aggregate():
    """One dimension, posteriors N(+-2, 0.5^2) half and half: q(z) is a two-component mixture, so the Gaussian
    bound is loose; I(x; z) = H(q(z)) - H(q(z|x)) by quadrature lies between the two bounds."""
    n, s = 4000, 0.5
    loc = torch.where(torch.arange(n) % 2 == 0, 2.0, -2.0).view(-1, 1)
    results = streamed(loc, torch.full((n, 1), s), keep=2000)
    grid = torch.linspace(-12, 12, 200_001, dtype=torch.float64)
    density = 0.5 * (
        torch.distributions.Normal(2.0, s).log_prob(grid).exp()
        + torch.distributions.Normal(-2.0, s).log_prob(grid).exp()
    )
    entropy = float(-torch.trapezoid(density * density.log(), grid))
    information = entropy - 0.5 * math.log(2 * math.pi * math.e * s**2)  # about log 2: which of the two
    assert results["mutual_info_lower"] - 0.05 <= information <= results["mutual_info"]
    assert results["mutual_info"] - information > 0.3  # the Gaussian bound counts the mixture's non-Gaussianity
    assert abs(results["total_correlation"]) < 0.01  # one dimension: no dependence to count


def test_the_jackknife_standard_error_is_the_spread_of_the_estimate_over_data_sets():
    """Over 30 independent sets of 1,000 posteriors (20 dimensions, correlated pairs, scale 0.3): the spread of
    the reported TC matches the mean reported standard error within a factor 1.6, and the reported TC is
    unbiased within three standard errors of the mean."""
    estimates, errors = [], []
    for seed in range(30):
        loc, scale, total_correlation, _ = gaussian_aggregate(20, 0.3, 0.6, 1000, seed=seed)
        results = streamed(loc, scale)
        estimates.append(results["total_correlation"])
        errors.append(results["total_correlation_se"])
    spread = torch.tensor(estimates).std().item()
    mean_error = sum(errors) / len(errors)
    assert spread / 1.6 < mean_error < spread * 1.6, (spread, mean_error)
    assert abs(sum(estimates) / len(estimates) - total_correlation) < 3 * spread / math.sqrt(len(estimates))


# -- mixture densities ------------------------------------------------------------------------------------------
class FixedMixture(GaussianMixturePrior):
    def __init__(self, logits, loc, scale):
        torch.nn.Module.__init__(self)
        self.latent_dim = loc.shape[1]
        self.parts = (logits, loc, scale)

    def components(self):
        return self.parts


@pytest.mark.parametrize("scale", [1e-2, 1e-3])
def test_a_500_component_mixture_in_float32_is_its_float64_density(scale):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(500, generator=g, dtype=torch.float64)
    loc = 2 * torch.randn(500, 50, generator=g, dtype=torch.float64)
    scales = torch.full((500, 50), scale, dtype=torch.float64)
    chosen = torch.randint(0, 500, (400,), generator=g)
    z = loc[chosen] + scales[chosen] * torch.randn(400, 50, generator=g, dtype=torch.float64)
    exact = FixedMixture(logits, loc, scales).distribution().log_prob(z)  # torch's, in float64
    single = FixedMixture(logits.float(), loc.float(), scales.float()).log_prob(z.float()).double()
    assert (single - exact).abs().mean() < 1e-3


def test_a_one_component_mixture_at_a_small_scale_is_that_gaussian():
    g = torch.Generator().manual_seed(1)
    loc, scale = torch.randn(1, 50, generator=g), torch.full((1, 50), 1e-2)
    z = loc + scale * torch.randn(300, 50, generator=g)
    mixture = FixedMixture(torch.zeros(1), loc, scale).log_prob(z)
    gaussian = torch.distributions.Normal(loc.double(), scale.double()).log_prob(z.double()).sum(-1)
    assert (mixture.double() - gaussian).abs().max() < 1e-3


def test_the_mixture_prior_starts_near_the_standard_normal():
    """Its means start at N(0, 0.1^2) draws and its scales at 1: in 50 dimensions its density at standard normal
    codes is within 0.5 nats of the standard normal's (from N(0, 1) means it was about 50 nats below)."""
    torch.manual_seed(0)
    net = type("Net", (), {"latent_dim": 50})()
    prior = MixtureOfGaussians(net, n_components=10)
    z = torch.randn(1000, 50)
    with torch.no_grad():
        gap = (StandardNormal(net).log_prob(z) - prior.log_prob(z)).abs().mean()
    assert gap < 0.5


# -- importance sampling on a linear Gaussian latent, every prior and likelihood ---------------------------------
class LinearNet:
    """One latent dimension, a decoder linear in z (params = w z + c per pixel, per output) and an encoder that is
    a rough Gaussian proposal: log p(x) = log of the integral of p(x|z) p(z) dz, by quadrature in float64."""

    latent_dim = 1
    input_shape = (1, 2, 2)

    def __init__(self, outputs: int) -> None:
        g = torch.Generator().manual_seed(outputs)
        self.w = torch.randn(outputs, *self.input_shape, generator=g, dtype=torch.float64)
        self.c = torch.randn(outputs, *self.input_shape, generator=g, dtype=torch.float64)
        if outputs == 2:  # the logistic's log scale: around -2
            self.w[1], self.c[1] = 0.1 * self.w[1], self.c[1] * 0.2 - 2.0

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return z.view(-1, 1, 1, 1, 1) * self.w + self.c

    def encode(self, x: torch.Tensor) -> DiagonalGaussian:
        loc = x.flatten(1).mean(-1, keepdim=True) - 0.5
        return DiagonalGaussian(loc, torch.full_like(loc, 1.5))

    def infer(self, x: torch.Tensor) -> DiagonalGaussian:
        return self.encode(x)

    # what the VampPrior asks of a network: no layers (so no batch norm), no decoder start from the data
    output_bias_from_data = False

    def modules(self):
        return iter(())

    def start_decoder_from_data(self, *args) -> None:
        pass


PRIORS = {
    "standard_normal": lambda net: StandardNormal(net),
    "mixture": lambda net: FixedMixture(
        torch.tensor([0.0, 1.0, -0.5], dtype=torch.float64),
        torch.tensor([[-1.5], [0.5], [2.0]], dtype=torch.float64),
        torch.tensor([[0.3], [0.7], [0.2]], dtype=torch.float64),
    ),
    "vamp": lambda net: VampPrior(net, n_pseudo_inputs=5),
}
LIKELIHOODS = {
    "bernoulli": lambda: Bernoulli(),
    "continuous_bernoulli": lambda: ContinuousBernoulli(),
    "gaussian": lambda: Gaussian(sigma=0.3),
    "gaussian_channel_sigma": lambda: GaussianChannelSigma((1, 2, 2), sigma=0.25).double(),
    "gaussian_pixel_sigma": lambda: GaussianPixelSigma((1, 2, 2), sigma=0.2).double(),
    "logistic": lambda: DiscretisedLogistic((1, 2, 2)),
}


def data_for(name: str) -> torch.Tensor:
    g = torch.Generator().manual_seed(3)
    x = torch.rand(6, 1, 2, 2, generator=g, dtype=torch.float64)
    if name == "bernoulli":
        return x.round()
    if name == "logistic":
        return (x * 255).round() / 255
    return x


@pytest.mark.parametrize("prior_name", sorted(PRIORS))
@pytest.mark.parametrize("likelihood_name", sorted(LIKELIHOODS))
def test_importance_sampling_finds_log_p_x_for_every_prior_and_likelihood(prior_name, likelihood_name):
    likelihood = LIKELIHOODS[likelihood_name]()
    net = LinearNet(likelihood.outputs_per_pixel)
    prior = PRIORS[prior_name](net)
    x = data_for(likelihood_name)
    grid = torch.linspace(-8, 8, 16_001, dtype=torch.float64)
    with torch.no_grad():
        log_joint = torch.stack(
            [likelihood.log_prob(row.expand(len(grid), -1, -1, -1), net.decode(grid)) for row in x]
        ) + prior.log_prob(grid.view(-1, 1))
        exact = torch.logsumexp(log_joint, dim=1) + math.log(float(grid[1] - grid[0]))
        estimate = importance_sampled_log_likelihood(
            net, prior, likelihood, x, 20_000, chunk=5000, generator=torch.Generator().manual_seed(0)
        )
    assert (estimate - exact).abs().max() < 0.05, (estimate - exact).tolist()


def test_the_iwae_bound_with_a_kl_weight_and_a_mixture_prior_tends_to_its_own_integral():
    """With beta != 1 the IWAE's weights are p(x|z) (p(z) / q(z|x))^beta: as k grows its bound tends to
    log of the integral of p(x|z) p(z)^beta q(z|x)^(1 - beta) dz (by quadrature), not to log p(x)."""
    likelihood, beta = Gaussian(sigma=0.3), 0.3
    net = LinearNet(1)
    prior = PRIORS["mixture"](net)
    x = data_for("gaussian")
    grid = torch.linspace(-8, 8, 16_001, dtype=torch.float64)
    with torch.no_grad():
        posterior = net.encode(x)
        log_q = torch.distributions.Normal(posterior.loc, posterior.scale).log_prob(grid)  # (N, grid)
        log_px_z = torch.stack([likelihood.log_prob(row.expand(len(grid), -1, -1, -1), net.decode(grid)) for row in x])
        log_integrand = log_px_z + beta * prior.log_prob(grid.view(-1, 1)) + (1 - beta) * log_q
        exact = torch.logsumexp(log_integrand, dim=1) + math.log(float(grid[1] - grid[0]))
        objective = IWAE(likelihood, k=20_000)
        terms = objective(net, prior, x, beta, torch.Generator().manual_seed(0))
    assert (-terms.per_sample - exact).abs().max() < 0.05
    log_px = torch.logsumexp(log_px_z + prior.log_prob(grid.view(-1, 1)), dim=1) + math.log(float(grid[1] - grid[0]))
    assert (exact - log_px).abs().max() > 0.1  # twice the tolerance: the test can tell where beta goes


# -- likelihoods off their easy ranges -----------------------------------------------------------------------
@pytest.mark.parametrize("logit", [-88.0, -40.0, -20.0, -1e-4, 0.0, 3e-3, 16.0, 20.0, 40.0, 88.0])
def test_the_continuous_bernoulli_integrates_to_one_at_any_logit_in_float32(logit):
    """torch's own density integrates to 0.80 at logit 20 and 0.40 at 40 (its probabilities are clamped)."""
    grid = torch.linspace(0, 1, 400_001)
    density = ContinuousBernoulli().log_prob(grid.view(-1, 1, 1, 1), torch.full((len(grid), 1, 1, 1, 1), logit))
    assert float(torch.trapezoid(density.double().exp(), grid.double())) == pytest.approx(1.0, abs=2e-3)


@pytest.mark.parametrize("pixel_scale", [255.0, 256.0])
def test_the_discretised_logistic_sums_to_one_over_the_data_sets_own_pixel_values(pixel_scale):
    """Pixels v / 256 (the seed's presets) land each in its own bin: on the 1/255 grid, half of them fell into
    the bin below, and the probabilities of the 256 values summed to 0.58 or 1.02 in two of these cases."""
    likelihood = DiscretisedLogistic((1, 1, 1), pixel_scale=pixel_scale)
    values = (torch.arange(256.0) / pixel_scale).view(256, 1, 1, 1)
    for mean_logit, log_scale in ((0.0, -3.0), (4.0, -6.9), (-2.0, 1.0), (0.1, -5.5)):
        params = torch.tensor([mean_logit, log_scale]).view(1, 2, 1, 1, 1).expand(256, -1, -1, -1, -1)
        total = torch.logsumexp(likelihood.log_prob(values, params).double(), 0)
        assert float(total) == pytest.approx(0.0, abs=1e-4), (mean_logit, log_scale)


# -- beta-TCVAE's estimate of q(z) -------------------------------------------------------------------------------
def test_stratified_sampling_estimates_q_z_without_bias_and_weighted_sampling_does_not():
    """N = 40 one-dimensional posteriors; a code drawn from the first; batches of M = 8 holding it first and seven
    others drawn without replacement: the mean over batches of the estimate of q(z) (not its log) equals the
    aggregate density for stratified sampling, and is far from it for minibatch-weighted sampling."""
    g = torch.Generator().manual_seed(0)
    n, m = 40, 8
    loc, scale = torch.randn(n, generator=g, dtype=torch.float64), 0.05 + 0.1 * torch.rand(n, generator=g)
    z = loc[0] + scale[0] * 0.3
    density = torch.distributions.Normal(loc, scale.double()).log_prob(z).exp()
    exact = float(density.mean())
    for stratified, close in ((True, True), (False, False)):
        weights = BetaTCVAE(stratified=stratified).log_weights(m, n, torch.device("cpu")).double().exp()
        assert torch.allclose(weights.sum(1), torch.ones(m, dtype=torch.float64)) or not stratified
        estimates = []
        for _ in range(20_000):
            batch = torch.cat([torch.zeros(1, dtype=torch.long), 1 + torch.randperm(n - 1, generator=g)[: m - 1]])
            estimates.append(float(weights[0] @ density[batch]))
        mean = sum(estimates) / len(estimates)
        assert (abs(mean / exact - 1) < 0.03) is close, (stratified, mean, exact)


def test_beta_tcvae_uses_each_splits_own_size_in_eval_and_the_training_sets_in_training():
    """In eval mode (validation, test) the objective's N is the split's, told before it; in training, the
    training set's: the same terms as an objective told that size for training."""
    net, x = MLPVAE(input_shape=(1, 4, 4), hidden_dims=[8], latent_dim=3), torch.rand(16, 1, 4, 4)
    prior = StandardNormal(net)

    def terms(objective):
        return objective(net, prior, x, 1.0, torch.Generator().manual_seed(0)).terms

    for stratified in (False, True):
        told, reference = BetaTCVAE(stratified=stratified), BetaTCVAE(stratified=stratified)
        told.fit_to_data(1000)
        told.fit_to_eval_data(100)
        reference.fit_to_data(100)
        assert terms(told.eval()) == terms(reference) != terms(told.train())


def test_pairings_whose_estimates_would_be_wrong_are_refused_in_one_line():
    """beta-TCVAE's dimension-wise KL with a prior that does not factorise; the VampPrior with batch norm, which
    would make the prior depend on the network's mode (group norm does not)."""
    net = MLPVAE(input_shape=(1, 4, 4), hidden_dims=[8], latent_dim=3)
    with pytest.raises(ConfigValueError, match="prior=standard_normal") as refused:
        BetaTCVAE().fit_to_prior(MixtureOfGaussians(net, n_components=3))
    assert refused.value.key == "prior"
    conv = ConvVAE((3, 8, 8), channels=[8], latent_dim=2)
    with pytest.raises(ConfigValueError, match="model/norm=group") as refused:
        conv.fit_to_prior(VampPrior(conv, n_pseudo_inputs=3))
    assert refused.value.key == "model.norm"
    with pytest.raises(ConfigValueError, match="model/norm=group") as refused:  # as the model builds both
        VAEModule(
            net=partial(ConvVAE, channels=[8], latent_dim=2),
            loss=ELBO(),
            input_shape=(3, 8, 8),
            prior=partial(VampPrior, n_pseudo_inputs=3),
        )
    assert refused.value.key == "model.norm"  # not under `prior`, which builds the pseudo-inputs
    with pytest.raises(ConfigValueError) as refused:
        made(partial(ConvVAE, channels=[8], norm=partial(group_norm, groups=0)), "model", input_shape=(3, 8, 8))
    assert refused.value.key == "model.norm.groups"
    grouped = ConvVAE((3, 8, 8), channels=[8], latent_dim=2, norm=group_norm)
    prior, z = VampPrior(grouped, n_pseudo_inputs=3), torch.randn(5, 2)
    with torch.no_grad():
        in_training = prior.log_prob(z)
        grouped.eval()
        torch.testing.assert_close(prior.log_prob(z), in_training)
