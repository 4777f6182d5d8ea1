"""Posteriors q(z|x): the part that turns the network's output, a diagonal Gaussian, into the distribution the
codes are drawn from. One class per config option (`conf/posterior/*.yaml`); each is an `nn.Module` that the
network carries (`VAENet.use_posterior`), so its weights are trained, saved and resumed with the network's.
What a posterior offers the rest of the package is `distributions.PosteriorDistribution`.

- `DiagonalGaussianPosterior` (default): the network's Gaussian itself (Kingma & Welling 2014).
- `InverseAutoregressiveFlow`: Kingma et al. 2016. The Gaussian's reparameterised sample z_0 passes through
  `n_steps` autoregressive steps, each a MADE (Germain et al. 2015) of `hidden_dims` over the code that gives a
  shift m and a gate g = sigmoid(s + gate_bias) per dimension, z_t = g * z_{t-1} + (1 - g) * m (the paper's
  numerically stable step); the order of the dimensions is reversed from one step to the next. Each step's
  Jacobian is triangular, so log q(z_T|x) = log N(z_0; loc, scale) - sum_t sum_d log g_td, exact, computed with
  the sample (the affine step, z_t = z_{t-1} exp(s) + m, likewise with sum s). The paper's context vector h,
  `h_dim` more outputs of the network's encoder, enters every MADE, so that each image gets a flow of its own;
  the image's Gaussian (loc, log scale) may too (`context`). The code the pictures and `encode` use is the flow at
  the Gaussian's mean.
- `VectorQuantiser`: van den Oord et al. 2017, the VQ-VAE's. The code is a grid of vectors, each replaced by the
  nearest of a codebook that follows moving averages of the encoder outputs assigned to it; q(z|x) is the point
  mass at that grid (with `prior=codes`, uniform over the grids, and `loss=vqvae`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from itertools import pairwise

import torch
from torch import nn
from torch.nn import functional as F

from vae_lightning.core import checks
from vae_lightning.core.errors import CheckpointError, ConfigValueError
from vae_lightning.distributions import DiagonalGaussian, PosteriorDistribution

SPREAD_DRAWS = 64  # draws (with a fixed seed) behind a flow posterior's `stddev`, the span of latent traversals


class Posterior(nn.Module):
    """Base class. `factorised`: the posterior is a diagonal Gaussian (closed-form KL to the standard normal,
    densities per dimension: the total-correlation estimates of `loss=tcvae` and `test/mutual_info` need them).
    `latent_dim`: the network's code size, given by the model when it builds the posterior. `context_dim`: how
    many values per image it asks of the network's encoder beside the Gaussian (a flow's context vector h); a
    posterior that asks for some is called with them, `posterior(gaussian, context)`."""

    factorised = False
    context_dim = 0

    def __init__(self, latent_dim: int | None = None) -> None:
        super().__init__()
        self.latent_dim = latent_dim

    def fit_to_prior(self, prior: nn.Module) -> None:
        """Called with the model's prior once both are built: a posterior that needs a kind of prior refuses others."""

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


