"""Training-step speed in three columns: a plain PyTorch loop, the leanest LightningModule, and the framework.

- plain: what a user writes by hand for the same network, objective (the same plain-torch function as the bare
  column), optimizer (fused Adam) and batch size: index a shuffled in-memory tensor, forward, loss, backward,
  step;
- bare Lightning: a LightningModule under Lightning's training contract (automatic optimization, its loss in
  `trainer.callback_metrics` every step through one `self.log`) and nothing else (no callbacks, no logger, no
  progress bar), computing the network's layers and the objective with plain torch operations (the
  MLP's `nn.Sequential`s, `torch.nn.functional`, `torch.distributions`; none of our classes), fed by the same
  data module as the framework;
- framework: the experiment composed from the packaged configs and built as `train.py` builds it (VAEModule, every
  callback of the config, the TensorBoard logger), with only the data replaced by random images of its shape.

All three run at the experiment's precision (`faces_dogs_conv`: bfloat16 autocast) and feed the conv net's
maps in its memory order (channels-last where its config says so), so that the columns differ in the code
around the network and nothing else.

The three take turns step by step, so that they meet the same machine state (this VM's speed drifts by tens of
percent within seconds), each in its own thread and only one at a time: the framework's fit (the main thread)
hands the turn to the plain loop after each step, the plain loop to the bare Lightning fit, and that back to the
framework. Each column has a thread of its own because a column that ran in another's thread slowed that one's
optimizer step by a third here; `--threads 1` also gives each column one intra-op thread, so that the columns'
OpenMP teams do not compete for the two cores (with two threads each, which column lost depended on the thread
layout). A Lightning step is the time from one batch's start to the next one's, less the other columns' turns;
steps across an epoch end are left out (`run_overhead.py` measures those). Prints steps per second of each
column and the ratios framework / bare Lightning (target >= 0.97) and framework / plain (>= 0.85 for the
seed's MLP at batch 32, >= 0.95 for the conv model), each the median of `--repeats` fits.

    python -m benchmarks.train_step                                   # haskell_mnist: 784-1000-2, batch 32
    python -m benchmarks.train_step --experiment faces_dogs_conv --steps 60 --warmup 5
    python -m benchmarks.train_step --models --threads 1              # every model of the family (mnist_nll)
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import logging
import math
import statistics
import sys
import tempfile
import threading
import warnings
from pathlib import Path

import lightning as L
import torch
from omegaconf import OmegaConf
from torch import nn
from torch.distributions import (
    Categorical,
    ContinuousBernoulli,
    Distribution,
    Independent,
    MixtureSameFamily,
    Normal,
    kl_divergence,
)
from torch.nn import functional as F

from benchmarks.common import RandomImages, clock, compose_run, data_shape, save, training_only_trainer
from vae_lightning.core.config import build, call
from vae_lightning.run.trainer import build_trainer

BETA = 1.0  # the plain columns' KL weight (the cost of a step does not depend on it)
TARGETS = {"framework/bare": 0.97, "framework/plain (MLP, batch 32)": 0.85, "framework/plain (conv)": 0.95}


def short_name(cfg, key: str) -> str:
    """The class name of the config option at `key` ('' when there is none)."""
    return str(OmegaConf.select(cfg, f"{key}._target_", default="")).rsplit(".", 1)[-1]


class PlainModel(nn.Module):
    """The experiment's network and objective written with plain torch operations (`torch.nn.functional`,
    `torch.distributions`) on the network's own torch layers and on plain copies of the prior's and the
    likelihood's parameters: no class of ours. Covers the seed's MSE + KL, the ELBO, IWAE, MIWAE, CIWAE, beta-
    TCVAE, the MMD-VAE and FactorVAE (on its discriminator's own torch layers); the IAF posterior (its MADE
    weights and masks applied with `F.linear`); the ladder VAE (its own layers, its top-down prior); the standard
    normal, mixture and VampPrior priors; the VQ-VAE (its codebook's moving averages on plain tensors); the
    Bernoulli, continuous Bernoulli, fixed and learned-sigma Gaussian likelihoods and the discretised logistic."""

    def __init__(self, cfg, module) -> None:
        super().__init__()
        self.objective, self.prior_name = short_name(cfg, "loss"), short_name(cfg, "prior")
        self.likelihood_name = short_name(cfg, "loss.likelihood") or "Bernoulli"
        known = ("SeedLoss", "ELBO", "IWAE", "MIWAE", "CIWAE", "BetaTCVAE", "InfoVAE", "FactorVAE", "VQVAE")
        if self.objective not in known:
            raise SystemExit(f"no plain-torch column for {cfg.loss._target_} with {self.likelihood_name}")
        self.net = copy.deepcopy(module.net)
        # the prior's and the likelihood's trained tensors, as plain parameters under their own names
        extra = [*module.prior.named_parameters(), *module.loss_fn.named_parameters()]
        extra = [(name, p) for name, p in extra if not name.startswith("discriminator.")]
        # FactorVAE's discriminator: its own torch layers (an `nn.Sequential` of Linear and LeakyReLU)
        self.discriminator = copy.deepcopy(getattr(module.loss_fn, "discriminator", None))
        self.extra = nn.ParameterDict({name.rsplit(".", 1)[-1]: nn.Parameter(p.detach().clone()) for name, p in extra})
        self.softplus_scale = cfg.model.posterior_scale._target_.endswith("SoftplusScale")
        self.sigma = float(OmegaConf.select(cfg, "loss.likelihood.sigma", default=0.1))
        self.min_sigma = float(OmegaConf.select(cfg, "loss.likelihood.min_sigma", default=0.0))
        self.min_scale = float(OmegaConf.select(cfg, "prior.min_scale", default=0.0))
        self.k = int(OmegaConf.select(cfg, "loss.k", default=1))
        self.m = int(OmegaConf.select(cfg, "loss.m", default=1))
        self.elbo_weight = float(OmegaConf.select(cfg, "loss.elbo_weight", default=0.0))
        # an IAF posterior: its MADE layers' own tensors, applied with plain torch operations (`flow`)
        iaf = short_name(cfg, "posterior") == "InverseAutoregressiveFlow"
        self.flow = copy.deepcopy(module.net.posterior) if iaf else None
        self.tc_weight = float(OmegaConf.select(cfg, "loss.tc_weight", default=0.0))
        self.mmd_weight = float(OmegaConf.select(cfg, "loss.mmd_weight", default=0.0))
        self.kl_weight = float(OmegaConf.select(cfg, "loss.kl_weight", default=0.0))
        self.input_shape = tuple(module.hparams.input_shape)
        self.n_data = 1  # the training set's size, for beta-TCVAE
        self.conv = hasattr(self.net, "decoder_convs")  # the conv model's layers (or the conv ladder's), else the MLP's
        self.ladder = hasattr(self.net, "up_heads")  # the ladder VAE's layers (with its top-down prior)
        # a VQ-VAE: its codebook and moving averages as plain tensors, moved by `vq_loss` itself
        self.vq = short_name(cfg, "posterior") == "VectorQuantiser"
        if self.vq:
            quantiser = module.net.posterior
            self.codes = {name: buffer.detach().clone() for name, buffer in quantiser.named_buffers()}
            self.vq_keys = (quantiser.code_dim, quantiser.n_codes, quantiser.decay, quantiser.restart_below)
            self.epsilon, self.commitment_weight = quantiser.epsilon, float(cfg.loss.commitment_weight)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """The decoder's outputs, flattened per row (the logistic's two outputs per pixel: means, then scales)."""
        if not self.conv:
            return self.net.decoder(z)
        side, width = self.net.map_side, self.net.channels[-1]
        # the conv net's maps in its memory order (channels-last where its config says so), as its weights are
        maps = self.net.decoder_head(z).view(len(z), width, side, side).contiguous(memory_format=self.net.memory_format)
        return self.net.decoder_convs(maps).flatten(1)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The encoder's outputs: the Gaussian's 2 x latent values, then a flow's context vector h (if any)."""
        if self.conv:
            return self.net.encoder_head(self.net.encoder_convs(x.contiguous(memory_format=self.net.memory_format)))
        return self.net.encoder(x.flatten(1))

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.gaussian(self.features(x)[:, : 2 * self.net.latent_dim])

    def log_px(self, x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """log p(x|z) per row, x and logits flattened."""
        if self.likelihood_name == "Bernoulli":
            return -F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)
        if self.likelihood_name == "ContinuousBernoulli":
            return ContinuousBernoulli(logits=logits, validate_args=False).log_prob(x).sum(-1)
        if self.likelihood_name == "DiscretisedLogistic":  # 256 bins; the edge bins take the tails
            mean, log_scale = torch.sigmoid(logits[:, : x.shape[1]]), logits[:, x.shape[1] :].clamp(min=-7.0)
            value, half_bin = torch.round(x * 255) / 255, 0.5 / 255
            upper = (value - mean + half_bin) * torch.exp(-log_scale)
            lower = (value - mean - half_bin) * torch.exp(-log_scale)
            # the same function as ours: log(sigmoid(upper) - sigmoid(lower)) in its exact form (the plain difference
            # of sigmoids is another function where both round to the same number: no gradient there)
            inner = lower + torch.log(torch.expm1(upper - lower)) - F.softplus(upper) - F.softplus(lower)
            edges = torch.where(value < half_bin, F.logsigmoid(upper), -F.softplus(lower))
            return torch.where((value < half_bin) | (value > 1 - half_bin), edges, inner).sum(-1)
        if self.likelihood_name == "Gaussian":
            return Normal(torch.sigmoid(logits), self.sigma, validate_args=False).log_prob(x).sum(-1)
        sigma = (self.extra["log_sigma"].exp() + self.min_sigma).expand(self.input_shape).flatten()
        return Normal(torch.sigmoid(logits), sigma, validate_args=False).log_prob(x).sum(-1)

    def flowed(
        self, z: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor, h: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The IAF's steps (gated or affine) on codes z: (z_T, log-determinant), with its masked weights and the
        context (the encoder's vector h, the Gaussian's parameters, or both, as the flow's settings say)."""
        parts = ([loc, scale.log()] if self.flow.uses_context else []) + ([h] if self.flow.context_dim else [])
        context, log_det = torch.cat(parts, -1), z.new_zeros(z.shape[:-1])
        for step in self.flow.steps:
            h = z
            for i, layer in enumerate(step.hidden):
                h = F.linear(h, layer.weight * layer.mask, layer.bias)
                h = F.elu(h + F.linear(context, step.context.weight) if i == 0 else h)
            out = F.linear(h, step.last.weight * step.last.mask, step.last.bias)
            out = out + F.linear(context, step.context_out.weight)
            shift, s = out.chunk(2, dim=-1)
            if self.flow.gated:
                gate = torch.sigmoid(s + self.flow.gate_bias)
                z = gate * z + (1 - gate) * shift
                log_det = log_det + F.logsigmoid(s + self.flow.gate_bias).sum(-1)
            else:  # the affine step
                z = z * s.exp() + shift
                log_det = log_det + s.sum(-1)
        return z, log_det

    def gaussian(self, raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loc, raw_scale = raw.chunk(2, dim=-1)
        scale = (
            F.softplus(raw_scale) + 1e-6 if self.softplus_scale else torch.exp(0.5 * raw_scale.clamp(max=40.0)) + 1e-6
        )
        return loc, scale

    def ladder_loss(self, x: torch.Tensor) -> torch.Tensor:
        """The ladder VAE's ELBO on its own torch layers: the bottom-up estimates, then top-down the
        precision-weighted posterior of each layer and its closed-form KL to the top-down prior given the draw above."""
        h = x.contiguous(memory_format=self.net.memory_format) if self.conv else x.flatten(1)
        estimates = []
        for block, head in zip(self.net.up, self.net.up_heads, strict=True):
            h = block(h)
            estimates.append(self.gaussian(head(h)))
        loc, scale = estimates[-1]
        z = loc + scale * torch.randn_like(loc)
        kl = kl_divergence(Normal(loc, scale), Normal(0.0, 1.0)).sum(-1)
        for level in reversed(range(len(estimates) - 1)):
            p_loc, p_scale = self.gaussian(self.net.down[level](z))
            e_loc, e_scale = estimates[level]
            precision_e, precision_p = e_scale.pow(-2), p_scale.pow(-2)
            variance = 1.0 / (precision_e + precision_p)
            q_loc, q_scale = (e_loc * precision_e + p_loc * precision_p) * variance, variance.sqrt()
            z = q_loc + q_scale * torch.randn_like(q_loc)
            kl = kl + kl_divergence(Normal(q_loc, q_scale), Normal(p_loc, p_scale)).sum(-1)
        return (-self.log_px(x.flatten(1), self.decode(z)) + BETA * kl).mean()

    def vq_loss(self, x: torch.Tensor) -> torch.Tensor:
        """The VQ-VAE's loss: each position's nearest code, one moving-average step of the codebook (dead codes
        restarted at encoder outputs), the decode straight through, the constant KL and the commitment."""
        code_dim, n_codes, decay, restart_below = self.vq_keys
        codebook, counts, sums = self.codes["codebook"], self.codes["counts"], self.codes["sums"]
        loc, _ = self.encode(x)
        flat = loc.detach().reshape(-1, code_dim)
        with torch.no_grad():
            distance = flat.pow(2).sum(-1, keepdim=True) - 2 * flat @ codebook.T + codebook.pow(2).sum(-1)
            index = distance.argmin(-1)
            quantised = codebook[index].view_as(loc)
            one_hot = F.one_hot(index, n_codes).float()
            counts.mul_(decay).add_(one_hot.sum(0), alpha=1 - decay)
            sums.mul_(decay).add_(one_hot.T @ flat, alpha=1 - decay)
            total = counts.sum()
            smoothed = (counts + self.epsilon) / (total + n_codes * self.epsilon) * total
            dead = (counts < restart_below) | ~self.codes["started"]
            restarts = flat[torch.randint(len(flat), (n_codes,))]
            codebook.copy_(torch.where(dead[:, None], restarts, sums / smoothed.clamp_min(1e-12)[:, None]))
            counts.copy_(torch.where(dead, restart_below, counts))
            sums.copy_(torch.where(dead[:, None], restarts * restart_below, sums))
            self.codes["started"].fill_(True)
        z = loc + (quantised - loc).detach()
        recon = -self.log_px(x.flatten(1), self.decode(z))
        kl = loc.shape[-1] // code_dim * math.log(n_codes)
        return (recon + BETA * kl + self.commitment_weight * (loc - quantised).pow(2).sum(-1)).mean()

    def prior(self) -> Distribution:
        if self.prior_name == "StandardNormal":
            return Independent(Normal(0.0, torch.ones(self.net.latent_dim), validate_args=False), 1)
        if self.prior_name == "MixtureOfGaussians":
            logits, loc = self.extra["logits"], self.extra["loc"]
            scale = F.softplus(self.extra["raw_scale"]) + self.min_scale
        else:  # the VampPrior: the posteriors of the pseudo-inputs, with equal weights
            loc, scale = self.encode(torch.sigmoid(self.extra["raw_pseudo_inputs"]))
            logits = torch.zeros(len(loc))
        components = Independent(Normal(loc, scale, validate_args=False), 1)
        return MixtureSameFamily(Categorical(logits=logits, validate_args=False), components, validate_args=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The loss of batch `x` (beta = 1)."""
        if self.ladder:
            return self.ladder_loss(x)
        if self.vq:
            return self.vq_loss(x)
        features = self.features(x)
        loc, scale = self.gaussian(features[:, : 2 * self.net.latent_dim])
        x = x.flatten(1)
        q, p = Independent(Normal(loc, scale, validate_args=False), 1), self.prior()
        if self.objective in ("IWAE", "MIWAE", "CIWAE"):
            n = self.k * self.m
            z = q.rsample((n,))
            log_px = self.log_px(x.expand(n, *x.shape).flatten(0, 1), self.decode(z.flatten(0, 1)))
            log_w = (log_px.view(n, len(x)) + p.log_prob(z) - q.log_prob(z)).view(self.m, self.k, len(x))
            iwae = (torch.logsumexp(log_w, dim=1) - math.log(self.k)).mean(0)
            if self.objective == "CIWAE":
                iwae = self.elbo_weight * log_w.mean((0, 1)) + (1 - self.elbo_weight) * iwae
            return -iwae.mean()
        z = q.rsample()
        if self.flow is not None:  # the ELBO through the flow: a single-sample KL
            log_q0 = q.log_prob(z)
            z, log_det = self.flowed(z, loc, scale, features[:, 2 * self.net.latent_dim :])
            recon = -self.log_px(x, self.decode(z))
            return (recon + BETA * (log_q0 - log_det - p.log_prob(z))).mean()
        logits = self.decode(z)
        if self.prior_name == "StandardNormal":
            kl = (0.5 * (loc.pow(2) + scale.pow(2) - 1.0) - scale.log()).sum(-1)
        else:
            kl = q.log_prob(z) - p.log_prob(z)
        if self.objective == "SeedLoss":
            return (torch.sigmoid(logits) - x).pow(2).mean() + BETA * kl.sum()
        recon = -self.log_px(x, logits)
        if self.objective == "ELBO":
            return (recon + BETA * kl).mean()
        if self.objective == "FactorVAE":  # the discriminator's TC estimate; its own cross-entropy on detached codes
            fixed = {name: p.detach() for name, p in self.discriminator.named_parameters()}
            logits = torch.func.functional_call(self.discriminator, fixed, (z,))
            codes = z.detach()
            permuted = codes.gather(0, torch.rand(codes.shape).argsort(dim=0))
            labels = torch.cat([torch.zeros(len(x)), torch.ones(len(x))]).long()
            critic = F.cross_entropy(self.discriminator(torch.cat([codes, permuted])), labels)
            return (recon + BETA * kl + self.tc_weight * (logits[:, 0] - logits[:, 1])).mean() + critic
        if self.objective == "BetaTCVAE":  # minibatch-weighted sampling
            pairwise = Normal(loc[None], scale[None], validate_args=False).log_prob(z[:, None])  # (N, N, latent)
            log_norm = math.log(self.n_data * len(x))
            log_qz = torch.logsumexp(pairwise.sum(-1), dim=1) - log_norm
            log_prod_qz = (torch.logsumexp(pairwise, dim=1) - log_norm).sum(-1)
            log_qz_x, log_pz = q.log_prob(z), p.log_prob(z)
            mi, tc, dw_kl = log_qz_x - log_qz, log_qz - log_prod_qz, log_prod_qz - log_pz
            return (recon + BETA * (mi + self.tc_weight * tc + dw_kl)).mean()
        prior_z = p.sample((len(x),))  # the MMD-VAE: unbiased MMD^2 under a Gaussian kernel of width^2 = latent
        kernels = [torch.exp(-torch.cdist(a, b).pow(2) / (2.0 * z.shape[-1])) for a, b in ((z, z), (prior_z, prior_z))]
        within = sum((k.sum() - k.diagonal().sum()) / (len(x) * (len(x) - 1)) for k in kernels)
        mmd = within - 2.0 * torch.exp(-torch.cdist(z, prior_z).pow(2) / (2.0 * z.shape[-1])).mean()
        return (recon + BETA * self.kl_weight * kl).mean() + self.mmd_weight * mmd


class BareModule(L.LightningModule):
    """The leanest LightningModule for the same network and objective in plain torch under Lightning's training
    contract: automatic optimization, and its loss in `trainer.callback_metrics` every step (one `self.log`,
    as Lightning's own examples write it), nothing else."""

    def __init__(self, model: PlainModel, optimizer_factory) -> None:
        super().__init__()
        self.model, self.optimizer_factory = model, optimizer_factory

    def training_step(self, batch, batch_idx) -> torch.Tensor:
        x, _ = batch
        loss = self.model(x)
        self.log("train/loss", loss, on_step=True, on_epoch=False, batch_size=len(x))
        return loss

    def configure_optimizers(self):
        return call(self.optimizer_factory, "optimizer", self.parameters())


class Plain:
    """The hand-written loop, one step at a time; under bfloat16 autocast where the experiment's trainer is
    (`trainer.precision=bf16-mixed`), as Lightning's precision plugin runs the other two columns' steps."""

    def __init__(self, cfg, model: PlainModel, images: torch.Tensor, batch_size: int) -> None:
        self.model = model
        self.bf16 = str(cfg.trainer.precision) == "bf16-mixed"
        self.optimizer = call(build(cfg.optimizer, "optimizer"), "optimizer", self.model.parameters())
        self.images, self.order, self.i = images, torch.randperm(len(images)).split(batch_size), 0

    def step(self) -> None:
        x = self.images[self.order[self.i % len(self.order)]]
        self.i += 1
        if x.dtype == torch.uint8:
            x = x.float().div_(255.0)
        with torch.enable_grad():
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
                loss = self.model(x)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()

    def take_turns(
        self, turns: dict, column: Column, threads: int | None, bare_done: threading.Event, done: threading.Event
    ) -> None:
        """The plain column's thread: one step per turn, timed, then the bare fit's turn (the framework's once the
        bare fit has ended), until the framework's fit is done."""
        if threads:
            torch.set_num_threads(threads)
        while True:
            turns["plain"].acquire()
            if done.is_set():
                return
            start = clock()
            self.step()
            column.add(clock() - start, self.i)
            turns["framework" if bare_done.is_set() else "bare"].release()


class Column:
    """Accumulated step times of one column, from `warmup` steps on."""

    def __init__(self, warmup: int) -> None:
        self.warmup, self.seconds, self.steps = warmup, 0.0, 0

    def add(self, seconds: float, step: int) -> None:
        if step > self.warmup:
            self.seconds += seconds
            self.steps += 1


class FrameworkTurns(L.Callback):
    """In the framework's fit: times its steps; after each, hands the turn to the plain loop and waits for it."""

    def __init__(self, turns: dict, columns: dict, max_steps: int) -> None:
        self.turns, self.columns, self.max_steps = turns, columns, max_steps
        self.start: tuple[float, int] | None = None
        self.paused = 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        now = clock()
        if self.start is not None and self.start[1] == trainer.current_epoch:
            self.columns["framework"].add(now - self.start[0] - self.paused, trainer.global_step)
        self.start, self.paused = (now, trainer.current_epoch), 0.0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        pause = clock()
        if trainer.global_step < self.max_steps:
            self.turns["plain"].release()
            self.turns["framework"].acquire()
        self.paused += clock() - pause


class BareTurns(L.Callback):
    """In the bare fit (a thread of its own): waits for its turn at each batch's start, and times its steps."""

    def __init__(self, turns: dict, column: Column, threads: int | None) -> None:
        self.turns, self.column, self.threads = turns, column, threads
        self.resumed: float | None = None

    def on_train_start(self, trainer, pl_module) -> None:
        if self.threads:
            torch.set_num_threads(self.threads)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.resumed is not None:
            self.column.add(clock() - self.resumed, trainer.global_step)
            self.turns["framework"].release()
        self.turns["bare"].acquire()
        self.resumed = clock()


def one_fit(overrides: list[str], steps: int, warmup: int, tmp: Path, threads: int | None) -> dict[str, float]:
    """Steps per second of each column in one interleaved fit."""
    # every callback of the config but the CPU threads' choice: `--threads` sets the three columns' threads alike
    cfg = compose_run([*overrides, "~callbacks.cpu_threads"], tmp / "framework")
    batch_size = cfg.dataset.batch_size
    shape, uint8 = data_shape(cfg.dataset)
    max_steps = warmup + steps + 1
    datamodule = RandomImages(shape, batch_size * 200, batch_size * 20, batch_size * 2, uint8, batch_size)
    datamodule.setup("fit")
    columns = {"plain": Column(warmup), "bare": Column(warmup), "framework": Column(warmup)}
    bare_done, framework_done = threading.Event(), threading.Event()
    turns = {name: threading.Semaphore(0) for name in ("plain", "bare", "framework")}

    torch.manual_seed(1)
    module = build(cfg.module, None, input_shape=shape)
    module.loss_fn.fit_to_data(len(datamodule.train_set))
    bare_model, plain_model = PlainModel(cfg, module), PlainModel(cfg, module)
    bare_model.n_data = plain_model.n_data = len(datamodule.train_set)
    bare = BareModule(bare_model, build(cfg.optimizer, "optimizer"))
    bare_callbacks = [BareTurns(turns, columns["bare"], threads)]
    bare_trainer = training_only_trainer(max_steps, bare_callbacks, tmp / "bare", precision=cfg.trainer.precision)
    bare_errors = []

    def fit_bare() -> None:
        try:
            bare_trainer.fit(bare, datamodule=datamodule)
        except BaseException as error:  # raised again in the main thread, after the framework's fit
            bare_errors.append(error)
        finally:
            bare_done.set()
            turns["framework"].release()  # a bare fit that ends early must not leave the framework waiting

    thread = threading.Thread(target=fit_bare)
    plain = Plain(cfg, plain_model, datamodule.train_set.images, batch_size)
    plain_thread = threading.Thread(
        target=plain.take_turns, args=(turns, columns["plain"], threads, bare_done, framework_done)
    )

    cfg.trainer.max_steps, cfg.trainer.max_epochs = max_steps, -1
    if threads:
        torch.set_num_threads(threads)
    trainer = build_trainer(cfg, extra_callbacks=(FrameworkTurns(turns, columns, max_steps),))
    with contextlib.redirect_stdout(sys.stderr):  # Lightning's tables go to stdout; keep it for the JSON
        thread.start()
        plain_thread.start()
        try:
            trainer.fit(module, datamodule=datamodule)
        finally:
            framework_done.set()  # a framework fit that ends early must leave neither of the others waiting
            turns["plain"].release()
            turns["bare"].release(max_steps)
            thread.join()
            plain_thread.join()
    if bare_errors:
        raise bare_errors[0]
    return {name: column.steps / column.seconds for name, column in columns.items()}


# `--models`: each model of the family on `mnist_nll` (784-200-200-50 MLP, batch 100), as in benchmarks/models.py
MODELS = {
    "vae": [],
    "iwae": ["loss=iwae"],
    "tcvae": ["loss=tcvae"],
    "mmd": ["loss=mmd"],
    "factor": ["loss=factor"],
    "miwae": ["loss=miwae"],
    "ciwae": ["loss=ciwae"],
    "iaf": ["posterior=iaf"],
    "ladder": ["model=ladder", "prior=ladder"],
    # experiment=mnist_ladder's network: blocks of one layer, a top layer as wide as the first
    "ladder_d1": ["model=ladder", "prior=ladder", "model.latent_dims=[50,50]", "model.block_depth=1"],
    "vq": ["posterior=vq", "prior=codes", "loss=vqvae", "posterior.code_dim=2"],
    "mixture": ["prior=mixture"],
    "vamp": ["prior=vamp"],
    "continuous_bernoulli": ["loss/likelihood=continuous_bernoulli"],
    "gaussian": ["loss/likelihood=gaussian"],
    "gaussian_channel_sigma": ["loss/likelihood=gaussian_channel_sigma"],
    "gaussian_pixel_sigma": ["loss/likelihood=gaussian_pixel_sigma"],
    "logistic": ["loss/likelihood=logistic"],
}


def measure(overrides: list[str], args: argparse.Namespace, tmp: Path) -> dict:
    """The medians over `args.repeats` interleaved fits."""
    fits = []
    for i in range(args.repeats):
        fits.append(one_fit(overrides, args.steps, args.warmup, tmp / str(i), args.threads))
        print(f"{overrides} fit {i}: " + ", ".join(f"{k} {v:.1f}/s" for k, v in fits[-1].items()), file=sys.stderr)
    return {
        "steps_per_s": {name: round(statistics.median(f[name] for f in fits), 1) for name in fits[0]},
        "framework_over_bare": round(statistics.median(f["framework"] / f["bare"] for f in fits), 3),
        "framework_over_plain": round(statistics.median(f["framework"] / f["plain"] for f in fits), 3),
        "bare_over_plain": round(statistics.median(f["bare"] / f["plain"] for f in fits), 3),
        "per_fit": [{name: round(v, 1) for name, v in f.items()} for f in fits],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiment", default="haskell_mnist")
    parser.add_argument("--models", nargs="*", default=None, help=f"of {sorted(MODELS)} on mnist_nll (none: all)")
    parser.add_argument("--batch-size", type=int, default=None, help="default: the experiment's")
    parser.add_argument("--steps", type=int, default=600, help="measured steps per fit")
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--threads", type=int, default=None, help="intra-op threads of each column (default: torch's)")
    parser.add_argument("--repeats", type=int, default=3, help="fits; medians are reported")
    parser.add_argument("--overrides", nargs="*", default=[], help="more Hydra overrides")
    parser.add_argument("--name", default=None, help="results file name (default: from the experiment)")
    args = parser.parse_args()
    logging.getLogger("lightning").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    if args.models is not None:
        args.experiment = "mnist_nll"
    overrides = [f"experiment={args.experiment}", *args.overrides]
    if args.batch_size:
        overrides.append(f"dataset.batch_size={args.batch_size}")
    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose_run(overrides, Path(tmp) / "shown")
        result = {
            "benchmark": "train_step",
            "experiment": args.experiment,
            "overrides": args.overrides,
            "batch_size": cfg.dataset.batch_size,
            "image_shape": list(data_shape(cfg.dataset)[0]),
            "method": "three columns interleaved step by step in one process; epoch ends left out",
            "targets": TARGETS,
            "steps_per_fit": args.steps,
            "threads_per_column": args.threads,
            "repeats": args.repeats,
        }
        if args.models is None:
            result |= measure(overrides, args, Path(tmp))
        else:
            result["targets"] = {"framework/bare (every model)": 0.95}
            result["models"] = {
                name: {"overrides": MODELS[name]} | measure([*overrides, *MODELS[name]], args, Path(tmp) / name)
                for name in (args.models or MODELS)
            }
    default_name = "train_step_models" if args.models is not None else f"train_step_{args.experiment}"
    save(args.name or default_name, result)


if __name__ == "__main__":
    main()
