"""Samplers: where the codes of new images come from (the pictures' `val/samples`, `TrainedVAE.sample`, the demo's
explore tab). One class per config option (`conf/sampler/*.yaml`); each is an `nn.Module` inside the model, so
what it fitted is saved in checkpoints (as tensors: they load with the weights, under the same checks).

- `PriorSampler` (default): codes drawn from the model's prior p(z).
- `GaussianMixtureSampler`: the ex-post density estimate of Ghosh et al. 2020: a mixture of `n_components`
  Gaussians with full covariances fitted (scikit-learn's EM) to the codes of the training images after
  training, where the aggregate posterior is rather than where the prior says it should be; it fills the "holes"
  a prior sample falls into. Until it is fitted (by the callback `callbacks.fit_sampler`: every few epochs, at
  the end of training and as the test starts) it draws from the prior.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from sklearn.mixture import GaussianMixture
from torch import nn
from torch.distributions import Categorical, MixtureSameFamily, MultivariateNormal

from vae_lightning.core import checks
from vae_lightning.core.errors import CheckpointError
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
