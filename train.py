"""Train a VAE: `python train.py [group=option ...] [key=value ...]`. See README.md."""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

import vae_lightning.config  # noqa: F401  (registers the config resolvers)
from vae_lightning.errors import DivergedError, JobFailed, VAELightningError
from vae_lightning.run_files import write_metrics

log = logging.getLogger("train")


def train(cfg: DictConfig) -> float | None:
    """Seed, build everything from the config, fit, test the best checkpoint, write metrics.json."""
    import lightning as L

    from vae_lightning.config import build
    from vae_lightning.training import (
        build_trainer,
        checkpoint_to_resume,
        clean_leftovers,
        final_metrics,
        log_config,
        log_final_hparams,
        route_lightning_logs,
        set_threads,
        summary,
    )

    route_lightning_logs()
    output_dir = Path(cfg.paths.output_dir)
    clean_leftovers(output_dir, cfg.paths.get("cache_dir"))
    set_threads(cfg.get("threads"))
    L.seed_everything(cfg.seed, workers=True)
    datamodule = build(cfg.dataset, "dataset")
    model = build(cfg.module, "module", keys_are_absolute=True, input_shape=datamodule.input_shape)
    trainer = build_trainer(cfg)
    log_config(trainer, cfg)

    trainer.fit(model, datamodule=datamodule, ckpt_path=checkpoint_to_resume(cfg, output_dir, model))
    val_metrics = final_metrics(trainer, "val/")
    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    trainer.test(model, datamodule=datamodule, ckpt_path=best or None)
    metrics = val_metrics | final_metrics(trainer, "test/")

    if trainer.is_global_zero:
        write_metrics(output_dir, metrics, "completed")
        log_final_hparams(trainer, cfg, metrics)
        log.info(summary(output_dir, metrics, best))
    value = metrics.get(cfg.optimized_metric)
    return None if value is None else float(value)


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    hydra_cfg = HydraConfig.get()
    try:
        return train(cfg)
    except VAELightningError as error:
        write_metrics(hydra_cfg.runtime.output_dir, {}, "diverged" if isinstance(error, DivergedError) else "failed")
        log.error(str(error))
        if hydra_cfg.mode == RunMode.MULTIRUN:
            raise JobFailed(str(error)) from None  # this job fails, the sweep goes on with the others
    except Exception:
        write_metrics(hydra_cfg.runtime.output_dir, {}, "failed")
        raise
    raise SystemExit(1)


if __name__ == "__main__":
    main()
