"""The parts of the trackers that need neither a tracker nor a server (fast): the missing extra's message, the
local store, the run ids kept for a resume, the logger configs, and which loggers take the pictures."""

from __future__ import annotations

import numpy as np
import pytest
from lightning import Trainer
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from tests.conftest import compose_train
from vae_lightning.callbacks.sinks import TensorBoardSink, sinks
from vae_lightning.core.errors import VAELightningError
from vae_lightning.run import trackers


def test_a_missing_extra_names_the_key_and_the_install_command():
    with pytest.raises(
        VAELightningError, match=r"`logger=mlflow` needs no_such_package: pip install -e \"\.\[mlflow\]\""
    ):
        trackers.require("no_such_package", "mlflow", "logger=mlflow")


def test_a_local_sqlite_store_is_made_absolute_with_its_artifacts_beside_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    uri, artifacts = trackers.local_store("sqlite:///mlruns/mlflow.db")
    assert uri == f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}" and (tmp_path / "mlruns").is_dir()
    assert artifacts == (tmp_path / "mlruns" / "artifacts").as_uri()
    assert trackers.local_store("http://127.0.0.1:5000") == ("http://127.0.0.1:5000", None)


def test_the_tracker_run_ids_are_kept_in_the_run_folder_for_a_resume(tmp_path):
    assert trackers.saved_ids(tmp_path) == {}
    trackers.save_id(tmp_path, "mlflow", "abc")
    trackers.save_id(tmp_path, "wandb", "1234")
    assert trackers.saved_ids(tmp_path) == {"mlflow": "abc", "wandb": "1234"}


@pytest.mark.parametrize(
    ("choice", "loggers"),
    [("mlflow", {"mlflow"}), ("wandb", {"wandb"}), ("many", {"tensorboard", "csv", "mlflow", "wandb"}),
     ("[tensorboard,mlflow]", {"tensorboard", "mlflow"})],
)  # fmt: skip
def test_the_logger_options_compose(tmp_path, choice, loggers):
    cfg = compose_train([f"logger={choice}"], tmp_path)
    assert set(cfg.logger) == loggers
    if "mlflow" in loggers:
        assert cfg.logger.mlflow.run_dir == str(tmp_path) and cfg.logger.mlflow.tracking_uri.startswith("sqlite:///")
    if "wandb" in loggers:
        assert cfg.logger.wandb.offline is None and cfg.logger.wandb.sweep is None


def test_the_pictures_go_to_the_loggers_that_take_them(tmp_path):
    tensorboard = TensorBoardLogger(tmp_path, name="tb")
    trainer = Trainer(logger=[tensorboard, CSVLogger(tmp_path, name="csv")], enable_progress_bar=False)
    (sink,) = sinks(trainer)
    assert isinstance(sink, TensorBoardSink) and sink.logger is tensorboard
    assert sink.write("val/samples", np.zeros((8, 8, 3), np.uint8), 1)
    assert not sink.write("val/other", object(), 1)  # not a kind of output it shows
    assert sinks(Trainer(logger=CSVLogger(tmp_path), enable_progress_bar=False)) == []


def test_a_tracking_server_that_does_not_answer_is_one_clear_error_at_once():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once closed
    with pytest.raises(VAELightningError, match=rf"cannot reach the MLflow tracking server at http://127.0.0.1:{port}"):
        trackers.check_reachable(f"http://127.0.0.1:{port}", timeout=2)
    trackers.check_reachable("sqlite:///mlruns/mlflow.db")  # a local store needs no server
