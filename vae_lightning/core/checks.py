"""Validation of config values, so that a bad value fails early and names its key.

Constructors call these on their arguments; `core.config.build` places the key under the config node it came
from (`latent_dim` -> `model.latent_dim`). `Problems` collects several failures of one constructor, so that
they are reported together.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from vae_lightning.core.errors import ConfigErrors, ConfigValueError, VAELightningError


def integer(key: str, value: Any, low: int | None = None) -> int:
    """An int (not a bool) that is at least `low`."""
    if isinstance(value, bool) or not isinstance(value, int) or (low is not None and value < low):
        requirement = {None: "must be an integer", 0: "must be an integer >= 0", 1: "must be a positive integer"}
        raise ConfigValueError(key, requirement.get(low, f"must be an integer >= {low}"), value)
    return value


def positive_int(key: str, value: Any) -> int:
    return integer(key, value, low=1)


def non_negative_int(key: str, value: Any) -> int:
    return integer(key, value, low=0)


def boolean(key: str, value: Any) -> bool:
    """true or false (not a string or a number that reads as one)."""
    if not isinstance(value, bool):
        raise ConfigValueError(key, "must be true or false", value)
    return value


def number(
    key: str,
    value: Any,
    *,
    low: float = -math.inf,
    high: float = math.inf,
    low_inclusive: bool = True,
    high_inclusive: bool = True,
) -> float:
    """A finite real number in the interval given by `low` and `high`."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigValueError(key, "must be a finite number", value)
    too_low = value < low if low_inclusive else value <= low
    too_high = value > high if high_inclusive else value >= high
    if too_low or too_high:
        left = "[" if low_inclusive else "("
        right = "]" if high_inclusive else ")"
        raise ConfigValueError(key, f"must lie in {left}{low}, {high}{right}", value)
    return float(value)


def positive_int_list(key: str, value: Any) -> list[int]:
    if isinstance(value, str) or not isinstance(value, Sequence) or not value:
        raise ConfigValueError(key, "must be a list of positive integers, e.g. [512,256]", value)
    for item in value:
        if isinstance(item, bool) or not isinstance(item, int) or item <= 0:
            raise ConfigValueError(key, "must be a list of positive integers, e.g. [512,256]", value)
    return list(value)


class Problems:
    """Collects the failed checks of one constructor: `check` returns the value whether or not it passed, and
    `raise_if_any` then reports every failure in one message."""

    def __init__(self) -> None:
        self.errors: list[VAELightningError] = []

    def check(self, check: Callable[..., Any], key: str, value: Any, **kwargs: Any) -> Any:
        try:
            return check(key, value, **kwargs)
        except ConfigValueError as bad:
            self.errors.append(bad)
            return value

    def add(self, error: VAELightningError) -> None:
        self.errors.append(error)

    def raise_if_any(self) -> None:
        if self.errors:
            raise ConfigErrors(self.errors)


# Lightning accepts wrongly typed numbers and fails later with a traceback; these keys are checked first.
_TRAINER_INTS = {
    "max_epochs": -1,
    "max_steps": -1,
    "min_epochs": 0,
    "log_every_n_steps": 1,
    "check_val_every_n_epoch": 1,
    "num_sanity_val_steps": -1,
    "accumulate_grad_batches": 1,
}
_TRAINER_LIMITS = ("limit_train_batches", "limit_val_batches", "limit_test_batches", "val_check_interval")


def accelerator(key: str, value: Any) -> Any:
    """An accelerator Lightning takes (`auto`, `gpu` or a name in its `AcceleratorRegistry`) that this machine has:
    `trainer=gpu` without a GPU is refused here, in one line, not by Lightning's start-up. An `Accelerator` object
    is Lightning's to check."""
    if not isinstance(value, str):
        return value
    from lightning.pytorch.accelerators import AcceleratorRegistry

    names = {"auto", "gpu", *AcceleratorRegistry.available_accelerators()}
    if value not in names:
        raise ConfigValueError(key, f"must be one of {', '.join(sorted(names))}", value)
    wanted = {"auto": [], "gpu": ["cuda", "mps"]}.get(value, [value])
    reasons = []
    for name in wanted:
        try:
            if AcceleratorRegistry.get(name).is_available():
                return value
            reasons.append(f"torch sees no {name} device on this machine")
        except ImportError as missing:  # its library is not installed (TPUs: torch_xla)
            reasons.append(str(missing))
    if reasons:
        raise ConfigValueError(key, f"{' and '.join(reasons)}: use auto or cpu", value)
    return value


