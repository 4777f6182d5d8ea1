"""What the command-line tools (`evaluate`, `morph`) share: one-line errors, and the data set a checkpoint was
trained on, rebuilt with the keys the user changed."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig, OmegaConf

from vae_lightning.core.config import build
from vae_lightning.core.errors import DataNotFoundError, VAELightningError


def run_tool(function: Callable[[DictConfig], Any], cfg: DictConfig) -> Any:
    """`function(cfg)`, with a missing `ckpt_path` and every VAELightningError printed as one line on stderr and
    exit code 1."""
    try:
        if OmegaConf.is_missing(cfg, "ckpt_path"):
            raise VAELightningError("ckpt_path is required: give the checkpoint file as ckpt_path=<file.ckpt>.")
        return function(cfg)
    except VAELightningError as error:
        print(f"Error: {error}", file=sys.stderr)
        sys.exit(1)


def _flat(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat |= _flat(value, f"{prefix}{key}.")
        elif not key.startswith("_"):
            flat[f"{prefix}{key}"] = value
    return flat


def checkpoint_data_config(module: Any, changes: DictConfig) -> dict[str, Any]:
    """The data set config stored in the checkpoint of `module`, with the non-null keys of `changes` (the tool's
    `dataset.*` arguments) set; a key the checkpoint's data module does not have is refused, naming the ones it
    has."""
    data = module.hparams.get("data")
    if not data:
        raise DataNotFoundError("The checkpoint does not record its data set; it was not written by train.py.")
    given = {key: value for key, value in _flat(OmegaConf.to_container(changes)).items() if value is not None}
    allowed = _flat(data)
    for key in given:
        if key not in allowed:
            kind = str(data.get("_target_", "?")).rsplit(".", 1)[-1]
            raise VAELightningError(
                f"`dataset.{key}` is not a key of this checkpoint's data set ({kind}); "
                f"its keys are {', '.join(sorted(allowed))}."
            )
    merged = OmegaConf.merge(data, OmegaConf.from_dotlist([f"{key}={value}" for key, value in given.items()]))
    return OmegaConf.to_container(merged, resolve=True)


def checkpoint_datamodule(module: Any, changes: DictConfig) -> Any:
    """The checkpoint's data module, prepared and set up."""
    datamodule = build(checkpoint_data_config(module, changes), "dataset")
    datamodule.prepare_data()
    datamodule.setup("test")
    return datamodule
