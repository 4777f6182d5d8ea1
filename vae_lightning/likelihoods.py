"""Decoder likelihoods p(x|z). Each returns log p(x|z) summed over all pixels: one value per sample, in nats.

The decoder outputs logits; `mean(logits)` is the image the likelihood is centred on.
One class per config option (`conf/loss/likelihood/*.yaml`).
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F

from vae_lightning.core import checks


class Bernoulli:
    """Independent Bernoulli pixels with p = sigmoid(logits).

    For binarised data this is a proper likelihood. For grey levels in [0, 1] it is the usual cross-entropy
    objective (not a normalised density over [0, 1]); its values are then not comparable with the literature.
    """

    def log_prob(self, x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        per_pixel = -F.binary_cross_entropy_with_logits(logits, x, reduction="none")
        return per_pixel.flatten(1).sum(-1)

    def mean(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits)


class Gaussian:
    """Independent Gaussian pixels with mean sigmoid(logits) and a fixed standard deviation `sigma`."""

    def __init__(self, sigma: float = 0.1) -> None:
        self.sigma = checks.number("sigma", sigma, low=0.0, low_inclusive=False)
        self._log_norm = math.log(self.sigma) + 0.5 * math.log(2.0 * math.pi)

    def log_prob(self, x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        standardised = (x - torch.sigmoid(logits)) / self.sigma
        per_pixel = -0.5 * standardised.pow(2) - self._log_norm
        return per_pixel.flatten(1).sum(-1)

    def mean(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits)
