"""Priors p(z). Each is an `nn.Module` inside the model, so its parameters are trained, saved in checkpoints and
resumed with the network's. One class per config option (`conf/prior/*.yaml`); each takes the network it is the
prior of (for its latent size, and the VampPrior for its encoder). A new prior needs only `distribution()`;
the rest has Monte Carlo or sampling defaults.

What everything downstream asks of a prior (the objectives, test/nll, the pictures, the tools):
- `log_prob(z)`: log p(z) summed over the latent dimensions, one value per row (nats); `z` may carry leading
  sample dimensions;
- `sample(n, generator)`: n codes, (n, latent) (from `distribution()` unless a prior draws them itself);
- `kl(posterior, z, log_q)`: KL(q(z|x) || p(z)) per row (nats): closed form where one exists (the standard
  normal, for a diagonal Gaussian posterior), else the single-sample Monte Carlo estimate log q(z|x) - log p(z)
  at the code(s) `z` drawn from q, with `log_q` their log density where the draw gave it;
- `kl_per_dim(posterior)`: the KL of each latent dimension where p(z) and q(z|x) factorise over them, else None;
- `mean()` and `stddev()`: the prior's mean and marginal standard deviation per dimension (the centre and the
  scale of latent traversals and interpolations).
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch
from torch import nn
from torch.distributions import Categorical, Distribution, Independent, MixtureSameFamily, Normal, kl_divergence
from torch.nn import functional as F

from vae_lightning.core import checks
from vae_lightning.core.errors import ConfigValueError, VAELightningError
from vae_lightning.distributions import LOG_2PI, PosteriorDistribution, sample_apart
from vae_lightning.nets.base import VAENet

log = logging.getLogger(__name__)

SOFTPLUS_OF_ONE = math.log(math.e - 1.0)  # softplus(x) = 1 at this x: mixture components start at unit scale
# the VampPrior's pseudo-inputs start as dark images with a little noise (their sigmoid near this), as most
# images' background is: random grey noise, far from every image, lets all posteriors collapse onto the prior
INITIAL_INTENSITY = 0.05
# pseudo-inputs started from training images keep this far inside (0, 1), where the sigmoid still has a slope
DATA_MARGIN = 0.05


class Prior(nn.Module):
    """Base class. `factorises`: p(z) is a product over the latent dimensions (then `kl_per_dim` is defined).
    `encodes_inputs`: the prior runs images of its own through the network's encoder (the networks then refuse
    batch norm: `VAENet.fit_to_prior`)."""

    factorises = False
    encodes_inputs = False

    def __init__(self, net: VAENet) -> None:
        super().__init__()
        self.latent_dim = int(net.latent_dim)
        # where the prior's tensors live when it has no parameters (moves with the model; not saved)
        self.register_buffer("origin", torch.zeros(self.latent_dim), persistent=False)

    def distribution(self) -> Distribution:
        """p(z) as a `torch.distributions` object with event shape (latent,)."""
        raise NotImplementedError

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        return self.distribution().log_prob(z)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n codes from `distribution()`; with `generator`, drawn under a seed taken from it, inside a forked random
        state, so that the run's own random state is untouched."""
        return sample_apart(self.distribution(), n, generator, self.origin.device)

    def kl(self, posterior: PosteriorDistribution, z: torch.Tensor, log_q: torch.Tensor | None = None) -> torch.Tensor:
        """Monte Carlo: log q(z|x) - log p(z), averaged over the leading sample dimension when `z` has one;
        `log_q` None: from the (Gaussian) posterior's density at `z`."""
        log_q = log_q if log_q is not None else posterior.gaussian.log_prob(z)
        value = log_q - self.log_prob(z)
        return value.mean(0) if value.dim() > 1 else value  # (k, N): k codes per row

    def kl_per_dim(self, posterior: PosteriorDistribution) -> torch.Tensor | None:
        return None

    # how `kl_groups` splits the KL where it can ("dimension", "layer"), None where it cannot (free bits need it)
    kl_grouped_by: str | None = None

    def kl_groups(self, posterior: PosteriorDistribution, z: torch.Tensor) -> torch.Tensor | None:
        """The KL of the code `z` was drawn as, in groups, (N, groups) or with k codes per row (k, N, groups),
        summing to `kl`: per latent dimension where p(z) and q(z|x) factorise, per layer for the ladder's prior;
        None where it does not split (`kl_grouped_by` None, or a posterior without per-dimension densities)."""
        per_dim = self.kl_per_dim(posterior)
        return None if per_dim is None else per_dim.expand(*z.shape[:-1], per_dim.shape[-1])

    def fit_to_data(self, dataset: Any) -> None:
        """Called with the training set before training starts (and before a resumed run's weights are restored,
        so those win); a prior that starts from the data overrides it."""

    def mean(self) -> torch.Tensor:
        return self.distribution().mean

    def stddev(self) -> torch.Tensor:
        return self.distribution().stddev

    def noise(self, shape: tuple[int, ...], generator: torch.Generator | None) -> torch.Tensor:
        """Standard normal noise of `shape` from `generator` (on its device), on the prior's device."""
        device = generator.device if generator is not None else self.origin.device
        return torch.randn(shape, generator=generator, device=device).to(self.origin.device)


