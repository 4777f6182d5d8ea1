"""A trained model as a folder people share: weights as safetensors, settings as JSON, no pickle anywhere.

    model.safetensors   every tensor of the model (network, prior, likelihood): `VAEModule.state_dict()`
    config.json         what rebuilding it needs: the model's settings (`hyper_parameters`; the training data set's
                        with its folders emptied, which are the user's to give) and the preprocessing (input shape,
                        pixel scaling, crop)
    data.json           what the tools need from the training data, which does not travel: attribute names and
                        what one unit of each is, the label names, the default attribute
    data.safetensors    the attribute directions (`direction/<name>`) and the mean code of each label
                        (`label_mean/<label>`: for faces and dogs, the domain means)
    README.md           the model card (see `vae_lightning.export`), with samples.png and reconstructions.png

Reading one (`read_exported`) runs no code from it: JSON and safetensors only, the classes its settings name
checked against the same allowlist as a checkpoint's (`core.checkpoint_io`), interpolations refused, the model
built first on the meta device and its shapes compared with the safetensors header before any memory is spent.
Each problem is one `CheckpointError` line. Needs the `hub` extra (`pip install "vae_lightning[hub]"`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from vae_lightning.core.checkpoint_io import refuse_unsafe_settings
from vae_lightning.core.errors import CheckpointError, VAELightningError
from vae_lightning.core.files import atomic_write
from vae_lightning.module import VAEModule
from vae_lightning.run.checkpoints import check_weights_fit
from vae_lightning.run.tools import LOCATION_KEYS

FORMAT = "vae_lightning.exported/1"
WEIGHTS, CONFIG, DATA, DATA_TENSORS = "model.safetensors", "config.json", "data.json", "data.safetensors"
# a folder holds only these kinds of file: nothing that unpickles
SAFE_SUFFIXES = (".safetensors", ".json", ".md", ".png")


def safetensors_torch():
    try:
        import safetensors.torch
    except ImportError:
        raise VAELightningError(
            'Exported models need safetensors: pip install "vae_lightning[hub]" (or pip install safetensors).'
        ) from None
    return safetensors.torch


@dataclass
class ExportedData:
    """What an exported model keeps of its training data: attribute directions (name -> (direction, what one
    unit of it is)), label names, the mean code of each label, and the default attribute."""

    directions: dict[str, tuple[torch.Tensor, str]] = field(default_factory=dict)
    class_names: dict[int, str] = field(default_factory=dict)
    label_means: dict[int, torch.Tensor] = field(default_factory=dict)
    default_attribute: str | None = None


def write_exported(
    folder: str | os.PathLike, module: VAEModule, preprocessing: dict[str, Any], data: ExportedData
) -> list[Path]:
    """The model's files in `folder` (created): weights, config, data; returns their paths."""
    st = safetensors_torch()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    hparams = dict(module.hparams) | {"data": without_locations(module.hparams.get("data"))}
    config = {"format": FORMAT, "hyper_parameters": _jsonable(hparams), "preprocessing": preprocessing}
    weights = {name: tensor.detach().cpu().contiguous().clone() for name, tensor in module.state_dict().items()}
    tensors = {f"direction/{name}": d.detach().float().cpu().contiguous() for name, (d, _) in data.directions.items()}
    tensors |= {f"label_mean/{label}": m.detach().float().cpu().contiguous() for label, m in data.label_means.items()}
    described = {
        "attributes": {name: what for name, (_, what) in data.directions.items()},
        "default_attribute": data.default_attribute,
        "class_names": {str(label): name for label, name in data.class_names.items()},
    }
    written = [
        atomic_write(folder / WEIGHTS, lambda f: f.write(st.save(weights))),
        atomic_write(folder / CONFIG, lambda f: f.write(json.dumps(config, indent=2).encode())),
        atomic_write(folder / DATA, lambda f: f.write(json.dumps(described, indent=2).encode())),
        atomic_write(folder / DATA_TENSORS, lambda f: f.write(st.save(tensors))),
    ]
    return written


def without_locations(tree: Any) -> Any:
    """A data set's config with its folders, caches and downloads (`run.tools.LOCATION_KEYS`) emptied (null):
    the keys stay, for the user to give."""
    if isinstance(tree, dict):
        return {key: None if key in LOCATION_KEYS else without_locations(value) for key, value in tree.items()}
    return tree


def _jsonable(tree: Any) -> Any:
    if isinstance(tree, dict):
        return {str(key): _jsonable(value) for key, value in tree.items()}
    if isinstance(tree, list | tuple):
        return [_jsonable(value) for value in tree]
    return tree


