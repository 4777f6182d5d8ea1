"""Validation of constructor arguments, so a bad config value fails early and names its key."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from vae_lightning.errors import ConfigValueError


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def positive_int(key: str, value: Any) -> int:
    if not _is_int(value) or value <= 0:
        raise ConfigValueError(key, "must be a positive integer", value)
    return value


def non_negative_int(key: str, value: Any) -> int:
    if not _is_int(value) or value < 0:
        raise ConfigValueError(key, "must be an integer >= 0", value)
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
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise ConfigValueError(key, "must be a list of positive integers, e.g. [512,256]", value)
    for item in value:
        if not _is_int(item) or item <= 0:
            raise ConfigValueError(key, "must be a list of positive integers, e.g. [512,256]", value)
    return list(value)