class MADE(nn.Module):
    """A MADE (Germain et al. 2015) over inputs of the given `degrees` (a permutation of 1..D): output j of
    dimension d depends only on the inputs of lower degree, and on all of `context` (`context_dim` values per
    row, added to the first hidden layer and to the outputs; 0: none). `outputs_per_dim` blocks of D outputs, in
    the inputs' order. The layers into the outputs start at zero."""

    def __init__(
        self, degrees: torch.Tensor, hidden_dims: Sequence[int], outputs_per_dim: int, context_dim: int = 0
    ) -> None:
        super().__init__()
        d = len(degrees)
        layer_degrees = [degrees] + [torch.arange(h) % max(d - 1, 1) + 1 for h in hidden_dims]
        self.hidden = nn.ModuleList(
            MaskedLinear(after[:, None] >= before[None, :]) for before, after in pairwise(layer_degrees)
        )
        out_degrees = degrees.repeat(outputs_per_dim)
        self.last = MaskedLinear(out_degrees[:, None] > layer_degrees[-1][None, :])
        # the context reaches the first hidden layer and, as the first dimension sees no hidden unit, the outputs
        self.context = nn.Linear(context_dim, hidden_dims[0], bias=False) if context_dim else None
        self.context_out = nn.Linear(context_dim, len(out_degrees), bias=False) if context_dim else None
        for layer in (self.last, self.context_out):
            for p in layer.parameters() if layer is not None else ():
                nn.init.zeros_(p)

    def forward(self, z: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        h = z
        for i, layer in enumerate(self.hidden):
            h = layer(h)
            if i == 0 and self.context is not None:
                h = h + self.context(context)
            h = F.elu(h)
        return self.last(h) if self.context_out is None else self.last(h) + self.context_out(context)


class InverseAutoregressiveFlow(Posterior):
    """The IAF posterior: `n_steps` autoregressive steps of MADEs with `hidden_dims` (ELU) on the Gaussian's
    sample. `gated` (Kingma et al.'s numerically stable step): z <- g z + (1 - g) m with g = sigmoid(s +
    `gate_bias`), which can only contract (log-determinant sum log g), each step starting near z -> sigmoid(
    gate_bias) z; else the affine step z <- z exp(s) + m, which may also stretch (log-determinant sum s), each
    step starting at the identity. In both the last layers start at zero. Each step sees the image's context
    vector h (`h_dim` values the network's encoder outputs beside its Gaussian: the paper's), and with `context`
    the image's Gaussian too (its loc and log scale), so that the flow differs from image to image; with neither,
    one flow serves every image (pythae's VAE_IAF). Sizes by default: pythae's (2 blocks of 3 hidden layers of
    128)."""

    def __init__(
        self,
        latent_dim: int,
        n_steps: int = 2,
        hidden_dims: Sequence[int] = (128, 128, 128),
        gate_bias: float = 3.0,
        context: bool = True,
        gated: bool = True,
        h_dim: int = 0,
    ) -> None:
        super().__init__(checks.positive_int("latent_dim", latent_dim))
        self.n_steps = checks.positive_int("n_steps", n_steps)
        self.hidden_dims = checks.positive_int_list("hidden_dims", hidden_dims)
        self.gate_bias = checks.number("gate_bias", gate_bias)
        self.uses_context = checks.boolean("context", context)
        self.gated = checks.boolean("gated", gated)
        self.context_dim = checks.integer("h_dim", h_dim, low=0)
        forward_order = torch.arange(1, self.latent_dim + 1)
        made_context = (2 * self.latent_dim if self.uses_context else 0) + self.context_dim
        self.steps = nn.ModuleList(
            MADE(forward_order if t % 2 == 0 else forward_order.flip(0), self.hidden_dims, 2, made_context)
            for t in range(self.n_steps)
        )

    def transform(
        self, z: torch.Tensor, gaussian: DiagonalGaussian | None = None, h: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """z_T and sum_t sum_d log g_td (the log-determinant of the flow's Jacobian) for codes `z` (..., N,
        latent) of the images whose Gaussian is `gaussian` (needed with `context`) and whose context vector is
        `h` (N, h_dim; needed with `h_dim`); in the codes' precision also under mixed precision (the
        log-determinant sums many terms)."""
        parts = [gaussian.loc, gaussian.scale.log()] if self.uses_context else []
        parts += [h.to(z.dtype)] if self.context_dim else []
        context = torch.cat(parts, -1) if parts else None
        log_det = z.new_zeros(z.shape[:-1])
        with torch.autocast(z.device.type, enabled=False):
            for step in self.steps:
                shift, s = step(z, context).chunk(2, dim=-1)
                if self.gated:
                    gate = torch.sigmoid(s + self.gate_bias)
                    z = gate * z + (1 - gate) * shift
                    log_det = log_det + F.logsigmoid(s + self.gate_bias).sum(-1)
                else:
                    z = z * s.exp() + shift
                    log_det = log_det + s.sum(-1)
        return z, log_det

    def forward(self, gaussian: DiagonalGaussian, h: torch.Tensor | None = None) -> FlowedGaussian:
        return FlowedGaussian(gaussian, self, h)


@dataclass(frozen=True)
class FlowedGaussian:
    """A diagonal Gaussian pushed through an inverse autoregressive flow: a `PosteriorDistribution`. Its density
    is known at its own samples only (the flow's inverse is sequential), so it is given with them."""

    base: DiagonalGaussian
    flow: InverseAutoregressiveFlow
    h: torch.Tensor | None = None  # the images' context vectors, (N, h_dim), where the flow takes them

    @cached_property
    def code(self) -> torch.Tensor:
        """The flow at the Gaussian's mean (computed once: the test's reconstructions and statistics both ask)."""
        return self.flow.transform(self.base.loc, self.base, self.h)[0]

    @cached_property
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
        z, log_det = self.flow.transform(z, self.base, self.h)
        return z, log_q - log_det

    def draw(self, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return self.rsample_with_log_prob(generator)

    def rsample(self, generator: torch.Generator | None = None, k: int | None = None) -> torch.Tensor:
        return self.rsample_with_log_prob(generator, k)[0]


class VectorQuantiser(Posterior):
    """The VQ-VAE's posterior (van den Oord et al. 2017). The network's code z_e (its Gaussian's mean; the scale
    is not used) is a grid of `positions` = latent_dim / `code_dim` vectors of `code_dim` values, and each is
    replaced by the nearest (Euclidean) of `n_codes` codebook vectors: z_q. q(z|x) is the point mass at z_q (a
    one-hot categorical per position, log q = 0); the encoder's gradient passes straight through (z_e + sg(z_q -
    z_e)). Needs `prior=codes`, whose uniform p(z) makes the KL the constant positions * log n_codes.

    The codebook is no parameter: in training it follows exponential moving averages (`decay`) of the count n_i
    and the sum of the encoder outputs assigned to each code per batch, e_i = sum_i / count_i with the counts
    Laplace-smoothed by `epsilon` (the paper's appendix A.1). A code whose moving count is below `restart_below`
    (an average of assignments per batch) is restarted at a random encoder output of the batch with its count at
    `restart_below` (dead-code restarts, Dhariwal et al. 2020): a code kept in use at that rate stays, one that is
    not moves on. The first training batch starts every code so. Under DDP the counts and sums are added over the
    processes and the restarts are process 0's, so that every process holds the same codebook."""

    def __init__(
        self,
        latent_dim: int,
        n_codes: int = 128,
        code_dim: int = 5,
        decay: float = 0.99,
        restart_below: float = 1.0,
        epsilon: float = 1e-5,
    ) -> None:
        super().__init__(checks.positive_int("latent_dim", latent_dim))
        self.n_codes = checks.integer("n_codes", n_codes, low=2)
        self.code_dim = checks.positive_int("code_dim", code_dim)
        if self.latent_dim % self.code_dim:
            divisors = [d for d in range(1, self.latent_dim + 1) if self.latent_dim % d == 0]
            reason = f"must divide the code size {self.latent_dim} (model.latent_dim) into positions: one of {divisors}"
            raise ConfigValueError("code_dim", reason, code_dim)
        self.positions = self.latent_dim // self.code_dim
        self.decay = checks.number("decay", decay, low=0.0, high=1.0, high_inclusive=False)
        self.restart_below = checks.number("restart_below", restart_below, low=0.0, low_inclusive=False)
        self.epsilon = checks.number("epsilon", epsilon, low=0.0, low_inclusive=False)
        self.register_buffer("codebook", torch.randn(self.n_codes, self.code_dim))
        self.register_buffer("counts", torch.zeros(self.n_codes))  # moving averages: assignments per batch
        self.register_buffer("sums", torch.zeros(self.n_codes, self.code_dim))
        self.register_buffer("started", torch.tensor(False))  # the codebook was started from a training batch
        self.register_load_state_dict_post_hook(refuse_a_broken_codebook)

    def fit_to_prior(self, prior: nn.Module) -> None:
        if not callable(getattr(prior, "grid", None)):
            reason = "posterior=vq needs prior=codes (uniform over its code grids)"
            raise ConfigValueError("prior", reason, type(prior).__name__)

    def nearest(self, z: torch.Tensor) -> torch.Tensor:
        """The index of the nearest codebook vector at each position of codes `z` (N, latent): (N, positions)."""
        with torch.no_grad():
            flat = z.detach().float().reshape(-1, self.code_dim)
            distance = flat.pow(2).sum(-1, keepdim=True) - 2 * flat @ self.codebook.T + self.codebook.pow(2).sum(-1)
            return distance.argmin(-1).view(*z.shape[:-1], self.positions)

    def vectors(self, indices: torch.Tensor) -> torch.Tensor:
        """The codes of grids of codebook indices (N, positions): (N, latent)."""
        return self.codebook[indices].flatten(-2)

    @torch.no_grad()
    def update(self, z: torch.Tensor, indices: torch.Tensor) -> None:
        """One moving-average step of the codebook towards the encoder outputs `z` (N, latent) assigned to it."""
        flat = z.detach().float().reshape(-1, self.code_dim)
        one_hot = F.one_hot(indices.reshape(-1), self.n_codes).to(flat.dtype)  # (N * positions, n_codes)
        batch = torch.cat([one_hot.sum(0, keepdim=True).T, one_hot.T @ flat], dim=1)  # counts | sums per code
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        if distributed:
            torch.distributed.all_reduce(batch)
        self.counts.mul_(self.decay).add_(batch[:, 0], alpha=1 - self.decay)
        self.sums.mul_(self.decay).add_(batch[:, 1:], alpha=1 - self.decay)
        total = self.counts.sum()
        smoothed = (self.counts + self.epsilon) / (total + self.n_codes * self.epsilon) * total
        dead = (self.counts < self.restart_below) | ~self.started
        restarts = flat[torch.randint(len(flat), (self.n_codes,), device=flat.device)]
        if distributed:
            torch.distributed.broadcast(restarts, 0)
        self.codebook.copy_(torch.where(dead[:, None], restarts, self.sums / smoothed.clamp_min(1e-12)[:, None]))
        self.counts.copy_(torch.where(dead, self.restart_below, self.counts))
        self.sums.copy_(torch.where(dead[:, None], restarts * self.restart_below, self.sums))
        self.started.fill_(True)

    def forward(self, gaussian: DiagonalGaussian) -> QuantisedCode:
        z = gaussian.loc
        with torch.autocast(z.device.type, enabled=False):  # distances and averages in float32 under autocast too
            indices = self.nearest(z)
            quantised = self.vectors(indices).to(z.dtype)  # the codes as they were before this batch's step
            if self.training and torch.is_grad_enabled():
                self.update(z, indices)
        return QuantisedCode(z, quantised, indices, self.codebook)


def refuse_a_broken_codebook(quantiser: VectorQuantiser, incompatible_keys: object) -> None:
    """After a load: a codebook read from a file (someone else's checkpoint or exported folder) must be finite with
    counts of no fewer than 0 assignments, or the load fails here in one line, rather than every code later."""
    if quantiser.codebook.is_meta:
        return  # a skeleton without values (its sizes are checked before a load)
    finite = all(bool(torch.isfinite(t).all()) for t in (quantiser.codebook, quantiser.counts, quantiser.sums))
    if not (finite and bool((quantiser.counts >= 0).all())):
        raise CheckpointError(
            "The checkpoint's codebook (posterior=vq) is not finite or counts fewer than 0 uses of a code. The "
            "file is damaged or was altered; it was not loaded."
        )


@dataclass(frozen=True)
class QuantisedCode:
    """The point mass of a `VectorQuantiser` at a grid of codebook vectors: a `PosteriorDistribution` whose every
    draw is the grid (with the straight-through gradient) and whose log density there is 0."""

    continuous: torch.Tensor  # the encoder's output z_e, (N, latent)
    quantised: torch.Tensor  # z_q, (N, latent), with no gradient
    indices: torch.Tensor  # (N, positions)
    codebook: torch.Tensor  # (n_codes, code_dim)

    @property
    def n_codes(self) -> int:
        return len(self.codebook)

    @property
    def code(self) -> torch.Tensor:
        return self.quantised

    @property
    def stddev(self) -> torch.Tensor:
        """The codebook's standard deviation per dimension, for every row: the span of latent traversals."""
        return self.codebook.std(0).repeat(self.indices.shape[-1]).expand_as(self.quantised)

    @property
    def gaussian(self) -> None:
        return None

    def straight_through(self) -> torch.Tensor:
        return self.continuous + (self.quantised - self.continuous).detach()

    def draw(self, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.straight_through()
        return z, z.new_zeros(z.shape[:-1])

    def rsample_with_log_prob(
        self, generator: torch.Generator | None = None, k: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.straight_through()
        z = z if k is None else z.expand(k, *z.shape)
        return z, z.new_zeros(z.shape[:-1])

    def rsample(self, generator: torch.Generator | None = None, k: int | None = None) -> torch.Tensor:
        return self.rsample_with_log_prob(generator, k)[0]
