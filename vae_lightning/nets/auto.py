"""The default network: the one that fits the data's images, so that choosing a data set never has to choose a
network too (`dataset=faces_dogs` trains the convolutional VAE, `dataset=mnist` the seed's MLP)."""

from __future__ import annotations

from collections.abc import Sequence
from math import prod

from vae_lightning.core import checks
from vae_lightning.core.errors import VAELightningError
from vae_lightning.nets.base import VAENet
from vae_lightning.nets.conv import ConvVAE
from vae_lightning.nets.mlp import MLPVAE


def network_for_images(
    input_shape: Sequence[int],
    outputs_per_pixel: int = 1,
    latent_dim: int | None = None,
    hidden_dims: Sequence[int] = (512, 256),
    channels: Sequence[int] = (32, 64, 128, 256),
    max_mlp_values: int = 1024,
    channels_last: bool = True,
    output_bias_from_data: bool = False,
) -> VAENet:
    """The seed's MLP (`hidden_dims`, tanh, softplus sigma; `latent_dim` 2 unless given) for images of at most
    `max_mlp_values` values (8x8 digits, 28x28 MNIST), else the convolutional VAE (`channels`, LeakyReLU, exp
    sigma, `channels_last`; `latent_dim` 128 unless given) for photos. `model=mlp` or `model=conv` choose one
    outright, with all its keys."""
    max_mlp_values = checks.positive_int("max_mlp_values", max_mlp_values)
    # the keys of the network not chosen are checked too: a bad one would wait for the first data set of the other kind
    hidden_dims = checks.positive_int_list("hidden_dims", hidden_dims)
    channels = checks.positive_int_list("channels", channels)
    channels_last = checks.boolean("channels_last", channels_last)
    if latent_dim is not None:
        checks.positive_int("latent_dim", latent_dim)
    shared = {"outputs_per_pixel": outputs_per_pixel, "output_bias_from_data": output_bias_from_data}
    if prod(input_shape) <= max_mlp_values:
        return MLPVAE(input_shape, hidden_dims, latent_dim or 2, **shared)
    _, height, width = input_shape
    factor = 2 ** len(channels)
    if height != width or height % factor:
        sides = " or ".join(str(side) for side in (height // factor * factor, (height // factor + 1) * factor) if side)
        raise VAELightningError(
            f"The default network (`model=auto`) is the convolutional VAE for photos, which needs square images "
            f"whose side divides by {factor}, and these are {height}x{width}: choose dataset.image_size={sides}, "
            "or model=mlp."
        )
    return ConvVAE(input_shape, channels, latent_dim or 128, channels_last=channels_last, **shared)
