"""The Trainer of a run with its callbacks and loggers, a quiet console, and what a run says at its end."""

from __future__ import annotations

import logging
import math
import shlex
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lightning import Callback, Trainer
from lightning.pytorch.accelerators import CPUAccelerator
from lightning.pytorch.loggers import CSVLogger, MLFlowLogger, TensorBoardLogger, WandbLogger
from omegaconf import DictConfig

from vae_lightning.core import checks
from vae_lightning.core.config import build, command_line
from vae_lightning.core.errors import ConfigErrors, ConfigValueError, VAELightningError
from vae_lightning.core.threads import has_bf16_instructions
from vae_lightning.data.protocol import not_vae_data
from vae_lightning.module import VAEModule

log = logging.getLogger(__name__)


class _DropTips(logging.Filter):
    """Lightning's advertisements for its cloud services ("💡 Tip: ..."), which say nothing about the run."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡 Tip:")


def quiet_libraries() -> None:
    """Keep the console to what concerns the run: Lightning's messages once (through the application's logging,
    not also through Lightning's own console handler), without its cloud tips, and without a deprecation warning
    that Lightning's own code triggers in torch, nor its warning that the checkpoint folder is not empty (only a
    resume may reuse one, see `run.folder`). Warnings about the user's data or config are kept."""
    lightning = logging.getLogger("lightning")
    lightning.handlers.clear()
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropTips) for f in logger.filters):
            logger.addFilter(_DropTips())
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)` is deprecated")
    warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")


def is_checkpoint(node: Any) -> bool:
    """Whether a callback's config builds Lightning's `ModelCheckpoint` (by whichever of its paths)."""
    return str(node.get("_target_", "")).rsplit(".", 1)[-1] == "ModelCheckpoint"


def build_trainer(
    cfg: DictConfig, extra_callbacks: tuple[Callback, ...] = (), resume_step: int | None = None
) -> Trainer:
    """The Trainer of `cfg.trainer` with the callbacks of `cfg.callbacks` (then `extra_callbacks`) and the
    loggers of `cfg.logger`. Bad values of all three are reported together. A run resumed from a checkpoint of
    `resume_step` optimizer steps has TensorBoard hide what a crashed earlier start logged after that step (its
    `purge_step`), so each step's values appear once."""
    problems = checks.Problems()
    shared = checks.diagnostics_values(cfg.get("diagnostics") or {})
    for error in [*checks.trainer_values(cfg.trainer), *shared]:
        problems.add(error)
    if shared:  # the callbacks that take these values by interpolation would name their own keys: not built
        problems.raise_if_any()
    callbacks, loggers = [], []
    for group, built in (("callbacks", callbacks), ("logger", loggers)):
        for name, node in (cfg.get(group) or {}).items():
            if node is None:  # `callbacks.<name>=null` turns one off, as `~callbacks.<name>` does
                continue
            if is_checkpoint(node) and (bad_counts := checks.checkpoint_values(f"{group}.{name}", node)):
                problems.errors.extend(bad_counts)
                continue
            try:
                made = build(node, f"{group}.{name}")
                if resume_step is not None and isinstance(made, TensorBoardLogger):
                    made = build(node, f"{group}.{name}", purge_step=resume_step + 1)
                built.append(made)
            except ConfigErrors as bad:
                problems.errors.extend(bad.problems)
            except VAELightningError as bad:
                problems.add(bad)
    problems.raise_if_any()
    trainer = build(cfg.trainer, "trainer", callbacks=[*callbacks, *extra_callbacks], logger=loggers)
    on_cpu = isinstance(trainer.accelerator, CPUAccelerator)
    if on_cpu and str(trainer.precision).startswith("bf16") and has_bf16_instructions() is False:
        log.warning(
            "trainer.precision=%s on a CPU without AVX512-BF16 or AMX: bfloat16 is emulated there and slower than "
            "float32. Set trainer.precision=32-true.",
            trainer.precision,
        )
    return trainer


def build_run(
    cfg: DictConfig, extra_callbacks: tuple[Callback, ...] = (), resume_step: int | None = None
) -> tuple[Any, Any, Trainer]:
    """The data module, the module and the Trainer of a run; the bad values and missing data folders of all
    three are reported together (the module is built only once the data set is, as it needs its image shape)."""
    problems = checks.Problems()

    def attempt(make):
        try:
            return make()
        except ConfigErrors as bad:
            problems.errors.extend(bad.problems)
        except VAELightningError as bad:
            problems.add(bad)
        return None

    datamodule = attempt(lambda: build(cfg.dataset, "dataset"))
    lacks = None if datamodule is None else not_vae_data(datamodule)
    if lacks is not None:
        reason = f"is not a data module of the `VAEData` contract (vae_lightning.data.protocol); it lacks {lacks}"
        problems.add(ConfigValueError("dataset._target_", reason, cfg.dataset.get("_target_")))
        datamodule = None
    module = None
    if datamodule is not None:
        shape = datamodule.input_shape  # the data set's config is stored with the model, for the tools
        module = attempt(lambda: VAEModule.from_settings(cfg.module, input_shape=shape, data=cfg.dataset))
    trainer = attempt(lambda: build_trainer(cfg, extra_callbacks, resume_step))
    if module is not None:
        problems.errors.extend(unknown_metrics(cfg, module))
    problems.raise_if_any()
    return datamodule, module, trainer


def unknown_metrics(cfg: DictConfig, module: VAEModule) -> list[ConfigValueError]:
    """The callbacks (a checkpoint, early stopping) that monitor a metric the module does not log while it trains,
    and an `optimized_metric` of a sweep under train/ or val/ that it does not log: Lightning would stop on the
    first only after the first epoch, before any checkpoint, and a sweep would find the second missing after every
    trial. The module logs `<stage>/<term>` for its objective's terms (`module.terms`) and beta, train also each
    term's `_epoch` mean and the rate; a name under a namespace of its own (`mine/score`) is taken as logged by
    the user's own callback, and test/ metrics (after training) as the sweep's to find."""
    terms = (*module.terms, "beta")
    logged = {f"val/{term}" for term in terms} | {f"train/{term}" for term in (*terms, "lr", "skipped_updates")}
    logged |= {f"train/{term}_epoch" for term in module.terms} | {"step", "epoch"}
    callbacks = {name: node for name, node in (cfg.get("callbacks") or {}).items() if node is not None}
    wanted = {f"callbacks.{name}.monitor": node.monitor for name, node in callbacks.items() if node.get("monitor")}
    if isinstance(cfg.get("optimized_metric"), str) and cfg.optimized_metric.startswith(("train/", "val/")):
        wanted["optimized_metric"] = cfg.optimized_metric
    problems = []
    for key, name in wanted.items():
        if isinstance(name, str) and (name in logged or name.startswith("val/kl_dim_")):
            continue
        stage = name.split("/")[0] if isinstance(name, str) and "/" in name else None
        if stage is not None and stage not in ("train", "val", "test"):  # a metric of the user's own callbacks
            continue
        known = ", ".join(sorted(metric for metric in logged if metric.startswith(f"{stage or 'val'}/")))
        reason = f"is not a metric this model logs during training (it logs {known})"
        problems.append(ConfigValueError(key, reason, name))
    return problems


def final_metrics(trainer: Trainer, prefix: str) -> dict[str, float]:
    """The scalars under `prefix` that the trainer holds now (after fit: val; after test: test)."""
    return {
        name: float(value)
        for name, value in trainer.callback_metrics.items()
        if name.startswith(prefix) and getattr(value, "numel", lambda: 1)() == 1
    }


def resume_command(output_dir: Path) -> str:
    """The command that continues this run in its folder: the same overrides, `resume=true`, the folder."""
    dropped = ("resume", "hydra.run.dir", "ckpt_path")
    kept = [o for o in command_line() or [] if o.split("=")[0].lstrip("+~") not in dropped]
    script = Path(sys.argv[0]).name if sys.argv and sys.argv[0].endswith(".py") else "train.py"
    words = ["python", script, *kept, "resume=true", f"hydra.run.dir={output_dir}"]
    return " ".join(shlex.quote(word) for word in words)


def viewers(loggers: Sequence[Any], output_dir: Path, mlflow_uri: str | None) -> list[str]:
    """How to see what each of the run's loggers wrote (TensorBoard, MLflow, W&B, CSV files)."""
    hints = {
        TensorBoardLogger: lambda _: f"tensorboard --logdir {output_dir}",
        MLFlowLogger: lambda logger: (
            f"mlflow ui --backend-store-uri {mlflow_uri} (run {logger.run_id}; its pictures under Artifacts, images/)"
        ),
        WandbLogger: lambda _: "your W&B project page",
        CSVLogger: lambda _: f"the CSV files under {output_dir / 'csv'}",
    }
    return [hint(found[0]) for kind, hint in hints.items() if (found := [x for x in loggers if isinstance(x, kind)])]


def summary(output_dir: Path, metrics: dict[str, float], tested: Any, last: Path, seen_with: Sequence[str]) -> str:
    """What a user wants to read at the end of a run: where things are, which weights were tested (a
    `final.TrainedWeights`), the numbers, how to see them (`seen_with`: `viewers`)."""
    names = sorted(name for name in metrics if not name.startswith("test/kl_dim_"))
    width = max((len(name) for name in names), default=0)
    values = {name: f"{metrics[name]:.6g}" if math.isfinite(metrics[name]) else str(metrics[name]) for name in names}
    shown = "\n".join(f"  {name:<{width}} {values[name]}" for name in names)
    return "\n".join(
        [
            f"Run finished. Outputs in {output_dir}",
            f"  tested weights:  {tested.path or '(the final weights; no checkpoint kept)'}"
            f" (optimizer step {tested.step}, epoch {tested.epoch})",
            f"  last checkpoint: {last if last.is_file() else '(none)'}",
            f"  metrics.json:    {output_dir / 'metrics.json'}",
            "Final metrics:",
            shown,
            *[f"See the curves and images: {hint}" for hint in seen_with],
        ]
    )
