"""Errors a user can act on. The entry points print their message and exit with code 1, without a traceback."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class VAELightningError(Exception):
    """Base class: the message says what is wrong and what to do about it."""


class ConfigValueError(VAELightningError, ValueError):
    """A config value is out of range or of the wrong type; `key` names it (e.g. `model.latent_dim`)."""

    def __init__(self, key: str, requirement: str, value: Any) -> None:
        self.key = key
        self.requirement = requirement
        self.value = value
        super().__init__(f"Bad config value `{key}={value!r}`: {requirement}. Fix it with an override `{key}=...`.")

    def under(self, prefix: str) -> ConfigValueError:
        """The same error with its key placed under a config node, e.g. `latent_dim` -> `model.latent_dim`."""
        return ConfigValueError(f"{prefix}.{self.key}", self.requirement, self.value)


class DataNotFoundError(VAELightningError):
    """A data folder or file is missing, empty or of the wrong layout."""


class DataFormatError(VAELightningError):
    """A data file exists but is not in the expected format (bad header, truncated)."""


class ConfigErrors(VAELightningError):
    """Several problems found together (bad values, missing data folders), reported in one message."""

    def __init__(self, problems: Sequence[VAELightningError]) -> None:
        self.problems = list(problems)
        if len(self.problems) == 1:
            message = str(self.problems[0])
        else:
            message = f"{len(self.problems)} problems:\n" + "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(message)

    def under(self, prefix: str) -> ConfigErrors:
        return ConfigErrors([p.under(prefix) if isinstance(p, ConfigValueError) else p for p in self.problems])


class CheckpointError(VAELightningError):
    """A checkpoint file is missing, unreadable, not one of ours, or does not fit the run."""


class CheckpointWriteError(VAELightningError):
    """A checkpoint could not be written (disk full, no permission); the previous one is intact."""


class DivergedError(VAELightningError):
    """The training loss became NaN or infinite."""

    def __init__(self, step: int, terms: dict[str, float]) -> None:
        self.step = step
        self.terms = terms
        shown = ", ".join(f"{name}={value:.6g}" for name, value in terms.items())
        super().__init__(
            f"Training diverged at optimizer step {step}: the loss is not finite ({shown}). "
            "The run stops here; the checkpoints saved before this step are kept (none after it). "
            "Try a lower `optimizer.lr` or gradient clipping with `+trainer.gradient_clip_val=1.0`."
        )


class JobFailed(Exception):
    """Raised in a sweep instead of exiting, so that Hydra records this job as failed and runs the others.

    Deliberately not a VAELightningError: it carries the message of one, already logged."""
