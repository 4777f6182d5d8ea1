"""Training objectives. Each states its reduction; `beta` weights the KL term.

- `ELBO`   (default): per-sample negative ELBO in nats. recon = -log p(x|z) summed over pixels,
  kl = KL(q(z|x) || N(0, I)) summed over latent dims, both averaged over the batch;
  loss = recon + beta * kl. With beta = 1 the loss is the negative ELBO per sample.
- `SeedLoss`: exactly the seed's reduction. recon = squared error averaged over the batch AND the pixels
  (of the sigmoid image), kl = KL summed over the batch AND the latent dims; loss = recon + beta * kl.
  The per-sample ELBO's beta equals the seed's beta times n_pixels times batch_size.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vae_lightning.likelihoods import Bernoulli
from vae_lightning.nets.base import VAEOutput


@dataclass(frozen=True)
class LossTerms:
    loss: torch.Tensor
    recon: torch.Tensor
    kl: torch.Tensor
    beta: float
    per_sample: torch.Tensor  # the loss of each sample in the batch, in this objective's units


class ELBO:
    """Negative ELBO per sample (nats), averaged over the batch."""

    def __init__(self, likelihood: Bernoulli | None = None) -> None:
        self.likelihood = likelihood if likelihood is not None else Bernoulli()

    def __call__(self, x: torch.Tensor, out: VAEOutput, beta: float) -> LossTerms:
        recon_per_sample = -self.likelihood.log_prob(x, out.logits)
        kl_per_sample = out.posterior.kl_to_standard_normal_per_dim().sum(-1)
        per_sample = recon_per_sample + beta * kl_per_sample
        return LossTerms(per_sample.mean(), recon_per_sample.mean(), kl_per_sample.mean(), beta, per_sample.detach())

    def mean(self, logits: torch.Tensor) -> torch.Tensor:
        return self.likelihood.mean(logits)


class SeedLoss:
    """The seed's objective: MSE averaged over batch and pixels + beta * KL summed over batch and dims."""

    def __call__(self, x: torch.Tensor, out: VAEOutput, beta: float) -> LossTerms:
        image = torch.sigmoid(out.logits)
        squared_error_per_sample = (image - x).pow(2).flatten(1).mean(-1)
        kl_per_sample = out.posterior.kl_to_standard_normal_per_dim().sum(-1)
        recon = squared_error_per_sample.mean()
        kl = kl_per_sample.sum()
        per_sample = squared_error_per_sample + beta * kl_per_sample
        return LossTerms(recon + beta * kl, recon, kl, beta, per_sample.detach())

    def mean(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits)
