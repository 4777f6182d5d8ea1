"""Building objects from `_target_` configs, with errors that name the config key."""

from __future__ import annotations

from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import OmegaConf

from vae_lightning.errors import ConfigValueError, VAELightningError


def as_plain(node: Any) -> Any:
    """A DictConfig/ListConfig as resolved plain containers (what checkpoints store); anything else as is."""
    if OmegaConf.is_config(node):
        return OmegaConf.to_container(node, resolve=True)
    return node


def build(node: Any, key: str, *, keys_are_absolute: bool = False, **kwargs: Any) -> Any:
    """`instantiate(node, **kwargs)`; a bad value in it raises a ConfigValueError naming `key.<param>`.

    `keys_are_absolute`: the object builds sub-configs itself and its errors already name full keys.
    """
    try:
        return instantiate(node, **kwargs)
    except ConfigValueError as bad:
        raise (bad if keys_are_absolute else bad.under(key)) from None
    except InstantiationException as failed:
        cause = failed.__cause__
        if isinstance(cause, ConfigValueError):
            raise (cause if keys_are_absolute else cause.under(key)) from None
        if isinstance(cause, VAELightningError):
            raise cause from None
        raise VAELightningError(f"Could not build `{key}` from the config: {failed}") from None


def call(factory: Any, key: str, *args: Any, **kwargs: Any) -> Any:
    """Call a `_partial_` factory from the config; a bad value raises a ConfigValueError naming `key.<param>`."""
    try:
        return factory(*args, **kwargs)
    except ConfigValueError as bad:
        raise bad.under(key) from None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


_TRAINER_INTS = {
    "max_epochs": -1,
    "max_steps": -1,
    "min_epochs": 0,
    "log_every_n_steps": 0,
    "check_val_every_n_epoch": 1,
    "num_sanity_val_steps": -1,
    "accumulate_grad_batches": 1,
}
_TRAINER_LIMITS = ("limit_train_batches", "limit_val_batches", "limit_test_batches", "val_check_interval")


def check_trainer(trainer_cfg: Any) -> None:
    """Lightning accepts wrongly typed numbers and fails later with a traceback; check the common keys now."""
    for name, low in _TRAINER_INTS.items():
        value = trainer_cfg.get(name)
        if value is not None and (not _is_int(value) or value < low):
            raise ConfigValueError(f"trainer.{name}", f"must be an integer >= {low}", value)
    for name in _TRAINER_LIMITS:
        value = trainer_cfg.get(name)
        if value is None or (_is_int(value) and value >= 0):
            continue
        if isinstance(value, float) and 0.0 <= value <= 1.0:
            continue
        raise ConfigValueError(f"trainer.{name}", "must be a count (integer >= 0) or a fraction in [0.0, 1.0]", value)


def sweep_run_name() -> str:
    """`${sweep_run_name:}`: in a sweep, the job's overrides (e.g. `beta=ramp,model.latent_dim=8`), so that
    TensorBoard names each job's run by what it changed; in a single run, empty."""
    try:
        hydra_cfg = HydraConfig.get()
    except ValueError:  # composed outside a Hydra run (tests)
        return ""
    return hydra_cfg.job.override_dirname if hydra_cfg.mode == RunMode.MULTIRUN else ""


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("sweep_run_name"):
        OmegaConf.register_new_resolver("sweep_run_name", sweep_run_name)


register_resolvers()
