"""KL weight (beta) schedules: pure functions of the optimizer step.

Each takes `total_steps`, the training length, which the LightningModule reads from the trainer
(`estimated_stepping_batches`), so the config never repeats it. One class per `conf/beta/*.yaml`.
"""

from __future__ import annotations

import math

from vae_lightning.core import checks


def _progress(step: int, total_steps: int) -> float:
    """Fraction of training done, in [0, 1]."""
    return min(max(step / total_steps, 0.0), 1.0)


class Constant:
    """beta(step) = value."""

    def __init__(self, value: float = 1.0, total_steps: int | None = None) -> None:
        self.value = checks.number("value", value, low=0.0)

    def __call__(self, step: int) -> float:
        return self.value


class DelayedRamp:
    """The seed's delayed ramp: 0 until `delay` of training has passed, then linear up to `max` at the end."""

    def __init__(self, total_steps: int, max: float = 1.0, delay: float = 0.5) -> None:
        self.total_steps = checks.positive_int("total_steps", total_steps)
        self.max = checks.number("max", max, low=0.0)
        self.delay = checks.number("delay", delay, low=0.0, high=1.0, high_inclusive=False)

    def __call__(self, step: int) -> float:
        t = _progress(step, self.total_steps)
        if t <= self.delay:
            return 0.0
        return self.max * (t - self.delay) / (1.0 - self.delay)


class Sigmoid:
    """A sigmoidal rise to `max`: max / (1 + exp(-steepness * (t - centre))), t the fraction of training."""

    def __init__(self, total_steps: int, max: float = 1.0, centre: float = 0.5, steepness: float = 10.0) -> None:
        self.total_steps = checks.positive_int("total_steps", total_steps)
        self.max = checks.number("max", max, low=0.0)
        self.centre = checks.number("centre", centre, low=0.0, high=1.0)
        self.steepness = checks.number("steepness", steepness, low=0.0, low_inclusive=False)

    def __call__(self, step: int) -> float:
        t = _progress(step, self.total_steps)
        return self.max / (1.0 + math.exp(-self.steepness * (t - self.centre)))


class Cyclical:
    """Fu et al. (2019): `n_cycles` cycles; in each, beta rises linearly from 0 to `max` over the first `ratio`
    of the cycle, then stays at `max`."""

    def __init__(self, total_steps: int, max: float = 1.0, n_cycles: int = 4, ratio: float = 0.5) -> None:
        self.total_steps = checks.positive_int("total_steps", total_steps)
        self.max = checks.number("max", max, low=0.0)
        self.n_cycles = checks.positive_int("n_cycles", n_cycles)
        self.ratio = checks.number("ratio", ratio, low=0.0, high=1.0, low_inclusive=False)

    def __call__(self, step: int) -> float:
        period = self.total_steps / self.n_cycles
        within = (min(max(step, 0), self.total_steps - 1) % period) / period
        return self.max * min(within / self.ratio, 1.0)
