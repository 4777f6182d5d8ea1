"""TensorBoard's HPARAMS tab: each run's experiment choices beside its own metrics, to compare the runs of a sweep.

The hyperparameters are what a user chose, not every config key: the option of each config group (`beta=ramp`,
`model=conv`, with the group's other options as the filter values) and each key given on the command line (in
a sweep, the swept ones, e.g. `model.latent_dim`). The metrics are the run's own scalar tags (`val/loss`,
`test/nll`, ...), which the hparams plugin reads from the run's event files, so nothing is written twice. The
summaries are written through the plugin's public summary API (`torch.utils.tensorboard.summary.hparams`) into
the run's TensorBoard folder when training starts, so that a run in progress is listed too.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lightning import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only
from torch.utils.tensorboard.summary import hparams
from torch.utils.tensorboard.writer import FileWriter

from vae_lightning import CONF_DIR

# groups that say where things go or how the run is watched, not what is trained
NOT_CHOICES = ("hydra", "paths", "logger", "callbacks", "debug", "hparams_search")
NOT_OVERRIDES = ("hydra.", "paths.", "callbacks.", "logger.", "resume", "ckpt_path", "threads", "~", "+callbacks")


def plain_value(text: str) -> Any:
    """An override's value as TensorBoard should sort it: a number where it is one, else the text."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def experiment_hparams(choices: dict[str, Any], overrides: Sequence[str]) -> tuple[dict, dict]:
    """({name: value}, {group: its options}) for the HPARAMS tab."""
    values: dict[str, Any] = {}
    domains: dict[str, list[str]] = {}
    for group, option in sorted(choices.items()):
        if group.split("/")[0] in NOT_CHOICES:
            continue
        values[group] = "none" if option is None else str(option)
        options = sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))
        if values[group] in options:
            domains[group] = options
    for override in overrides:
        key, _, value = override.partition("=")
        name = key.lstrip("+")
        if key.startswith(NOT_OVERRIDES) or name in values or name.split("/")[0] in NOT_CHOICES:
            continue
        values[name] = plain_value(value)
    return values, domains


class HParams(Callback):
    """Writes this run's HPARAMS summaries (see the module docstring) to every TensorBoard logger."""

    def __init__(self, choices: dict[str, Any], overrides: Sequence[str], metrics: Sequence[str]) -> None:
        self.values, self.domains = experiment_hparams(dict(choices), list(overrides))
        self.metrics = list(metrics)

    def _write(self, trainer: Trainer, first: bool) -> None:
        experiment, start, end = hparams(self.values, dict.fromkeys(self.metrics, 0.0), self.domains)
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                writer = FileWriter(logger.log_dir)
                for summary in (experiment, start) if first else (end,):
                    writer.add_summary(summary)
                writer.close()

    @rank_zero_only
    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._write(trainer, first=True)

    @rank_zero_only
    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._write(trainer, first=False)
