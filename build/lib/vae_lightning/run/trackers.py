"""The experiment trackers a run can write to besides TensorBoard: MLflow (`logger=mlflow`) and Weights & Biases
(`logger=wandb`), each one Lightning logger built here from its config, plus what a tracker needs around it.

- One tracker run per training run: the tracker's run id is kept in `<run dir>/trackers.json`, so a resumed run
  (`resume=true`) continues the same tracker run instead of starting another.
- A sweep's jobs are grouped: in MLflow one experiment per sweep, in W&B one group per sweep.
- At the end (`finish`): `metrics.json`, the run's config and the final pictures as artifacts, and the run's
  status: finished, failed, or killed (MLflow) for a run stopped by Ctrl-C or SIGTERM.

MLflow's local store is an SQLite file (`paths.mlflow_uri`, by default `mlruns/mlflow.db`, its artifacts beside
it); `MLFLOW_TRACKING_URI` or `logger.mlflow.tracking_uri=http://...` point the run at a tracking server. W&B
runs offline unless a project is set and `WANDB_API_KEY` is in the environment (`wandb sync <run dir>/wandb/...`
uploads an offline run later).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import secrets
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import MLFlowLogger, WandbLogger
from lightning.pytorch.utilities import rank_zero_only

from vae_lightning.core.errors import VAELightningError

log = logging.getLogger(__name__)

RUN_IDS = "trackers.json"
# the run's outcome (`metrics.json`'s status) as each tracker names it
MLFLOW_STATUS = {"completed": "FINISHED", "failed": "FAILED", "diverged": "FAILED", "interrupted": "KILLED"}
WANDB_EXIT_CODE = {"completed": 0, "failed": 1, "diverged": 1, "interrupted": 130}


def require(package: str, extra: str, key: str) -> None:
    if importlib.util.find_spec(package) is None:
        raise VAELightningError(f'`{key}` needs {package}: pip install -e ".[{extra}]" (or pip install {package})')


def saved_ids(run_dir: str | Path) -> dict[str, str]:
    path = Path(run_dir) / RUN_IDS
    return json.loads(path.read_text()) if path.is_file() else {}


def save_id(run_dir: str | Path, tracker: str, run_id: str) -> None:
    path = Path(run_dir) / RUN_IDS
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(saved_ids(run_dir) | {tracker: run_id}, indent=2) + "\n")


def local_store(tracking_uri: str) -> tuple[str, str | None]:
    """(tracking URI, artifact location): an SQLite store's path made absolute (sweep workers may run elsewhere),
    its folder created, and its artifacts in `artifacts/` beside it; any other URI as given, its artifacts where
    its server keeps them."""
    prefix = "sqlite:///"
    if not tracking_uri.startswith(prefix):
        return tracking_uri, None
    database = Path(tracking_uri[len(prefix) :]).expanduser().resolve()
    database.parent.mkdir(parents=True, exist_ok=True)
    return prefix + str(database), (database.parent / "artifacts").as_uri()


def check_reachable(uri: str, timeout: float = 10.0) -> None:
    """A tracking server that does not answer its `/health` at once is one clear error now, not minutes of the MLflow
    client's retries."""
    if not uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout):
            pass
    except urllib.error.HTTPError:
        pass  # it answered (e.g. a proxy that asks for a login): the client's own errors say the rest
    except OSError as bad:
        raise VAELightningError(
            f"`logger.mlflow.tracking_uri`: cannot reach the MLflow tracking server at {uri} ({bad}). Start it, or "
            "unset MLFLOW_TRACKING_URI for the local store"
        ) from None


