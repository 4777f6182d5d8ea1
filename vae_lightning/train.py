"""Train a VAE: `vae-train [group=option ...] [key=value ...]` (in a clone also `python train.py ...`).
See README.md and docs/start.md."""

from __future__ import annotations

import logging
import signal
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict

from vae_lightning.core import checks
from vae_lightning.core.config import (  # importing it registers the resolvers
    CONFIG_KEYS,
    check_command_line,
    user_config_dirs,
)
from vae_lightning.core.errors import DivergedError, JobFailed, VAELightningError
from vae_lightning.core.files import remove_leftovers, write_metrics
from vae_lightning.core.signals import RunInterrupted, stop_on_signals
from vae_lightning.core.threads import passive_waiting

log = logging.getLogger("train")


def train(cfg: DictConfig) -> float | None:
    """Seed, build everything from the config, fit, save the final weights, test the best checkpoint, write
    metrics.json (naming the tested checkpoint); returns the metric a sweeper optimises. A signal (see
    `core.signals`, received through the `stop_on_signal` callback) ends the run as `interrupted`, resumable."""
    # Deferred for start-up time: `--help` and `--cfg job` answer without importing Lightning and torch.
    import lightning as L
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from vae_lightning.core.training_state import check_training_state
    from vae_lightning.run.checkpoints import check_resume, check_weights_fit, resumed_model, set_on_command_line
    from vae_lightning.run.final import save_final_weights, tested_weights
    from vae_lightning.run.folder import resume_path
    from vae_lightning.run.tools import absolute_locations
    from vae_lightning.run.trackers import finish
    from vae_lightning.run.trainer import (
        build_run,
        command_line,
        final_metrics,
        quiet_libraries,
        resume_command,
        summary,
        viewers,
    )

    quiet_libraries()
    absolute_locations(cfg.dataset)  # stored resolved: the checkpoint does not depend on the folder started in
    output_dir = Path(cfg.paths.output_dir)
    for folder in (output_dir / "checkpoints", Path(cfg.paths.cache_dir)):
        remove_leftovers(folder)  # the temporary files of writes that a killed run left behind
    if cfg.get("threads") is not None:
        checks.positive_int("threads", cfg.threads)  # before anything is built
    seed = None if cfg.get("seed") is None else checks.non_negative_int("seed", cfg.seed)
    L.seed_everything(seed, workers=True)
    last = output_dir / "checkpoints" / "last.ckpt"
    ckpt_path = resume_path(cfg, output_dir)
    if cfg.get("resume") and ckpt_path is None:
        log.warning("resume=true: %s holds no checkpoints/last.ckpt yet, so the run starts at step 0.", output_dir)
    resumed = None
    if ckpt_path is not None:
        module_cfg = OmegaConf.to_container(cfg.module, resolve=True)
        given = set_on_command_line(command_line())
        resumed = check_resume(ckpt_path, module_cfg, cfg.trainer, user_config_dirs(), given)
        with open_dict(cfg):  # the run continues the checkpoint's model, whatever today's defaults are
            for name, value in resumed_model(resumed).items():
                cfg[CONFIG_KEYS[name]] = value
    resume_step = None if resumed is None else int(resumed["global_step"])
    datamodule, model, trainer = build_run(cfg, resume_step=resume_step)
    if resumed is not None:
        check_weights_fit(resumed, model, ckpt_path)
        check_training_state(resumed, model, ckpt_path)
        log.info("Resuming from %s (optimizer step %d)", ckpt_path, resume_step)

    record(output_dir, {}, "running")  # what a `kill -9` leaves: a status naming a process that is gone
    try:
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
        save_final_weights(trainer, model, datamodule, last)
        val_metrics = final_metrics(trainer, "val/")
        tested = tested_weights(trainer, model, last)
        trainer.test(model, datamodule=datamodule, ckpt_path=tested.path, verbose=False)  # the summary shows them
    except (RunInterrupted, SIGTERMException) as stopped:
        interrupted = stopped if isinstance(stopped, RunInterrupted) else RunInterrupted(signal.SIGTERM)
        command = resume_command(output_dir)
        record(output_dir, final_metrics(trainer, "val/"), "interrupted", resume_command=command)
        finish(trainer.loggers, output_dir, "interrupted")
        log.warning("Interrupted at optimizer step %d (%s). Resume with: %s", trainer.global_step, interrupted, command)
        raise interrupted from None
    except Exception as error:
        finish(trainer.loggers, output_dir, "diverged" if isinstance(error, DivergedError) else "failed")
        raise
    metrics = val_metrics | final_metrics(trainer, "test/")
    warning = enormous_loss(metrics)
    if warning:
        log.warning(warning)

    if trainer.is_global_zero:
        noted = {"warning": warning} if warning else {}
        record(output_dir, metrics, "completed", **tested.as_metrics(output_dir), **noted)
        finish(trainer.loggers, output_dir, "completed")
        seen_with = viewers(trainer.loggers, output_dir, cfg.paths.get("mlflow_uri"))
        log.info(summary(output_dir, metrics, tested, last, seen_with))
    value = metrics.get(cfg.optimized_metric)
    return None if value is None else float(value)