class StandardNormal(Prior):
    """N(0, I), the VAE's prior (Kingma & Welling 2014): the KL to a diagonal Gaussian posterior in closed form."""

    factorises = True
    kl_grouped_by = "dimension"

    def distribution(self) -> Distribution:
        return Independent(Normal(self.origin, torch.ones_like(self.origin), validate_args=False), 1)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log N(z; 0, I) summed over the last dimension (nats); written out, as on the test's importance samples
        it is the cheapest term."""
        return (-0.5 * z.pow(2) - 0.5 * LOG_2PI).sum(-1)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.noise((n, self.latent_dim), generator)

    def kl(self, posterior: PosteriorDistribution, z: torch.Tensor, log_q: torch.Tensor | None = None) -> torch.Tensor:
        if posterior.gaussian is None:  # a flow: Monte Carlo
            return super().kl(posterior, z, log_q)
        return posterior.gaussian.kl_to_standard_normal_per_dim().sum(-1)

    def kl_per_dim(self, posterior: PosteriorDistribution) -> torch.Tensor | None:
        return None if posterior.gaussian is None else posterior.gaussian.kl_to_standard_normal_per_dim()

    def mean(self) -> torch.Tensor:
        return self.origin

    def stddev(self) -> torch.Tensor:
        return torch.ones_like(self.origin)


class GaussianMixturePrior(Prior):
    """Base class of priors that are a mixture of K diagonal Gaussians: `components()` gives their logits (K,),
    means and standard deviations (K, latent). The mixture's KL to a Gaussian has no closed form: Monte Carlo."""

    def components(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def distribution(self) -> Distribution:
        logits, loc, scale = self.components()
        gaussians = Independent(Normal(loc, scale, validate_args=False), 1, validate_args=False)
        return MixtureSameFamily(Categorical(logits=logits, validate_args=False), gaussians, validate_args=False)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log sum_k w_k N(z; m_k, s_k^2), from the expanded square sum_d (z_d^2 - 2 z_d m_kd + m_kd^2) / s_kd^2 as
        two matrix products: the (codes, components) table without the (codes, components, latent) tensor that
        `MixtureSameFamily.log_prob` builds, which is 1 GB for test/nll's 10,000 codes against 500 pseudo-inputs
        and makes a VampPrior's step many times slower. The square is formed in float64: its terms are of order
        (m / s)^2 and cancel to the (z - m)^2 / s^2 that matters, which float32 loses (19 nats at s = 1e-3, the
        mixture prior's min_scale); in float64 it stays within 1e-3 nats of the exact density (tests)."""
        logits, loc, scale = self.components()
        flat, loc64, precision = z.reshape(-1, self.latent_dim).double(), loc.double(), scale.double().pow(-2)
        square = flat.pow(2) @ precision.T - 2.0 * flat @ (loc64 * precision).T + (loc64.pow(2) * precision).sum(-1)
        log_norm = scale.log().sum(-1) + 0.5 * self.latent_dim * LOG_2PI  # (K,)
        per_component = -0.5 * square.to(z.dtype) - log_norm + logits.log_softmax(-1)
        return torch.logsumexp(per_component, dim=-1).view(z.shape[:-1])

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """A component per code (drawn by its weight), then a draw from it; with `generator`, reproducibly."""
        logits, loc, scale = self.components()
        device = generator.device if generator is not None else loc.device
        chosen = torch.multinomial(logits.softmax(-1).to(device), n, replacement=True, generator=generator)
        chosen = chosen.to(loc.device)
        return loc[chosen] + scale[chosen] * self.noise((n, self.latent_dim), generator)


class MixtureOfGaussians(GaussianMixturePrior):
    """A learned mixture of `n_components` diagonal Gaussians: weights, means and scales are trained with the
    model. The scales start at 1 and the means at draws of N(0, START_SPREAD^2 I) (from the run's seed): the
    mixture starts near the standard normal, which it can then match exactly, its components apart enough to
    separate. (From standard normal draws, in 50 dimensions each component starts about 7 standard deviations
    from the origin, far from every code.)"""

    START_SPREAD = 0.1

    def __init__(self, net: VAENet, n_components: int = 10, min_scale: float = 1e-3) -> None:
        super().__init__(net)
        self.n_components = checks.positive_int("n_components", n_components)
        self.min_scale = checks.number("min_scale", min_scale, low=0.0, low_inclusive=False)
        self.logits = nn.Parameter(torch.zeros(self.n_components))
        self.loc = nn.Parameter(self.START_SPREAD * torch.randn(self.n_components, self.latent_dim))
        self.raw_scale = nn.Parameter(torch.full((self.n_components, self.latent_dim), SOFTPLUS_OF_ONE))

    def components(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.logits, self.loc, F.softplus(self.raw_scale) + self.min_scale


class VampPrior(GaussianMixturePrior):
    """The VampPrior (Tomczak & Welling 2018): the mixture, with equal weights, of the posteriors of K learned
    pseudo-inputs, p(z) = 1/K sum_k q(z | u_k). The pseudo-inputs are images in [0, 1] (sigmoids of trained
    parameters); they are encoded by the model's own encoder at every use, so the prior follows the encoder.
    Costs one encoder pass over K images per training step. With a flow posterior the components are the
    network's Gaussians of the pseudo-inputs, before the flow (whose density is known at its own samples only).

    They start as dark images with a little noise, or with `start_from_data` as K training images drawn at
    random (kept `DATA_MARGIN` inside (0, 1)): the dark ones barely move in a short run (their differences are
    the encoder's to spread), while images of the data give the mixture components where the codes are. With
    `decoder_from_data` the network's decoder starts at the training images' mean, as the network's own
    `output_bias_from_data` does: without either, the codes collapsed onto this prior in the MNIST runs measured."""

    encodes_inputs = True  # the pseudo-inputs pass through the network's encoder: no batch norm there

    def __init__(
        self, net: VAENet, n_pseudo_inputs: int = 500, start_from_data: bool = False, decoder_from_data: bool = False
    ) -> None:
        super().__init__(net)
        self.n_pseudo_inputs = checks.positive_int("n_pseudo_inputs", n_pseudo_inputs)
        self.start_from_data = checks.boolean("start_from_data", start_from_data)
        # where the network starts its decoder from the data itself, it need not be asked twice
        self.starts_decoder = checks.boolean("decoder_from_data", decoder_from_data) and not net.output_bias_from_data
        self.decoder_from_data = self.starts_decoder or net.output_bias_from_data
        self.start_decoder_from_data = net.start_decoder_from_data  # bound methods, not the network: its weights
        start = torch.full(
            (self.n_pseudo_inputs, *net.input_shape), math.log(INITIAL_INTENSITY / (1 - INITIAL_INTENSITY))
        )
        self.raw_pseudo_inputs = nn.Parameter(start + 0.1 * torch.randn_like(start))
        self.encode = net.encode  # are saved once, as net.*

    def pseudo_inputs(self) -> torch.Tensor:
        return torch.sigmoid(self.raw_pseudo_inputs)

    def fit_to_data(self, dataset: Any) -> None:
        """With `start_from_data`: the pseudo-inputs become K training images drawn without replacement (with it
        where the set has fewer than K), from the run's random state. Warns where the decoder does not start
        from the data's mean: the posteriors then collapse onto this prior (docs/models.md)."""
        if not self.decoder_from_data:
            log.warning(
                "With the VampPrior the codes collapsed onto the prior (test/active_units 0) in most MNIST runs "
                "measured whose decoder did not start from the data's mean: set prior.decoder_from_data=true"
            )
        if self.starts_decoder:
            self.start_decoder_from_data(dataset, "prior.decoder_from_data")
        if not self.start_from_data:
            return
        if not hasattr(dataset, "images_at"):
            reason = "needs a training set with an images_at() method (the package's data sets have one)"
            raise ConfigValueError("prior.start_from_data", reason, True)
        n, k = len(dataset), self.n_pseudo_inputs
        index = torch.randperm(n)[:k] if k <= n else torch.randint(n, (k,))
        images = dataset.images_at(index).to(self.raw_pseudo_inputs.device)
        with torch.no_grad():
            self.raw_pseudo_inputs.copy_(torch.logit(images.clamp(DATA_MARGIN, 1 - DATA_MARGIN)))

    def components(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        posterior = self.encode(self.pseudo_inputs())
        return torch.zeros_like(posterior.loc[:, 0]), posterior.loc, posterior.scale


class LadderPrior(Prior):
    """The top-down prior of a ladder network (`model=ladder`, `nets.ladder`): p(z) = N(z_L; 0, I) times
    prod_l p(z_l | z_{l+1}), the network's conditional Gaussians, over codes [z_1, ..., z_L]. Its weights are the
    network's (it holds none). The KL is Monte Carlo (log q - log p of the drawn code); `mean()` and `stddev()`,
    the centre and span of latent traversals, are those of `SPREAD_DRAWS` draws under a fixed seed."""

    SPREAD_DRAWS = 1024

    def __init__(self, net: VAENet) -> None:
        if not callable(getattr(net, "conditional_prior", None)):
            raise VAELightningError(f"prior=ladder is the prior of model=ladder, not of {type(net).__name__}.")
        super().__init__(net)
        self.conditional_prior, self.latent_dims = net.conditional_prior, list(net.latent_dims)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        layers = list(z.split(self.latent_dims, dim=-1))
        log_p = (-0.5 * layers[-1].pow(2) - 0.5 * LOG_2PI).sum(-1)
        for level in range(len(layers) - 1):
            log_p = log_p + self.conditional_prior(level, layers[level + 1]).log_prob(layers[level])
        return log_p

    kl_grouped_by = "layer"

    def kl(self, posterior: PosteriorDistribution, z: torch.Tensor, log_q: torch.Tensor | None = None) -> torch.Tensor:
        """Per layer in closed form given the drawn layers above (Sønderby et al. 2016, `kl_groups`); its mean is
        the KL, with less noise than log q - log p of the whole code, which it is where the posterior is not the
        ladder's own (it has no `layer_pairs`)."""
        groups = self.kl_groups(posterior, z)
        if groups is None:
            return super().kl(posterior, z, log_q)
        kl = groups.sum(-1)
        return kl.mean(0) if kl.dim() > 1 else kl

    def kl_groups(self, posterior: PosteriorDistribution, z: torch.Tensor) -> torch.Tensor | None:
        """Each layer's KL, layer 1 first: KL(q(z_l | z_{l+1}, x) || p(z_l | z_{l+1})) at the drawn z_{l+1}
        (reading the Gaussians the draw used), and KL(q(z_L|x) || N(0, I)) for the top layer."""
        if not callable(getattr(posterior, "layer_pairs", None)):
            return None
        pairs = sorted(posterior.layer_pairs(z).items())
        # unvalidated (`as_distribution`): a diverged step's non-finite values reach the divergence check
        below = [kl_divergence(q.as_distribution(), p.as_distribution()) for _, (q, p) in pairs]
        top = posterior.up[-1].kl_to_standard_normal_per_dim().sum(-1).expand(z.shape[:-1])
        return torch.stack([*below, top], dim=-1)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        z = self.noise((n, self.latent_dims[-1]), generator)
        layers = [z]
        for level in reversed(range(len(self.latent_dims) - 1)):
            p = self.conditional_prior(level, z)
            z = p.loc + p.scale * self.noise(tuple(p.loc.shape), generator)
            layers.append(z)
        return torch.cat(layers[::-1], dim=-1)

    def _spread(self) -> torch.Tensor:
        with torch.no_grad():
            return self.sample(self.SPREAD_DRAWS, torch.Generator(self.origin.device).manual_seed(0))

    def mean(self) -> torch.Tensor:
        return self._spread().mean(0)

    def stddev(self) -> torch.Tensor:
        return self._spread().std(0)


class UniformCodes(Prior):
    """The VQ-VAE's prior during training (van den Oord et al. 2017): each position of the code grid is any of the
    codebook's K vectors with probability 1/K, so log p(z) = -positions * log K on the grids, and the KL from
    the posterior's point mass is that constant (the paper's log K, left out of its loss; counted here in the
    logged `kl` and in test/elbo and test/nll, which are then the paper's bound). For new images a prior learned
    over the grids after training is `sampler=code_transformer`. Needs `posterior=vq`; holds no weights of its
    own (it reads the posterior's codebook)."""

    def __init__(self, net: VAENet) -> None:
        posterior = net.posterior
        if not callable(getattr(posterior, "vectors", None)):
            name = type(posterior).__name__
            message = f"prior=codes is the prior of posterior=vq (a codebook), not of {name}: give posterior=vq too."
            raise VAELightningError(message)
        super().__init__(net)
        self.positions, self.n_codes = posterior.positions, posterior.n_codes
        self.vectors, self.grid = posterior.vectors, posterior.nearest  # bound methods: the codebook is saved once

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        return z.new_full(z.shape[:-1], -self.positions * math.log(self.n_codes))

    def kl(self, posterior: PosteriorDistribution, z: torch.Tensor, log_q: torch.Tensor | None = None) -> torch.Tensor:
        return posterior.code.new_full(posterior.code.shape[:-1], self.positions * math.log(self.n_codes))

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n grids of codebook vectors drawn uniformly (under a seed of `generator`, the run's random state kept)."""
        uniform = Categorical(logits=self.origin.new_zeros(self.positions, self.n_codes), validate_args=False)
        return self.vectors(sample_apart(uniform, n, generator, self.origin.device))

    def codebook(self) -> torch.Tensor:
        return self.vectors(torch.arange(self.n_codes, device=self.origin.device)[:, None])  # (K, code_dim)

    def mean(self) -> torch.Tensor:
        return self.codebook().mean(0).repeat(self.positions)

    def stddev(self) -> torch.Tensor:
        return self.codebook().std(0).repeat(self.positions)
