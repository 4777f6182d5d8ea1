import pytest
import torch

from tests.test_losses import FixedNet
from vae_lightning.core.errors import ConfigValueError
from vae_lightning.losses import ELBO
from vae_lightning.nets.conv import ConvVAE
from vae_lightning.nets.mlp import MLPVAE
from vae_lightning.nets.posterior import ExpHalfLogVariance, SoftplusScale
from vae_lightning.optim import adam
from vae_lightning.priors import StandardNormal


def test_seed_mnist_shapes():
    """build_vae [784, 1000, 2]: encoder 784-1000-4, decoder 2-1000-784, tanh hidden."""
    net = MLPVAE(input_shape=(1, 28, 28), hidden_dims=[1000], latent_dim=2)
    linears = [m for m in net.encoder if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(784, 1000), (1000, 4)]
    linears = [m for m in net.decoder if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(2, 1000), (1000, 784)]
    assert sum(isinstance(m, torch.nn.Tanh) for m in net.encoder) == 1
    out = net(torch.rand(3, 1, 28, 28))
    assert out.params.shape == (3, 1, 1, 28, 28)  # one output per pixel for the Bernoulli
    assert out.z.shape == out.posterior.loc.shape == out.posterior.scale.shape == (3, 2)


def test_posterior_scales():
    raw = torch.tensor([-50.0, 0.0, 3.0])
    sigma = SoftplusScale()(raw)
    assert torch.all(sigma >= 1e-6)
    torch.testing.assert_close(sigma, torch.nn.functional.softplus(raw) + 1e-6)
    torch.testing.assert_close(ExpHalfLogVariance()(torch.log(torch.tensor([4.0]))), torch.tensor([2.0]))


def test_reparameterised_sample_has_the_posterior_moments():
    net = MLPVAE(input_shape=(1, 8, 8), hidden_dims=[16], latent_dim=3)
    x = torch.rand(1, 1, 8, 8).expand(20000, 1, 8, 8)
    out = net(x)
    torch.testing.assert_close(out.z.mean(0), out.posterior.loc[0], atol=0.05, rtol=0)
    torch.testing.assert_close(out.z.std(0), out.posterior.scale[0], atol=0.05, rtol=0.05)


def test_a_tiny_batch_is_overfit():
    torch.manual_seed(0)
    net = MLPVAE(input_shape=(1, 8, 8), hidden_dims=[64], latent_dim=2)
    x = (torch.rand(8, 1, 8, 8) > 0.5).float()
    optimizer = adam(net.parameters(), lr=1e-2)
    loss_fn, prior = ELBO(), StandardNormal(net)
    first = float(loss_fn(net, prior, x, 1.0).loss.detach())
    for _ in range(200):
        terms = loss_fn(net, prior, x, 1.0)
        optimizer.zero_grad()
        terms.loss.backward()
        optimizer.step()
    assert float(terms.loss.detach()) < 0.6 * first


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"latent_dim": 0}, "latent_dim"),
        ({"latent_dim": "abc"}, "latent_dim"),
        ({"hidden_dims": [0]}, "hidden_dims"),
        ({"hidden_dims": "abc"}, "hidden_dims"),
    ],
)
def test_bad_sizes_name_their_key(kwargs, key):
    with pytest.raises(ConfigValueError) as error:
        MLPVAE(input_shape=(1, 8, 8), **kwargs)
    assert error.value.key == key


def test_adam_is_fused_on_cpu_and_validates_lr():
    params = [torch.nn.Parameter(torch.zeros(3))]
    assert adam(params).defaults["fused"] is True
    with pytest.raises(ConfigValueError):
        adam(params, lr=-1.0)


def test_a_collapsing_log_variance_keeps_the_loss_finite_with_beta_zero():
    """The cause of the step-64 blow-up of faces_dogs_conv: with beta 0 (the ramp's first half) nothing holds the
    log-variance back, exp(raw / 2) reached exactly 0, the KL infinity and 0 * inf made the loss NaN."""
    from vae_lightning.distributions import DiagonalGaussian
    from vae_lightning.nets.base import VAEOutput

    raw = torch.tensor([[-500.0, 500.0]])
    scale = ExpHalfLogVariance()(raw)
    assert torch.isfinite(scale).all() and float(scale.min()) == pytest.approx(1e-6)
    assert float(torch.exp(0.5 * raw).min()) == 0.0  # what it was without the floor
    posterior = DiagonalGaussian(torch.zeros(1, 2), scale)
    out = VAEOutput(posterior, posterior.loc, torch.zeros(1, 1, 1, 2, 2))
    net = FixedNet(out)
    assert torch.isfinite(ELBO()(net, StandardNormal(net), torch.rand(1, 1, 2, 2), beta=0.0).loss)


def test_channels_last_conv_net_computes_the_same_and_shares_its_weights():
    torch.manual_seed(0)
    plain = ConvVAE((3, 32, 32), channels=(8, 16), latent_dim=4)
    fast = ConvVAE((3, 32, 32), channels=(8, 16), latent_dim=4, channels_last=True)
    fast.load_state_dict(plain.state_dict())
    assert fast.encoder_convs[0].weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.rand(5, 3, 32, 32)
    for net in (plain, fast):
        net.eval()
    a, b = plain.encode(x), fast.encode(x)
    assert torch.allclose(a.loc, b.loc, atol=1e-5) and torch.allclose(a.scale, b.scale, atol=1e-5)
    assert torch.allclose(plain.decode(a.loc), fast.decode(a.loc), atol=1e-5)
    assert set(plain.state_dict()) == set(fast.state_dict())


@pytest.mark.parametrize("conv", [False, True])
def test_under_bfloat16_autocast_the_posterior_and_decoder_outputs_are_float32(conv):
    net = ConvVAE((3, 32, 32), channels=(8, 16), latent_dim=4) if conv else MLPVAE((1, 8, 8), [16], 4)
    x = torch.rand(3, *net.input_shape)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        posterior = net.encode(x)
        params = net.decode(posterior.loc)
        hidden = net.decoder_head(posterior.loc) if conv else net.decoder[0](posterior.loc)
    assert hidden.dtype == torch.bfloat16  # the layers ran in bfloat16
    assert posterior.loc.dtype == posterior.scale.dtype == params.dtype == torch.float32


def test_a_conv_net_refuses_images_its_blocks_do_not_divide_and_names_the_blocks_that_would_fit():
    with pytest.raises(ConfigValueError, match=r"the images are 28x28, which \[32, 64\] would fit") as bad:
        ConvVAE((1, 28, 28), channels=(32, 64, 128, 256))
    assert bad.value.key == "channels"
    with pytest.raises(ConfigValueError, match=r"the images are 27x27\. Fix"):  # no block fits an odd side
        ConvVAE((1, 27, 27), channels=(32, 64))
    with pytest.raises(ConfigValueError, match=r"the images are 32x28\. Fix"):  # not square: no blocks fit
        ConvVAE((1, 32, 28), channels=(32,))
    fitted = ConvVAE((1, 28, 28), channels=(32, 64), latent_dim=4)  # the suggestion trains on MNIST's side
    assert fitted(torch.rand(2, 1, 28, 28)).params.shape[-2:] == (28, 28)
