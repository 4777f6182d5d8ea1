"""The LightningModule: a VAE composed of a network, a prior and an objective (with its likelihood), the KL
weight schedule and the optimizer."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
from lightning import LightningModule

from vae_lightning.core import checks, training_state
from vae_lightning.core.checkpoint_io import current_settings, read_checkpoint
from vae_lightning.core.config import as_plain, build, call, is_plain, made
from vae_lightning.core.errors import ConfigValueError, DivergedError
from vae_lightning.losses import LossTerms, Objective
from vae_lightning.metrics import LatentStats, RunningMeans, factor_information_gaps, importance_sampled_log_likelihood
from vae_lightning.nets.base import VAENet, VAEOutput
from vae_lightning.optim import adam, constant_lr
from vae_lightning.posteriors import DiagonalGaussianPosterior, Posterior
from vae_lightning.priors import Prior, StandardNormal
from vae_lightning.samplers import PriorSampler, Sampler
from vae_lightning.schedules import Constant


class VAEModule(LightningModule):
    """A VAE trained on `loss` with KL weight `beta(step)` under Lightning's automatic optimization (so the
    Trainer's `gradient_clip_val`, `gradient_clip_algorithm` and `accumulate_grad_batches` work as documented).

    The parts (`net`, `posterior`, `prior`, `loss` with its likelihood, `beta`, `optimizer`, `lr_schedule`,
    `sampler`) are objects, or factories called with what they need of the parts built before them. A model
    built by `from_settings` (as `train.py` does) stores its settings, so that `load_module(path)` rebuilds it
    from a checkpoint alone; objects given in Python are not stored: give them again to `load_from_checkpoint`.

    Logged: `train/loss`, `train/<term>`, `train/beta`, `train/lr` (see `training_step`), `train/*_epoch`, and
    `val/*`, `test/*` means over all processes at the schedule's final beta (so `val/loss` compares across a
    ramp's epochs); the test adds `test/elbo`, `test/nll`, `test/inference_gap` (each with its `_se`),
    `test/mse`, `test/psnr` and the figures of `metrics.LatentStats`. A non-finite training loss stops the run
    (`DivergedError`) before the next checkpoint."""

    def __init__(
        self,
        net: VAENet | Callable[..., VAENet],
        loss: Objective,
        beta: Callable[..., Any] = Constant,
        optimizer: Callable[..., torch.optim.Optimizer] = adam,
        input_shape: tuple[int, ...] | None = None,
        compile: bool = False,
        data: dict[str, Any] | None = None,
        nll_samples: int = 100,
        mutual_info: bool = True,
        mi_samples: int = 2000,
        prior: Prior | Callable[..., Prior] = StandardNormal,
        lr_schedule: Callable[..., Any] = constant_lr,
        posterior: Posterior | Callable[..., Posterior] = DiagonalGaussianPosterior,
        sampler: Sampler | Callable[..., Sampler] = PriorSampler,
    ) -> None:
        super().__init__()
        input_shape = tuple(input_shape if input_shape is not None else net.input_shape)  # needed with a net factory
        parts = ["net", "loss", "beta", "optimizer", "prior", "lr_schedule", "posterior", "sampler"]
        self.save_hyperparameters(ignore=parts, logger=False)  # objects or factories: `from_settings` stores configs
        self.loss_fn = loss
        self.loss_fn.fit_to_images(input_shape)  # builds a likelihood given as a factory: it may need the shape
        self.net = made(net, "model", input_shape=input_shape, outputs_per_pixel=loss.outputs_per_pixel)
        self.net.use_posterior(made(posterior, "posterior", latent_dim=self.net.latent_dim))
        self.loss_fn.fit_to_net(self.net)  # an objective's own networks (a discriminator) are sized by the codes
        self.prior = made(prior, "prior", net=self.net)
        self.sampler = made(sampler, "sampler", latent_dim=self.net.latent_dim)  # codes of new images
        for part in (self.net, self.net.posterior, self.loss_fn, self.sampler):  # one for certain priors refuses others
            part.fit_to_prior(self.prior)
        self.terms = ("loss", *self.loss_fn.term_names)
        self.beta_factory, self.optimizer_factory, self.lr_schedule_factory = beta, optimizer, lr_schedule
        probe = call(self.optimizer_factory, "optimizer", [torch.nn.Parameter(torch.zeros(1))])  # bad values fail now
        call(self.lr_schedule_factory, "lr_schedule", probe, total_steps=2)
        self.nll_samples = checks.non_negative_int("eval.nll_samples", nll_samples)
        self.mi_samples = checks.non_negative_int("eval.mi_samples", mi_samples) if mutual_info else 0
        if compile:
            self.net.compile()  # in place: the state dict keeps its keys
        self.example_input_array = torch.zeros(2, *input_shape)  # the model summary's sizes and FLOPs
        self.total_steps, self.beta_schedule = 0, call(self.beta_factory, "beta", total_steps=1)
        self.train_means, self.eval_means = RunningMeans(self.terms), RunningMeans(self.terms)
        self.restored_random_state, self.trained_epoch = None, 0  # a resume's random state; the epoch (from 0)
        self.validated_step = self.loaded_step = None  # the steps behind the weights last validated, and loaded

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any], **given: Any) -> VAEModule:
        """The model of `settings` (the run's `module` config, or a checkpoint's of any version: `current_settings`)
        built by Hydra with its parts, recursively (the parts that need others as `_partial_` factories), which
        stores them so that its checkpoints rebuild it. `given`: values, configs or objects that replace settings
        (objects are not stored); `data`, the data set's config, is stored only."""
        settings = current_settings(dict(as_plain(settings)) | {key: as_plain(value) for key, value in given.items()})
        settings = {key: value for key, value in settings.items() if not key.startswith("_")}
        config = {key: value for key, value in settings.items() if key not in given.keys() | {"data"}}
        config |= {"_target_": f"{cls.__module__}.{cls.__qualname__}", "_convert_": "all"}
        module = build(config, None, **{key: settings[key] for key in given.keys() - {"data"}})
        module.save_hyperparameters({key: value for key, value in settings.items() if is_plain(value)}, logger=False)
        return module

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path: Any, map_location: Any = None, **kwargs: Any) -> VAEModule:
        """The model of a checkpoint read with the checks of `core.checkpoint_io.read_checkpoint` (weights only),
        in eval mode; `kwargs` give parts (objects or configs) that replace or complete its stored settings."""
        kwargs = {key: value for key, value in kwargs.items() if key not in ("hparams_file", "strict", "weights_only")}
        return cls.from_checkpoint(read_checkpoint(checkpoint_path, map_location or "cpu"), **kwargs)

    @classmethod
    def from_checkpoint(cls, checkpoint: dict[str, Any], **parts: Any) -> VAEModule:
        """The model of a checkpoint already read, in eval mode; its optimizer state is neither used nor checked."""
        module = cls.from_settings(checkpoint["hyper_parameters"], **parts)
        module.load_state_dict(checkpoint["state_dict"])
        module.on_load_checkpoint({key: value for key, value in checkpoint.items() if key != "optimizer_states"})
        return module.eval()

    # -- set-up -------------------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        """The training length for the beta schedule, the training set's size for the objective and its images
        for the parts that start from the data."""
        if stage != "fit":
            return
        total = self.trainer.estimated_stepping_batches
        if not math.isfinite(total):
            reason = "must be set (or trainer.max_steps) so that the beta schedule knows the training length"
            raise ConfigValueError("trainer.max_epochs", reason, self.trainer.max_epochs)
        self.total_steps = max(int(total), 1)
        loader = self.trainer.train_dataloader or self.trainer.datamodule.train_dataloader()
        self.loss_fn.fit_to_data(len(loader.dataset))
        for piece in (self.net, self.prior):
            piece.fit_to_data(loader.dataset)
        self.beta_schedule = call(self.beta_factory, "beta", total_steps=self.total_steps)

    def beta_at(self, stage: str) -> float:
        """The KL weight: the schedule's value at this step in training, its final value in val and test."""
        return float(self.beta_schedule(self.global_step if stage == "train" else self.total_steps))

    def configure_optimizers(self) -> dict[str, Any]:
        """The optimizer (of the objective's parameter groups) and its schedule over `total_steps`."""
        optimizer = call(self.optimizer_factory, "optimizer", self.loss_fn.optimizer_groups(self.parameters()))
        schedule = call(self.lr_schedule_factory, "lr_schedule", optimizer, total_steps=max(self.total_steps, 1))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.stop_if_diverged()  # never save weights that a non-finite loss has touched
        checkpoint |= {"beta_total_steps": self.total_steps, "random_state": training_state.random_state()}
        checkpoint["trained_to"] = {"step": self.global_step, "epoch": self.trained_epoch}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Restore what the module saved; a training state (a resume) is checked against this model first, on the
        very dict Lightning then gives the optimizer and the schedule (`core.training_state.check_training_state`)."""
        if "optimizer_states" in checkpoint:
            training_state.check_training_state(checkpoint, self)
            training_state.count_manual_steps_as_automatic(checkpoint)
        self.total_steps = int(checkpoint.get("beta_total_steps", 1)) or 1
        self.beta_schedule = call(self.beta_factory, "beta", total_steps=self.total_steps)
        self.restored_random_state = checkpoint.get("random_state")
        self.loaded_step, self.trained_epoch = training_state.trained_to(checkpoint)

    def on_train_start(self) -> None:
        """A resumed run continues with the random state it was saved with (sampling noise), so it reproduces the
        uninterrupted run; restored here, after Lightning's sanity check has drawn from it."""
        self.loaded_step = self.validated_step = None  # from now on the weights are this run's own
        if self.restored_random_state is not None:
            training_state.set_random_state(self.restored_random_state)
            self.restored_random_state = None

    def on_train_epoch_start(self) -> None:
        self.trained_epoch = self.current_epoch  # the epoch of the steps that follow

    # -- the model ----------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> VAEOutput:
        return self.net(x)

    def decode_image(self, z: torch.Tensor) -> torch.Tensor:
        """Decoded images in [0, 1] for the likelihood in use (its mean)."""
        return self.loss_fn.mean(self.net.decode(z))

    def objective(self, x: torch.Tensor, beta: float, generator: torch.Generator | None = None) -> LossTerms:
        return self.loss_fn(self.net, self.prior, x, beta, generator)

    def _shared_step(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str, noise: Any = None) -> LossTerms:
        terms = self.objective(batch[0], self.beta_at(stage), noise)
        means = self.train_means if stage == "train" else self.eval_means
        means.add(torch.stack([terms.loss, *terms.terms.values()]), len(batch[0]), self.global_step)
        return terms

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        """The loss of one batch for Lightning to optimize. `train/loss` reaches `trainer.callback_metrics` every
        step; the terms, beta and lr (each `self.log` is costly next to a small MLP's step) when loggers write."""
        terms = self._shared_step(batch, "train")
        self.log("train/loss", terms.loss, on_step=True, on_epoch=False, batch_size=len(batch[0]))
        if (self.global_step + 1) % self.trainer.log_every_n_steps == 0:  # the steps Lightning writes to the loggers
            self.stop_if_diverged()
            lr = self.trainer.optimizers[0].param_groups[0]["lr"]
            figures = {f"train/{name}": value for name, value in terms.terms.items()}
            # the x-axis (`step`): the optimizer steps taken once this batch's is, as for val and test
            figures |= {"train/beta": float(terms.beta), "train/lr": float(lr), "step": float(self.global_step + 1)}
            self.log_dict(figures, on_step=True, on_epoch=False, batch_size=len(batch[0]))
        return terms.loss

    def lr_scheduler_step(self, scheduler: Any, metric: Any) -> None:
        """After each optimizer step; a run continued past its schedule keeps the schedule's last rate."""
        if self.global_step < self.total_steps:
            scheduler.step()

    def _x_axis(self, stage: str) -> dict[str, float]:
        """The loggers' x-axis, `step` (so Lightning adds no `epoch` scalar): the optimizer steps behind the values."""
        tested = stage == "test" and self.loaded_step is not None
        return {"step": float(self.loaded_step if tested else self.global_step)}

    def stop_if_diverged(self) -> None:
        if (bad := self.train_means.first_non_finite()) is not None:
            raise DivergedError(bad[0], bad[1] | {"beta": float(self.beta_schedule(bad[0]))})

    def on_train_epoch_end(self) -> None:
        self.stop_if_diverged()
        epoch_means = {f"train/{n}_epoch": v for n, v in self.train_means.means().items()} | self._x_axis("train")
        self.train_means.reset()
        self.log_dict(epoch_means, on_step=False, on_epoch=True, sync_dist=True, batch_size=1)

    def on_validation_epoch_start(self) -> None:
        if self.trainer.training:
            self.stop_if_diverged()
        self.eval_means.reset()
        self.loss_fn.fit_to_eval_data(len(self.trainer.val_dataloaders.dataset))
        # validation's own noise, the same each time: it leaves the training's random state as it was, so a run
        # resumed from a checkpoint taken before a validation (which Lightning then skips) trains on identically
        self.val_noise = torch.Generator(self.device).manual_seed(0)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._shared_step(batch, "val", self.val_noise)

    def _summed(self, totals: torch.Tensor) -> torch.Tensor:
        return self.trainer.strategy.reduce(totals, reduce_op="sum")

    def _log_eval_means(self, stage: str, extra: dict[str, float] | None = None) -> None:
        means = self.eval_means.means(self._summed) | {"beta": self.beta_at(stage)} | (extra or {})
        per_dim = {f"{stage}/{name}": means.pop(name) for name in list(means) if name.startswith("kl_dim_")}
        self.log_dict({f"{stage}/{name}": value for name, value in means.items()} | self._x_axis(stage), batch_size=1)
        # one value per latent dimension: metrics.json, not a wall of single-point charts in TensorBoard
        self.log_dict(per_dim, batch_size=1, logger=False)

    def on_validation_epoch_end(self) -> None:
        self._log_eval_means("val")
        if not self.trainer.sanity_checking:
            self.validated_step = self.global_step

    def on_test_epoch_start(self) -> None:
        self.eval_means.reset()
        self.loss_fn.fit_to_eval_data(len(self.trainer.test_dataloaders.dataset))
        has_likelihood = self.loss_fn.likelihood is not None
        names = ("mse", "elbo", "elbo_var", "nll", "nll_var", "inference_gap", "inference_gap_var")
        names = names[: 1 + has_likelihood * (2 + 4 * (self.nll_samples > 0))]
        self.test_means = RunningMeans(names)  # `<name>_var` gives `<name>_se` (`metrics.RunningMeans`)
        self.latent_stats = LatentStats(keep=self.mi_samples, seed=0, layers=self.net.latent_dims)

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        """The loss terms; `mse` of the reconstruction from the posterior's code; where the loss has a likelihood,
        `elbo` (beta 1, nats per sample), `nll` (-log p(x) importance-sampled with the prior's log p(z)) and
        `inference_gap` (log p(x) - ELBO, ~ KL(q(z|x) || p(z|x))); the latent statistics of `metrics.LatentStats`."""
        x, labels = batch
        posterior = (out := self._shared_step(batch, "test").sample).posterior
        self.latent_stats.add(posterior, self.prior.kl_per_dim(posterior), labels)
        values = [(self.decode_image(posterior.code) - x).pow(2).mean()]
        if (likelihood := self.loss_fn.likelihood) is not None:
            elbo = likelihood.log_prob(x, out.params) - self.prior.kl(posterior, out.z, out.log_q)
            values += [elbo.mean(), elbo.var(correction=0)]
            if self.nll_samples:
                log_px = importance_sampled_log_likelihood(self.net, self.prior, likelihood, x, self.nll_samples)
                gap = log_px - elbo
                values += [-log_px.mean(), log_px.var(correction=0), gap.mean(), gap.var(correction=0)]
        self.test_means.add(torch.stack(values), len(x))

    def on_test_epoch_end(self) -> None:
        extra = self.test_means.means(self._summed)
        extra |= self.latent_stats.results(self._summed, mutual_info=self.mi_samples > 0)
        if self.trainer.datamodule is not None:  # labelled factors beyond the batch label (`VAEData.test_factors`)
            extra |= factor_information_gaps(self.net, self.trainer.datamodule, self.mi_samples)
        if "mse" in extra:
            extra["psnr"] = 10 * math.log10(1 / max(extra["mse"], 1e-12))
        self._log_eval_means("test", extra)