def mlflow_logger(
    run_dir: str,
    tracking_uri: str,
    experiment_name: str = "vae_lightning",
    sweep: str | None = None,
    run_name: str | None = None,
    tags: dict[str, Any] | None = None,
) -> MLFlowLogger:
    """An MLflow run of this training run, in `experiment_name` (in a sweep: `<experiment_name> <sweep folder>`,
    shared by its jobs), named `run_name`, tagged with the run folder and the sweep; the same run again when the
    run folder names one (a resume)."""
    require("mlflow", "mlflow", "logger=mlflow")
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    uri, artifacts = local_store(tracking_uri)
    if rank_zero_only.rank == 0:
        check_reachable(uri)
    experiment = f"{experiment_name} {sweep}" if sweep else experiment_name
    run_id = saved_ids(run_dir).get("mlflow")
    logger = MLFlowLogger(
        experiment_name=experiment,
        run_name=run_name or None,
        tracking_uri=uri,
        tags={"run_dir": str(run_dir), **({"sweep": sweep} if sweep else {}), **(tags or {})},
        artifact_location=artifacts,
        run_id=run_id,
    )
    if rank_zero_only.rank != 0:  # the other DDP processes log nothing
        return logger
    client = MlflowClient(uri)
    try:
        if run_id is not None:
            client.update_run(run_id, status="RUNNING")
            return logger
        if client.get_experiment_by_name(experiment) is None:
            try:
                client.create_experiment(experiment, artifact_location=artifacts)
            except MlflowException:  # another job of the sweep created it first
                if client.get_experiment_by_name(experiment) is None:
                    raise
        save_id(run_dir, "mlflow", logger.run_id)
    except MlflowException as bad:
        raise VAELightningError(f"`logger.mlflow`: the MLflow tracking store at {uri} refused the run: {bad}") from None
    return logger


def wandb_logger(
    run_dir: str,
    project: str | None = None,
    sweep: str | None = None,
    run_name: str | None = None,
    offline: bool | None = None,
    tags: list[str] | None = None,
) -> WandbLogger:
    """A W&B run of this training run in `<run dir>/wandb/`, in the group of its sweep; the same run id again when
    the run folder names one (a resume). `offline` None: online only where a project is set and `WANDB_API_KEY`
    is in the environment."""
    require("wandb", "wandb", "logger=wandb")
    if offline is None:
        offline = not (project and os.environ.get("WANDB_API_KEY"))
    run_id = saved_ids(run_dir).get("wandb") or secrets.token_hex(4)
    if rank_zero_only.rank == 0:
        save_id(run_dir, "wandb", run_id)
    return WandbLogger(
        name=run_name or None,
        save_dir=run_dir,
        project=project or "vae_lightning",
        group=sweep or None,
        offline=offline,
        id=run_id,
        resume="allow",
        tags=tags,
    )


# what a finished run keeps in its tracker: (files in the run folder, the folder they go to in the tracker run)
ARTIFACTS = (("metrics.json", ""), (".hydra/*.yaml", "config"), ("images/*.png", "images"))


def artifacts(output_dir: Path) -> list[tuple[Path, str]]:
    """(path, folder in the tracker run) of each file of `ARTIFACTS` that the run wrote."""
    return [(path, folder) for pattern, folder in ARTIFACTS for path in sorted(output_dir.glob(pattern))]


@rank_zero_only
def finish(loggers: list, output_dir: Path, status: str) -> None:
    """Each tracker's artifacts and final status (`status`: metrics.json's). A tracker that fails here is warned
    about; the run's own outputs are already on disk."""
    for logger in loggers:
        try:
            if isinstance(logger, MLFlowLogger):
                client, run_id = logger.experiment, logger.run_id
                for path, folder in artifacts(output_dir):
                    client.log_artifact(run_id, str(path), folder or None)
                client.set_terminated(run_id, MLFLOW_STATUS.get(status, "FAILED"))
            elif isinstance(logger, WandbLogger):
                run = logger.experiment
                for pattern, _ in ARTIFACTS:  # as they are in the run folder
                    if any(output_dir.glob(pattern)):
                        run.save(str(output_dir / pattern), base_path=str(output_dir), policy="now")
                run.finish(exit_code=WANDB_EXIT_CODE.get(status, 1))
        except Exception as bad:
            log.warning("%s: the run's end not recorded (%s: %s)", type(logger).__name__, type(bad).__name__, bad)
