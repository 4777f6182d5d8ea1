"""Building objects from `_target_` configs, with errors that name the config key."""

from __future__ import annotations

from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import OmegaConf

from vae_lightning.errors import ConfigValueError, VAELightningError


def as_plain(node: Any) -> Any:
    """A DictConfig/ListConfig as resolved plain containers (what checkpoints store); anything else as is."""
    if OmegaConf.is_config(node):
        return OmegaConf.to_container(node, resolve=True)
    return node


def build(node: Any, key: str, **kwargs: Any) -> Any:
    """`instantiate(node, **kwargs)`; a bad value in it raises a ConfigValueError naming `key.<param>`."""
    try:
        return instantiate(node, **kwargs)
    except ConfigValueError as bad:
        raise bad.under(key) from None
    except InstantiationException as failed:
        cause = failed.__cause__
        if isinstance(cause, ConfigValueError):
            raise cause.under(key) from None
        if isinstance(cause, VAELightningError):
            raise cause from None
        raise VAELightningError(f"Could not build `{key}` from the config: {failed}") from None


def call(factory: Any, key: str, *args: Any, **kwargs: Any) -> Any:
    """Call a `_partial_` factory from the config; a bad value raises a ConfigValueError naming `key.<param>`."""
    try:
        return factory(*args, **kwargs)
    except ConfigValueError as bad:
        raise bad.under(key) from None
