"""The ladder VAE (`model=ladder`): its top-down posterior and prior against Gaussians known in closed form, and
its codes in the pictures, the API and the test's estimates."""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from vae_lightning.core.config import made
from vae_lightning.core.errors import ConfigValueError, VAELightningError
from vae_lightning.distributions import DiagonalGaussian, precision_weighted
from vae_lightning.nets.ladder import LadderVAE
from vae_lightning.nets.mlp import MLPVAE
from vae_lightning.priors import LadderPrior, StandardNormal


def flat_ladder() -> LadderVAE:
    """Two layers (3 and 2 dims) whose top-down network is zero: p(z_1 | z_2) = N(0, softplus(0)^2), whatever z_2."""
    torch.manual_seed(0)
    net = LadderVAE((1, 4, 4), hidden_dims=[8, 6], latent_dims=[3, 2])
    for parameter in net.down.parameters():
        torch.nn.init.zeros_(parameter)
    return net


def test_with_a_constant_top_down_prior_the_prior_is_a_product_of_known_gaussians():
    net = flat_ladder()
    prior = LadderPrior(net)
    s = math.log(2.0)  # softplus(0)
    scales = torch.tensor([s, s, s, 1.0, 1.0])
    z = torch.randn(7, 5)
    expected = Normal(torch.zeros(5), scales).log_prob(z).sum(-1)
    torch.testing.assert_close(prior.log_prob(z), expected)
    draws = prior.sample(20000, torch.Generator().manual_seed(1))
    torch.testing.assert_close(draws.std(0), scales, atol=0.02, rtol=0)
    torch.testing.assert_close(prior.stddev(), scales, atol=0.06, rtol=0)  # from 1,024 fixed draws


def test_the_top_down_posterior_is_the_precision_weighted_gaussian_and_its_kl_estimate_is_unbiased():
    """With a constant p(z_1 | z_2), q(z_1 | z_2, x) is the same Gaussian for every z_2: the precision-weighted
    product of the estimate and the prior, and the Monte Carlo KL averages to the closed-form KL of the layers."""
    net = flat_ladder()
    x = torch.rand(4, 1, 4, 4)
    posterior = net.infer(x)
    up1, up2 = net.bottom_up(x)
    layer1 = precision_weighted(up1, DiagonalGaussian(torch.zeros(4, 3), torch.full((4, 3), math.log(2.0))))
    var1 = 1 / (up1.scale.pow(-2) + 1 / math.log(2.0) ** 2)
    torch.testing.assert_close(layer1.scale.pow(2), var1)
    torch.testing.assert_close(posterior.code, torch.cat([layer1.loc, up2.loc], -1))
    torch.testing.assert_close(posterior.stddev, torch.cat([layer1.scale, up2.scale], -1))
    z, log_q = posterior.rsample_with_log_prob(torch.Generator().manual_seed(0), k=20000)
    expected_log_q = layer1.log_prob(z[..., :3]) + up2.log_prob(z[..., 3:])
    torch.testing.assert_close(log_q, expected_log_q)
    prior = LadderPrior(net)
    p1 = Normal(torch.zeros(3), torch.full((3,), math.log(2.0)))
    closed = kl_divergence(Normal(layer1.loc, layer1.scale), p1).sum(-1)
    closed = closed + kl_divergence(Normal(up2.loc, up2.scale), Normal(0.0, 1.0)).sum(-1)
    torch.testing.assert_close(prior.kl(posterior, z, log_q), closed)  # per layer in closed form: exact here
    monte_carlo = (log_q - prior.log_prob(z)).mean(0)  # the whole code's log q - log p, 20,000 draws
    torch.testing.assert_close(monte_carlo, closed, atol=0.05, rtol=0)


def test_the_per_layer_kl_and_the_whole_codes_monte_carlo_kl_agree_for_a_trained_like_top_down_network():
    """With a top-down network that moves p(z_1 | z_2) with z_2, neither KL is known in closed form; both are
    unbiased estimates of it, so their means over many draws agree."""
    torch.manual_seed(3)
    net = LadderVAE((1, 4, 4), hidden_dims=[8, 6], latent_dims=[3, 2])
    posterior, prior = net.infer(torch.rand(2, 1, 4, 4)), LadderPrior(net)
    with torch.no_grad():
        z, log_q = posterior.rsample_with_log_prob(torch.Generator().manual_seed(0), k=40000)
        per_layer = prior.kl(posterior, z, log_q)
        monte_carlo = log_q - prior.log_prob(z)
        layers = prior.kl(posterior, z[:2000], log_q[:2000])  # k = 2,000: still the mean of its draws
    torch.testing.assert_close(per_layer, monte_carlo.mean(0), atol=0.03, rtol=0)
    torch.testing.assert_close(layers, per_layer, atol=0.1, rtol=0)


