"""What every VAE network shares: the reparameterised forward pass and the decoded image in [0, 1].

A network subclasses `VAENet` and implements `encode(x) -> DiagonalGaussian` and `decode(z) -> logits`
shaped like the input images; it sets `input_shape` and `latent_dim`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from vae_lightning.distributions import DiagonalGaussian


@dataclass(frozen=True)
class VAEOutput:
    posterior: DiagonalGaussian
    z: torch.Tensor
    logits: torch.Tensor


class VAENet(nn.Module):
    input_shape: tuple[int, ...]
    latent_dim: int

    def encode(self, x: torch.Tensor) -> DiagonalGaussian:
        raise NotImplementedError

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def decode_mean(self, z: torch.Tensor) -> torch.Tensor:
        """The decoded image in [0, 1] (the seed's sigmoid output)."""
        return torch.sigmoid(self.decode(z))

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> VAEOutput:
        posterior = self.encode(x)
        z = posterior.rsample(generator)
        return VAEOutput(posterior, z, self.decode(z))
