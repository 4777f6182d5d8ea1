"""Hostile copies of a real checkpoint, as someone sharing a checkpoint could make them."""

from __future__ import annotations

import os

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
