"""Small pieces of `train.py` that are worth testing on their own."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

from lightning import Trainer
from omegaconf import DictConfig, OmegaConf


def route_lightning_logs() -> None:
    """Lightning adds its own console handler and also propagates to the root logger, so under Hydra every
    message would print twice; drop its handler so messages go once through Hydra's console and log file."""
    logging.getLogger("lightning").handlers.clear()


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """A nested config as {"a/b/c": leaf}; lists become strings so TensorBoard's HPARAMS can show them."""
    if isinstance(tree, dict):
        flat: dict[str, Any] = {}
        for key, value in tree.items():
            flat |= flatten(value, f"{prefix}{key}/")
        return flat
    value = tree if isinstance(tree, bool | int | float | str) or tree is None else str(tree)
    return {prefix.rstrip("/"): "null" if value is None else value}


def log_config(trainer: Trainer, cfg: DictConfig) -> None:
    """Every logger gets the whole resolved config, flattened."""
    plain = OmegaConf.to_container(cfg, resolve=True)
    for logger in trainer.loggers:
        logger.log_hyperparams(flatten(plain))


def final_metrics(trainer: Trainer, prefix: str) -> dict[str, float]:
    """The scalars under `prefix` that the trainer holds now (after fit: val; after test: test)."""
    return {
        name: float(value)
        for name, value in trainer.callback_metrics.items()
        if name.startswith(prefix) and getattr(value, "numel", lambda: 1)() == 1
    }


def summary(output_dir: Path, metrics: dict[str, float], best_checkpoint: str) -> str:
    """What a user wants to read at the end of a run: where things are, the numbers, how to see them."""
    shown = "\n".join(
        f"  {name:<16} {value:.6g}" if math.isfinite(value) else f"  {name:<16} {value}"
        for name, value in sorted(metrics.items())
    )
    lines = [
        f"Run finished. Outputs in {output_dir}",
        f"  best checkpoint: {best_checkpoint or '(none)'}",
        f"  metrics.json:    {output_dir / 'metrics.json'}",
        "Final metrics:",
        shown,
        f"See the curves and images: tensorboard --logdir {output_dir}",
    ]
    return "\n".join(lines)
