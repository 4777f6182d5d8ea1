"""Checkpoints on disk: written atomically, read without running code from them.

Reading never runs code from the file. `torch.load(weights_only=True)` unpickles tensors and plain containers
only, and the `_target_`s stored in a checkpoint's hyperparameters must be targets of the config options offered
for them (the files under `model/`, `prior/`, `loss/`, `beta/`, `optimizer/`, `lr_schedule/`, `dataset/` of the
packaged configs, and of a user's own config folders given with `--config-dir` or `hydra.searchpath`) before any
of them is built. A checkpoint shared by someone else can therefore describe a model, but not run a command or
open a file. Its strings are taken literally: one holding an OmegaConf interpolation (`${...}`, which would read
an environment variable or a file when resolved) is refused.

A checkpoint also names files: the `ModelCheckpoint` states inside it list the best, k-th best and last
checkpoints, which Lightning removes when a better one comes. `AtomicCheckpointIO` is given the run's checkpoint
folder: on load it keeps only the names of regular files inside that folder (resolved, so `..` and links cannot
lead out) and scores that are numbers, and it removes only such `.ckpt` files, one at a time, never a folder,
whatever asks it to.
"""

from __future__ import annotations

import functools
import logging
import os
import pickle
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from omegaconf import OmegaConf

from vae_lightning.core.config import CONF_DIR, CONFIG_KEYS, TRUSTED_GROUPS
from vae_lightning.core.errors import CheckpointError, CheckpointWriteError
from vae_lightning.core.files import atomic_write

log = logging.getLogger(__name__)

# the posterior, prior, sampler and learning-rate schedule of checkpoints written before these were config groups
GAUSSIAN = {"_target_": "vae_lightning.posteriors.DiagonalGaussianPosterior"}
FROM_PRIOR = {"_target_": "vae_lightning.samplers.PriorSampler"}
STANDARD_NORMAL = {"_target_": "vae_lightning.priors.StandardNormal"}
CONSTANT_LR = {"_target_": "vae_lightning.optim.constant_lr", "_partial_": True}
# the hyperparameters that define the model a checkpoint resumes (a resume trains on its own), with what a
# checkpoint that has none of one was trained with
MODEL_PARTS = {"net": None, "posterior": GAUSSIAN, "prior": STANDARD_NORMAL, "loss": None, "sampler": FROM_PRIOR}
# what `VAEModule` builds for a part it is not given (the choice of every checkpoint without it)
DEFAULT_PARTS = MODEL_PARTS | {"lr_schedule": CONSTANT_LR}
# the parts built from others (the network from the images' shape and the likelihood, the posterior and the sampler
# from the code size, the prior from the network): `_partial_` factories that the model calls
FACTORY_PARTS = ("net", "posterior", "prior", "sampler")
# settings that earlier checkpoints stored with the model and that today belong to the Trainer (gradient clipping
# is `trainer.gradient_clip_val`): a resume takes them from the run's config, so rebuilding a model drops them
TRAINER_SETTINGS = ("gradient_clip_val",)


