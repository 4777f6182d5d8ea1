"""Optimizer factories, configured with `_partial_: true` and called with the parameters."""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence

import torch

from vae_lightning.core import checks
from vae_lightning.core.errors import ConfigValueError


def adam(
    params: Iterable[torch.nn.Parameter],
    lr: float = 1e-3,
    betas: Sequence[float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    fused: bool | None = True,
) -> torch.optim.Adam:
    """Adam; `fused=True` uses the fused kernel where this torch supports it on the parameters' device.

    On the CPU the fused step is several times faster for small MLPs. Where it is unsupported the default
    implementation is used, with a warning.
    """
    params = list(params)
    lr = checks.number("lr", lr, low=0.0, low_inclusive=False)
    if len(betas) != 2:
        raise ConfigValueError("betas", "must be two numbers in [0, 1), e.g. [0.9,0.999]", betas)
    beta1 = checks.number("betas", betas[0], low=0.0, high=1.0, high_inclusive=False)
    beta2 = checks.number("betas", betas[1], low=0.0, high=1.0, high_inclusive=False)
    eps = checks.number("eps", eps, low=0.0, low_inclusive=False)
    weight_decay = checks.number("weight_decay", weight_decay, low=0.0)
    kwargs = {"lr": lr, "betas": (beta1, beta2), "eps": eps, "weight_decay": weight_decay}
    if fused:
        try:
            return torch.optim.Adam(params, fused=True, **kwargs)
        except (RuntimeError, TypeError) as unsupported:
            warnings.warn(f"Fused Adam is not available here ({unsupported}); using the default Adam.", stacklevel=2)
    return torch.optim.Adam(params, **kwargs)
