"""A network of one's own, used from a config folder of one's own (see README.md, "Your own configs and classes").

`ResidualMLPVAE` is a fully connected VAE whose hidden layers are residual blocks of one width: each adds its
input back, x + f(x), so a deeper stack trains as easily as a shallow one.
"""

from __future__ import annotations

from collections.abc import Sequence
from math import prod

import torch
from torch import nn

from vae_lightning.distributions import DiagonalGaussian
from vae_lightning.nets.base import VAENet


class Residual(nn.Module):
    """x + Linear(Tanh(Linear(x))), one width in and out."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.block = nn.Sequential(nn.Linear(width, width), nn.Tanh(), nn.Linear(width, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


class ResidualMLPVAE(VAENet):
    """Encoder: pixels -> width -> `depth` residual blocks -> (mean, scale) of the posterior; the decoder mirrors it
    and returns the likelihood's parameters, `outputs_per_pixel` per pixel (the model passes how many its
    likelihood needs), shaped (N, outputs_per_pixel, *image shape)."""

    def __init__(
        self,
        input_shape: Sequence[int],
        width: int = 128,
        depth: int = 2,
        latent_dim: int = 8,
        outputs_per_pixel: int = 1,
    ) -> None:
        super().__init__()
        self.input_shape = tuple(input_shape)
        self.latent_dim = latent_dim
        self.outputs_per_pixel = outputs_per_pixel
        n_pixels = prod(self.input_shape)
        self.encoder = nn.Sequential(
            nn.Linear(n_pixels, width), *(Residual(width) for _ in range(depth)), nn.Linear(width, 2 * latent_dim)
        )
        self.decoder = nn.Sequential(
            nn.Linear(latent_dim, width),
            *(Residual(width) for _ in range(depth)),
            nn.Linear(width, outputs_per_pixel * n_pixels),
        )

    def encode(self, x: torch.Tensor) -> DiagonalGaussian:
        loc, raw_scale = self.encoder(x.flatten(1)).chunk(2, dim=-1)
        return DiagonalGaussian(loc, nn.functional.softplus(raw_scale) + 1e-4)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z).view(z.shape[0], self.outputs_per_pixel, *self.input_shape)
