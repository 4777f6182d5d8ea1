"""The diagonal Gaussian posterior q(z|x) and its closed-form KL to the standard normal prior."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

LOG_2PI = math.log(2.0 * math.pi)


@dataclass(frozen=True)
class DiagonalGaussian:
    """N(loc, diag(scale^2)) over the last dimension. `scale` is the standard deviation."""

    loc: torch.Tensor
    scale: torch.Tensor

    def rsample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """One reparameterised sample per row: z = loc + scale * eps, eps ~ N(0, I)."""
        if generator is None:
            eps = torch.randn_like(self.loc)  # also traceable by torch.compile with dynamic batch sizes
        else:
            eps = torch.randn(self.loc.shape, dtype=self.loc.dtype, device=self.loc.device, generator=generator)
        return self.loc + self.scale * eps

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log q(z) summed over the latent dimensions; one value per row (nats)."""
        standardised = (z - self.loc) / self.scale
        return (-0.5 * standardised.pow(2) - self.scale.log() - 0.5 * LOG_2PI).sum(-1)

    def kl_to_standard_normal_per_dim(self) -> torch.Tensor:
        """KL(q || N(0, I)) for each latent dimension, shape like `loc` (nats).

        Per dimension: 0.5 * (mu^2 + sigma^2 - 1) - log sigma, which is the seed's
        -0.5 * (1 + log sigma^2 - mu^2 - sigma^2).
        """
        return 0.5 * (self.loc.pow(2) + self.scale.pow(2) - 1.0) - self.scale.log()


def standard_normal_log_prob(z: torch.Tensor) -> torch.Tensor:
    """log N(z; 0, I) summed over the last dimension (nats)."""
    return (-0.5 * z.pow(2) - 0.5 * LOG_2PI).sum(-1)
