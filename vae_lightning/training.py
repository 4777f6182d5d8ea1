"""Small pieces of `train.py` that are worth testing on their own."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import torch
from lightning import Callback, Trainer
from lightning.pytorch.loggers import TensorBoardLogger
from omegaconf import DictConfig, OmegaConf

from vae_lightning import checks
from vae_lightning.callbacks.batch_hooks import skip_empty_batch_hooks
from vae_lightning.config import build, check_trainer

log = logging.getLogger(__name__)


def route_lightning_logs() -> None:
    """Lightning adds its own console handler and also propagates to the root logger, so under Hydra every
    message would print twice; drop its handler so messages go once through Hydra's console and log file."""
    logging.getLogger("lightning").handlers.clear()


def build_trainer(cfg: DictConfig, extra_callbacks: tuple[Callback, ...] = ()) -> Trainer:
    """The Trainer of `cfg.trainer` with the callbacks of `cfg.callbacks` (then `extra_callbacks`) and the
    loggers of `cfg.logger`; callbacks' empty per-batch hooks are switched off (see `batch_hooks`)."""
    callbacks = [build(node, f"callbacks.{name}") for name, node in (cfg.get("callbacks") or {}).items()]
    loggers = [build(node, f"logger.{name}") for name, node in (cfg.get("logger") or {}).items()]
    check_trainer(cfg.trainer)
    trainer = build(cfg.trainer, "trainer", callbacks=[*callbacks, *extra_callbacks], logger=loggers)
    skip_empty_batch_hooks(trainer.callbacks)
    return trainer


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


# config parts that describe where things go rather than the experiment (module/ repeats model, loss, ...)
_NOT_HYPERPARAMETERS = ("callbacks/", "logger/", "paths/", "module/", "hydra/")


def log_final_hparams(trainer: Trainer, cfg: DictConfig, metrics: dict[str, float]) -> None:
    """TensorBoard's HPARAMS tab: the flattened config beside the final metrics, so the runs of a sweep
    compare side by side. The metrics go under `hp/` (e.g. `hp/val_loss`), apart from the training curves."""
    flat = {
        key: value
        for key, value in flatten(OmegaConf.to_container(cfg, resolve=True)).items()
        if not key.startswith(_NOT_HYPERPARAMETERS) and "/_" not in key
    }
    hp_metrics = {"hp/" + name.replace("/", "_"): value for name, value in metrics.items()}
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.log_hyperparams(flat, metrics=hp_metrics)
            logger.finalize("success")  # the trainer already closed it once; flush what was just written


def set_threads(threads: Any) -> None:
    """`threads`: intra-op CPU threads of this process (null: torch's default, one per core). Parallel
    sweep jobs set it so that together they do not oversubscribe the cores."""
    if threads is not None:
        torch.set_num_threads(checks.positive_int("threads", threads))
    log.info("Using %d CPU threads", torch.get_num_threads())


def checkpoint_to_resume(cfg: DictConfig, output_dir: Path, model: torch.nn.Module) -> str | None:
    """`ckpt_path` if given; with `resume=true`, the run folder's checkpoints/last.ckpt. Either must be a
    readable checkpoint of this model: a truncated or foreign file is refused with one clear message."""
    path = None
    if cfg.get("ckpt_path"):
        path = Path(cfg.ckpt_path).expanduser()
    elif cfg.get("resume"):
        last = output_dir / "checkpoints" / "last.ckpt"
        if last.is_file():
            log.info("Resuming from %s", last)
            path = last
        else:
            log.warning("resume=true but %s does not exist: starting from scratch.", last)
    if path is None:
        return None
    check_checkpoint_matches(path, model)
    return str(path)


def check_checkpoint_matches(path: Path, model: torch.nn.Module) -> None:
    from vae_lightning.checkpoints import CheckpointError, read_checkpoint

    checkpoint = read_checkpoint(path)
    if "optimizer_states" not in checkpoint or "loops" not in checkpoint:
        raise CheckpointError(f"ckpt_path={path} holds weights only, no training state to resume from.")
    ours = model.state_dict()
    theirs = checkpoint["state_dict"]
    for name, tensor in ours.items():
        if name not in theirs or tuple(theirs[name].shape) != tuple(tensor.shape):
            shape = tuple(theirs[name].shape) if name in theirs else "nothing"
            raise CheckpointError(
                f"ckpt_path={path} was saved from a different model: it has {shape} for {name}, this config "
                f"builds {tuple(tensor.shape)}. Use the config it was trained with (its .hydra/config.yaml)."
            )


def clean_leftovers(output_dir: Path, cache_dir: str | None) -> None:
    """Remove the temporary files of checkpoint and cache writes that a killed run left behind."""
    from vae_lightning.leftovers import remove_leftovers

    removed = remove_leftovers(output_dir / "checkpoints")
    if cache_dir:
        removed += remove_leftovers(cache_dir)
    if removed:
        log.info("Removed %d unfinished files left by a killed run.", removed)


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
