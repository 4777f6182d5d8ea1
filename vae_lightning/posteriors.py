"""Posteriors q(z|x): the part that turns the network's output, a diagonal Gaussian, into the distribution the
codes are drawn from. One class per config option (`conf/posterior/*.yaml`); each is an `nn.Module` that the
network carries (`VAENet.use_posterior`), so its weights are trained, saved and resumed with the network's.
What a posterior offers the rest of the package is `distributions.PosteriorDistribution`.

- `DiagonalGaussianPosterior` (default): the network's Gaussian itself (Kingma & Welling 2014).
- `InverseAutoregressiveFlow`: Kingma et al. 2016. The Gaussian's reparameterised sample z_0 passes through
  `n_steps` autoregressive steps, each a MADE (Germain et al. 2015) of `hidden_dims` over the code that gives a
  shift m and a gate g = sigmoid(s + gate_bias) per dimension, z_t = g * z_{t-1} + (1 - g) * m (the paper's
  numerically stable step); the order of the dimensions is reversed from one step to the next. The Jacobian is
  triangular, so log q(z_T|x) = log N(z_0; loc, scale) - sum_t sum_d log g_td, exact, computed with the sample.
  The MADE sees the code only (no context vector from the encoder), as pythae's VAE_IAF does. The code the
  pictures and `encode` use is the flow at the Gaussian's mean.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

import torch
from torch import nn
from torch.nn import functional as F

from vae_lightning.core import checks
from vae_lightning.distributions import DiagonalGaussian, PosteriorDistribution

SPREAD_DRAWS = 64  # draws (with a fixed seed) behind a flow posterior's `stddev`, the span of latent traversals


class Posterior(nn.Module):
    """Base class. `factorised`: the posterior is a diagonal Gaussian (closed-form KL to the standard normal,
    densities per dimension: the total-correlation estimates of `loss=tcvae` and `test/mutual_info` need them).
    `latent_dim`: the network's code size, given by the model when it builds the posterior."""

    factorised = False

    def __init__(self, latent_dim: int | None = None) -> None:
        super().__init__()
        self.latent_dim = latent_dim

    def forward(self, gaussian: DiagonalGaussian) -> PosteriorDistribution:
        raise NotImplementedError


class DiagonalGaussianPosterior(Posterior):
    """q(z|x) = N(loc, diag(scale^2)), the network's output as it is."""

    factorised = True

    def forward(self, gaussian: DiagonalGaussian) -> DiagonalGaussian:
        return gaussian


class MaskedLinear(nn.Linear):
    """A linear layer whose weight is multiplied by a fixed 0/1 mask (out, in): the MADE's connectivity."""

    def __init__(self, mask: torch.Tensor) -> None:
        super().__init__(mask.shape[1], mask.shape[0])
        self.register_buffer("mask", mask.float(), persistent=False)  # rebuilt from the settings, not saved

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.mask, self.bias)


def made(degrees: torch.Tensor, hidden_dims: Sequence[int], outputs_per_dim: int) -> nn.Sequential:
    """A MADE over inputs of the given `degrees` (a permutation of 1..D): output j of dimension d depends only
    on the inputs of lower degree. `outputs_per_dim` blocks of D outputs, in the inputs' order."""
    d = len(degrees)
    layer_degrees = [degrees] + [torch.arange(h) % max(d - 1, 1) + 1 for h in hidden_dims]
    layers: list[nn.Module] = []
    for before, after in pairwise(layer_degrees):
        layers += [MaskedLinear(after[:, None] >= before[None, :]), nn.ELU()]
    out_degrees = degrees.repeat(outputs_per_dim)
    last = MaskedLinear(out_degrees[:, None] > layer_degrees[-1][None, :])
    nn.init.zeros_(last.weight)  # each step starts as a fixed gate towards 0: z_t = sigmoid(gate_bias) * z_{t-1}
    nn.init.zeros_(last.bias)
    return nn.Sequential(*layers, last)


class InverseAutoregressiveFlow(Posterior):
    """The IAF posterior: `n_steps` gated autoregressive steps of MADEs with `hidden_dims` (ELU) on the
    Gaussian's sample; `gate_bias` starts each gate near sigmoid(gate_bias) (the paper: 1 or 2). The defaults
    are pythae's VAE_IAF (2 blocks of 3 hidden layers of 128)."""

    def __init__(
        self,
        latent_dim: int,
        n_steps: int = 2,
        hidden_dims: Sequence[int] = (128, 128, 128),
        gate_bias: float = 1.0,
    ) -> None:
        super().__init__(checks.positive_int("latent_dim", latent_dim))
        self.n_steps = checks.positive_int("n_steps", n_steps)
        self.hidden_dims = checks.positive_int_list("hidden_dims", hidden_dims)
        self.gate_bias = checks.number("gate_bias", gate_bias)
        forward_order = torch.arange(1, self.latent_dim + 1)
        self.steps = nn.ModuleList(
            made(forward_order if t % 2 == 0 else forward_order.flip(0), self.hidden_dims, 2)
            for t in range(self.n_steps)
        )

    def transform(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z_T and sum_t sum_d log g_td (the log-determinant of the flow's Jacobian) for codes `z` (..., latent)."""
        log_det = z.new_zeros(z.shape[:-1])
        for step in self.steps:
            shift, gate_logit = step(z).chunk(2, dim=-1)
            gate_logit = gate_logit + self.gate_bias
            gate = torch.sigmoid(gate_logit)
            z = gate * z + (1 - gate) * shift
            log_det = log_det + F.logsigmoid(gate_logit).sum(-1)
        return z, log_det

    def forward(self, gaussian: DiagonalGaussian) -> FlowedGaussian:
        return FlowedGaussian(gaussian, self)


@dataclass(frozen=True)
class FlowedGaussian:
    """A diagonal Gaussian pushed through an inverse autoregressive flow: a `PosteriorDistribution`. Its density
    is known at its own samples only (the flow's inverse is sequential), so it is given with them."""

    base: DiagonalGaussian
    flow: InverseAutoregressiveFlow

    @property
    def code(self) -> torch.Tensor:
        return self.flow.transform(self.base.loc)[0]

    @property
    def stddev(self) -> torch.Tensor:
        """The standard deviation of each dimension of q, estimated from `SPREAD_DRAWS` draws of a fixed seed."""
        generator = torch.Generator(self.base.loc.device).manual_seed(0)
        return self.rsample_with_log_prob(generator, SPREAD_DRAWS)[0].std(0)

    @property
    def gaussian(self) -> None:
        return None

    def rsample_with_log_prob(
        self, generator: torch.Generator | None = None, k: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        z, log_q = self.base.rsample_with_log_prob(generator, k)
        z, log_det = self.flow.transform(z)
        return z, log_q - log_det

    def draw(self, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return self.rsample_with_log_prob(generator)

    def rsample(self, generator: torch.Generator | None = None, k: int | None = None) -> torch.Tensor:
        return self.rsample_with_log_prob(generator, k)[0]