def _json(path: Path) -> dict:
    if not path.is_file():
        raise CheckpointError(f"{path.parent} is not an exported vae_lightning model: it has no {path.name}.")
    try:
        value = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as bad:
        raise CheckpointError(f"{path} is not valid JSON ({str(bad).splitlines()[0][:120]}).") from None
    if not isinstance(value, dict):
        raise CheckpointError(f"{path} is not a JSON object.")
    return value


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    st = safetensors_torch()
    if not path.is_file():
        raise CheckpointError(f"{path.parent} is not an exported vae_lightning model: it has no {path.name}.")
    try:
        return st.load_file(str(path))
    except Exception as bad:  # safetensors reports a damaged or lying header as its own error type
        reason = str(bad).splitlines()[0][:160] if str(bad) else type(bad).__name__
        raise CheckpointError(f"{path} is not a readable safetensors file ({reason}).") from None


def _header_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """The tensor shapes a safetensors file declares, read from its header alone (no tensor data)."""
    if not path.is_file():
        raise CheckpointError(f"{path.parent} is not an exported vae_lightning model: it has no {path.name}.")
    try:
        with path.open("rb") as f:
            size = int.from_bytes(f.read(8), "little")
            if not 0 < size <= min(100_000_000, path.stat().st_size - 8):
                raise ValueError(f"a header of {size} bytes in a file of {path.stat().st_size}")
            header = json.loads(f.read(size))
        return {name: tuple(entry["shape"]) for name, entry in header.items() if name != "__metadata__"}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as bad:
        raise CheckpointError(f"{path} is not a readable safetensors file ({str(bad)[:160]}).") from None


def read_exported(
    folder: str | os.PathLike, config_dirs: Sequence[str | os.PathLike] = ()
) -> tuple[VAEModule, dict[str, Any], ExportedData]:
    """(the model in eval mode, its preprocessing, its data) from an exported folder, checked as described in
    the module docstring."""
    folder = Path(folder).expanduser()
    config = _json(folder / CONFIG)
    if config.get("format") != FORMAT:
        raise CheckpointError(
            f"{folder / CONFIG} is not of the format this version reads ({FORMAT}; it says {config.get('format')!r})."
        )
    hparams = config.get("hyper_parameters")
    if not isinstance(hparams, dict) or not {"net", "input_shape"} <= set(hparams):
        raise CheckpointError(f"{folder / CONFIG} does not describe a model (no hyper_parameters).")
    refuse_unsafe_settings(hparams, config_dirs, str(folder))
    shapes = _header_shapes(folder / WEIGHTS)
    try:
        with torch.device("meta"):
            skeleton = VAEModule.from_settings(hparams)
        check_weights_fit({"state_dict": {k: torch.empty(s, device="meta") for k, s in shapes.items()}}, skeleton,
                          folder / WEIGHTS, "its config builds")  # fmt: skip
        module = VAEModule.from_settings(hparams)
        module.load_state_dict(_tensors(folder / WEIGHTS))
    except CheckpointError:
        raise
    except (RuntimeError, KeyError, TypeError, ValueError, VAELightningError) as bad:
        reason = str(bad).splitlines()[0][:200]
        raise CheckpointError(f"{folder} does not hold the model its config describes ({reason}).") from None
    return module.eval(), dict(config.get("preprocessing") or {}), _read_data(folder, module.net.latent_dim)


def _read_data(folder: Path, latent_dim: int) -> ExportedData:
    described = _json(folder / DATA)
    tensors = _tensors(folder / DATA_TENSORS)
    attributes = described.get("attributes") or {}
    names = described.get("class_names") or {}
    if not isinstance(attributes, dict) or not isinstance(names, dict):
        raise CheckpointError(f"{folder / DATA} does not list attributes and label names.")
    data = ExportedData(default_attribute=described.get("default_attribute"))
    for name, what in attributes.items():
        direction = tensors.get(f"direction/{name}")
        if direction is None or tuple(direction.shape) != (latent_dim,) or not isinstance(what, str):
            raise CheckpointError(f"{folder}: the direction of attribute {name!r} is missing or not {latent_dim} long.")
        data.directions[str(name)] = (direction, what)
    for label, name in names.items():
        if not str(label).lstrip("-").isdigit() or not isinstance(name, str):
            raise CheckpointError(f"{folder / DATA}: the label names are not numbered names.")
        data.class_names[int(label)] = name
    for key, tensor in tensors.items():
        label = key.removeprefix("label_mean/")
        if label != key and label.lstrip("-").isdigit():
            if tuple(tensor.shape) != (latent_dim,) or not bool(tensor.isfinite().all()):
                raise CheckpointError(f"{folder}: the mean code of label {label} is not {latent_dim} finite numbers.")
            data.label_means[int(label)] = tensor
    if data.default_attribute not in (None, *data.directions):
        data.default_attribute = None
    return data


def unsafe_files(folder: str | os.PathLike) -> list[Path]:
    """The files of `folder` that are not of the safe kinds (`SAFE_SUFFIXES`): empty for an exported model."""
    return [p for p in Path(folder).rglob("*") if p.is_file() and p.suffix not in SAFE_SUFFIXES]
