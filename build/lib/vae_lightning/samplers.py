"""Samplers: where the codes of new images come from (the pictures' `val/samples`, `TrainedVAE.sample`, the demo's
explore tab). One class per config option (`conf/sampler/*.yaml`); each is an `nn.Module` inside the model, so
what it fitted is saved in checkpoints (as tensors: they load with the weights, under the same checks).

- `PriorSampler` (default): codes drawn from the model's prior p(z).
- `GaussianMixtureSampler`: the ex-post density estimate of Ghosh et al. 2020: a mixture of `n_components`
  Gaussians with full covariances fitted (scikit-learn's EM) to the codes of the training images after
  training, where the aggregate posterior is rather than where the prior says it should be; it fills the "holes"
  a prior sample falls into. Until it is fitted (by the callback `callbacks.fit_sampler`: every few epochs, at
  the end of training and as the test starts) it draws from the prior.
- `CodeTransformer`: the VQ-VAE's second stage, a small causal transformer over its code grids, fitted to the
  training images' grids after training, like the mixture (with `prior=codes`).
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from sklearn.mixture import GaussianMixture
from torch import nn
from torch.distributions import Categorical, MixtureSameFamily, MultivariateNormal
from torch.nn import functional as F

from vae_lightning.core import checks
from vae_lightning.core.errors import CheckpointError, ConfigValueError
from vae_lightning.distributions import sample_apart

log = logging.getLogger(__name__)


class Sampler(nn.Module):
    """Base class. `fits_codes`: it is fitted to the training images' codes (`fit`) before it draws its own."""

    fits_codes = False

    def __init__(self, latent_dim: int | None = None) -> None:
        super().__init__()
        self.latent_dim = latent_dim

    def sample(self, n: int, prior: nn.Module, generator: torch.Generator | None = None) -> torch.Tensor:
        """`n` codes, (n, latent); `prior`: the model's prior (what a sampler not yet fitted draws from)."""
        return prior.sample(n, generator)

    def fit(self, codes: torch.Tensor) -> None:
        """Fit to the training images' codes (N, latent)."""

    def fit_to_prior(self, prior: nn.Module) -> None:
        """Called with the model's prior once both are built: a sampler of a kind of prior refuses others."""


class PriorSampler(Sampler):
    """Codes from the model's prior p(z)."""


