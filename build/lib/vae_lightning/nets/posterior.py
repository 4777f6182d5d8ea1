"""How the encoder's second half of outputs becomes the posterior standard deviation.

One class per config option (`conf/model/posterior_scale/*.yaml`).
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from vae_lightning.core import checks


class SoftplusScale:
    """The seed's parameterisation: sigma = softplus(raw) + min_scale (the standard deviation itself)."""

    def __init__(self, min_scale: float = 1e-6) -> None:
        self.min_scale = checks.number("min_scale", min_scale, low=0.0, low_inclusive=False)

    def __call__(self, raw: torch.Tensor) -> torch.Tensor:
        return F.softplus(raw) + self.min_scale


class ExpHalfLogVariance:
    """The common parameterisation: raw is log sigma^2, so sigma = exp(raw / 2), floored at `min_scale`.

    Without the floor, exp(raw / 2) is exactly 0 in float32 once raw < -207, and an encoder trained with beta 0
    (the first half of a delayed ramp) drives raw down without bound, as nothing but the reconstruction sees
    sigma: the KL term becomes infinite, and beta * KL = 0 * inf is NaN, so the run diverges within a hundred
    steps on 64x64 photos. With the floor the KL stays finite (at most -log(min_scale) per dimension above the
    mean's share); `max_log_variance` likewise keeps sigma from overflowing.
    """

    def __init__(self, min_scale: float = 1e-6, max_log_variance: float = 40.0) -> None:
        self.min_scale = checks.number("min_scale", min_scale, low=0.0, low_inclusive=False)
        self.max_log_variance = checks.number("max_log_variance", max_log_variance)

    def __call__(self, raw: torch.Tensor) -> torch.Tensor:
        return torch.exp(0.5 * raw.clamp(max=self.max_log_variance)) + self.min_scale
