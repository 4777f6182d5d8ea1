"""Where the packaged configs live, building objects from `_target_` configs with errors that name the config key,
and the config resolvers."""

from __future__ import annotations

import difflib
import functools
import os
import secrets
import sys
import types
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf

from vae_lightning.core.errors import ConfigErrors, ConfigValueError, VAELightningError

# The Hydra configs of `train`, `evaluate` and `morph`, shipped inside the package (`pkg://vae_lightning/conf`).
CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
# a checkpoint's hyperparameter of VAEModule -> the config groups whose targets it may name
TRUSTED_GROUPS = {
    "net": ("model",),
    "posterior": ("posterior",),
    "prior": ("prior",),
    "sampler": ("sampler",),
    "loss": ("loss",),
    "beta": ("beta",),
    "optimizer": ("optimizer",),
    "lr_schedule": ("lr_schedule",),
    "data": ("dataset",),
}
# hyperparameter -> the config key a user sets it with (its group's)
CONFIG_KEYS = {name: groups[0] for name, groups in TRUSTED_GROUPS.items()}


def user_config_dirs() -> list[str]:
    """The config folders a user added to the running Hydra app's search path (`--config-dir`,
    `hydra.searchpath=[file://...]`): their options' `_target_`s are trusted in checkpoints as the packaged ones.
    Empty outside a Hydra app."""
    if not HydraConfig.initialized():
        return []
    return [source.path for source in HydraConfig.get().runtime.config_sources if source.schema == "file"]


def config_dirs_of(argv: Sequence[str]) -> list[Path] | None:
    """The config folders a command line adds (`--config-dir X`, `-cd X`, `--config-dir=X`); None when it changes
    the search path in a way this does not follow (`hydra.searchpath=...`, `--config-path`)."""
    folders: list[Path] = []
    for i, word in enumerate(argv):
        if word.startswith(("hydra.searchpath", "+hydra.searchpath", "--config-path", "-cp")):
            return None
        if word in ("--config-dir", "-cd") and i + 1 < len(argv):
            folders.append(Path(argv[i + 1]).expanduser())
        elif word.startswith("--config-dir="):
            folders.append(Path(word.split("=", 1)[1]).expanduser())
    return folders


# keys that moved, and where to: an old command line gets one line naming the new key, not Hydra's struct error
MOVED_KEYS = {
    "module.gradient_clip_val": "+trainer.gradient_clip_val (Lightning's own flag; with "
    "+trainer.gradient_clip_algorithm=norm|value)",
}


def moved_key(argv: Sequence[str]) -> str | None:
    """One line for the first override of a key that has moved (`MOVED_KEYS`), naming where it is now."""
    for word in argv:
        key = word.partition("=")[0].lstrip("+~")
        if key in MOVED_KEYS:
            return f"`{key}` has moved: use {MOVED_KEYS[key]}."
    return None


def unknown_option(argv: Sequence[str]) -> str | None:
    """One line for the first `group=option` of a command line whose option no config folder offers, with the
    nearest existing one ("did you mean mnist?"), before Hydra answers with its own longer message; None when
    every option exists (or the search path is one this does not follow)."""
    folders = config_dirs_of(argv)
    if folders is None:
        return None
    for word in argv:
        key, sep, value = word.partition("=")
        if not sep or key.startswith(("+", "~", "-", "hydra")) or "." in key:
            continue
        group = key.split("@")[0]
        places = [root / group for root in (CONF_DIR, *folders) if (root / group).is_dir()]
        if not places:
            continue
        options = sorted({path.stem for place in places for path in place.glob("*.yaml")})
        for choice in (part.strip() for part in value.split(",")):  # a sweep's list too
            if not choice or choice in options or choice == "null" or any(c in choice for c in "()[]${}*"):
                continue
            near = difflib.get_close_matches(choice, options, n=1)
            hint = f" Did you mean {near[0]}?" if near else ""
            return f"{group}={choice} is not an option of the `{group}` group ({', '.join(options)}).{hint}"
    return None


