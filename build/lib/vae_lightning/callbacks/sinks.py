"""Where the pictures go: one sink per logger of the run that can show them, each writing through its logger's own
API. TensorBoard takes every kind of output (images, figures, histograms, the Projector's embedding); MLflow
takes images and figures as PNG artifacts, `images/<tag>/step_<n>.png` (in the run's Artifacts in its UI);
Weights & Biases takes images and figures as `wandb.Image`s and histograms as `wandb.Histogram`s. An output a
logger has no place for is left out of that logger only. CSV takes no pictures.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from lightning import Trainer
from lightning.pytorch.loggers import Logger, MLFlowLogger, TensorBoardLogger, WandbLogger
from matplotlib.figure import Figure
from PIL import Image

from vae_lightning.callbacks.pictures import Embedding, Histogram


def figure_image(figure: Figure) -> Image.Image:
    """The figure as it is saved to a PNG file."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    buffer.seek(0)
    return Image.open(buffer).convert("RGB")


class Sink:
    """Writes one logger's pictures. `write` returns whether the logger took the output."""

    def __init__(self, logger: Logger) -> None:
        self.logger = logger

    def write(self, tag: str, output: Any, step: int) -> bool:
        raise NotImplementedError

    def flush(self) -> None:
        """After a drawing: make what was written visible."""


class TensorBoardSink(Sink):
    def write(self, tag: str, output: Any, step: int) -> bool:
        writer = self.logger.experiment
        if isinstance(output, np.ndarray):
            writer.add_image(tag, output, step, dataformats="HWC")
        elif isinstance(output, Figure):
            writer.add_figure(tag, output, step, close=False)
        elif isinstance(output, Histogram):
            writer.add_histogram(tag, output.values, step)
        elif isinstance(output, Embedding):
            writer.add_embedding(
                output.points, metadata=output.metadata, label_img=output.thumbnails, global_step=step, tag=output.tag
            )
        else:
            return False
        return True

    def flush(self) -> None:
        self.logger.experiment.flush()


class MLflowSink(Sink):
    """Images and figures as PNG artifacts, `images/<tag>/step_<n>.png`: one file each, under a path that reads as
    the tag (MLflow's images by key and step get encoded names and a compressed copy each)."""

    def write(self, tag: str, output: Any, step: int) -> bool:
        client, run_id, path = self.logger.experiment, self.logger.run_id, f"images/{tag}/step_{step:07d}.png"
        if isinstance(output, np.ndarray):
            client.log_image(run_id, output, artifact_file=path)
        elif isinstance(output, Figure):
            client.log_figure(run_id, output, path)
        else:
            return False
        return True


class WandbSink(Sink):
    """Images and figures as `wandb.Image`s, histograms as `wandb.Histogram`s, at the trainer's step (Lightning's
    `trainer/global_step` axis, as for the scalars)."""

    def write(self, tag: str, output: Any, step: int) -> bool:
        import wandb

        if isinstance(output, np.ndarray):
            value = wandb.Image(output)
        elif isinstance(output, Figure):
            value = wandb.Image(figure_image(output))
        elif isinstance(output, Histogram):
            value = wandb.Histogram(output.values)
        else:
            return False
        self.logger.log_metrics({tag: value}, step=step)
        return True


SINKS = ((TensorBoardLogger, TensorBoardSink), (MLFlowLogger, MLflowSink), (WandbLogger, WandbSink))


def sinks(trainer: Trainer) -> list[Sink]:
    """A sink for each logger of the trainer that takes pictures."""
    found = []
    for logger in trainer.loggers:
        for kind, sink in SINKS:
            if isinstance(logger, kind):
                found.append(sink(logger))
                break
    return found