def test_a_code_decodes_from_its_first_layer_and_bad_settings_name_their_key():
    net = flat_ladder()
    assert net.decode(torch.randn(3, 5)).shape == (3, 1, 1, 4, 4)
    assert net.decode(torch.randn(2, 3, 5)).shape == (2, 3, 1, 1, 4, 4)  # k codes per image
    with pytest.raises(ConfigValueError) as bad:  # as the model builds it: the key under `model` once
        made(partial(LadderVAE, hidden_dims=[8], latent_dims=[3, 2]), "model", input_shape=(1, 4, 4))
    assert bad.value.key == "model.hidden_dims"
    with pytest.raises(VAELightningError, match="prior of model=ladder, not of Linear"):
        LadderPrior(torch.nn.Linear(2, 2))
    with pytest.raises(VAELightningError, match="give prior=ladder too"):
        net.fit_to_prior(StandardNormal(net))
    net.fit_to_prior(LadderPrior(net))


def test_active_units_are_counted_per_layer_of_a_hierarchical_code():
    """Layer 1 (2 dims) has one dimension that moves with the image, layer 2 (3 dims) all three."""
    from vae_lightning.metrics import LatentStats

    torch.manual_seed(0)
    code = torch.randn(500, 5)
    code[:, 1] = 0.001 * code[:, 1]  # variance 1e-6 across the images: inactive (threshold 0.01)
    stats = LatentStats(keep=0, layers=[2, 3])
    stats.add(DiagonalGaussian(code, torch.ones_like(code)))
    values = stats.results()
    assert (values["active_units"], values["active_units_layer1"], values["active_units_layer2"]) == (4, 1, 3)


def test_a_code_completed_from_its_top_layer_takes_the_top_down_means_below():
    """What the latent traversals of a ladder decode: the layers below the top as the generative model makes them."""
    from vae_lightning.nets.mlp import MLPVAE

    net = flat_ladder()
    z = torch.randn(3, 5)
    completed = net.complete(z)
    torch.testing.assert_close(completed[:, 3:], z[:, 3:])  # the top layer as given
    torch.testing.assert_close(completed[:, :3], torch.zeros(3, 3))  # the constant top-down prior's mean
    assert torch.equal(MLPVAE((1, 4, 4), [4], 2).complete(z[:, :2]), z[:, :2])  # one layer: its own top


@pytest.mark.parametrize("ladder", [False, True], ids=["per_dimension", "per_layer"])
def test_free_bits_count_each_group_below_the_floor_as_the_floor_with_no_gradient(ladder):
    """The ELBO with `free_bits`: its value is recon + sum_g max(floor, batch mean of KL_g), and a group under
    the floor passes no gradient; the logged kl is the KL itself. Groups: a ladder's layers, else dimensions."""
    from vae_lightning.losses import ELBO
    from vae_lightning.nets.mlp import MLPVAE

    torch.manual_seed(0)
    net = LadderVAE((1, 4, 4), hidden_dims=[8, 6], latent_dims=[3, 2]) if ladder else MLPVAE((1, 4, 4), [8], 3)
    prior = LadderPrior(net) if ladder else StandardNormal(net)
    x = (torch.rand(16, 1, 4, 4) > 0.5).float()
    plain, floored = ELBO(), ELBO(free_bits=0.3)
    for objective in (plain, floored):
        objective.fit_to_images((1, 4, 4))
        objective.fit_to_prior(prior)
    torch.manual_seed(1)
    terms = floored(net, prior, x, 1.0)
    groups = prior.kl_groups(terms.sample.posterior, terms.sample.z)
    assert groups.shape == (16, 2 if ladder else 3)
    torch.testing.assert_close(groups.sum(-1), prior.kl(terms.sample.posterior, terms.sample.z))
    expected = terms.terms["recon"] + groups.mean(0).clamp(min=0.3).sum()
    torch.testing.assert_close(terms.loss, expected)
    torch.manual_seed(1)
    assert torch.equal(plain(net, prior, x, 1.0).terms["kl"], terms.terms["kl"])  # the KL itself is logged
    huge = ELBO(free_bits=1e6)  # every group under the floor: only the reconstruction moves the weights
    huge.fit_to_images((1, 4, 4))
    torch.manual_seed(1)
    huge(net, prior, x, 1.0).loss.backward()
    with_floor = [p.grad.clone() for p in net.parameters() if p.grad is not None]
    net.zero_grad()
    torch.manual_seed(1)
    plain(net, prior, x, 1.0).terms["recon"].backward()
    for got, expected_grad in zip(with_floor, [p.grad for p in net.parameters() if p.grad is not None], strict=True):
        torch.testing.assert_close(got, expected_grad)