# nats per image: far beyond any image's negative log-likelihood under a working model (784 binary pixels cost at
# most 544 nats at even odds; a 64x64 colour image at 8 bits per dimension about 68,000)
ENORMOUS_LOSS = 1e9


def enormous_loss(metrics: dict[str, float]) -> str | None:
    """A warning for a run whose loss stayed finite but is enormous (it diverged without overflowing), or None."""
    shown = {name: value for name, value in metrics.items() if name.endswith("/loss") and abs(value) > ENORMOUS_LOSS}
    if not shown:
        return None
    values = ", ".join(f"{name}={value:.3g}" for name, value in sorted(shown.items()))
    return (
        f"The run completed, but its loss is finite and enormous ({values}): it has most likely diverged. Try a lower "
        "`optimizer.lr` or gradient clipping with `+trainer.gradient_clip_val=1.0`."
    )


def record(folder: str | Path, metrics: dict, status: str, **extra) -> None:
    """`metrics.json` with the run's status (see `write_metrics`: a completed record is never replaced by a
    failed attempt); a disk that cannot take it (full) is a warning, never a second error."""
    try:
        write_metrics(folder, metrics, status, **extra)
    except OSError as bad:
        log.warning("Could not write %s/metrics.json (%s); status %s not recorded.", folder, bad, status)


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def hydra_app(cfg: DictConfig) -> float | None:
    """`train(cfg)` as a Hydra app: Ctrl-C and SIGTERM stop it cleanly, an error of ours is one line and a
    `metrics.json` with the run's status, and a failed job of a sweep lets the other jobs run."""
    hydra_cfg = HydraConfig.get()
    with stop_on_signals():
        try:
            return train(cfg)
        except RunInterrupted as interrupted:
            sys.exit(interrupted.exit_code)  # not an Exception: in a sweep it ends the sweep too
        except VAELightningError as error:
            status = "diverged" if isinstance(error, DivergedError) else "failed"
            record(hydra_cfg.runtime.output_dir, {}, status, error=str(error))
            if hydra_cfg.mode == RunMode.MULTIRUN:
                log.error(str(error))  # in the job's log, beside the sweep's others
                raise JobFailed(str(error)) from None  # this job fails, the sweep goes on with the others
            print(f"Error: {error}", file=sys.stderr)  # as every command reports a bad input
        except Exception as error:
            record(hydra_cfg.runtime.output_dir, {}, "failed", error=f"{type(error).__name__}: {error}"[:500])
            raise
    raise SystemExit(1)


def main() -> None:
    """The `vae-train` command (and `python train.py` in a clone)."""
    passive_waiting()  # before anything imports torch: OpenMP reads its wait policy once, when it loads
    check_command_line(sys.argv[1:], "train")  # a mistyped name is one line, before Hydra composes anything
    hydra_app()


if __name__ == "__main__":
    main()
