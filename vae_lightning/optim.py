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
    fused = fused is not None and checks.boolean("fused", fused)  # None: torch's default, the plain step
    kwargs = {"lr": lr, "betas": (beta1, beta2), "eps": eps, "weight_decay": weight_decay}
    if fused:
        try:
            return torch.optim.Adam(params, fused=True, **kwargs)
        except (RuntimeError, TypeError) as unsupported:
            warnings.warn(f"Fused Adam is not available here ({unsupported}); using the default Adam.", stacklevel=2)
    return torch.optim.Adam(params, **kwargs)


# -- learning-rate schedules ------------------------------------------------------------------------------
# Each takes the optimizer and `total_steps` (the training length, given by the model) and returns a torch
# scheduler, stepped once per optimizer step. One function per `conf/lr_schedule/*.yaml`.


def constant_lr(optimizer: torch.optim.Optimizer, total_steps: int) -> torch.optim.lr_scheduler.ConstantLR:
    """The optimizer's own `lr` at every step."""
    return torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)


def one_cycle(
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    peak_lr: float = 3e-3,
    warmup: float = 0.25,
    start_divisor: float = 25.0,
    final_divisor: float = 1e4,
) -> torch.optim.lr_scheduler.OneCycleLR:
    """Smith & Topin's one-cycle policy (torch's `OneCycleLR`): a cosine warm-up over the first `warmup` fraction
    of training from peak_lr / start_divisor to `peak_lr`, then a cosine decay to peak_lr / final_divisor at the
    last step. Adam's beta1 cycles between 0.85 and 0.95 against it (torch's default)."""
    peak_lr = checks.number("peak_lr", peak_lr, low=0.0, low_inclusive=False)
    warmup = checks.number("warmup", warmup, low=0.0, high=1.0, low_inclusive=False, high_inclusive=False)
    start_divisor = checks.number("start_divisor", start_divisor, low=1.0)
    final_divisor = checks.number("final_divisor", final_divisor, low=1.0)
    return torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=peak_lr,
        total_steps=total_steps,
        pct_start=warmup,
        div_factor=start_divisor,
        final_div_factor=final_divisor / start_divisor,
    )


def cosine(
    optimizer: torch.optim.Optimizer, total_steps: int, final_fraction: float = 0.0
) -> torch.optim.lr_scheduler.CosineAnnealingLR:
    """A cosine decay from the optimizer's `lr` to `final_fraction` of it at the last step (torch's
    `CosineAnnealingLR`)."""
    final_fraction = checks.number("final_fraction", final_fraction, low=0.0, high=1.0)
    base = optimizer.param_groups[0]["lr"]
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps, eta_min=base * final_fraction)