def devices(key: str, value: Any) -> Any:
    """What Lightning's `devices` takes: `auto`, a count (-1: all of them), or which devices, as a list of indices
    or a comma-separated string of them. Whether this machine has that many is Lightning's to say."""
    if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and value >= -1):
        return value
    if isinstance(value, str):
        indices = all(text.strip().lstrip("-").isdigit() for text in value.split(","))
    else:
        ints = isinstance(value, Sequence) and all(isinstance(i, int) and not isinstance(i, bool) for i in value)
        indices = ints and len(value) > 0
    if indices:
        return value
    raise ConfigValueError(key, "must be auto, a count (-1: all) or device indices such as [0, 1] or '0,1'", value)


# Lightning's ModelCheckpoint compares these with numbers in its constructor (a word fails there in a TypeError that
# names no key) and takes any value of its flags as true or false
_CHECKPOINT_INTS = {"save_top_k": -1, "every_n_epochs": 0, "every_n_train_steps": 0}
_CHECKPOINT_FLAGS = (
    "save_weights_only",
    "auto_insert_metric_name",
    "enable_version_counter",
    "save_on_train_epoch_end",
)


def checkpoint_values(key: str, checkpoint_cfg: Any) -> list[ConfigValueError]:
    """The bad counts and flags of the checkpoint callback configured at `key` (an empty list when all are fine)."""
    problems = Problems()
    for name, low in _CHECKPOINT_INTS.items():
        if checkpoint_cfg.get(name) is not None:
            problems.check(integer, f"{key}.{name}", checkpoint_cfg[name], low=low)
    for name in _CHECKPOINT_FLAGS:
        if checkpoint_cfg.get(name) is not None:
            problems.check(boolean, f"{key}.{name}", checkpoint_cfg[name])
    if checkpoint_cfg.get("mode") not in (None, "min", "max"):
        problems.add(ConfigValueError(f"{key}.mode", "must be min or max", checkpoint_cfg["mode"]))
    if checkpoint_cfg.get("save_last") not in (None, True, False, "link"):
        problems.add(ConfigValueError(f"{key}.save_last", "must be true, false or link", checkpoint_cfg["save_last"]))
    return problems.errors  # type: ignore[return-value]


def diagnostics_values(diagnostics_cfg: Any) -> list[ConfigValueError]:
    """The bad values among the shared `diagnostics.*` keys, named as a user sets them (the callbacks take them by
    interpolation); an empty list when all are fine."""
    problems = Problems()
    for name in ("every_n_epochs", "n_samples"):
        if name in diagnostics_cfg:
            problems.check(positive_int, f"diagnostics.{name}", diagnostics_cfg[name])
    if "strict" in diagnostics_cfg:
        problems.check(boolean, "diagnostics.strict", diagnostics_cfg["strict"])
    return problems.errors  # type: ignore[return-value]


def trainer_values(trainer_cfg: Any) -> list[ConfigValueError]:
    """The bad values among the common `trainer.*` keys (an empty list when all are fine)."""
    problems = Problems()
    if (name := trainer_cfg.get("accelerator")) is not None:
        problems.check(accelerator, "trainer.accelerator", name)
    if (value := trainer_cfg.get("devices")) is not None:
        problems.check(devices, "trainer.devices", value)
    for name, low in _TRAINER_INTS.items():
        value = trainer_cfg.get(name)
        if value is not None:
            problems.check(integer, f"trainer.{name}", value, low=low)
    for name in _TRAINER_LIMITS:
        value = trainer_cfg.get(name)
        if value is None or (isinstance(value, int) and not isinstance(value, bool) and value >= 0):
            continue
        if isinstance(value, float) and 0.0 <= value <= 1.0:
            continue
        problems.add(
            ConfigValueError(f"trainer.{name}", "must be a count (integer >= 0) or a fraction in [0.0, 1.0]", value)
        )
    clip = trainer_cfg.get("gradient_clip_val")
    if clip is not None:
        problems.check(number, "trainer.gradient_clip_val", clip, low=0.0, low_inclusive=False)
    algorithm = trainer_cfg.get("gradient_clip_algorithm")
    if algorithm not in (None, "norm", "value"):
        problems.add(ConfigValueError("trainer.gradient_clip_algorithm", "must be norm or value", algorithm))
    return problems.errors  # type: ignore[return-value]
