"""A hierarchical VAE with top-down inference: the ladder VAE of Sønderby et al. (2016), fully connected.

Several stochastic layers z_1 (nearest the data) ... z_L. The generative model is top-down:
p(z_L) = N(0, I), p(z_l | z_{l+1}) a diagonal Gaussian given by a small network, p(x | z_1) the decoder. A
bottom-up pass over x gives each layer an estimate N(mu_hat_l, sigma_hat_l); the posterior is then drawn top-down
in the generative model's order, q(z_L | x) = N(mu_hat_L, sigma_hat_L) and q(z_l | z_{l+1}, x) the
precision-weighted mean of the layer's estimate and its prior p(z_l | z_{l+1}), so inference and generation share
the top-down networks (the paper's reason it trains deeper hierarchies than a bottom-up encoder: the prior
corrects the estimate layer by layer). The paper's choice over NVAE's residual cells here: it is the form that
fits this package's fully connected MNIST set-up and trains in minutes on a CPU.

A code is the layers side by side, [z_1, ..., z_L] (`latent_dims` wide each); the KL is log q(z|x) - log p(z) of
the drawn code, the sum over the layers (a Monte Carlo estimate, as for a flow posterior). Use it with
`prior=ladder` (the top-down prior, `priors.LadderPrior`); another prior is refused.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from math import prod
from typing import Any

import torch
from torch import nn

from vae_lightning.core import checks
from vae_lightning.core.errors import ConfigValueError, VAELightningError
from vae_lightning.distributions import DiagonalGaussian, precision_weighted
from vae_lightning.nets.base import VAENet
from vae_lightning.nets.conv import decode_maps, down_blocks, map_side, start_at_mean_colour, up_blocks
from vae_lightning.nets.mlp import _stack
from vae_lightning.nets.posterior import SoftplusScale
from vae_lightning.posteriors import DiagonalGaussianPosterior, Posterior


@dataclass(frozen=True)
class LadderPosterior:
    """q(z|x) of a ladder network, drawn top-down (a `distributions.PosteriorDistribution`). `up`: each layer's
    bottom-up estimate, layer 1 first; `conditional_prior(l, z_above)`: the network's p(z_l | z_{l+1})."""

    up: tuple[DiagonalGaussian, ...]
    conditional_prior: Callable[[int, torch.Tensor], DiagonalGaussian] = field(repr=False)
    # the last draw's code and, for each layer below the top, the (q, p) it was drawn with (see `layer_pairs`)
    drawn: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def rsample_with_log_prob(
        self, generator: torch.Generator | None = None, k: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Codes [z_1, ..., z_L] drawn layer by layer from the top, and log q(z|x), the sum of the layers' terms."""
        return self._draw(generator, k, with_log_q=True)

    def _draw(
        self, generator: torch.Generator | None, k: int | None, with_log_q: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        z = self.up[-1].rsample(generator, k)
        log_q, layers, pairs = self.up[-1].log_prob(z) if with_log_q else None, [z], {}
        for level in reversed(range(len(self.up) - 1)):
            q, p = self.layer(level, z)
            z = q.rsample(generator)  # shaped like q (k rows per image where the layer above has them)
            log_q = log_q + q.log_prob(z) if with_log_q else None
            layers.append(z)
            pairs[level] = (q, p)
        code = torch.cat(layers[::-1], dim=-1)
        self.drawn.update(code=code, pairs=pairs)
        return code, log_q

    def layer(self, level: int, z_above: torch.Tensor) -> tuple[DiagonalGaussian, DiagonalGaussian]:
        """(q(z_l | z_{l+1}, x), p(z_l | z_{l+1})) of layer `level` (from 0, nearest the data) given the layer above."""
        p = self.conditional_prior(level, z_above)
        return precision_weighted(self.up[level], p), p

    def layer_pairs(self, z: torch.Tensor) -> dict[int, tuple[DiagonalGaussian, DiagonalGaussian]]:
        """{level: (q(z_l | z_{l+1}, x), p(z_l | z_{l+1}))} of each layer below the top, given code z: those the
        draw that returned z used (not computed again: the KL of a training step reads them), else computed."""
        if self.drawn.get("code") is z:
            return self.drawn["pairs"]
        layers = z.split([gaussian.loc.shape[-1] for gaussian in self.up], dim=-1)
        return {level: self.layer(level, layers[level + 1]) for level in range(len(self.up) - 1)}

    def draw(self, generator: torch.Generator | None = None) -> tuple[torch.Tensor, None]:
        """One code per row for a training step, without log q(z|x): the ladder's KL is per layer in closed form
        (`priors.LadderPrior.kl`), from the Gaussians this draw used."""
        return self._draw(generator, None, with_log_q=False)

    @cached_property
    def _mean_path(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The code of each layer's mean given the layers above at theirs, and those layers' scales."""
        z, scale = self.up[-1].loc, self.up[-1].scale
        codes, scales = [z], [scale]
        for level in reversed(range(len(self.up) - 1)):
            q = self.layer(level, z)[0]
            z = q.loc
            codes.append(q.loc)
            scales.append(q.scale)
        return torch.cat(codes[::-1], dim=-1), torch.cat(scales[::-1], dim=-1)

    @property
    def code(self) -> torch.Tensor:
        """The pictures' and `encode`'s code: each layer at its mean given the layers above at theirs."""
        return self._mean_path[0]

    @property
    def stddev(self) -> torch.Tensor:
        return self._mean_path[1]

    @property
    def gaussian(self) -> None:
        return None  # not a diagonal Gaussian: the layers depend on each other


class LadderVAE(VAENet):
    """The ladder VAE (see the module docstring). `hidden_dims`: the width of each stochastic layer's networks,
    layer 1 first (its bottom-up block, its top-down block, and for layer 1 the decoder are `block_depth`
    layers of that width); `latent_dims`: each layer's code size, layer 1 first; `latent_dim`, where given, the
    size of layer 1 (the one-layer VAE's key: a preset that sets it, such as `experiment=mnist_nll`, sets the
    layer nearest the data, with its width)."""

    def __init__(
        self,
        input_shape: Sequence[int],
        hidden_dims: Sequence[int] = (512, 256),
        latent_dims: Sequence[int] = (32, 8),
        latent_dim: int | None = None,
        block_depth: int = 2,
        activation: Callable[[], nn.Module] = nn.Tanh,
        posterior_scale: Callable[[torch.Tensor], torch.Tensor] | None = None,
        outputs_per_pixel: int = 1,
        output_bias_from_data: bool = False,
    ) -> None:
        super().__init__()
        problems = checks.Problems()
        self.input_shape = tuple(problems.check(checks.positive_int_list, "input_shape", input_shape))
        self.hidden_dims = problems.check(checks.positive_int_list, "hidden_dims", hidden_dims)
        self.latent_dims = problems.check(checks.positive_int_list, "latent_dims", latent_dims)
        depth = problems.check(checks.positive_int, "block_depth", block_depth)
        self.outputs_per_pixel = problems.check(checks.positive_int, "outputs_per_pixel", outputs_per_pixel)
        self.output_bias_from_data = problems.check(checks.boolean, "output_bias_from_data", output_bias_from_data)
        if latent_dim is not None:
            self.latent_dims = [problems.check(checks.positive_int, "latent_dim", latent_dim), *self.latent_dims[1:]]
        problems.raise_if_any()
        if len(self.hidden_dims) != len(self.latent_dims) or len(self.latent_dims) < 2:
            reason = f"must give one width per stochastic layer (latent_dims has {len(self.latent_dims)}), two or more"
            raise ConfigValueError("hidden_dims", reason, list(self.hidden_dims))  # the model places it: model.*
        self.latent_dim = sum(self.latent_dims)
        self.posterior_scale = posterior_scale if posterior_scale is not None else SoftplusScale()
        first_block, first_width = self.first_block(depth, activation)
        features = [first_width, *self.hidden_dims[1:]]  # what each layer's head reads
        self.up = nn.ModuleList(  # each block ends in the activation too: the next block and the head read it
            [
                first_block,
                *(
                    nn.Sequential(_stack([n_in, *[width] * depth], activation), activation())
                    for n_in, width in zip(features[:-1], self.hidden_dims[1:], strict=True)
                ),
            ]
        )
        heads = zip(features, self.latent_dims, strict=True)
        self.up_heads = nn.ModuleList(nn.Linear(width, 2 * size) for width, size in heads)
        self.down = nn.ModuleList(
            _stack([self.latent_dims[level + 1], *[width] * depth, 2 * self.latent_dims[level]], activation)
            for level, width in enumerate(self.hidden_dims[:-1])
        )
        self.build_decoder(depth, activation)

    def first_block(self, depth: int, activation: Callable[[], nn.Module]) -> tuple[nn.Module, int]:
        """The bottom-up block from the (flattened) images to layer 1's features, and their number: `block_depth`
        linear layers of `hidden_dims[0]` units."""
        width = self.hidden_dims[0]
        return nn.Sequential(_stack([prod(self.input_shape), *[width] * depth], activation), activation()), width

    def build_decoder(self, depth: int, activation: Callable[[], nn.Module]) -> None:
        """The decoder from layer 1: `block_depth` linear layers of `hidden_dims[0]` units, then the outputs."""
        n_out = self.outputs_per_pixel * prod(self.input_shape)
        self.decoder = _stack([self.latent_dims[0], *[self.hidden_dims[0]] * depth, n_out], activation)

    def first_input(self, x: torch.Tensor) -> torch.Tensor:
        """The images as the first bottom-up block reads them: one flat row each."""
        return x.flatten(1)

    def use_posterior(self, posterior: Posterior) -> None:
        if not isinstance(posterior, DiagonalGaussianPosterior):
            reason = "is drawn top-down by model=ladder itself: leave the posterior at its default (gaussian)"
            raise ConfigValueError("posterior", reason, type(posterior).__name__)
        super().use_posterior(posterior)

    def fit_to_prior(self, prior: nn.Module) -> None:
        if not callable(getattr(prior, "conditional_prior", None)):
            raise VAELightningError(
                f"model=ladder needs its top-down prior, not {type(prior).__name__}: give prior=ladder too "
                "(experiment=mnist_ladder sets both)."
            )

    def _gaussian(self, raw: torch.Tensor) -> DiagonalGaussian:
        loc, raw_scale = raw.float().chunk(2, dim=-1)
        return DiagonalGaussian(loc, self.posterior_scale(raw_scale))

    def bottom_up(self, x: torch.Tensor) -> tuple[DiagonalGaussian, ...]:
        """Each layer's estimate N(mu_hat_l, sigma_hat_l) from x, layer 1 first."""
        h, estimates = self.first_input(x), []
        for block, head in zip(self.up, self.up_heads, strict=True):
            h = block(h)
            estimates.append(self._gaussian(head(h)))
        return tuple(estimates)

    def conditional_prior(self, level: int, z_above: torch.Tensor) -> DiagonalGaussian:
        """p(z_level | z_{level+1}) (levels from 0, the layer nearest the data)."""
        return self._gaussian(self.down[level](z_above))

    def infer(self, x: torch.Tensor) -> LadderPosterior:
        return LadderPosterior(self.bottom_up(x), self.conditional_prior)

    def encode(self, x: torch.Tensor) -> DiagonalGaussian:
        """The posterior's mean path as a Gaussian (code and spread per dimension); q(z|x) itself is `infer`."""
        posterior = self.infer(x)
        return DiagonalGaussian(posterior.code, posterior.stddev)

    def complete(self, z: torch.Tensor) -> torch.Tensor:
        """Each layer below the top set to its top-down prior's mean given the layer above."""
        layers = self.split(z)
        for level in reversed(range(len(layers) - 1)):
            layers[level] = self.conditional_prior(level, layers[level + 1]).loc
        return torch.cat(layers, dim=-1)

    def split(self, z: torch.Tensor) -> list[torch.Tensor]:
        """A code's layers, layer 1 first."""
        return list(z.split(list(self.latent_dims), dim=-1))

    def start_decoder_at(self, mean: torch.Tensor) -> None:
        with torch.no_grad():
            self.decoder[-1].bias.view(self.outputs_per_pixel, -1)[0] = torch.logit(mean.flatten())

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """The likelihood's parameters from the code's first layer, (N, outputs_per_pixel, *input_shape)."""
        first = self.split(z)[0]
        out = self.decoder(first).float()
        return out.view(*first.shape[:-1], self.outputs_per_pixel, *self.input_shape)


class ConvLadderVAE(LadderVAE):
    """The ladder VAE on square colour images (the 64x64 faces set-up): the bottom-up path to layer 1 is the
    conv VAE's stride-2 blocks (`channels`, `norm`, as in `nets.conv.ConvVAE`) and the decoder from layer 1 their
    mirror image; the layers above are fully connected, as in `LadderVAE`. `hidden_dims`: one width per stochastic
    layer, layer 1 first: `hidden_dims[0]` is that of the top-down network into layer 1, the others those of each
    layer's bottom-up and top-down blocks. `channels_last` as in `ConvVAE`."""

    def __init__(
        self,
        input_shape: Sequence[int],
        channels: Sequence[int] = (32, 64, 128, 256),
        hidden_dims: Sequence[int] = (256, 256),
        latent_dims: Sequence[int] = (128, 32),
        latent_dim: int | None = None,
        block_depth: int = 1,
        activation: Callable[[], nn.Module] = nn.LeakyReLU,
        norm: Callable[[int], nn.Module] = nn.BatchNorm2d,
        posterior_scale: Callable[[torch.Tensor], torch.Tensor] | None = None,
        outputs_per_pixel: int = 1,
        channels_last: bool = False,
        output_bias_from_data: bool = False,
    ) -> None:
        # read by `first_block` and `build_decoder`, which the ladder's constructor calls
        self.channels = checks.positive_int_list("channels", channels)
        self.map_side = map_side(input_shape, self.channels)
        self.norm = norm
        channels_last = checks.boolean("channels_last", channels_last)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        super().__init__(
            input_shape,
            hidden_dims,
            latent_dims,
            latent_dim,
            block_depth,
            activation,
            posterior_scale,
            outputs_per_pixel,
            output_bias_from_data,
        )
        self.to(memory_format=self.memory_format)

    def first_block(self, depth: int, activation: Callable[[], nn.Module]) -> tuple[nn.Module, int]:
        """The conv blocks from the images to layer 1's features, the last map flattened."""
        block = down_blocks([self.input_shape[0], *self.channels], self.norm, activation)
        return block, self.channels[-1] * self.map_side**2

    def build_decoder(self, depth: int, activation: Callable[[], nn.Module]) -> None:
        """A linear layer from layer 1 to the smallest map, then the transposed conv blocks up to the outputs."""
        self.decoder_head = nn.Linear(self.latent_dims[0], self.channels[-1] * self.map_side**2)
        widths = [*reversed(self.channels), self.outputs_per_pixel * self.input_shape[0]]
        self.decoder_convs = up_blocks(widths, self.norm, activation)

    def first_input(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=self.memory_format)

    def start_decoder_at(self, mean: torch.Tensor) -> None:
        start_at_mean_colour(self.decoder_convs, mean)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """The likelihood's parameters from the code's first layer, (..., outputs_per_pixel, C, H, W)."""
        first = self.split(z)[0]
        shape = (self.channels[-1], self.map_side, self.map_side)
        params = decode_maps(self.decoder_head, self.decoder_convs, first, shape, self.memory_format)
        return params.unflatten(-3, (self.outputs_per_pixel, self.input_shape[0]))