def unknown_key(argv: Sequence[str], config_name: str = "train") -> str | None:
    """One line for the first `key=value` of a command line whose key the composed config lacks, with the nearest
    key beside it and how to add a key; None when the config composes, or for a command line this does not follow
    (a sweep, another search path), which Hydra then answers itself."""
    if config_dirs_of(argv) != [] or any(word.startswith("-") for word in argv):  # a sweep (-m), --cfg, ...
        return None
    overrides = [word for word in argv if "=" in word and not word.startswith("hydra")]
    keys = [word.partition("=")[0] for word in overrides if not word.startswith(("+", "~"))]
    if all("." not in key and "/" not in key and (CONF_DIR / key).is_dir() for key in keys):
        return None  # no key to check: options (`group=option`) are checked by `unknown_option`
    from hydra import compose, initialize_config_dir
    from hydra.errors import ConfigCompositionException

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        try:
            compose(config_name, overrides=overrides)
            return None
        except ConfigCompositionException as failed:
            first = str(failed).splitlines()[0]
            bad = first.split("'")[1] if first.startswith("Could not override '") else None
            if bad is None:
                return None
            word = next((word for word in overrides if word.partition("=")[0] == bad), None)
            if word is None:
                return None
            try:
                config = compose(config_name, overrides=[other for other in overrides if other != word])
            except ConfigCompositionException:
                return None
    parent, _, name = bad.rpartition(".")
    while parent and not isinstance(OmegaConf.select(config, parent), DictConfig):  # `bogus.x`: no `bogus`
        parent, _, name = parent.rpartition(".")
    node = OmegaConf.select(config, parent) if parent else config
    keys = [str(key) for key in node if not str(key).startswith("_")]
    near = difflib.get_close_matches(name, keys, n=1)
    hint = f" Did you mean {parent}.{near[0]}?" if near else f" Its keys: {', '.join(keys)}." if keys else ""
    where = f"`{parent}`" if parent else "the config"
    return f"`{'.'.join(filter(None, (parent, name)))}` is not a key of {where}.{hint} To add a key, give +{word}."


def given_overrides(hydra_node: Any) -> list[str]:
    """The command-line overrides in a Hydra config node (`hydra`), as typed: an override whose value holds
    `${...}` is text here, not an interpolation to resolve (it may name keys outside the node)."""
    return [str(text) for text in OmegaConf.to_container(hydra_node.overrides.task, resolve=False)]


def command_line() -> list[str] | None:
    """The run's command-line overrides (None: not run by Hydra, e.g. `train(cfg)` from Python)."""
    return given_overrides(HydraConfig.get()) if HydraConfig.initialized() else None


def check_command_line(argv: Sequence[str], config_name: str) -> None:
    """Before Hydra composes anything: a mistyped option or key, or a key that has moved, ends the command with one
    line on stderr (`Error: ...`, with the nearest existing name) and exit code 1."""
    mistyped = unknown_option(argv) or moved_key(argv) or unknown_key(argv, config_name)
    if mistyped is not None:
        print(f"Error: {mistyped}", file=sys.stderr)
        sys.exit(1)


def as_plain(node: Any) -> Any:
    """A DictConfig/ListConfig as resolved plain containers (what checkpoints store); anything else as is."""
    if OmegaConf.is_config(node):
        return OmegaConf.to_container(node, resolve=True)
    return node


def is_plain(value: Any) -> bool:
    """Whether a value is plain data (numbers, strings, lists and mappings of them): a setting a checkpoint can
    store, unlike an object or a factory."""
    if value is None or isinstance(value, bool | int | float | str):
        return True
    if isinstance(value, Mapping | DictConfig):
        return all(is_plain(item) for item in value.values())
    return isinstance(value, list | tuple | ListConfig) and all(is_plain(item) for item in value)


def made(value: Any, key: str, **needs: Any) -> Any:
    """A part of a model given as the object itself, or as a factory (a class, a function, or the partial that
    Hydra builds for a `_partial_` config) that is called with what it `needs` from the parts built before it; a
    bad value raises an error naming `key.<param>`."""
    factory = isinstance(value, type | functools.partial | types.FunctionType | types.MethodType)
    return call(value, key, **needs) if factory else value


def _placed(error: VAELightningError, key: str | None) -> VAELightningError:
    return error.under(key) if key and isinstance(error, ConfigValueError | ConfigErrors) else error


def nested_key(key: str | None, inner: str | None) -> str | None:
    """The key of a part Hydra failed to build inside the node of `key`, from the `full_key` Hydra names (`inner`):
    a node of the run's config is named from the config's root (`callbacks.diagnostics.pictures.samples`), one
    built from its own settings from itself (`key` None: a module's, whose parts are named by its hyperparameters,
    `net` for `model`)."""
    if not inner:
        return key
    if key is None:
        head, dot, rest = inner.partition(".")
        return CONFIG_KEYS.get(head, head) + dot + rest
    return inner if inner == key or inner.startswith(f"{key}.") else f"{key}.{inner}"


def build(node: Any, key: str | None, **kwargs: Any) -> Any:
    """`instantiate(node, **kwargs)`; a bad value in it raises an error naming `key.<param>` (`key` None: the
    object names full keys itself, e.g. a module that builds its sub-configs)."""
    try:
        return instantiate(node, **kwargs)
    except (ConfigValueError, ConfigErrors) as bad:
        raise _placed(bad, key) from None
    except InstantiationException as failed:
        cause = failed.__cause__
        if isinstance(cause, VAELightningError):  # Hydra's message names the nested part that failed, if one did
            inner = str(failed).rpartition("\nfull_key: ")[2] if "\nfull_key: " in str(failed) else None
            raise _placed(cause, nested_key(key, inner)) from None
        raise VAELightningError(f"Could not build `{key or node.get('_target_')}` from the config: {failed}") from None


