"""The seed's fully connected VAE: encoder [n_input, hidden..., 2 * latent], mirrored decoder."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import pairwise
from math import prod

import torch
from torch import nn

from vae_lightning.core import checks
from vae_lightning.distributions import DiagonalGaussian
from vae_lightning.nets.base import VAENet
from vae_lightning.nets.posterior import SoftplusScale


def _stack(sizes: Sequence[int], activation: Callable[[], nn.Module]) -> nn.Sequential:
    """Linear layers between consecutive sizes, the activation after every layer but the last."""
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(pairwise(sizes)):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(activation())
    return nn.Sequential(*layers)


class MLPVAE(VAENet):
    """A VAE whose decoder returns the likelihood's parameters (for the seed's Bernoulli or Gaussian: the logits
    before its final sigmoid); the likelihood (in the loss) turns them into pixel means."""

    def __init__(
        self,
        input_shape: Sequence[int],
        hidden_dims: Sequence[int] = (512, 256),
        latent_dim: int = 2,
        activation: Callable[[], nn.Module] = nn.Tanh,
        posterior_scale: Callable[[torch.Tensor], torch.Tensor] | None = None,
        outputs_per_pixel: int = 1,
        output_bias_from_data: bool = False,
    ) -> None:
        super().__init__()
        self.input_shape = tuple(checks.positive_int_list("input_shape", input_shape))
        self.hidden_dims = checks.positive_int_list("hidden_dims", hidden_dims)
        self.latent_dim = checks.positive_int("latent_dim", latent_dim)
        self.posterior_scale = posterior_scale if posterior_scale is not None else SoftplusScale()
        self.outputs_per_pixel = checks.positive_int("outputs_per_pixel", outputs_per_pixel)
        self.output_bias_from_data = checks.boolean("output_bias_from_data", output_bias_from_data)
        n_input = prod(self.input_shape)
        self.encoder = _stack([n_input, *self.hidden_dims, 2 * self.latent_dim], activation)
        self.decoder = _stack(
            [self.latent_dim, *reversed(self.hidden_dims), self.outputs_per_pixel * n_input], activation
        )

    def encode_with_context(self, x: torch.Tensor) -> tuple[DiagonalGaussian, torch.Tensor]:
        return self.gaussian_and_context(self.encoder(x.flatten(1)).float())  # float32 under bfloat16 autocast too

    def widen_encoder(self, extra: int) -> None:
        self.encoder[-1] = nn.Linear(self.encoder[-1].in_features, 2 * self.latent_dim + extra)

    def start_decoder_at(self, mean: torch.Tensor) -> None:
        """The last layer's bias of each pixel's first output: logit(mean) per pixel."""
        with torch.no_grad():
            self.decoder[-1].bias.view(self.outputs_per_pixel, -1)[0] = torch.logit(mean.flatten())

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """The likelihood's parameters, (N, outputs_per_pixel, *input_shape)."""
        return self.decoder(z).float().view(z.shape[0], self.outputs_per_pixel, *self.input_shape)
