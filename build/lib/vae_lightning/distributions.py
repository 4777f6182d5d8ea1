"""What a posterior q(z|x) offers the rest of the package (`PosteriorDistribution`), and the diagonal Gaussian,
the networks' output and the default posterior: reparameterised samples (one or k per row) and its density.

The density and the closed-form KL to the standard normal are written out here rather than taken from
`torch.distributions.Normal`: they are the seed's formulas, so today's presets keep their numbers to the last
bit, and they are the only densities on the training step of the default model. `as_distribution()` gives the
same posterior as a `torch.distributions` object for everything else (mixture priors, KL by `kl_divergence`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import torch
from torch.distributions import Distribution, Independent, Normal

LOG_2PI = math.log(2.0 * math.pi)


class PosteriorDistribution(Protocol):
    """q(z|x) of a batch of N rows, as everything downstream asks it (the objectives, test/nll, the latent
    statistics, the pictures, the Python API and the demo):

    - `rsample_with_log_prob(generator, k)`: reparameterised codes, (N, latent) or with `k`, (k, N, latent),
      and log q(z|x) of each (nats, summed over the latent dimensions);
    - `draw(generator)`: one code per row for a training step, with its log q(z|x) where drawing gives it for
      free (a flow's), else None (the Gaussian's, whose closed-form KL needs none; `log_prob` gives it);
    - `code`: the one code per row that the pictures and `encode` use (the Gaussian's mean);
    - `stddev`: a spread per row and dimension, (N, latent), for latent traversals (the Gaussian's scale);
    - `gaussian`: the posterior itself where it is a diagonal Gaussian (closed-form KL to a standard normal,
      densities per dimension, which the total correlation estimates need), else None.
    """

    @property
    def code(self) -> torch.Tensor: ...

    @property
    def stddev(self) -> torch.Tensor: ...

    @property
    def gaussian(self) -> DiagonalGaussian | None: ...

    def rsample_with_log_prob(
        self, generator: torch.Generator | None = None, k: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]: ...

    def draw(self, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor | None]: ...


@dataclass(frozen=True)
class DiagonalGaussian:
    """N(loc, diag(scale^2)) over the last dimension. `scale` is the standard deviation. A
    `PosteriorDistribution`."""

    loc: torch.Tensor
    scale: torch.Tensor

    @property
    def code(self) -> torch.Tensor:
        return self.loc

    @property
    def stddev(self) -> torch.Tensor:
        return self.scale

    @property
    def gaussian(self) -> DiagonalGaussian:
        return self

    def draw(self, generator: torch.Generator | None = None) -> tuple[torch.Tensor, None]:
        return self.rsample(generator), None

    def rsample_with_log_prob(
        self, generator: torch.Generator | None = None, k: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.rsample(generator, k)
        return z, self.log_prob(z)

    def rsample(self, generator: torch.Generator | None = None, k: int | None = None) -> torch.Tensor:
        """Reparameterised samples z = loc + scale * eps, eps ~ N(0, I): one per row, shaped like `loc`, or with
        `k`, k per row in one batch, shape (k, *loc.shape)."""
        shape = self.loc.shape if k is None else (k, *self.loc.shape)
        if generator is None and k is None:
            eps = torch.randn_like(self.loc)  # also traceable by torch.compile with dynamic batch sizes
        elif generator is None:
            eps = torch.randn(shape, dtype=self.loc.dtype, device=self.loc.device)
        else:
            eps = torch.randn(shape, dtype=self.loc.dtype, device=self.loc.device, generator=generator)
        return self.loc + self.scale * eps

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log q(z) summed over the latent dimensions; one value per row of `z` (nats). `z` may carry leading
        sample dimensions, (k, batch, latent)."""
        return self.log_prob_per_dim(z).sum(-1)

    def log_prob_per_dim(self, z: torch.Tensor) -> torch.Tensor:
        """log q(z_d) of each latent dimension (nats), shaped like `z`."""
        standardised = (z - self.loc) / self.scale
        return -0.5 * standardised.pow(2) - self.scale.log() - 0.5 * LOG_2PI

    def kl_to_standard_normal_per_dim(self) -> torch.Tensor:
        """KL(q || N(0, I)) for each latent dimension, shape like `loc` (nats).

        Per dimension: 0.5 * (mu^2 + sigma^2 - 1) - log sigma, which is the seed's
        -0.5 * (1 + log sigma^2 - mu^2 - sigma^2).
        """
        return 0.5 * (self.loc.pow(2) + self.scale.pow(2) - 1.0) - self.scale.log()

    def as_distribution(self) -> Independent:
        """The same posterior as a `torch.distributions` object with event shape (latent,)."""
        return Independent(Normal(self.loc, self.scale, validate_args=False), 1, validate_args=False)

    def detach(self) -> DiagonalGaussian:
        return DiagonalGaussian(self.loc.detach(), self.scale.detach())


def precision_weighted(estimate: DiagonalGaussian, prior: DiagonalGaussian) -> DiagonalGaussian:
    """The product of two diagonal Gaussians, normalised: precisions add, means are weighted by their precisions
    (the ladder VAE's posterior of a layer from its bottom-up estimate and its top-down prior)."""
    precision_e, precision_p = estimate.scale.pow(-2), prior.scale.pow(-2)
    variance = 1.0 / (precision_e + precision_p)
    return DiagonalGaussian((estimate.loc * precision_e + prior.loc * precision_p) * variance, variance.sqrt())


def sample_apart(
    distribution: Distribution, n: int, generator: torch.Generator | None, device: torch.device
) -> torch.Tensor:
    """`n` draws of `distribution` (whose tensors are on `device`); with `generator`, under a seed taken from it
    inside a forked random state, so that the run's own random state is untouched."""
    if generator is None:
        return distribution.sample((n,))
    seed = int(torch.randint(2**62, (1,), generator=generator, device=generator.device))
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else [], device_type=device.type):
        torch.manual_seed(seed)
        return distribution.sample((n,))
