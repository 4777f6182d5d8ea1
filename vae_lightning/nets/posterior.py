"""How the encoder's second half of outputs becomes the posterior standard deviation.

One class per config option (`conf/model/posterior_scale/*.yaml`).
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from vae_lightning.run import checks


class SoftplusScale:
    """The seed's parameterisation: sigma = softplus(raw) + min_scale (the standard deviation itself)."""

    def __init__(self, min_scale: float = 1e-6) -> None:
        self.min_scale = checks.number("min_scale", min_scale, low=0.0, low_inclusive=False)

    def __call__(self, raw: torch.Tensor) -> torch.Tensor:
        return F.softplus(raw) + self.min_scale


class ExpHalfLogVariance:
    """The common parameterisation: raw is log sigma^2, so sigma = exp(raw / 2)."""

    def __call__(self, raw: torch.Tensor) -> torch.Tensor:
        return torch.exp(0.5 * raw)
