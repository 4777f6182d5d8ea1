"""The posterior part against answers known in closed form: the inverse autoregressive flow's density is exact,
its steps are autoregressive, a one-dimensional flow is a Gaussian whose KL is known, and everything downstream
(the objectives, test/nll, the latent statistics, the API) draws through the part."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from vae_lightning.core.errors import ConfigValueError, VAELightningError
from vae_lightning.distributions import DiagonalGaussian
from vae_lightning.likelihoods import Bernoulli
from vae_lightning.losses import ELBO, IWAE, BetaTCVAE
from vae_lightning.metrics import LatentStats, importance_sampled_log_likelihood
from vae_lightning.nets.mlp import MLPVAE
from vae_lightning.posteriors import DiagonalGaussianPosterior, FlowedGaussian, InverseAutoregressiveFlow
from vae_lightning.priors import StandardNormal


def flow(latent=4, seed=0, dtype=torch.float64, **settings) -> InverseAutoregressiveFlow:
    """A flow whose steps are not at their (zero) start: every weight random, so each step does something."""
    torch.manual_seed(seed)
    iaf = InverseAutoregressiveFlow(latent, **({"hidden_dims": [8, 8]} | settings)).to(dtype)
    with torch.no_grad():
        for p in iaf.parameters():
            p.normal_(0, 0.4)
    return iaf


def base(n=3, d=4, seed=1) -> DiagonalGaussian:
    g = torch.Generator().manual_seed(seed)
    loc = torch.randn(n, d, generator=g, dtype=torch.float64)
    return DiagonalGaussian(loc, 0.2 + torch.rand(n, d, generator=g, dtype=torch.float64))


@pytest.mark.parametrize("gated", [True, False], ids=["gated", "affine"])
def test_each_step_is_autoregressive_and_the_log_determinant_is_the_jacobians(gated):
    """Output d of one step depends on the codes before d in its order only (a triangular Jacobian; the image's
    context enters every output), and the flow's log-determinant equals log |det J| of the whole flow computed
    by autograd, for several codes; for the gated step and the affine one."""
    iaf = flow(latent=5, n_steps=3, hidden_dims=[7, 9], gated=gated)
    one = base(n=1, d=5)
    context = torch.cat([one.loc[0], one.scale[0].log()])
    for t, step in enumerate(iaf.steps):
        z = torch.randn(5, dtype=torch.float64)
        jacobian = torch.autograd.functional.jacobian(lambda v, step=step: step(v, context), z)
        by_context = torch.autograd.functional.jacobian(lambda c, step=step, z=z: step(z, c), context)
        assert bool((by_context.abs().sum(1) > 0).all())  # every output sees the context
        shift, gate = jacobian[:5], jacobian[5:]
        order = torch.arange(5) if t % 2 == 0 else torch.arange(4, -1, -1)
        for out in range(5):
            for inp in range(5):
                if order[inp] >= order[out]:  # not before `out` in this step's order
                    assert shift[out, inp] == 0 and gate[out, inp] == 0, (t, out, inp)
        assert jacobian.abs().sum() > 0
    for z in torch.randn(4, 5, dtype=torch.float64):
        full = torch.autograd.functional.jacobian(lambda v: iaf.transform(v, one)[0][0], z[None])[:, 0]
        torch.testing.assert_close(iaf.transform(z[None], one)[1][0], torch.linalg.slogdet(full).logabsdet)


@pytest.mark.parametrize("gated", [True, False], ids=["gated", "affine"])
def test_the_flows_log_density_is_the_change_of_variables_of_its_samples(gated):
    """log q(z_T) = log N(z_0; loc, scale) - log |det dz_T/dz_0| at each of k samples per row."""
    q = FlowedGaussian(base(), flow(gated=gated))
    z, log_q = q.rsample_with_log_prob(torch.Generator().manual_seed(2), k=5)
    assert z.shape == (5, 3, 4) and log_q.shape == (5, 3)
    generator = torch.Generator().manual_seed(2)
    z0 = q.base.loc + q.base.scale * torch.randn((5, 3, 4), generator=generator, dtype=torch.float64)
    for i in range(5):
        for row in range(3):
            image = DiagonalGaussian(q.base.loc[row : row + 1], q.base.scale[row : row + 1])
            full = torch.autograd.functional.jacobian(lambda v, g=image: q.flow.transform(v, g)[0][0], z0[i, row][None])
            expected = Normal(q.base.loc[row], q.base.scale[row]).log_prob(z0[i, row]).sum()
            expected -= torch.linalg.slogdet(full[:, 0]).logabsdet
            torch.testing.assert_close(log_q[i, row], expected)
            torch.testing.assert_close(z[i, row], q.flow.transform(z0[i, row][None], image)[0][0])


def test_a_one_dimensional_flow_is_a_gaussian_and_its_kl_converges_to_the_closed_form():
    """With one latent dimension each step is affine in the code (its MADE sees only the image's context):
    z_T = a z_0 + c, so q is N(a loc + c, (a scale)^2). Its log density is that Gaussian's, and the standard
    normal prior's Monte Carlo KL through the flow converges to the closed-form KL of that Gaussian."""
    iaf = flow(latent=1, n_steps=3)
    q = FlowedGaussian(DiagonalGaussian(torch.tensor([[0.7]]).double(), torch.tensor([[0.4]]).double()), iaf)
    c = iaf.transform(torch.zeros(1, 1, dtype=torch.float64), q.base)[0][0]
    a = iaf.transform(torch.ones(1, 1, dtype=torch.float64), q.base)[0][0] - c
    gaussian = Normal(a * 0.7 + c, a.abs() * 0.4)
    z, log_q = q.rsample_with_log_prob(torch.Generator().manual_seed(0), k=200_000)
    torch.testing.assert_close(log_q, gaussian.log_prob(z).sum(-1))
    prior = StandardNormal(MLPVAE((1, 2, 2), hidden_dims=[3], latent_dim=1))
    estimate = prior.kl(q, z, log_q).mean()  # averaged over the 200,000 draws
    exact = kl_divergence(gaussian, Normal(0.0, 1.0)).sum()
    assert abs(float(estimate) - float(exact)) < 0.01, (float(estimate), float(exact))
    assert prior.kl_per_dim(q) is None  # no per-dimension KL through a flow
    torch.testing.assert_close(q.code, (a * 0.7 + c)[None])  # the flow at the Gaussian's mean


def test_the_gaussian_posterior_is_the_networks_output_and_keeps_the_closed_form_kl():
    net = MLPVAE((1, 4, 4), hidden_dims=[8], latent_dim=3)
    assert isinstance(net.posterior, DiagonalGaussianPosterior) and net.posterior.factorised
    x = torch.rand(5, 1, 4, 4)
    q = net.infer(x)
    assert q is q.gaussian and torch.equal(q.code, net.encode(x).loc)
    out = net(x)
    assert out.log_q is None  # the closed-form KL needs none
    prior = StandardNormal(net)
    torch.testing.assert_close(prior.kl(out.posterior, out.z, out.log_q), q.kl_to_standard_normal_per_dim().sum(-1))


def test_a_network_with_a_flow_trains_every_objective_that_can_take_it_and_names_the_one_that_cannot():
    torch.manual_seed(0)
    net = MLPVAE((1, 4, 4), hidden_dims=[8], latent_dim=3)
    net.use_posterior(InverseAutoregressiveFlow(3, hidden_dims=[6]))
    prior, x = StandardNormal(net), torch.bernoulli(torch.rand(6, 1, 4, 4))
    assert any(name.startswith("posterior.steps.") for name in net.state_dict())
    for objective in (ELBO(Bernoulli()), IWAE(Bernoulli(), k=4)):
        net.zero_grad()
        terms = objective(net, prior, x, 1.0)
        assert terms.sample.log_q is not None and torch.isfinite(terms.loss)
        terms.loss.backward()
        last = net.posterior.steps[0].last
        assert last.weight.grad.abs().sum() > 0  # the flow is trained through the KL and the likelihood
    with pytest.raises(ConfigValueError, match=r"`posterior=.*loss=tcvae.*per-dimension densities.*posterior=gaussian"):
        BetaTCVAE(Bernoulli()).fit_to_net(net)


def test_importance_sampling_with_a_flow_proposal_matches_the_elbo_at_one_sample():
    """With k = 1 the importance-sampled log p(x) is the single-sample ELBO at the same draw: the proposal's
    density is the flow's own."""
    torch.manual_seed(0)
    net = MLPVAE((1, 4, 4), hidden_dims=[8], latent_dim=3)
    net.use_posterior(flow(latent=3, dtype=torch.float32))
    prior, likelihood, x = StandardNormal(net), Bernoulli(), torch.bernoulli(torch.rand(5, 1, 4, 4))
    seeded = torch.Generator().manual_seed(3)
    estimate = importance_sampled_log_likelihood(net, prior, likelihood, x, 1, generator=seeded)
    q = net.infer(x)
    z, log_q = q.rsample_with_log_prob(torch.Generator().manual_seed(3), 1)
    elbo = likelihood.log_prob(x, net.decode(z[0])) + prior.log_prob(z[0]) - log_q[0]
    torch.testing.assert_close(estimate, elbo)


def test_latent_statistics_of_a_flow_count_active_units_from_its_codes_and_leave_out_the_gaussian_measures():
    stats = LatentStats(keep=50)
    q = FlowedGaussian(base(n=40, d=4), flow())
    stats.add(q, None, torch.zeros(40, dtype=torch.long))
    values = stats.results()
    assert "mutual_info" not in values and "total_correlation" not in values
    variance = q.code.var(0)
    assert values["active_units"] == float((variance > 0.01).sum())
    assert q.stddev.shape == (40, 4) and bool((q.stddev > 0).all())
    assert math.isfinite(float(q.stddev.sum()))


def test_with_context_each_image_gets_a_flow_of_its_own_and_without_one_flow_serves_all():
    """The same base code z_0 under two images' Gaussians: moved differently with `context`, alike without."""
    z0 = torch.randn(1, 1, 4, dtype=torch.float64).expand(1, 2, 4)
    two = base(n=2, d=4)
    with_context, without = flow(), flow(context=False)
    moved = with_context.transform(z0, two)[0][0]
    assert not torch.allclose(moved[0], moved[1])
    alike = without.transform(z0, two)[0][0]
    torch.testing.assert_close(alike[0], alike[1])


def test_the_encoders_context_vector_gives_each_image_a_flow_of_its_own_with_an_exact_density():
    """`h_dim`: the same base code z_0 and the same Gaussian under two images' context vectors h are moved
    differently, and log q at the flow's samples is still log N(z_0) - log |det J| (J by autograd, h held)."""
    iaf = flow(latent=4, context=False, h_dim=3)
    one = base(n=1, d=4)
    two = DiagonalGaussian(one.loc.expand(2, 4), one.scale.expand(2, 4))
    h = torch.randn(2, 3, dtype=torch.float64)
    z0 = torch.randn(1, 1, 4, dtype=torch.float64).expand(1, 2, 4)
    moved = iaf.transform(z0, two, h)[0][0]
    assert not torch.allclose(moved[0], moved[1])
    q = FlowedGaussian(two, iaf, h)
    z, log_q = q.rsample_with_log_prob(torch.Generator().manual_seed(2), k=3)
    z_start = q.base.rsample(torch.Generator().manual_seed(2), 3)  # the same draws of the base Gaussian
    for i in range(3):
        for row in range(2):
            point, h_row = z_start[i, row][None], h[row][None]
            jacobian = torch.autograd.functional.jacobian(lambda v, c=h_row: iaf.transform(v, one, c)[0][0], point)
            log_base = Normal(one.loc[0], one.scale[0]).log_prob(point[0]).sum()
            torch.testing.assert_close(log_q[i, row], log_base - torch.linalg.slogdet(jacobian[:, 0]).logabsdet)
            torch.testing.assert_close(z[i, row], iaf.transform(point, one, h_row)[0][0])


@pytest.mark.parametrize("network", ["mlp", "conv"])
def test_a_flow_that_asks_for_a_context_widens_the_encoder_and_gets_it(network, tmp_path):
    """`posterior.h_dim=6` on either network: its encoder's last layer gives 2 x latent + 6 values, the flow
    gets the last 6 of each row as h, `encode` keeps the Gaussian, and training reaches the new outputs."""
    from tests.conftest import compose_train
    from vae_lightning.run.trainer import build_run

    overrides = ["posterior=iaf", "posterior.h_dim=6", "posterior.hidden_dims=[8]", "model.latent_dim=3"]
    if network == "conv":
        overrides = ["model=conv", "model.channels=[4,8]", *overrides]
    _, module, _ = build_run(compose_train(overrides, tmp_path))
    net = module.net
    x = torch.rand(5, *net.input_shape)
    gaussian, h = net.encode_with_context(x)
    assert gaussian.loc.shape == (5, 3) and h.shape == (5, 6)
    torch.testing.assert_close(net.encode(x).loc, gaussian.loc)
    torch.testing.assert_close(net.infer(x).h, h)
    optimizer = module.configure_optimizers()["optimizer"]
    for _ in range(2):  # the flow's layers into its outputs start at zero: h has a gradient from the second step
        optimizer.zero_grad()
        module.objective(x, 1.0).loss.backward()
        optimizer.step()
    head = net.encoder[-1] if network == "mlp" else net.encoder_head
    assert (
        head.out_features == 2 * 3 + 6 and head.weight.grad is not None and bool(head.weight.grad[6:].abs().sum() > 0)
    )


def test_a_network_without_a_context_names_the_key():
    """A network that gives no context vector (a user's, with `encode` only) refuses a flow that asks for one."""
    from vae_lightning.nets.base import VAENet

    class GaussianOnly(VAENet):
        latent_dim = 3

    with pytest.raises(ConfigValueError, match=r"posterior.h_dim.*GaussianOnly does not give"):
        GaussianOnly().use_posterior(InverseAutoregressiveFlow(3, h_dim=2))


NEED_A_GAUSSIAN = [["loss=tcvae"], ["loss=iwae", "loss.dreg=true"], ["loss=miwae", "loss.dreg=true"]]


@pytest.mark.parametrize("objective", NEED_A_GAUSSIAN)
def test_an_objective_that_needs_a_gaussian_posterior_refuses_a_flow_in_one_line(objective, tmp_path):
    from tests.conftest import compose_train
    from vae_lightning.run.trainer import build_run

    with pytest.raises(VAELightningError, match=r"`posterior=.*InverseAutoregressiveFlow.*use posterior=gaussian"):
        build_run(compose_train(["posterior=iaf", *objective], tmp_path))


def test_a_fresh_flow_with_zero_last_layers_is_the_diagonal_gaussian_scaled_by_its_gates():
    """Its layers into the outputs start at zero, so each step is z -> sigmoid(gate_bias) z: q is the diagonal
    Gaussian N(a loc, (a scale)^2) with a = sigmoid(gate_bias)^n_steps, whatever the latent size."""
    iaf = InverseAutoregressiveFlow(5, n_steps=3, gate_bias=2.0).double()
    q = FlowedGaussian(base(n=4, d=5), iaf)
    a = torch.sigmoid(torch.tensor(2.0, dtype=torch.float64)) ** 3
    gaussian = Normal(a * q.base.loc, a * q.base.scale)
    z, log_q = q.rsample_with_log_prob(torch.Generator().manual_seed(0), k=7)
    torch.testing.assert_close(log_q, gaussian.log_prob(z).sum(-1))
    torch.testing.assert_close(q.code, a * q.base.loc)


def test_a_fresh_affine_flow_is_the_diagonal_gaussian_itself():
    """The affine step z -> z exp(s) + m starts with s = m = 0: a fresh flow is the identity, q the network's
    Gaussian, its log density the Gaussian's at the same codes."""
    q = FlowedGaussian(base(n=4, d=5), InverseAutoregressiveFlow(5, n_steps=3, gated=False).double())
    z, log_q = q.rsample_with_log_prob(torch.Generator().manual_seed(0), k=7)
    torch.testing.assert_close(log_q, Normal(q.base.loc, q.base.scale).log_prob(z).sum(-1))
    torch.testing.assert_close(q.code, q.base.loc)


@pytest.mark.parametrize("gated", [True, False], ids=["gated", "affine"])
@pytest.mark.parametrize("h_dim", [0, 100], ids=["gaussian_context", "h"])
def test_the_flows_log_density_holds_in_float32_at_a_trained_models_scale(gated, h_dim):
    """50 dimensions, narrow posteriors (scales 0.005 to 0.05), float32 as in training: log q at the flow's own
    samples is the change of variables computed in float64 (the Gaussian's density at z_0 minus the exact
    log-determinant of the whole flow's Jacobian), to float32's precision on values of about a hundred nats; with
    the image's Gaussian as the context, and with a context vector h of 100 values as shipped (h held)."""
    torch.manual_seed(0)
    iaf = InverseAutoregressiveFlow(50, n_steps=2, hidden_dims=[64, 64], gated=gated, context=not h_dim, h_dim=h_dim)
    with torch.no_grad():  # every weight random, of a trained flow's size: steps that move codes by O(scale)
        for p in iaf.parameters():
            p.normal_(0, 0.05)
    g = torch.Generator().manual_seed(3)
    loc, scale = torch.randn(2, 50, generator=g), 0.005 + 0.045 * torch.rand(2, 50, generator=g)
    h = torch.randn(2, h_dim, generator=g) if h_dim else None
    q = FlowedGaussian(DiagonalGaussian(loc, scale), iaf, h)
    z, log_q = q.rsample_with_log_prob(torch.Generator().manual_seed(4), k=3)
    z0 = loc + scale * torch.randn((3, 2, 50), generator=torch.Generator().manual_seed(4))
    exact = iaf.double()  # in place: the float32 values above are already computed
    for i in range(3):
        for row in range(2):
            image = DiagonalGaussian(loc[row : row + 1].double(), scale[row : row + 1].double())
            point = z0[i, row][None].double()
            h_row = h[row : row + 1].double() if h_dim else None

            def flowed(v, g=image, c=h_row):
                return exact.transform(v, g, c)[0][0]

            jacobian = torch.autograd.functional.jacobian(flowed, point)
            expected = Normal(image.loc[0], image.scale[0]).log_prob(point[0]).sum()
            expected -= torch.linalg.slogdet(jacobian[:, 0]).logabsdet
            assert float(expected) > 50  # narrow: a density of about a hundred nats or more
            torch.testing.assert_close(log_q[i, row].double(), expected, rtol=1e-5, atol=2e-3)
            torch.testing.assert_close(z[i, row].double(), flowed(point), rtol=1e-4, atol=1e-4)
