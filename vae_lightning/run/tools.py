"""What the command-line tools (`evaluate`, `morph`) share: one-line errors, and the data set a checkpoint was
trained on, rebuilt with the keys the user changed."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from vae_lightning.core.config import CONF_DIR, build
from vae_lightning.core.errors import ConfigErrors, DataNotFoundError, VAELightningError

log = logging.getLogger(__name__)


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


# keys of a data set's config that say where its files are read or written, or whether they are fetched: a
# checkpoint never chooses them (its values are only named in the log as a hint); they come from the user's side
LOCATION_KEYS = frozenset({"root", "cache_dir", "download", "landmarks"})
# and the options of the store a root is read from (`dataset=shards`: an S3 endpoint, a region): a stranger's
# checkpoint must not choose where the user's signed requests go either
CONNECTION_KEYS = frozenset({"storage_options"})


def is_location(key: str) -> bool:
    parts = key.split(".")
    return parts[-1] in LOCATION_KEYS or parts[0] in CONNECTION_KEYS


def absolute_locations(dataset: DictConfig) -> list[str]:
    """Make the data set's relative folders (roots, caches, landmark files; `LOCATION_KEYS`) absolute, against
    the folder the command started in, so that the run's config and checkpoints do not depend on where a later
    command starts; returns the keys changed."""
    changed = []
    with read_write(dataset), open_dict(dataset):
        for key, value in _flat(OmegaConf.to_container(dataset, resolve=True)).items():
            name = key.rsplit(".", 1)[-1]
            folder = name in LOCATION_KEYS and name != "download"  # a path (not a store's option)
            if folder and isinstance(value, str) and value and "://" not in value:
                path = Path(value).expanduser()
                if not path.is_absolute():
                    OmegaConf.update(dataset, key, str(path.resolve()), merge=False)
                    changed.append(key)
    return changed


def user_side_locations(
    target: str, paths: Any = None, config_dirs: Sequence[str | os.PathLike] = ()
) -> dict[str, Any] | None:
    """The location keys (flat, e.g. `faces.root`) of the data set option whose `_target_` is `target`, as the
    option file of this installation (or of the user's `config_dirs`) sets them, resolved with `paths` (the
    tool's `paths` node; None: the packaged `paths/default.yaml`, so `VAE_DATA_DIR` and `VAE_CACHE_DIR`); None
    when no option file builds `target`."""
    paths = paths if paths is not None else OmegaConf.load(CONF_DIR / "paths" / "default.yaml")
    for root in (*map(Path, config_dirs), CONF_DIR):
        for option in sorted((root / "dataset").glob("*.yaml")):
            try:
                node = OmegaConf.load(option)
            except Exception:  # a broken file of the user's: not this option
                continue
            if not isinstance(node, DictConfig) or node.get("_target_") != target:
                continue
            node.pop("defaults", None)
            tree = OmegaConf.create({"paths": paths, "dataset": node})
            flat = _flat(OmegaConf.to_container(tree.dataset, resolve=False))
            return {key: OmegaConf.select(tree, f"dataset.{key}") for key in flat if is_location(key)}
    return None


def checkpoint_data_config(
    module: Any, changes: DictConfig, paths: Any = None, config_dirs: Sequence[str | os.PathLike] = ()
) -> dict[str, Any]:
    """The data set config stored in the checkpoint of `module`, its location keys (`LOCATION_KEYS`: data
    roots, caches, downloads) replaced by this installation's defaults (`user_side_locations`), then the non-null
    keys of `changes` (the tool's `dataset.*` arguments) set; a key the checkpoint's data module does not have is
    refused, naming the ones it has. Where the checkpoint's own locations differ, the log names them as a hint."""
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
    stored = {key: value for key, value in allowed.items() if is_location(key)}
    ours = user_side_locations(str(data.get("_target_")), paths, config_dirs) or {}
    missing = sorted(key for key in stored if key not in ours and key not in given and key.endswith("root"))
    if missing:
        raise DataNotFoundError(
            f"No data set option of this installation builds {data.get('_target_')}, so where its data is must be "
            f"given: {', '.join(f'dataset.{key}=<folder>' for key in missing)} (a checkpoint does not choose where "
            "a tool reads)."
        )
    local = {key: ours.get(key, False if key.endswith("download") else None) for key in stored} | {
        key: value for key, value in given.items() if key in stored
    }
    for key in sorted(stored):  # say so rather than download again, or report a missing folder, with the data here
        theirs, mine = stored[key], local[key]
        both = key.endswith("root") and key not in given and isinstance(theirs, str) and isinstance(mine, str)
        if both and theirs != mine and not Path(mine).expanduser().exists() and Path(theirs).is_dir():
            raise DataNotFoundError(
                f"The checkpoint's data is not at {mine}; it was trained on {theirs}, which is on this machine: "
                f"give dataset.{key}={theirs} to read it there (a checkpoint does not choose where a tool reads)."
            )
    for key in sorted(stored):
        if stored[key] != local[key] and stored[key] not in (None, False):
            log.info(
                "The checkpoint was trained with dataset.%s=%s; this tool uses %s (give dataset.%s=... to choose).",
                key,
                stored[key],
                local[key],
                key,
            )
    chosen = {key: value for key, value in given.items() if key not in stored} | local
    merged = OmegaConf.create(data)
    for key, value in chosen.items():
        OmegaConf.update(merged, key, value, merge=False)
    return OmegaConf.to_container(merged, resolve=False)


def checkpoint_datamodule(
    module: Any, changes: DictConfig, paths: Any = None, config_dirs: Sequence[str | os.PathLike] = ()
) -> Any:
    """The checkpoint's data module, its data read from this installation's locations (see
    `checkpoint_data_config`), prepared and set up. A missing data folder names where the checkpoint was
    trained as the place to point `dataset.root` at."""
    config = checkpoint_data_config(module, changes, paths, config_dirs)
    try:
        datamodule = build(config, "dataset")
        datamodule.prepare_data()
        datamodule.setup("test")
    except (DataNotFoundError, ConfigErrors) as missing:
        stored = {key: value for key, value in _flat(module.hparams["data"]).items() if key.endswith("root")}
        hint = ", ".join(
            f"dataset.{key}={value}" for key, value in stored.items() if value and value != _flat(config).get(key)
        )
        problems = missing.problems if isinstance(missing, ConfigErrors) else [missing]
        if not all(isinstance(problem, DataNotFoundError) for problem in problems):
            raise
        if not hint:  # missing data, as one kind of error whatever the number of folders
            raise DataNotFoundError(str(missing)) from None
        raise DataNotFoundError(
            f"{missing}\nThe checkpoint was trained with {hint}: give that if the data is there (a checkpoint does "
            "not choose where a tool reads)."
        ) from None
    return datamodule
