"""What every VAE network shares: the reparameterised forward pass.

A network subclasses `VAENet`, sets `input_shape`, `latent_dim` and `outputs_per_pixel` (how many values per
pixel its decoder returns: the likelihood's need, given by the model when it builds the network), and implements
`encode(x) -> DiagonalGaussian` and `decode(z)`, which returns the likelihood's parameters of shape
(N, outputs_per_pixel, *input_shape) for codes z of shape (N, latent_dim).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from vae_lightning.distributions import DiagonalGaussian


@dataclass(frozen=True)
class VAEOutput:
    posterior: DiagonalGaussian
    z: torch.Tensor  # one code per row, drawn from the posterior
    params: torch.Tensor  # the decoder's outputs at z: the likelihood's parameters


class VAENet(nn.Module):
    input_shape: tuple[int, ...]
    latent_dim: int
    outputs_per_pixel: int = 1

    def encode(self, x: torch.Tensor) -> DiagonalGaussian:
        raise NotImplementedError

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> VAEOutput:
        """Encode, draw one code per row, decode: what a single-sample objective needs (compiled with
        `compile=true`)."""
        posterior = self.encode(x)
        z = posterior.rsample(generator)
        return VAEOutput(posterior, z, self.decode(z))