class GaussianMixtureSampler(Sampler):
    """A mixture of `n_components` full-covariance Gaussians fitted to the training codes (Ghosh et al. 2020).
    Its weights, means and Cholesky factors are buffers of fixed shape; with fewer distinct codes than
    components the spare components get weight 0."""

    fits_codes = True

    def __init__(self, latent_dim: int, n_components: int = 10, seed: int = 0) -> None:
        super().__init__(checks.positive_int("latent_dim", latent_dim))
        self.n_components = checks.positive_int("n_components", n_components)
        self.seed = checks.non_negative_int("seed", seed)
        k, d = self.n_components, self.latent_dim
        self.register_buffer("fitted", torch.tensor(False))
        self.register_buffer("weights", torch.full((k,), 1.0 / k))
        self.register_buffer("means", torch.zeros(k, d))
        self.register_buffer("scale_tril", torch.eye(d).repeat(k, 1, 1))
        self.register_load_state_dict_post_hook(refuse_a_broken_fit)

    def is_a_mixture(self) -> bool:
        """Whether the buffers describe a mixture: finite, weights that are a distribution, Cholesky factors with a
        positive diagonal."""
        tensors = (self.weights, self.means, self.scale_tril)
        diagonals = torch.diagonal(self.scale_tril, dim1=-2, dim2=-1)
        finite = all(bool(torch.isfinite(tensor).all()) for tensor in tensors)
        weights_sum = float(self.weights.double().sum())
        return (
            finite and bool((self.weights >= 0).all()) and abs(weights_sum - 1) < 1e-3 and bool((diagonals > 0).all())
        )

    def fit(self, codes: torch.Tensor) -> None:
        """EM (scikit-learn, `seed`, covariances regularised by 1e-6) on the codes in float64; a refit starts
        from the previous fit (a few EM steps where the codes moved little)."""
        values = codes.detach().double().cpu().numpy()
        k = min(self.n_components, len(np.unique(values, axis=0)))
        start = {}
        if bool(self.fitted) and k == self.n_components:
            precision_tril = torch.linalg.inv(self.scale_tril.double().cpu()).transpose(-1, -2)
            precisions = (precision_tril @ precision_tril.transpose(-1, -2)).numpy()
            weights = self.weights.double().cpu().clamp_min(1e-12)
            start = {"weights_init": (weights / weights.sum()).numpy(), "means_init": self.means.double().cpu().numpy()}
            start["precisions_init"] = precisions
        mixture = GaussianMixture(k, covariance_type="full", reg_covar=1e-6, random_state=self.seed, **start)
        mixture.fit(values)
        weights = torch.zeros(self.n_components, dtype=torch.float64)
        means = torch.zeros(self.n_components, self.latent_dim, dtype=torch.float64)
        scale_tril = torch.eye(self.latent_dim, dtype=torch.float64).repeat(self.n_components, 1, 1)
        weights[:k] = torch.from_numpy(mixture.weights_)
        means[:k] = torch.from_numpy(mixture.means_)
        scale_tril[:k] = torch.linalg.cholesky(torch.from_numpy(mixture.covariances_))
        for buffer, value in ((self.weights, weights), (self.means, means), (self.scale_tril, scale_tril)):
            buffer.copy_(value.to(buffer.dtype))
        self.fitted.fill_(True)

    def distribution(self) -> MixtureSameFamily:
        components = MultivariateNormal(self.means, scale_tril=self.scale_tril, validate_args=False)
        return MixtureSameFamily(Categorical(probs=self.weights, validate_args=False), components, validate_args=False)

    def sample(self, n: int, prior: nn.Module, generator: torch.Generator | None = None) -> torch.Tensor:
        """From the mixture once fitted (with `generator`: under a seed taken from it, in a forked random state,
        so the run's own random state is untouched), else from the prior."""
        if not bool(self.fitted):
            return prior.sample(n, generator)
        return sample_apart(self.distribution(), n, generator, self.means.device)


def refuse_a_broken_fit(sampler: GaussianMixtureSampler, incompatible_keys: object) -> None:
    """After a load: a fit read from a file (someone else's checkpoint or exported folder) must be a mixture, or the
    load fails here in one line, rather than the first sample later."""
    if sampler.fitted.is_meta:
        return  # a skeleton without values (its sizes are checked before a load)
    if bool(sampler.fitted) and not sampler.is_a_mixture():
        raise CheckpointError(
            "The checkpoint's sampler (sampler=gmm) holds no valid mixture: its weights, means or scales are "
            "not finite, or not a distribution. The file is damaged or was altered; it was not loaded."
        )


