"""Train a VAE: `python train.py [group=option ...] [key=value ...]`. See README.md."""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from vae_lightning.errors import DivergedError, VAELightningError
from vae_lightning.run_files import write_metrics

log = logging.getLogger("train")


def train(cfg: DictConfig) -> float | None:
    """Seed, build everything from the config, fit, test the best checkpoint, write metrics.json."""
    import lightning as L

    from vae_lightning.config import build, check_trainer
    from vae_lightning.training import final_metrics, log_config, route_lightning_logs, summary

    route_lightning_logs()
    L.seed_everything(cfg.seed, workers=True)
    datamodule = build(cfg.dataset, "dataset")
    model = build(cfg.module, "module", keys_are_absolute=True, input_shape=datamodule.input_shape)
    callbacks = [build(node, f"callbacks.{name}") for name, node in (cfg.get("callbacks") or {}).items()]
    loggers = [build(node, f"logger.{name}") for name, node in (cfg.get("logger") or {}).items()]
    check_trainer(cfg.trainer)
    trainer = build(cfg.trainer, "trainer", callbacks=callbacks, logger=loggers)
    log_config(trainer, cfg)

    trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    val_metrics = final_metrics(trainer, "val/")
    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    trainer.test(model, datamodule=datamodule, ckpt_path=best or None)
    metrics = val_metrics | final_metrics(trainer, "test/")

    output_dir = Path(cfg.paths.output_dir)
    write_metrics(output_dir, metrics, "completed")
    log.info(summary(output_dir, metrics, best))
    value = metrics.get(cfg.optimized_metric)
    return None if value is None else float(value)


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    output_dir = HydraConfig.get().runtime.output_dir
    try:
        return train(cfg)
    except DivergedError as diverged:
        write_metrics(output_dir, {}, "diverged")
        log.error(str(diverged))
    except VAELightningError as error:
        write_metrics(output_dir, {}, "failed")
        log.error(str(error))
    except Exception:
        write_metrics(output_dir, {}, "failed")
        raise
    raise SystemExit(1)


if __name__ == "__main__":
    main()
