"""A convolutional VAE for square colour images (e.g. 64x64 faces): stride-2 conv blocks down to a 4x4 map,
a linear layer to the posterior, and the mirror image with transposed convolutions back up."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from itertools import pairwise

import torch
from torch import nn

from vae_lightning.core import checks
from vae_lightning.core.errors import ConfigValueError
from vae_lightning.distributions import DiagonalGaussian
from vae_lightning.nets.base import VAENet
from vae_lightning.nets.posterior import ExpHalfLogVariance


def group_norm(channels: int, groups: int = 8) -> nn.GroupNorm:
    """Group normalisation of `channels` in `groups` groups (fewer where `groups` does not divide them: their
    greatest common divisor)."""
    return nn.GroupNorm(math.gcd(checks.positive_int("norm.groups", groups), channels), channels)


def down_blocks(
    widths: Sequence[int], norm: Callable[[int], nn.Module], activation: Callable[[], nn.Module]
) -> nn.Sequential:
    """Stride-2 conv blocks (conv 4x4, `norm`, activation) between consecutive `widths` (the image's channels
    first), each halving the map's side, then the maps flattened per image."""
    layers: list[nn.Module] = []
    for c_in, c_out in pairwise(widths):
        layers += [nn.Conv2d(c_in, c_out, 4, stride=2, padding=1), norm(c_out), activation()]
    return nn.Sequential(*layers, nn.Flatten())


def up_blocks(
    widths: Sequence[int], norm: Callable[[int], nn.Module], activation: Callable[[], nn.Module]
) -> nn.Sequential:
    """The mirror of `down_blocks`: stride-2 transposed convolutions between consecutive `widths` (the
    decoder's outputs per pixel last), each doubling the map's side, with no norm or activation after the last."""
    layers: list[nn.Module] = []
    for i, (c_in, c_out) in enumerate(pairwise(widths)):
        layers.append(nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1))
        if i < len(widths) - 2:
            layers += [norm(c_out), activation()]
    return nn.Sequential(*layers)


def decode_maps(
    head: nn.Linear,
    convs: nn.Sequential,
    z: torch.Tensor,
    shape: tuple[int, int, int],
    memory_format: torch.memory_format,
) -> torch.Tensor:
    """`convs` over `head(z)` shaped as maps of `shape` (C, side, side) in `memory_format`, any leading dimensions
    of `z` kept: (..., outputs, H, W), in float32."""
    maps = head(z.reshape(-1, z.shape[-1])).unflatten(-1, shape).contiguous(memory_format=memory_format)
    params = convs(maps).float()
    return params.view(*z.shape[:-1], *params.shape[1:])


def start_at_mean_colour(convs: nn.Sequential, mean: torch.Tensor) -> None:
    """The last transposed convolution's bias (one per output channel) of each pixel's first output: the logit
    of each image channel's mean over its pixels (`mean`: C, H, W), so the untrained decoder draws it."""
    with torch.no_grad():
        convs[-1].bias[: mean.shape[0]] = torch.logit(mean.mean((1, 2)))


def map_side(input_shape: Sequence[int], channels: Sequence[int]) -> int:
    """The side of the smallest map of `down_blocks` over images of `input_shape` (C, H, W): H / 2 ** blocks;
    refused in one line naming `channels` where the images are not square or their side does not divide (with
    the first blocks that would fit, where some do: [32, 64] for MNIST's 28x28)."""
    _, height, width = input_shape
    factor = 2 ** len(channels)
    if height != width or height % factor:
        reason = f"needs square images whose side divides by {factor} (2 ** number of blocks); the images are "
        reason += f"{height}x{width}"
        fitting = next((n for n in range(len(channels) - 1, 0, -1) if height % 2**n == 0), 0)
        if height == width and fitting:
            reason += f", which {list(channels)[:fitting]} would fit"
        raise ConfigValueError("channels", reason, list(channels))
    return height // factor


class ConvVAE(VAENet):
    """Each entry of `channels` is one stride-2 conv block (conv 4x4, `norm`, activation), so the image
    side must be divisible by 2 ** len(channels). `norm` makes the normalisation layer of a block from its
    channels (batch norm by default; `group_norm` computes the same in training and eval). The decoder returns
    the likelihood's parameters, (N, outputs_per_pixel, C, H, W).

    `channels_last`: keep the weights and the feature maps in channels-last (NHWC) memory order, whose CPU
    convolution kernels (oneDNN) need no reordering of the maps; the same numbers up to float rounding.
    Posterior and decoder outputs are float32 under bfloat16 autocast too (`trainer.precision=bf16-mixed`),
    so every loss term is summed in float32.
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        channels: Sequence[int] = (32, 64, 128, 256),
        latent_dim: int = 128,
        activation: Callable[[], nn.Module] = nn.LeakyReLU,
        norm: Callable[[int], nn.Module] = nn.BatchNorm2d,
        posterior_scale: Callable[[torch.Tensor], torch.Tensor] | None = None,
        outputs_per_pixel: int = 1,
        channels_last: bool = False,
        output_bias_from_data: bool = False,
    ) -> None:
        super().__init__()
        self.input_shape = tuple(checks.positive_int_list("input_shape", input_shape))
        self.channels = checks.positive_int_list("channels", channels)
        self.latent_dim = checks.positive_int("latent_dim", latent_dim)
        self.posterior_scale = posterior_scale if posterior_scale is not None else ExpHalfLogVariance()
        self.outputs_per_pixel = checks.positive_int("outputs_per_pixel", outputs_per_pixel)
        self.output_bias_from_data = checks.boolean("output_bias_from_data", output_bias_from_data)
        channels_last = checks.boolean("channels_last", channels_last)
        in_channels = self.input_shape[0]
        self.map_side = map_side(self.input_shape, self.channels)
        widths = [in_channels, *self.channels]
        self.encoder_convs = down_blocks(widths, norm, activation)
        flat = self.channels[-1] * self.map_side**2
        self.encoder_head = nn.Linear(flat, 2 * self.latent_dim)
        self.decoder_head = nn.Linear(self.latent_dim, flat)
        self.decoder_convs = up_blocks([*reversed(widths[1:]), self.outputs_per_pixel * in_channels], norm, activation)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.to(memory_format=self.memory_format)

    def encode_with_context(self, x: torch.Tensor) -> tuple[DiagonalGaussian, torch.Tensor]:
        maps = self.encoder_convs(x.contiguous(memory_format=self.memory_format))
        return self.gaussian_and_context(self.encoder_head(maps).float())

    def widen_encoder(self, extra: int) -> None:
        self.encoder_head = nn.Linear(self.encoder_head.in_features, 2 * self.latent_dim + extra)

    def start_decoder_at(self, mean: torch.Tensor) -> None:
        start_at_mean_colour(self.decoder_convs, mean)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        shape = (self.channels[-1], self.map_side, self.map_side)
        params = decode_maps(self.decoder_head, self.decoder_convs, z, shape, self.memory_format)
        return params.unflatten(-3, (self.outputs_per_pixel, self.input_shape[0]))
