"""Evaluate a checkpoint on the test split of the data set it was trained on, with no training config:

    python -m vae_lightning.evaluate ckpt_path=<file.ckpt> [dataset.<key>=<value> ...] [eval.nll_samples=1000]
        [output=<metrics.json>]

Computes the test loss terms, `test/elbo`, `test/nll` (importance sampled, `eval.nll_samples` samples),
`test/mse` and `test/psnr`, `test/active_units`, `test/mutual_info` and the KL of each latent dimension; prints
them as JSON on stdout and writes them to `metrics.json` next to the checkpoint (an exported model's folder or
Hub repository id: in the current folder; or to `output`). `dataset.*`
changes keys of the data set the checkpoint recorded, e.g. `dataset.root=/data/mnist` for the same data in
another place. A Hydra app: `--cfg job` shows the config, `--help` the options.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from vae_lightning.core import checks
from vae_lightning.core.config import check_command_line, user_config_dirs
from vae_lightning.core.errors import VAELightningError
from vae_lightning.core.files import write_metrics
from vae_lightning.run.tools import run_tool

log = logging.getLogger("evaluate")


def evaluate(cfg: DictConfig) -> dict[str, float]:
    # Deferred for start-up time: Lightning takes seconds to import; `--help` and a missing ckpt_path need none.
    import lightning as L

    from vae_lightning.api import TrainedVAE
    from vae_lightning.callbacks.progress import PlainProgress
    from vae_lightning.callbacks.sample_score import SampleScore
    from vae_lightning.callbacks.sampler import FitSampler
    from vae_lightning.run.tools import checkpoint_datamodule
    from vae_lightning.run.trainer import final_metrics, quiet_libraries

    quiet_libraries()
    problems = checks.Problems()  # every bad value in one message, before the checkpoint is read
    for key in ("nll_samples", "mi_samples"):
        if cfg.eval[key] is not None:
            problems.check(checks.non_negative_int, f"eval.{key}", cfg.eval[key])
    if cfg.eval.mutual_info is not None:
        problems.check(checks.boolean, "eval.mutual_info", cfg.eval.mutual_info)
    problems.check(checks.accelerator, "accelerator", cfg.accelerator)
    problems.raise_if_any()
    module = TrainedVAE.open(cfg.ckpt_path, config_dirs=user_config_dirs()).module  # or an exported folder
    if cfg.eval.nll_samples is not None:
        module.nll_samples = int(cfg.eval.nll_samples)
    if cfg.eval.mi_samples is not None:
        module.mi_samples = int(cfg.eval.mi_samples)
    if cfg.eval.mutual_info is False:
        module.mi_samples = 0
    datamodule = checkpoint_datamodule(module, cfg.dataset, cfg.paths, user_config_dirs())
    trainer = L.Trainer(
        accelerator=cfg.accelerator,
        devices=1,
        # test/sample_*: the sampler's images scored by a classifier; progress as log lines on stderr (Lightning's
        # bars write to stdout, which carries the results)
        callbacks=[FitSampler(), SampleScore(), PlainProgress(test_lines=10)],
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
    )
    log.info(
        "Evaluating %s on %d test images (%d importance samples each for test/nll)",
        cfg.ckpt_path,
        len(datamodule.test_set),
        module.nll_samples,
    )
    trainer.test(module, datamodule=datamodule, verbose=False)
    metrics = final_metrics(trainer, "test/")
    checkpoint = Path(cfg.ckpt_path).expanduser()
    beside = checkpoint.parent / "metrics.json" if checkpoint.is_file() else Path("metrics.json")  # a folder, a repo
    target = Path(cfg.output).expanduser() if cfg.output else beside
    try:
        write_metrics(target.parent, metrics, "completed", name=target.name)
    except OSError as bad:
        raise VAELightningError(f"Could not write {target}: {bad}. Choose another output=<file>.") from None
    print(json.dumps(metrics, indent=2, sort_keys=True))
    log.info("Written to %s", target)
    return metrics


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
def hydra_app(cfg: DictConfig) -> None:
    run_tool(evaluate, cfg)


def main() -> None:
    """The `vae-evaluate` command."""
    check_command_line(sys.argv[1:], "evaluate")  # a mistyped name is one line, before Hydra composes anything
    hydra_app()


if __name__ == "__main__":
    main()