def test_free_bits_are_refused_with_a_prior_whose_kl_does_not_split():
    from vae_lightning.losses import ELBO
    from vae_lightning.nets.mlp import MLPVAE
    from vae_lightning.priors import MixtureOfGaussians

    with pytest.raises(ConfigValueError) as refused:
        ELBO(free_bits=0.5).fit_to_prior(MixtureOfGaussians(MLPVAE((1, 4, 4), [8], 3)))
    assert refused.value.key == "free_bits"
    with pytest.raises(ConfigValueError):
        ELBO(free_bits=-1.0)


def test_the_per_layer_kl_is_exact_at_the_size_and_narrowness_of_trained_codes():
    """50 + 8 dimensions, bottom-up scales near 0.007 (narrow posteriors), float32, a constant top-down network:
    each layer's KL is the closed form of its two Gaussians, and the draws' log q - log p average to it."""
    torch.manual_seed(0)
    net = LadderVAE((1, 28, 28), hidden_dims=[200, 200], latent_dims=[50, 8])
    with torch.no_grad():
        for head in net.up_heads:
            head.bias[head.out_features // 2 :] = -5.0  # softplus(-5) = 0.0067
        for parameter in net.down.parameters():
            parameter.zero_()
    posterior, prior = net.infer(torch.rand(4, 1, 28, 28)), LadderPrior(net)
    up1, up2 = posterior.up
    layer1 = precision_weighted(up1, DiagonalGaussian(torch.zeros(4, 50), torch.full((4, 50), math.log(2.0))))
    expected = torch.stack(
        [
            kl_divergence(Normal(layer1.loc, layer1.scale), Normal(0.0, math.log(2.0))).sum(-1),
            kl_divergence(Normal(up2.loc, up2.scale), Normal(0.0, 1.0)).sum(-1),
        ],
        dim=-1,
    )
    z, log_q = posterior.rsample_with_log_prob(torch.Generator().manual_seed(0), k=4000)
    assert z.dtype == torch.float32 and float(up1.scale.max()) < 0.01
    torch.testing.assert_close(prior.kl_groups(posterior, z).mean(0), expected)
    torch.testing.assert_close((log_q - prior.log_prob(z)).mean(0), expected.sum(-1), rtol=1e-3, atol=0.2)


def test_a_skip_count_that_is_not_a_count_starts_from_zero():
    from vae_lightning.callbacks.skip import SkipLargeUpdates

    callback = SkipLargeUpdates(max_norm=1.0)
    for stored in ({"skipped": "3; rm -rf /"}, {"skipped": -2}, {"skipped": 2.5}, ["skipped"]):
        callback.load_state_dict(stored)
        assert callback.skipped == 0
    callback.load_state_dict({"skipped": 4})
    assert callback.skipped == 4


def test_spectral_regularisation_adds_the_sum_of_each_layers_largest_singular_value():
    """On a network whose weights are diagonal-like with known singular values, the term is their largest ones'
    sum exactly, it reaches the loss times its weight (and the weights' gradient), and 0 leaves the ELBO as it was."""
    from vae_lightning.losses import ELBO, spectral_norms

    torch.manual_seed(0)
    net = MLPVAE((1, 2, 2), [3], 2)
    with torch.no_grad():
        for i, layer in enumerate(m for m in net.modules() if isinstance(m, torch.nn.Linear)):
            layer.weight.zero_()
            size = min(layer.weight.shape)
            layer.weight[:size, :size] = torch.diag(torch.arange(1.0, size + 1) * (i + 1))
    expected = sum(
        min(m.weight.shape) * (i + 1) for i, m in enumerate(m for m in net.modules() if isinstance(m, torch.nn.Linear))
    )
    assert float(spectral_norms(net)) == pytest.approx(expected)
    x = (torch.rand(5, 1, 2, 2) > 0.5).float()
    prior = StandardNormal(net)
    plain, regularised = ELBO(), ELBO(spectral_weight=0.1)
    assert "spectral" not in plain.term_names and regularised.term_names[-1] == "spectral"
    a = plain(net, prior, x, 1.0, torch.Generator().manual_seed(0))
    b = regularised(net, prior, x, 1.0, torch.Generator().manual_seed(0))
    assert float(b.loss - a.loss) == pytest.approx(0.1 * expected, rel=1e-5) and float(
        b.terms["spectral"]
    ) == pytest.approx(expected)
    b.loss.backward()
    assert net.encoder[0].weight.grad is not None
    with pytest.raises(ConfigValueError) as bad:
        ELBO(spectral_weight=-1.0)
    assert bad.value.key == "spectral_weight"


def test_the_conv_ladder_is_the_ladder_with_the_conv_blocks_to_and_from_its_first_layer():
    """`model=conv_ladder`: a code of both layers, decoded from the first by transposed convolutions into the
    likelihood's (outputs, C, H, W), k codes per image too; channels-last computes the same numbers; the decoder
    starts at the data's mean colour; an image side the blocks cannot halve is refused naming `channels`."""
    from vae_lightning.nets.ladder import ConvLadderVAE

    torch.manual_seed(0)
    net = ConvLadderVAE((3, 8, 8), channels=[4, 8], hidden_dims=[16, 8], latent_dims=[5, 2], outputs_per_pixel=2)
    net.eval()
    x = torch.rand(3, 3, 8, 8)
    posterior = net.infer(x)
    z, log_q = posterior.rsample_with_log_prob(torch.Generator().manual_seed(0), k=4)
    assert z.shape == (4, 3, 7) and log_q.shape == (4, 3)
    assert net.decode(z).shape == (4, 3, 2, 3, 8, 8) and net.decode(z[0]).shape == (3, 2, 3, 8, 8)
    torch.testing.assert_close(net.decode(z)[1], net.decode(z[1]))  # each code decodes alone
    fast = ConvLadderVAE((3, 8, 8), [4, 8], [16, 8], [5, 2], outputs_per_pixel=2, channels_last=True).eval()
    fast.load_state_dict(net.state_dict())
    torch.testing.assert_close(fast.infer(x).code, posterior.code)
    torch.testing.assert_close(fast.decode(z), net.decode(z))
    # the decoder starts at the mean colour: with its last layer's weights at zero, every pixel decodes to it
    mean = torch.tensor([0.2, 0.5, 0.7])[:, None, None].expand(3, 8, 8)
    net.start_decoder_at(mean)
    torch.nn.init.zeros_(net.decoder_convs[-1].weight)
    torch.testing.assert_close(torch.sigmoid(net.decode(z[0])[:, 0]), mean.expand(3, 3, 8, 8))
    with pytest.raises(ConfigValueError) as bad:
        made(partial(ConvLadderVAE, channels=[4, 8, 16, 32]), "model", input_shape=(3, 8, 8))
    assert bad.value.key == "model.channels"
    LadderPrior(net)  # its own top-down prior


def test_a_diverged_ladder_gives_a_non_finite_kl_for_the_divergence_check_not_an_exception():
    """NaN weights (a diverged step): the per-layer KL is NaN, which the run's divergence check names in one
    line, rather than torch's argument validation raising from inside the loss."""
    net = flat_ladder()
    with torch.no_grad():
        net.down[0][0].weight.fill_(float("nan"))
    posterior, prior = net.infer(torch.rand(2, 1, 4, 4)), LadderPrior(net)
    z, _ = posterior.draw(torch.Generator().manual_seed(0))
    assert torch.isnan(prior.kl(posterior, z)).all()


def test_kl_balancing_weights_each_layer_by_its_share_of_the_kl_per_dimension_during_the_warm_up():
    """NVAE's weights in closed form: layer KL means 2 and 8 nats over 2 and 8 dims give shares 2.01 / 1 and
    8.01 / 4, divided by their mean; held constant; from beta 1 on the ELBO is the plain one; a prior whose KL
    is not a ladder's layers is refused naming `kl_balance`."""
    from vae_lightning.losses import ELBO, balancing_weights

    groups = torch.tensor([[1.0, 6.0], [3.0, 10.0]], requires_grad=True)
    weights = balancing_weights(groups, [2, 8])
    shares = torch.tensor([2.01, 8.01 / 4])
    torch.testing.assert_close(weights, shares / shares.mean())
    assert not weights.requires_grad and float(weights.mean()) == pytest.approx(1.0)

    net = flat_ladder()
    prior, x = LadderPrior(net), (torch.rand(4, 1, 4, 4) > 0.5).float()
    balanced, plain = ELBO(kl_balance=True), ELBO()
    balanced.fit_to_prior(prior)
    for beta, same in ((1.0, True), (0.5, False)):
        ours = balanced(net, prior, x, beta, torch.Generator().manual_seed(0))
        theirs = plain(net, prior, x, beta, torch.Generator().manual_seed(0))
        assert torch.equal(ours.loss, theirs.loss) == same
        torch.testing.assert_close(ours.terms["kl"], theirs.terms["kl"])  # the logged KL is the KL itself
    out = plain(net, prior, x, 0.5, torch.Generator().manual_seed(0))
    layers = prior.kl_groups(out.sample.posterior, out.sample.z)
    expected = out.terms["recon"] + 0.5 * (layers * balancing_weights(layers, net.latent_dims)).sum(-1).mean()
    torch.testing.assert_close(balanced(net, prior, x, 0.5, torch.Generator().manual_seed(0)).loss, expected)
    with pytest.raises(ConfigValueError) as refused:
        ELBO(kl_balance=True).fit_to_prior(StandardNormal(MLPVAE((1, 4, 4), [8], 3)))
    assert refused.value.key == "kl_balance"
