"""The LightningModule: owns the VAE network, its loss and the KL weight schedule; nothing else."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import torch
from lightning import LightningModule

from vae_lightning import checks
from vae_lightning.callbacks.batch_hooks import manual_backward_is_plain, skip_empty_batch_hooks
from vae_lightning.config import as_plain, build, call
from vae_lightning.distributions import DiagonalGaussian
from vae_lightning.errors import ConfigValueError, DivergedError
from vae_lightning.losses import LossTerms
from vae_lightning.metrics import active_units, importance_sampled_log_likelihood, mutual_information
from vae_lightning.nets.base import VAEOutput

# `training_step(dataloader_iter)` is a documented Lightning signature that it calls experimental at every fit;
# its caveats (consuming more than one batch a step, gradient accumulation) do not apply to one batch a step
warnings.filterwarnings("ignore", message="Found `dataloader_iter` argument in the `training_step`")
warnings.filterwarnings("ignore", message="You are using the `dataloader_iter` step flavor")

# Attributes Lightning sets on the module around every hook call (~30 times per training step). They never
# hold parameters, buffers or submodules, so nn.Module's bookkeeping in __setattr__ is skipped for them.
_PLAIN_ATTRIBUTES = frozenset({"_current_fx_name"})


def random_states() -> dict[str, Any]:
    states: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_random_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


class ValidationRecord:
    """What the validation loop computed anyway, kept for the diagnostics: each sample's loss (in loader
    order) and the KL of each latent dimension summed over the samples."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._losses: list[torch.Tensor] = []
        self.kl_sum: torch.Tensor | None = None
        self.count = 0

    def add(self, per_sample: torch.Tensor, kl_per_dim: torch.Tensor) -> None:
        self._losses.append(per_sample.detach())
        summed = kl_per_dim.detach().sum(0)
        self.kl_sum = summed if self.kl_sum is None else self.kl_sum + summed
        self.count += len(per_sample)

    def per_sample_losses(self) -> torch.Tensor:
        return torch.cat(self._losses) if self._losses else torch.empty(0)

    def kl_per_dim(self) -> torch.Tensor:
        return self.kl_sum / max(self.count, 1) if self.kl_sum is not None else torch.empty(0)


class RunningSums:
    """Sample-weighted sums of the training terms over an epoch, as Python floats: the terms come to the host
    once a `training_step` call anyway (`PendingSteps`), for the divergence check."""

    def __init__(self) -> None:
        self.sums: list[float] = []
        self.count = 0

    def add(self, values: list[float], n: int) -> None:
        if not self.sums:
            self.sums = [0.0] * len(values)
        self.sums = [total + value * n for total, value in zip(self.sums, values, strict=True)]
        self.count += n

    def pop_means(self) -> list[float] | None:
        if self.count == 0:
            return None
        means = [total / self.count for total in self.sums]
        self.sums, self.count = [], 0
        return means


class PendingSteps:
    """The training terms of the optimizer steps of one `training_step` call, kept on the device until the call
    ends and then brought to the host at once: one transfer (on a GPU, one synchronisation) a call, not a step."""

    def __init__(self) -> None:
        self._terms: list[torch.Tensor] = []
        self._steps: list[tuple[int, float, int]] = []  # (optimizer step, beta, batch size)

    def add(self, step: int, terms: LossTerms, beta: float, batch_size: int) -> None:
        self._terms.append(torch.stack((terms.loss.detach(), terms.recon.detach(), terms.kl.detach())))
        self._steps.append((step, beta, batch_size))

    def pop(self) -> list[tuple[int, float, int, list[float]]]:
        """[(step, beta, batch size, [loss, recon, kl])] of the steps added since the last pop."""
        if not self._terms:
            return []
        values = torch.stack(self._terms).tolist()
        steps, self._terms, self._steps = self._steps, [], []
        return [(*step, terms) for step, terms in zip(steps, values, strict=True)]


class EpochMeans:
    """Sample-weighted means of named per-batch scalars over a validation or test epoch, summed on the device
    and logged once at its end: `self.log` in every batch costs ~0.6 ms a value, more than a validation batch
    of the seed's MLP itself."""

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, int] = {}

    def add(self, values: dict[str, torch.Tensor], n: int) -> None:
        for name, value in values.items():
            weighted = value.detach() * n
            self.sums[name] = self.sums[name] + weighted if name in self.sums else weighted
            self.counts[name] = self.counts.get(name, 0) + n

    def pop(self, sum_over_processes: Callable[[torch.Tensor], torch.Tensor]) -> dict[str, float]:
        """The means over all processes (sums and counts are added up across them first); then empty."""
        if not self.sums:
            return {}
        names = list(self.sums)
        sums = torch.stack([self.sums[name].float() for name in names])
        counts = torch.tensor([float(self.counts[name]) for name in names], device=sums.device)
        totals = sum_over_processes(torch.stack([sums, counts])).tolist()
        self.sums, self.counts = {}, {}
        return {name: total / count for name, total, count in zip(names, *totals, strict=True)}


