"""TensorBoard's HPARAMS tab: each run's experiment choices beside its own metrics, to compare the runs of a sweep.

The hyperparameters are what a user chose, not every config key: the option of each config group (`beta=ramp`,
`model=conv`, with the group's other options as the filter values) and each key given on the command line (in
a sweep, the swept ones, e.g. `model.latent_dim`). The metrics are the run's own scalar tags (`val/loss`,
`test/nll`, ...), which the hparams plugin reads from the run's event files, so nothing is written twice. The
summaries are written through the plugin's public summary API (`torch.utils.tensorboard.summary.hparams`) into
the run's TensorBoard folder when training starts, so that a run in progress is listed too. A tracker (MLflow,
Weights & Biases) gets the same choices as parameters named `choice/<name>`, and the module's whole config
(`module/net/latent_dim`, ...), where its filters can find any key.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lightning import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import CSVLogger, MLFlowLogger, TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only
from torch.utils.tensorboard.summary import hparams
from torch.utils.tensorboard.writer import FileWriter

from vae_lightning.core.config import CONF_DIR, command_line
from vae_lightning.core.errors import ConfigValueError
from vae_lightning.core.files import atomic_write

log = logging.getLogger(__name__)

NOT_OVERRIDES = ("hydra", "paths", "callbacks", "logger", "debug", "hparams_search", "resume", "ckpt_path", "threads")


def plain_value(text: str) -> Any:
    """An override's value as TensorBoard should sort it: a number where it is one, else the text."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def experiment_hparams(choices: dict[str, Any], overrides: Sequence[str]) -> tuple[dict, dict]:
    """({name: value}, {group: its options}) for the HPARAMS tab: the option of every config group of the run
    that shapes the model or its training, the user's own groups included (not Hydra's, nor where files go and
    how runs are shown: `NOT_OVERRIDES`), and the keys given on the command line."""
    values: dict[str, Any] = {
        str(group): "none" if option is None else str(option)
        for group, option in choices.items()
        if str(group).split("/")[0] not in NOT_OVERRIDES
    }
    for override in overrides:
        key, _, value = override.partition("=")
        name = key.lstrip("+")
        if not key.startswith("~") and name.split(".")[0].split("/")[0] not in NOT_OVERRIDES:
            values[name] = str(choices[name]) if name in choices else plain_value(value)
    domains = {}
    for name, value in values.items():
        options = sorted(p.stem for p in (CONF_DIR / name).glob("*.yaml")) if name in choices else []
        if value in options:
            domains[name] = options
    return values, domains


# the choices a run logged to its trackers, kept in the run folder so that a resume can say what it changed
TRACKED = "tracker_params.json"


def changed_choices(record: Path, choices: dict[str, Any]) -> dict[str, str]:
    """`resumed/<name>` = `<before> -> <now>` for each choice whose value differs from the one `record` kept from
    the run's earlier start (a resume with a changed override); `record` then holds `choices`."""
    try:
        before = json.loads(record.read_text()) if record.is_file() else {}
    except (OSError, ValueError):
        before = {}
    before = before if isinstance(before, dict) else {}
    changed = {
        f"resumed/{name}": f"{before[name]} -> {value}"
        for name, value in choices.items()
        if name in before and str(before[name]) != str(value)
    }
    try:
        atomic_write(record, lambda f: f.write(json.dumps(before | choices, indent=2, default=str).encode()))
    except OSError as bad:
        log.warning("Could not keep the tracked choices in %s (%s).", record, bad)
    return changed


def flat_params(params: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """`params` as MLflow stores them: nested keys joined by `/`, values as text of at most 250 characters (as
    Lightning's MLflow logger writes them)."""
    flat: dict[str, str] = {}
    for key, value in params.items():
        if isinstance(value, dict) and value:
            flat |= flat_params(value, f"{prefix}{key}/")
        else:
            flat[f"{prefix}{key}"] = str(value)[:250]
    return flat


def log_mlflow_params(logger: MLFlowLogger, params: dict[str, Any]) -> None:
    """Log `params` to the logger's MLflow run, which MLflow allows once per key: the new ones as parameters; one
    whose value a resume changed (e.g. `trainer.max_epochs` raised to train longer) as the tag
    `resumed/<key>` = `<before> -> <now>`, so that the run goes on and says what changed."""
    from mlflow.entities import Param

    client, run_id = logger.experiment, logger.run_id
    before = client.get_run(run_id).data.params
    params = flat_params(params)
    new = [Param(key, value) for key, value in params.items() if key not in before]
    for i in range(0, len(new), 100):  # MLflow takes at most 100 parameters per call
        client.log_batch(run_id, params=new[i : i + 100])
    for key, value in params.items():
        if key in before and before[key] != value:
            client.set_tag(run_id, f"resumed/{key}", f"{before[key]} -> {value}"[:5000])


class HParams(Callback):
    """Writes this run's HPARAMS summaries (see the module docstring) to every TensorBoard logger."""

    def __init__(self, choices: dict[str, Any], metrics: Sequence[str], overrides: Sequence[str] | None = None) -> None:
        """`overrides`: the keys given on the command line; None: the Hydra run's own (read here, not interpolated
        in the config, where a value holding `${...}` would be resolved again)."""
        given = command_line() if overrides is None else overrides
        self.values, self.domains = experiment_hparams(dict(choices), list(given or []))
        if isinstance(metrics, str) or not all(isinstance(metric, str) for metric in metrics):
            raise ConfigValueError("metrics", "must be a list of metric names such as [val/loss, test/nll]", metrics)
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
        choices = {f"choice/{name}": value for name, value in self.values.items()}
        trackers = [logger for logger in trainer.loggers if not isinstance(logger, TensorBoardLogger | CSVLogger)]
        if not trackers:
            return
        changed = changed_choices(Path(trainer.default_root_dir) / TRACKED, choices)
        for logger in trackers:  # the trackers' own parameters (MLflow's params, W&B's config)
            if isinstance(logger, MLFlowLogger):
                log_mlflow_params(logger, choices | {"module": dict(pl_module.hparams)})
            else:  # W&B takes a changed value; the change is noted beside it
                logger.log_hyperparams(choices | {"module": dict(pl_module.hparams)} | changed)

    @rank_zero_only
    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._write(trainer, first=False)
