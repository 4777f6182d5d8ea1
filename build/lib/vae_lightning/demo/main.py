"""The demo command: load a checkpoint (with the same checks as `evaluate` and `morph`), build the page and
serve it until Ctrl-C.

    vae-demo ckpt_path=outputs/.../checkpoints/last.ckpt [host=127.0.0.1] [port=7860] [dataset.root=...]

Uploads, GIFs and strips live in one temporary folder (Gradio's cache is pointed there), which is removed
when the server stops (Ctrl-C or `kill`). The attribute direction is computed before the page is served, so
that the first upload is as quick as the next. Each request runs its torch operations on one thread, and as
many requests run at once as the machine has cores: a decode is too small to gain from a second thread, and
several users are served side by side instead of one after another.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig

from vae_lightning.api import TrainedVAE
from vae_lightning.core import checks
from vae_lightning.core.config import check_command_line, user_config_dirs
from vae_lightning.core.errors import ConfigValueError, DataNotFoundError, VAELightningError
from vae_lightning.core.threads import usable_cores
from vae_lightning.demo.model import DemoInputError, DemoModel
from vae_lightning.run.tools import run_tool
from vae_lightning.run.trainer import quiet_libraries

log = logging.getLogger("demo")


def load_model(cfg: DictConfig) -> DemoModel:
    """The checkpoint as a `DemoModel`, with its training data where it is on this machine (else the page
    says why the attribute tab is missing)."""
    vae = TrainedVAE.open(cfg.ckpt_path, config_dirs=user_config_dirs())  # a checkpoint or an exported model
    try:
        if vae.exported is None:
            datamodule, problem = vae.datamodule(cfg.dataset, cfg.paths), None
        else:  # an exported model carries its attribute directions, or says it has none
            datamodule, problem = None, None if vae.exported.directions else "this exported model has no attributes."
    except DataNotFoundError as missing:
        datamodule, problem = None, str(missing)
        log.warning("The checkpoint's data is not here, so the page has no attribute tab: %s", missing)
    model = DemoModel(vae, datamodule, problem, find_face=bool(cfg.detect_face))
    if model.default_attribute is not None:  # computed (or read from beside the checkpoint) before serving
        try:
            _, how = model.direction(None)
            log.info("The attribute slider moves along %s", how)
        except DemoInputError as unusable:  # the page opens without the attribute tab, and says why
            log.warning("The page has no attribute tab: %s", unusable)
            model.attributes, model.default_attribute, model.data_problem = [], None, str(unusable)
    return model


SIZE_UNITS = {"b": 1, "kb": 2**10, "mb": 2**20, "gb": 2**30}


def file_size(key: str, value: Any) -> int:
    """A size such as `100mb` (b, kb, mb, gb; units of 1024) or a number of bytes, in bytes."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmg]?b)?\s*", str(value).lower())
    if match is None or float(match.group(1)) <= 0:
        raise ConfigValueError(key, "must be a positive size such as 100mb, 512kb or a number of bytes", value)
    return int(float(match.group(1)) * SIZE_UNITS[match.group(2) or "b"])


def stop_on_sigterm(signum, frame) -> None:
    """`kill` stops the server as Ctrl-C does, so that its temporary folder is removed."""
    raise KeyboardInterrupt


def title(cfg: DictConfig, model: DemoModel) -> str:
    data = str((model.vae.module.hparams.get("data") or {}).get("_target_", "exported")).rsplit(".", 1)[-1]
    channels, height, width = model.vae.input_shape
    return (
        f"vae_lightning demo: {Path(cfg.ckpt_path).name}, a {model.vae.latent_dim}-D latent space "
        f"on {width}x{height} {'colour' if channels == 3 else 'grey'} images ({data.removesuffix('DataModule')})"
    )


def demo(cfg: DictConfig) -> None:
    """Serves the page until interrupted."""
    quiet_libraries()
    problems = checks.Problems()  # every bad value in one message, before anything is loaded
    port = problems.check(checks.integer, "port", cfg.port, low=0)
    try:
        import gradio  # noqa: F401  (optional dependency: say how to get it before loading anything)
    except ImportError:
        raise VAELightningError('The demo needs Gradio: pip install -e ".[demo]" (or "vae_lightning[demo]").') from None
    from vae_lightning.demo.app import Settings

    settings = Settings(
        scale=problems.check(checks.number, "scale", cfg.scale),
        steps=problems.check(checks.integer, "steps", cfg.steps, low=2),
        frame_ms=problems.check(checks.positive_int, "frame_ms", cfg.frame_ms),
        pause_ms=problems.check(checks.positive_int, "pause_ms", cfg.pause_ms),
        n_samples=problems.check(checks.positive_int, "n_samples", cfg.n_samples),
        n_dims=problems.check(checks.positive_int, "n_dims", cfg.n_dims),
        max_file_bytes=problems.check(file_size, "max_file_size", cfg.max_file_size),
    )
    problems.raise_if_any()
    torch.set_num_threads(1)
    signal.signal(signal.SIGTERM, stop_on_sigterm)
    try:
        serve(cfg, port, settings)
    except KeyboardInterrupt:  # Ctrl-C or `kill` before Gradio waits for them itself: while loading or starting
        log.info("Stopped while starting")


def serve(cfg: DictConfig, port: int, settings: Any) -> None:
    """Builds the page of the checkpoint and serves it until Ctrl-C or `kill`, in a temporary folder."""
    from vae_lightning.demo.app import build

    model = load_model(cfg)
    with tempfile.TemporaryDirectory(prefix="vae-demo-") as folder:
        os.environ["GRADIO_TEMP_DIR"] = folder
        app = build(model, settings, Path(folder) / "results", title(cfg, model))
        app.queue(default_concurrency_limit=usable_cores())
        log.info("Serving %s on http://%s:%d (Ctrl-C stops it)", cfg.ckpt_path, cfg.host, port)
        try:
            app.launch(
                server_name=str(cfg.host),
                server_port=port,
                max_file_size=str(cfg.max_file_size),
                show_error=True,
                quiet=True,
            )
        except OSError as busy:
            raise VAELightningError(f"Could not serve on {cfg.host}:{port} ({busy}): choose another port=...") from None
        finally:
            app.close()


@hydra.main(version_base="1.3", config_path="../conf", config_name="demo")
def hydra_app(cfg: DictConfig) -> None:
    run_tool(demo, cfg)


def main() -> None:
    """The `vae-demo` command."""
    check_command_line(sys.argv[1:], "demo")  # a mistyped name is one line, before Hydra composes anything
    hydra_app()


if __name__ == "__main__":
    main()
