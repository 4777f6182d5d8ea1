"""Hostile copies of a real checkpoint, as someone sharing a checkpoint (or a run folder) could make them.

Each helper takes a checkpoint a real run wrote, changes what a hostile sender would change, and saves the result
with plain `torch.save`, so that the file is read by exactly the code that reads a shared checkpoint. The
hostile-checkpoint suite (`tests/test_hostile_checkpoints.py`) sends each through every entry point."""

from __future__ import annotations

import os
from pathlib import Path

import torch


class RunsACommand:
    """Unpickling this calls `os.system`: what a hostile checkpoint could hide in any entry."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def hostile_checkpoints(good, folder, marker):
    """From a real checkpoint: one with a pickled command in an extra entry, and one whose stored `loss` setting
    would open (and truncate) a file when built."""
    checkpoint = torch.load(good, weights_only=True)
    pickled = folder / "pickled_command.ckpt"
    torch.save(checkpoint | {"extra": RunsACommand(f"touch {marker}")}, pickled)
    opens_a_file = folder / "opens_a_file.ckpt"
    checkpoint["hyper_parameters"]["loss"] = {"_target_": "io.open", "_args_": [str(marker), "w"]}
    torch.save(checkpoint, opens_a_file)
    return pickled, opens_a_file


def load(good: Path) -> dict:
    return torch.load(good, weights_only=True)


def callbacks_naming(good: Path, out: Path, checkpoints: Path, victim: Path) -> Path:
    """The ModelCheckpoint states name `victim` (reached from the run's own `checkpoints` folder through `..`)
    as their best, k-th best and last files, with the worst score, so that the run's first validation is a new
    best and Lightning removes the "previous best": what deleted a folder outside the run."""
    checkpoint = load(good)
    outside = str(checkpoints / os.path.relpath(victim, checkpoints))  # <run>/checkpoints/../../victim
    for state in checkpoint["callbacks"].values():
        state |= {
            "dirpath": str(checkpoints),
            "best_model_path": outside,
            "kth_best_model_path": outside,
            "last_model_path": outside,
            "best_k_models": {outside: torch.tensor(1e9)},
            "kth_value": torch.tensor(1e9),
            "best_model_score": torch.tensor(1e9),
        }
    torch.save(checkpoint, out)
    return out


def adam_moment_of_shape(good: Path, out: Path, shape: tuple[int, ...]) -> Path:
    """The first parameter's Adam moments of another shape: the fused CPU Adam would read and write out of
    bounds."""
    checkpoint = load(good)
    state = checkpoint["optimizer_states"][0]["state"][0]
    state["exp_avg"] = torch.zeros(shape)
    state["exp_avg_sq"] = torch.zeros(shape)
    torch.save(checkpoint, out)
    return out


def training_state(good: Path, out: Path, change) -> Path:
    """`change(checkpoint)` applied to a copy: any other training state (schedule, loops, random state)."""
    checkpoint = load(good)
    change(checkpoint)
    torch.save(checkpoint, out)
    return out


def data_elsewhere(good: Path, out: Path, root: Path, cache_dir: Path) -> Path:
    """The data set's settings read from `root`, cache into `cache_dir` and download there."""
    checkpoint = load(good)
    data = checkpoint["hyper_parameters"]["data"]
    data |= {"root": str(root), "cache_dir": str(cache_dir)}
    if "download" in data:
        data["download"] = True
    torch.save(checkpoint, out)
    return out


def with_setting(good: Path, out: Path, group: str, key: str, value) -> Path:
    """One stored setting changed (e.g. an interpolation that reads an environment variable, a huge width)."""
    checkpoint = load(good)
    checkpoint["hyper_parameters"][group][key] = value
    torch.save(checkpoint, out)
    return out