class CodeTransformer(Sampler):
    """The VQ-VAE's second stage (van den Oord et al. 2017 fit a PixelCNN over the code grid; the grid here is the
    network's code cut into positions, a sequence, so a small causal transformer): p(grid) = prod_p p(i_p |
    i_<p), a decoder-only transformer (`layers` pre-norm layers of `width` with `heads` heads, no dropout) over
    the codebook indices, fitted by maximum likelihood (cross-entropy, mean over positions and grids) to the
    grids of the training images by `callbacks.fit_sampler`: `epochs` passes of Adam (`lr`, `batch_size`,
    shuffled with `seed`) per fit, each fit starting from the previous one. New codes are grids drawn position
    by position. Needs `prior=codes`; until it is fitted, it draws the prior's uniform grids. Its weights take no
    part in the model's training (they have no gradient there) and are saved with it."""

    fits_codes = True

    def __init__(
        self,
        latent_dim: int,
        width: int = 64,
        layers: int = 2,
        heads: int = 4,
        epochs: int = 10,
        batch_size: int = 128,
        lr: float = 1e-3,
        seed: int = 0,
    ) -> None:
        super().__init__(checks.positive_int("latent_dim", latent_dim))
        self.width, self.layers = checks.positive_int("width", width), checks.positive_int("layers", layers)
        self.heads = checks.positive_int("heads", heads)
        if self.width % self.heads:
            raise ConfigValueError("heads", f"must divide width={self.width}", heads)
        self.epochs = checks.positive_int("epochs", epochs)
        self.batch_size = checks.positive_int("batch_size", batch_size)
        self.lr = checks.number("lr", lr, low=0.0, low_inclusive=False)
        self.seed = checks.non_negative_int("seed", seed)
        self.register_buffer("fitted", torch.tensor(False))
        self.register_load_state_dict_post_hook(refuse_a_broken_transformer)

    def fit_to_prior(self, prior: nn.Module) -> None:
        """Sized by the prior's grid (positions, codebook size), which it learns to draw."""
        if not callable(getattr(prior, "grid", None)):
            reason = "draws the code grids of a VQ-VAE: it needs prior=codes (with posterior=vq)"
            raise ConfigValueError("sampler", reason, "code_transformer")
        self.positions, self.n_codes, self.grid = prior.positions, prior.n_codes, prior.grid
        self.embed = nn.Embedding(self.n_codes + 1, self.width)  # the last index: the start of a grid
        self.position = nn.Embedding(self.positions, self.width)
        layer = nn.TransformerEncoderLayer(
            self.width, self.heads, 4 * self.width, dropout=0.0, batch_first=True, norm_first=True
        )
        self.body = nn.TransformerEncoder(layer, self.layers, enable_nested_tensor=False)
        self.head = nn.Linear(self.width, self.n_codes)
        self.register_buffer("causal", nn.Transformer.generate_square_subsequent_mask(self.positions), persistent=False)
        self.requires_grad_(False)  # trained by `fit` only

    def logits(self, grid: torch.Tensor) -> torch.Tensor:
        """The logits of each position's index given the indices before it, (N, positions, n_codes)."""
        start = grid.new_full((len(grid), 1), self.n_codes)
        tokens = torch.cat([start, grid[:, :-1]], dim=1)
        h = self.embed(tokens) + self.position.weight
        return self.head(self.body(h, mask=self.causal, is_causal=True))

    def fit(self, codes: torch.Tensor) -> None:
        """Fit to the grids of the training images' codes (N, latent), also when called under inference mode."""
        generator = torch.Generator().manual_seed(self.seed)
        optimizer = torch.optim.Adam(self.parameters(), lr=self.lr)
        self.requires_grad_(True)
        try:
            with torch.inference_mode(False), torch.enable_grad():
                grids = self.grid(codes.to(self.head.weight.device).clone())
                for _ in range(self.epochs):
                    total = 0.0
                    for rows in torch.randperm(len(grids), generator=generator).split(self.batch_size):
                        batch = grids[rows.to(grids.device)]
                        loss = F.cross_entropy(self.logits(batch).flatten(0, 1), batch.flatten())
                        optimizer.zero_grad()
                        loss.backward()
                        optimizer.step()
                        total += float(loss.detach()) * len(rows)
        finally:
            self.requires_grad_(False)
            optimizer.zero_grad(set_to_none=True)
        self.fitted.fill_(True)
        log.info("code_transformer: %.3f nats per position on the training grids", total / len(grids))

    @torch.no_grad()
    def sample(self, n: int, prior: nn.Module, generator: torch.Generator | None = None) -> torch.Tensor:
        """Grids drawn position by position once fitted (with `generator`: under a seed taken from it), else the
        prior's."""
        if not bool(self.fitted):
            return prior.sample(n, generator)
        device = self.head.weight.device
        local = None
        if generator is not None:
            seed = int(torch.randint(2**62, (1,), generator=generator, device=generator.device))
            local = torch.Generator(device).manual_seed(seed)
        grid = torch.zeros(n, self.positions, dtype=torch.long, device=device)
        for position in range(self.positions):
            probabilities = self.logits(grid)[:, position].float().softmax(-1)
            grid[:, position] = torch.multinomial(probabilities, 1, generator=local).squeeze(1)
        return prior.vectors(grid)


def refuse_a_broken_transformer(sampler: CodeTransformer, incompatible_keys: object) -> None:
    """After a load: a fitted transformer read from a file must have finite weights (non-finite ones would make
    every draw fail), or the load fails here in one line."""
    if sampler.fitted.is_meta or not bool(sampler.fitted):
        return
    if not all(bool(torch.isfinite(p).all()) for p in sampler.parameters()):
        raise CheckpointError(
            "The checkpoint's sampler (sampler=code_transformer) has weights that are not finite. The file is "
            "damaged or was altered; it was not loaded."
        )