class VAEModule(LightningModule):
    """A VAE trained on `loss` with KL weight `beta(step)`.

    The sub-configs (`net`, `loss`, `beta`, `optimizer`) are stored as hyperparameters and instantiated
    here, so `VAEModule.load_from_checkpoint(path)` rebuilds the model with no other config.

    Training uses manual optimization (one optimizer step per batch) and writes per-step scalars only every
    `trainer.log_every_n_steps` steps, straight to the loggers: Lightning's automatic loop and per-step
    `self.log` would cost ~50% of a step of the seed's small MLP on a CPU. Each call of `training_step` takes
    `batches_per_call` batches, an optimizer step on each: Lightning's own work around a call (~0.25 ms on a
    CPU: hooks, progress counters, fetcher, logger connector, validation checks) is then paid once for all of
    them. Callbacks' per-batch hooks (`on_train_batch_start/end`) run once per call; the steps they see and
    every logged step are optimizer steps (`global_step`), as with one batch a call. Epoch means of `train/*` are logged
    as `train/*_epoch`; `val/*` and `test/*` are sample-weighted means over the epoch (over all processes),
    summed batch by batch on the device and logged once at its end.

    `val/` and `test/` use the schedule's final beta, so `val/loss` compares across epochs of a ramp.
    """

    def __init__(
        self,
        net: dict[str, Any],
        loss: dict[str, Any],
        beta: dict[str, Any],
        optimizer: dict[str, Any],
        input_shape: tuple[int, ...],
        gradient_clip_val: float | None = None,
        compile: bool = False,
        data: dict[str, Any] | None = None,
        nll_samples: int = 100,
        batches_per_call: int = 1,
    ) -> None:
        super().__init__()
        net, loss, beta, optimizer, data = (as_plain(n) for n in (net, loss, beta, optimizer, data))
        input_shape = tuple(as_plain(input_shape))
        self.save_hyperparameters()
        self.net = build(net, "model", input_shape=input_shape)
        self.loss_fn = build(loss, "loss")
        self._beta_factory = build(beta, "beta")
        self._optimizer_factory = build(optimizer, "optimizer")
        self.gradient_clip_val = (
            None
            if gradient_clip_val is None
            else checks.number("module.gradient_clip_val", gradient_clip_val, low=0.0, low_inclusive=False)
        )
        self._beta_total_steps = 0
        if compile:
            self.net.compile()  # in place: the state dict keeps its keys
        self.beta_schedule = None
        self.automatic_optimization = False
        self._epoch_sums = RunningSums()
        self._pending_steps = PendingSteps()
        self._rng_states_to_restore: dict[str, Any] | None = None
        self.validation_record = ValidationRecord()
        self._epoch_means = EpochMeans()
        self.nll_samples = checks.non_negative_int("eval.nll_samples", nll_samples)
        self.batches_per_call = checks.positive_int("module.batches_per_call", batches_per_call)
        self._test_posteriors: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._backward_is_plain = False  # decided at the start of training
        skip_empty_batch_hooks([self])  # ~10 empty hook calls a training step, each in a profiler context

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _PLAIN_ATTRIBUTES:
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    # -- set-up -------------------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        if stage == "fit":
            total = self.trainer.estimated_stepping_batches
            if not math.isfinite(total):
                raise ConfigValueError(
                    "trainer.max_epochs",
                    "training must have a finite length (set "
                    "trainer.max_epochs or trainer.max_steps) for the beta schedule",
                    total,
                )
            self._beta_total_steps = int(total)
            self._build_beta_schedule()
            self._check_batches_per_call()
        elif self.beta_schedule is None:
            self._build_beta_schedule()

    def _check_batches_per_call(self) -> None:
        """Lightning counts `training_step` calls, not batches, where it places a mid-epoch validation and where
        a ModelCheckpoint saves every n training steps: with several batches a call, refuse what would fire at
        other batches than asked."""
        every = self.batches_per_call
        if every == 1:
            return
        trainer = self.trainer
        interval = trainer.val_check_interval
        by_time = getattr(trainer, "_val_check_time_interval", None) is not None  # e.g. "00:00:30:00" (Lightning 2.5+)
        if not by_time and (interval not in (None, 1.0) or trainer.check_val_every_n_epoch is None):
            raise ConfigValueError(
                "trainer.val_check_interval",
                f"validation within an epoch counts training_step calls, which take module.batches_per_call={every}"
                " batches each; validate at epoch ends (1.0) or set module.batches_per_call=1",
                interval,
            )
        for callback in trainer.checkpoint_callbacks:
            steps = getattr(callback, "_every_n_train_steps", 0)
            if steps and steps % every:
                raise ConfigValueError(
                    "callbacks.<checkpoint>.every_n_train_steps",
                    f"must be a multiple of module.batches_per_call={every}: callbacks see the optimizer steps"
                    " at the ends of training_step calls only, which are at its multiples (and at epoch ends)",
                    steps,
                )

    def _build_beta_schedule(self) -> None:
        self.beta_schedule = call(self._beta_factory, "beta", total_steps=max(self._beta_total_steps, 1))

    def beta_at(self, stage: str) -> float:
        """The KL weight: the schedule's value at this step in training, its final value in val and test."""
        step = self.global_step if stage == "train" else self._beta_total_steps
        return float(self.beta_schedule(step))

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["beta_total_steps"] = self._beta_total_steps
        checkpoint["rng_states"] = random_states()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._beta_total_steps = int(checkpoint.get("beta_total_steps", 0))
        self._build_beta_schedule()
        self._rng_states_to_restore = checkpoint.get("rng_states")

    def on_train_start(self) -> None:
        """A resumed run continues with the random state it was saved with (data order, sampling noise), so
        it reproduces the uninterrupted run; restored here, after Lightning's sanity check has used some."""
        if self._rng_states_to_restore is not None:
            restore_random_states(self._rng_states_to_restore)
            self._rng_states_to_restore = None
        self._backward_is_plain = manual_backward_is_plain(self.trainer, self)
        self._pending_steps = PendingSteps()  # nothing left over from an interrupted fit

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return call(self._optimizer_factory, "optimizer", self.parameters())

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        """Batches are (images, labels) tuples: move them directly, not through a generic collection walk, and
        only the tensors not there yet."""
        images, labels = batch
        if images.device != device:
            images = images.to(device, non_blocking=True)
        if labels.device != device:
            labels = labels.to(device, non_blocking=True)
        return images, labels

    # -- the model ----------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor):
        return self.net(x)

    def _shared_step(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> tuple[LossTerms, VAEOutput]:
        x, _ = batch
        beta = self.beta_at(stage)
        out = self.net(x)
        terms = self.loss_fn(x, out, beta)
        if stage == "val":
            self.validation_record.add(terms.per_sample, out.posterior.kl_to_standard_normal_per_dim())
        if stage == "train":
            self._pending_steps.add(self.global_step, terms, beta, x.shape[0])
        else:
            self._epoch_means.add({"loss": terms.loss, "recon": terms.recon, "kl": terms.kl}, x.shape[0])
        return terms, out

    def _log_epoch_means(self, stage: str) -> None:
        """`stage/name`: the sample-weighted means over the epoch's batches (of every process), and `beta`."""
        means = self._epoch_means.pop(lambda totals: self.trainer.strategy.reduce(totals, reduce_op="sum"))
        if means:
            means["beta"] = self.beta_at(stage)
            self.log_dict({f"{stage}/{name}": value for name, value in means.items()}, on_step=False, on_epoch=True)

    def _log_train_steps(self) -> None:
        """The terms of the steps of this `training_step` call: a NaN or an infinity stops the run at the first
        step that had one; else they go into the epoch means (`train/*_epoch`), and every
        `log_every_n_steps`-th step's straight to the loggers."""
        every = self.trainer.log_every_n_steps
        for step, beta, batch_size, values in self._pending_steps.pop():
            loss, recon, kl = values
            if not all(map(math.isfinite, values)):
                raise DivergedError(step, {"loss": loss, "recon": recon, "kl": kl, "beta": beta})
            self._epoch_sums.add(values, batch_size)
            if every and (step + 1) % every == 0:
                self._write_step_scalars(
                    {"train/loss": loss, "train/recon": recon, "train/kl": kl, "train/beta": beta}, step
                )

    def _write_step_scalars(self, values: dict[str, float], step: int) -> None:
        """Per-step scalars go straight to the loggers (which write on rank 0 only), at the step Lightning gives
        the values it logs itself: `self.log` costs ~0.6 ms a value in Lightning's result bookkeeping, and these
        values are wanted in the event files only (the epoch means below go through `self.log`)."""
        for logger in self.loggers:
            logger.log_metrics(values, step=step)

    def training_step(self, dataloader_iter: Iterator) -> None:
        """An optimizer step on each of the next training batches, up to the next multiple of `batches_per_call`
        optimizer steps, the epoch's end or `trainer.max_steps`. Ending calls at multiples of the step count (not
        after every `batches_per_call` batches of an epoch) makes every such multiple a call's end, where the
        callbacks run: a checkpoint every n steps, n a multiple of it, is saved at the same steps as with one
        batch a call.

        The batches are taken from `dataloader_iter` here (Lightning's iterator mode), which is what lets one
        call take several of them; Lightning then also skips its three per-batch transfer hooks. What those did
        for our (images, labels) batches is done here: the images go to the module's device and floating dtype
        (the precision plugin's input conversion), the labels to its device.
        """
        optimizer = self.optimizers()
        dtype, device, max_steps = self.dtype, self.device, self.trainer.max_steps
        taken = 0
        for (images, labels), _, _ in dataloader_iter:
            if images.dtype != dtype or images.device != device or labels.device != device:
                images, labels = self.transfer_batch_to_device((images.to(dtype), labels), device, 0)
            self._optimizer_step((images, labels), optimizer)
            taken += 1
            step = self.global_step
            if step % self.batches_per_call == 0 or dataloader_iter.done or 0 <= max_steps <= step:
                break
        self._log_train_steps()
        if taken == 0:
            raise StopIteration  # the epoch's data ended before this call (a loader of unknown length)
        if taken > 1:
            self._count_batches_as_logger_steps(taken)

    def _optimizer_step(self, batch: tuple[torch.Tensor, torch.Tensor], optimizer: Any) -> None:
        terms, _ = self._shared_step(batch, "train")
        optimizer.zero_grad(set_to_none=True)
        if self._backward_is_plain:
            terms.loss.backward()  # what manual_backward comes down to here, without its hook dispatch
        else:
            self.manual_backward(terms.loss)
        if self.gradient_clip_val is not None:
            self.clip_gradients(optimizer, gradient_clip_val=self.gradient_clip_val)
        optimizer.step()

    def _count_batches_as_logger_steps(self, taken: int) -> None:
        """Lightning logs `self.log` values (the epoch means, `val/*`) and the learning-rate monitor at a step
        that it advances by one per `training_step` call; advance it by the other optimizer steps of this call,
        so that every scalar in the event files is placed at its optimizer step, as with one batch a call."""
        self.trainer.fit_loop.epoch_loop._batches_that_stepped += taken - 1

    def on_train_epoch_end(self) -> None:
        means = self._epoch_sums.pop_means()
        if means is None:
            return
        self.log_dict(
            {f"train/{name}_epoch": value for name, value in zip(("loss", "recon", "kl"), means, strict=True)},
            on_step=False,
            on_epoch=True,
            sync_dist=True,
            batch_size=1,  # one value per epoch, already a sample-weighted mean (iterator mode asks for it)
        )

    def on_validation_epoch_start(self) -> None:
        self.validation_record.reset()
        self._epoch_means = EpochMeans()

    def on_validation_epoch_end(self) -> None:
        self._log_epoch_means("val")

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._shared_step(batch, "val")

    def on_test_epoch_start(self) -> None:
        self._test_posteriors = []
        self._epoch_means = EpochMeans()

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        """The test loss terms, and the measures of the model itself: `test/elbo` (the ELBO with beta 1, nats
        per sample) and `test/nll` (importance-sampled -log p(x) with `nll_samples` samples) where the loss has
        a likelihood (the seed's MSE objective has none)."""
        _, out = self._shared_step(batch, "test")
        x, _ = batch
        posterior = out.posterior
        self._test_posteriors.append((posterior.loc.detach(), posterior.scale.detach()))
        likelihood = getattr(self.loss_fn, "likelihood", None)
        if likelihood is None:
            return
        # the single-sample ELBO, with the z the forward pass drew
        elbo = likelihood.log_prob(x, out.logits) - posterior.kl_to_standard_normal_per_dim().sum(-1)
        values = {"elbo": elbo.mean()}
        if self.nll_samples:
            values["nll"] = -importance_sampled_log_likelihood(self.net, likelihood, x, self.nll_samples).mean()
        self._epoch_means.add(values, x.shape[0])

    def on_test_epoch_end(self) -> None:
        """The epoch means of the test terms; latent health over the whole test split (of this process): active
        units, I(x; z), KL per dimension."""
        self._log_epoch_means("test")
        if not self._test_posteriors:
            return
        loc = torch.cat([p[0] for p in self._test_posteriors])
        scale = torch.cat([p[1] for p in self._test_posteriors])
        posterior = DiagonalGaussian(loc, scale)
        kl_per_dim = posterior.kl_to_standard_normal_per_dim().mean(0)
        values = {"test/active_units": float(active_units(loc)), "test/mutual_info": mutual_information(posterior)}
        values |= {f"test/kl_dim_{i:03d}": float(v) for i, v in enumerate(kl_per_dim.tolist())}
        self.log_dict(values, on_step=False, on_epoch=True)
        self._test_posteriors = []

    def decode_image(self, z: torch.Tensor) -> torch.Tensor:
        """Decoded images in [0, 1] for the likelihood in use (its mean)."""
        return self.loss_fn.mean(self.net.decode(z))