def current_settings(hparams: dict[str, Any]) -> dict[str, Any]:
    """The settings of today's `VAEModule` (`VAEModule.from_settings`) for the hyperparameters stored by any
    version's checkpoint or exported folder: the trainer's settings left out, the parts a checkpoint has none of
    as it was trained with (`DEFAULT_PARTS`), and the parts that need others as factories (`_partial_`), as
    today's configs give them."""
    settings = {key: value for key, value in hparams.items() if key not in TRAINER_SETTINGS}
    settings |= {name: part for name, part in DEFAULT_PARTS.items() if settings.get(name) is None and part}
    for name in FACTORY_PARTS:
        if isinstance(settings.get(name), dict) and "_target_" in settings[name]:
            settings[name] = {**settings[name], "_partial_": True}
    loss = settings.get("loss")
    if isinstance(loss, dict) and isinstance(loss.get("likelihood"), dict):
        settings["loss"] = {**loss, "likelihood": {**loss["likelihood"], "_partial_": True}}
    return settings


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint IO with atomic saves (a kill or a full disk leaves the previous file intact), the
    checked, code-free read of `read_checkpoint` for every load, including resuming with `ckpt_path`, and
    removals confined to `checkpoint_dir` (the run's checkpoint folder; None: regular files only, anywhere).
    `config_dirs`: the user's own config folders, whose options' targets are trusted as the packaged ones."""

    def __init__(
        self, config_dirs: Sequence[str | os.PathLike] = (), checkpoint_dir: str | os.PathLike | None = None
    ) -> None:
        super().__init__()
        self.config_dirs = tuple(str(Path(d)) for d in config_dirs)
        self.checkpoint_dir = None if checkpoint_dir is None else Path(checkpoint_dir).expanduser()

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any = None) -> None:
        try:
            atomic_write(path, lambda f: torch.save(checkpoint, f))
        except (OSError, RuntimeError) as bad:
            # torch's zip writer reports a failed write (a full disk) as a RuntimeError of its own
            if isinstance(bad, RuntimeError) and not any(
                w in str(bad) for w in ("PytorchStreamWriter", "inline_container")
            ):
                raise
            reason = bad.strerror if isinstance(bad, OSError) and bad.strerror else "the disk refused the write"
            raise CheckpointWriteError(
                f"Could not write the checkpoint {path} ({reason}) in {Path(path).parent}. The previous checkpoint "
                "is kept. Free some disk space there and continue with resume=true hydra.run.dir=<this run's folder>."
            ) from None

    def load_checkpoint(self, path: str | os.PathLike, map_location: Any = None, weights_only: Any = None) -> dict:
        checkpoint = read_checkpoint(path, map_location or "cpu", self.config_dirs)
        if self.checkpoint_dir is not None:
            confine_callback_paths(checkpoint, self.checkpoint_dir)
        return checkpoint

    def remove_checkpoint(self, path: str | os.PathLike) -> None:
        """Remove the checkpoint file `path` if it is a regular `.ckpt` file inside the checkpoint folder
        (resolved; without a folder, anywhere); any other path (a folder, a link out, a file elsewhere, another
        file system, a file of another kind) is left alone, with a warning."""
        if inside(path, self.checkpoint_dir) and Path(path).suffix == ".ckpt":
            Path(path).unlink(missing_ok=True)
        elif Path(str(path)).exists() or "://" in str(path):
            log.warning("Not removing %s: only checkpoint files in %s are removed.", path, self.checkpoint_dir)


def inside(path: Any, folder: Path | None) -> bool:
    """Whether `path` names a regular file (not a link) of the local disk inside `folder` (None: anywhere), after
    resolving `..` and links."""
    if not isinstance(path, str | os.PathLike) or not str(path) or "://" in str(path):
        return False
    path = Path(path).expanduser()
    if path.is_symlink() or not path.is_file():
        return False
    return folder is None or path.resolve().is_relative_to(folder.expanduser().resolve())


# the fields of a ModelCheckpoint state that name files
PATH_FIELDS = ("best_model_path", "kth_best_model_path", "last_model_path")


def confine_callback_paths(checkpoint: dict, folder: Path) -> list[str]:
    """Drop from the checkpoint's callback states every file name that is not a regular file inside `folder`
    (`inside`), so that Lightning neither restores nor removes it; returns the names dropped (each warned of)."""
    dropped: list[str] = []
    states = checkpoint.get("callbacks")
    if not isinstance(states, dict):
        checkpoint.pop("callbacks", None)
        return dropped
    for name, state in list(states.items()):
        if not isinstance(state, dict) or not str(name).startswith("ModelCheckpoint"):
            continue
        for field in PATH_FIELDS:
            value = state.get(field, "")
            if value and not inside(value, folder):
                dropped.append(str(value))
                state[field] = ""
        best = state.get("best_k_models", {})
        if not isinstance(best, dict):
            dropped.append(f"best_k_models of {name}")
            best = {}
        kept = {path: score for path, score in best.items() if inside(path, folder) and _is_score(score)}
        dropped.extend(str(path) for path in best if path not in kept)
        state["best_k_models"] = kept
        for field in ("best_model_score", "current_score"):  # compared with new scores: a number or none
            if state.get(field) is not None and not _is_score(state[field]):
                state[field] = None
        if "kth_value" in state and not _is_score(state["kth_value"]):
            del state["kth_value"]  # the callback keeps its own start value
        if "dirpath" in state and not (isinstance(state["dirpath"], str) and _same_folder(state["dirpath"], folder)):
            state["dirpath"] = None  # Lightning restores the file names only for its own folder
    dropped = list(dict.fromkeys(dropped))
    if dropped:
        log.warning(
            "The checkpoint's callback state names files outside this run's checkpoint folder %s; they are ignored "
            "(never removed): %s",
            folder,
            ", ".join(dropped),
        )
    return dropped


def _is_score(value: Any) -> bool:
    return isinstance(value, torch.Tensor) and value.numel() == 1 and value.is_floating_point()


def _same_folder(a: str, b: Path) -> bool:
    return "://" not in a and Path(a).expanduser().resolve() == b.expanduser().resolve()


@functools.cache
def trusted_targets(group: str, config_dirs: tuple[str, ...] = ()) -> frozenset[str]:
    """Every `_target_` named in the option files of config group `group` (and its nested groups), in the
    packaged configs and in each of `config_dirs`."""
    targets: set[str] = set()
    for root in (CONF_DIR, *map(Path, config_dirs)):
        for path in sorted((root / group).rglob("*.yaml")):
            try:
                targets.update(_targets(OmegaConf.to_container(OmegaConf.load(path), resolve=False)))
            except Exception as bad:  # broken YAML in a user's folder: its classes are not trusted, nothing fails
                reason = str(bad).strip().splitlines()[0][:160] if str(bad).strip() else type(bad).__name__
                log.warning("The config file %s is not valid YAML (%s); no class it names is trusted.", path, reason)
    return frozenset(targets)


def _targets(tree: Any) -> Iterator[str]:
    if isinstance(tree, dict):
        for key, value in tree.items():
            if key == "_target_":
                yield str(value)
            else:
                yield from _targets(value)
    elif isinstance(tree, list | tuple):
        for item in tree:
            yield from _targets(item)


def untrusted_target_in(hparams: dict[str, Any], config_dirs: tuple[str, ...]) -> tuple[str, str] | None:
    """(the key, the target) of the first `_target_` in `hparams` that the project does not offer there."""

    def walk(tree: Any, key: str) -> Iterator[tuple[str, str]]:
        if isinstance(tree, dict):
            for name, value in tree.items():
                if name == "_target_":
                    yield f"{key}._target_", str(value)
                else:
                    yield from walk(value, f"{key}.{name}")
        elif isinstance(tree, list | tuple):
            for i, item in enumerate(tree):
                yield from walk(item, f"{key}[{i}]")

    for name, value in hparams.items():
        allowed = frozenset().union(*(trusted_targets(group, config_dirs) for group in TRUSTED_GROUPS.get(name, ())))
        for key, target in walk(value, CONFIG_KEYS.get(name, name)):
            if target not in allowed:
                return key, target
    return None


def interpolation_in(tree: Any, key: str = "") -> str | None:
    """The key of the first string in `tree` (keys included) that OmegaConf would resolve (`${`), else None."""
    if isinstance(tree, dict):
        for name, value in tree.items():
            where = f"{key}.{name}" if key else str(name)
            if "${" in str(name):
                return where
            found = interpolation_in(value, f"{CONFIG_KEYS.get(name, name)}" if not key else where)
            if found is not None:
                return found
    elif isinstance(tree, list | tuple):
        for i, item in enumerate(tree):
            found = interpolation_in(item, f"{key}[{i}]")
            if found is not None:
                return found
    elif isinstance(tree, str) and "${" in tree:
        return key
    return None


def read_checkpoint(
    path: str | os.PathLike, map_location: Any = "cpu", config_dirs: Sequence[str | os.PathLike] = ()
) -> dict:
    """The checkpoint dictionary, loaded without running code (memory-mapped, so cheap), checked to be a
    vae_lightning checkpoint whose hyperparameters name only classes that the packaged configs, or the user's
    own config folders `config_dirs`, offer for them."""
    path = Path(path).expanduser()
    if path.is_dir():
        found = sorted(str(p) for p in (path / "checkpoints" / "last.ckpt", path / "last.ckpt") if p.is_file())
        hint = f", e.g. ckpt_path={found[0]}" if found else " (a run's are in <run folder>/checkpoints/)"
        raise CheckpointError(f"ckpt_path={path} is a folder, not a checkpoint file: give a .ckpt file{hint}.")
    if not path.is_file():
        raise CheckpointError(f"ckpt_path={path}: no such checkpoint file.")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True, mmap=True)
    except pickle.UnpicklingError as bad:
        reason = str(bad).strip().splitlines()[-1][:160]
        raise CheckpointError(
            f"ckpt_path={path} holds more than weights and settings and was refused unread ({reason}). "
            "Only load checkpoints written by vae_lightning's train.py."
        ) from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as bad:
        raise CheckpointError(
            f"ckpt_path={path} is not a readable checkpoint ({type(bad).__name__}: {str(bad).splitlines()[0][:120]}); "
            "it may be truncated. Use another one, e.g. checkpoints/last.ckpt."
        ) from None
    hparams = checkpoint.get("hyper_parameters", {}) if isinstance(checkpoint, dict) else {}
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint or "input_shape" not in hparams:
        raise CheckpointError(
            f"ckpt_path={path} was not written by vae_lightning's train.py (it has no VAE hyperparameters)."
        )
    refuse_unsafe_settings(hparams, config_dirs, f"ckpt_path={path}")
    return checkpoint


def refuse_unsafe_settings(hparams: dict[str, Any], config_dirs: Sequence[str | os.PathLike], what: str) -> None:
    """Refuse, in one line starting with `what` (the checkpoint or folder), stored settings that hold an
    interpolation or name a class that no config option offers for their place (`untrusted_target_in`)."""
    interpolated = interpolation_in(hparams)
    if interpolated is not None:
        raise CheckpointError(
            f"{what} was refused: its setting `{interpolated}` holds an interpolation (`${{...}}`), which "
            "train.py never stores and which is never resolved from a stored model."
        )
    untrusted = untrusted_target_in(hparams, tuple(str(Path(d)) for d in config_dirs))
    if untrusted is not None:
        key, target = untrusted
        raise CheckpointError(
            f"{what} was refused: its setting `{key}` names `{target}`, which is not one of "
            "the classes that the configs offer for it. Nothing from it was run. A class of your own is "
            f"trusted when an option file of the `{key.split('.')[0].split('[')[0]}` group in a config folder you "
            "give names it (--config-dir <folder>)."
        )