def call(factory: Any, key: str, *args: Any, **kwargs: Any) -> Any:
    """Call a `_partial_` factory from the config; a bad value raises an error naming `key.<param>`."""
    try:
        return factory(*args, **kwargs)
    except (ConfigValueError, ConfigErrors) as bad:
        raise _placed(bad, key) from None


def sweep_run_name() -> str:
    """`${sweep_run_name:}`: in a sweep, the job's overrides (e.g. `beta=ramp,model.latent_dim=8`), so that
    TensorBoard names each job's run by what it changed; in a single run, empty."""
    try:
        hydra_cfg = HydraConfig.get()
    except ValueError:  # composed outside a Hydra run (tests)
        return ""
    return hydra_cfg.job.override_dirname if hydra_cfg.mode == RunMode.MULTIRUN else ""


def sweep_name() -> str | None:
    """`${sweep_name:}`: in a sweep, its folder (`hydra.sweep.dir`), which groups its jobs in a tracker (an MLflow
    experiment, a W&B group); in a single run, None."""
    try:
        hydra_cfg = HydraConfig.get()
    except ValueError:
        return None
    return str(hydra_cfg.sweep.dir) if hydra_cfg.mode == RunMode.MULTIRUN else None


def tracker_run_name() -> str | None:
    """`${tracker_run_name:}`: a run's name in a tracker: in a sweep, the job's overrides (or its number); else the
    run folder's name."""
    try:
        hydra_cfg = HydraConfig.get()
    except ValueError:
        return None
    if hydra_cfg.mode == RunMode.MULTIRUN:
        return hydra_cfg.job.override_dirname or f"job {hydra_cfg.job.num}"
    return Path(hydra_cfg.runtime.output_dir).name


def user_cache_dir() -> str:
    """`${user_cache_dir:}`: the folder of this user's preprocessed data, `$XDG_CACHE_HOME/vae_lightning` (default
    `~/.cache/vae_lightning`): one place for every command, whatever folder it starts in, so that a tool finds
    what a run prepared instead of preparing it again."""
    return str(Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser().resolve() / "vae_lightning")


def run_id() -> str:
    """`${run_id:}`: six random hex digits that make a run or sweep folder name unique even when two runs start
    in the same second. Cached like Hydra's `${now:}`, so every use in one run (and its sweep jobs) agrees."""
    return secrets.token_hex(3)


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("sweep_run_name"):
        OmegaConf.register_new_resolver("sweep_run_name", sweep_run_name)
    if not OmegaConf.has_resolver("user_config_dirs"):
        OmegaConf.register_new_resolver("user_config_dirs", user_config_dirs)
    for name, resolver in (("sweep_name", sweep_name), ("tracker_run_name", tracker_run_name)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver)
    if not OmegaConf.has_resolver("user_cache_dir"):
        OmegaConf.register_new_resolver("user_cache_dir", user_cache_dir)
    if not OmegaConf.has_resolver("run_id"):
        OmegaConf.register_new_resolver("run_id", run_id, use_cache=True)


def data_set_keys(folders: Sequence[Path]) -> dict[str, Any]:
    """Every key of every data set option in `folders` (config folders), each null, nested where the option
    nests (the mixed set's `faces.root`): what the tools let a user change with `dataset.<key>=<value>`."""
    keys: dict[str, Any] = {}

    def add(into: dict[str, Any], node: dict[str, Any]) -> None:
        for key, value in node.items():
            if key == "defaults" or key.startswith("_"):
                continue
            if isinstance(value, dict):
                add(into.setdefault(key, {}), value)
            else:
                into.setdefault(key, None)

    for folder in folders:
        for option in sorted(Path(folder, "dataset").glob("*.yaml")):
            node = OmegaConf.to_container(OmegaConf.load(option))
            if isinstance(node, dict):
                add(keys, node)
    return keys


def register_tool_dataset_keys() -> None:
    """`tool_dataset/keys` in Hydra's ConfigStore: the keys of the packaged data set options and of the config
    folders the command line adds (`--config-dir`), so the tools take a change of any of them with no hand-kept
    list (Hydra refuses keys a config does not declare)."""
    folders = [CONF_DIR, *(config_dirs_of(sys.argv[1:]) or [])]
    ConfigStore.instance().store(group="tool_dataset", name="keys", node=data_set_keys(folders))


register_resolvers()
register_tool_dataset_keys()
