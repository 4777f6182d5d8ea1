"""The LightningModule keeps Lightning's contracts: one batch, one training_step, one optimizer step; every
callback hook once per batch; the logged step is global_step. A non-finite loss stops the run before any
checkpoint is written."""

from __future__ import annotations

import csv
import json
import math

import lightning as L
import pytest
import torch
from lightning import Callback
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger

from tests.conftest import train_in_process
from vae_lightning.core.checkpoint_io import AtomicCheckpointIO
from vae_lightning.core.errors import ConfigValueError, DivergedError
from vae_lightning.data.in_memory import InMemoryDataModule, InMemoryDataset
from vae_lightning.metrics import RunningMeans
from vae_lightning.module import VAEModule

NET = {"_target_": "vae_lightning.nets.mlp.MLPVAE", "hidden_dims": [16], "latent_dim": 2}
LOSS = {"_target_": "vae_lightning.losses.ELBO"}
BETA = {"_target_": "vae_lightning.schedules.Constant", "_partial_": True, "value": 1.0}
OPTIMIZER = {"_target_": "vae_lightning.optim.adam", "_partial_": True, "lr": 1e-3}


class Blobs(InMemoryDataModule):
    input_shape = (1, 4, 4)

    def load_splits(self):
        g = torch.Generator().manual_seed(0)
        data = InMemoryDataset(torch.rand(96, 1, 4, 4, generator=g), torch.zeros(96, dtype=torch.long))
        return data, data.subset(torch.arange(40)), data.subset(torch.arange(40))


class CountsHooks(Callback):
    def __init__(self) -> None:
        self.calls = {"on_train_batch_start": 0, "on_train_batch_end": 0, "on_before_optimizer_step": 0}

    def on_train_batch_start(self, *args) -> None:
        self.calls["on_train_batch_start"] += 1

    def on_train_batch_end(self, *args) -> None:
        self.calls["on_train_batch_end"] += 1

    def on_before_optimizer_step(self, *args) -> None:
        self.calls["on_before_optimizer_step"] += 1


def fit_blobs(callbacks=(), logger=False, module_kwargs=None, **trainer_kwargs) -> tuple[VAEModule, L.Trainer]:
    """Two epochs of 5 batches on Blobs unless told otherwise."""
    torch.manual_seed(0)
    settings = {"net": NET, "loss": LOSS, "beta": BETA, "optimizer": OPTIMIZER}
    module = VAEModule.from_settings(settings, input_shape=(1, 4, 4), **(module_kwargs or {}))
    trainer = L.Trainer(
        **{"max_epochs": 2, "limit_train_batches": 5, "log_every_n_steps": 2} | trainer_kwargs,
        accelerator="cpu",
        logger=logger,
        enable_checkpointing=any(isinstance(c, ModelCheckpoint) for c in callbacks),
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=list(callbacks),
        plugins=[AtomicCheckpointIO()],
    )
    trainer.fit(module, datamodule=Blobs(batch_size=16))
    return module, trainer


def logged_steps(logger: CSVLogger) -> dict[str, list[int]]:
    """{metric: the steps it was logged at} from a CSV logger's metrics.csv."""
    steps: dict[str, list[int]] = {}
    with open(f"{logger.log_dir}/metrics.csv") as f:
        for row in csv.DictReader(f):
            for name, value in row.items():
                if value and name not in ("step", "epoch"):
                    steps.setdefault(name, []).append(int(row["step"]))
    return steps


def test_every_callback_hook_runs_once_per_optimizer_step_and_logged_steps_are_global_steps(tmp_path):
    counter = CountsHooks()
    logger = CSVLogger(tmp_path, name="csv")
    _module, trainer = fit_blobs([counter], logger)
    assert trainer.global_step == 10
    assert counter.calls == dict.fromkeys(counter.calls, 10)
    steps = logged_steps(logger)
    # every value at the optimizer steps taken when it was logged: train/* every 2nd step, epoch means and val/*
    # at each epoch's end (the steps of the checkpoint saved there)
    assert steps["train/loss"] == [2, 4, 6, 8, 10] == steps["train/beta"]
    assert steps["val/loss"] == [5, 10] == steps["train/loss_epoch"]


def test_val_and_test_metrics_are_sample_weighted_epoch_means():
    """40 samples in batches of 16, 16 and 8: val/kl and test/mse (no noise in either) are the means over the 40
    samples, computed here by hand, not the mean of the three batch means."""
    module, trainer = fit_blobs()
    metrics = {name: float(value) for name, value in trainer.callback_metrics.items()}
    trainer.test(module, datamodule=Blobs(batch_size=16), verbose=False)
    metrics |= {name: float(value) for name, value in trainer.callback_metrics.items()}
    x = Blobs(batch_size=16).load_splits()[1].images  # the val and test split (the same 40 samples here)
    with torch.no_grad():
        posterior = module.net.encode(x)
        kl = posterior.kl_to_standard_normal_per_dim().sum(-1)
        mse = (module.decode_image(posterior.loc) - x).pow(2).flatten(1).mean(-1)
    for name, per_sample in (("val/kl", kl), ("test/mse", mse)):
        batch_means = torch.stack([chunk.mean() for chunk in per_sample.split(16)]).mean()
        assert abs(float(batch_means) - float(per_sample.mean())) > 1e-4 * float(per_sample.mean())  # they differ
        assert metrics[name] == pytest.approx(float(per_sample.mean()), rel=1e-5), name
    assert {"test/elbo", "test/nll", "test/mse", "test/psnr", "test/active_units", "test/mutual_info"} <= set(metrics)
    assert metrics["test/psnr"] == pytest.approx(10 * math.log10(1 / metrics["test/mse"]), rel=1e-5)


def test_running_means_weigh_by_samples_sum_over_processes_and_remember_the_first_bad_step():
    means = RunningMeans(("loss", "kl"))
    means.add(torch.tensor([1.0, 0.0]), 3, step=0)
    means.add(torch.tensor([5.0, 2.0]), 1, step=1)
    assert means.means() == pytest.approx({"loss": 2.0, "kl": 0.5})
    assert means.means(lambda totals: totals * 2) == pytest.approx({"loss": 2.0, "kl": 0.5})  # two equal processes
    assert means.first_non_finite() is None
    means.add(torch.tensor([float("nan"), 1.0]), 1, step=2)
    means.add(torch.tensor([float("inf"), 1.0]), 1, step=3)
    step, values = means.first_non_finite()
    assert step == 2 and values["kl"] == 1.0


def test_running_means_give_the_standard_error_of_all_samples_from_each_steps_mean_and_variance():
    """Uneven batches of known values: the standard error is the sample standard deviation over all of them divided
    by sqrt(n); and values that are large and all alike (a photo's ELBO of -16,900 nats) have none, where squares
    summed in float32 gave about 1."""
    values = torch.randn(1000, generator=torch.Generator().manual_seed(0)) * 30.0 - 120.0
    means = RunningMeans(("nll", "nll_var"))
    for step, batch in enumerate(values.split([1, 7, 128, 300, 64, 500])):
        means.add(torch.stack([batch.mean(), batch.var(correction=0)]), len(batch), step=step)
    expected = values.double()
    assert means.means() == pytest.approx(
        {"nll": float(expected.mean()), "nll_se": float(expected.std() / math.sqrt(1000))}, rel=1e-5
    )
    alike = RunningMeans(("elbo", "elbo_var"))
    for step in range(3):
        batch = torch.full((5,), -16_900.5)
        alike.add(torch.stack([batch.mean(), batch.var(correction=0)]), 5, step=step)
    assert alike.means()["elbo_se"] == 0.0


def test_running_means_fold_their_buffer_without_losing_a_step():
    """More steps than the buffer holds: the means are exact, and the first bad step is the one after a fold."""
    means = RunningMeans(("loss",))
    n_steps = 3 * RunningMeans.ROWS + 5
    for step in range(n_steps):
        means.add(torch.tensor([float(step)]), 2 if step % 2 else 1, step=step)
    weights = [2 if step % 2 else 1 for step in range(n_steps)]
    expected = sum(w * step for step, w in enumerate(weights)) / sum(weights)
    assert means.means() == pytest.approx({"loss": expected})
    assert means.first_non_finite() is None
    bad_step = n_steps + RunningMeans.ROWS + 3
    for step in range(n_steps, bad_step + RunningMeans.ROWS):
        means.add(torch.tensor([float("inf") if step >= bad_step else 1.0]), 1, step=step)
    assert means.first_non_finite() == (bad_step, {"loss": float("inf")})
    means.reset()
    assert means.means() == {} and means.first_non_finite() is None


class Sabotage(Callback):
    """Makes the learning rate absurd from the second epoch on, so the loss turns NaN or infinite."""

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == 1:
            for group in trainer.optimizers[0].param_groups:
                group["lr"] = 1e20


def test_divergence_stops_at_its_first_step_and_keeps_the_last_good_checkpoint(tmp_path):
    last = ModelCheckpoint(dirpath=tmp_path, filename="last", monitor=None, save_top_k=1)
    with pytest.raises(DivergedError, match="Training diverged at optimizer step") as error:
        fit_blobs([last, Sabotage()], max_epochs=3, log_every_n_steps=50)
    assert 5 <= error.value.step <= 6  # the second epoch's first steps, named even though logged far later
    checkpoint = torch.load(tmp_path / "last.ckpt", weights_only=True)
    assert checkpoint["epoch"] == 0
    assert all(torch.isfinite(t).all() for t in checkpoint["state_dict"].values())


@pytest.mark.parametrize("algorithm", ["norm", "value"])
def test_the_trainers_gradient_clipping_bounds_every_step(algorithm):
    """The gradients the optimizer stepped with (still there at the batch's end) are clipped."""
    clipped = []

    class Watch(Callback):
        def on_train_batch_end(self, trainer, module, *args):
            grads = [p.grad for p in module.parameters()]
            norm = torch.stack([g.norm() for g in grads]).norm()
            clipped.append(float(norm if algorithm == "norm" else max(g.abs().max() for g in grads)))

    fit_blobs([Watch()], max_epochs=1, gradient_clip_val=0.05, gradient_clip_algorithm=algorithm)
    assert len(clipped) == 5 and max(clipped) <= 0.05 + 1e-5


def test_accumulating_gradients_halves_the_optimizer_steps_and_the_schedule_follows():
    module, trainer = fit_blobs(max_epochs=2, limit_train_batches=6, accumulate_grad_batches=2)
    assert trainer.global_step == 6 and module.total_steps == 6


def test_a_callback_reads_the_training_figures_every_step():
    """`train/loss` every step; the terms, beta and the learning rate on the steps the loggers write (every 2nd)."""
    seen = []

    class Reads(Callback):
        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            seen.append({name: float(value) for name, value in trainer.callback_metrics.items()})

    fit_blobs([Reads()], max_epochs=1)
    assert len(seen) == 5 and len({row["train/loss"] for row in seen}) == 5
    for row in (seen[1], seen[3]):  # steps 2 and 4: the loss is its terms' sum (beta 1)
        assert row["train/loss"] == pytest.approx(row["train/recon"] + row["train/kl"], rel=1e-5)
        assert row["train/lr"] == pytest.approx(1e-3) and row["train/beta"] == 1.0
    assert "train/kl" not in seen[0]


def test_resume_finishes_exactly_like_an_uninterrupted_run(tmp_path):
    """Four epochs at once, or two then `resume=true` for the rest: the same weights and the same val/loss."""
    args = ["trainer.max_epochs=4", "~callbacks.diagnostics", "logger=csv", "trainer.limit_train_batches=5"]
    train_in_process(args, tmp_path / "straight")
    train_in_process([*args[1:], "trainer.max_epochs=2"], tmp_path / "resumed")
    train_in_process([*args, "resume=true"], tmp_path / "resumed")
    final = {
        name: torch.load(tmp_path / name / "checkpoints" / "last.ckpt", weights_only=True)
        for name in ("straight", "resumed")
    }
    assert final["resumed"]["global_step"] == final["straight"]["global_step"] == 20
    for key, tensor in final["straight"]["state_dict"].items():
        assert torch.equal(tensor, final["resumed"]["state_dict"][key]), key
    expected, got = (json.loads((tmp_path / n / "metrics.json").read_text()) for n in ("straight", "resumed"))
    assert got["val/loss"] == pytest.approx(expected["val/loss"], abs=1e-6)


# the VQ-VAE: a codebook of moving averages with restarts drawn from the run's random state, and its transformer
VQ = ["posterior=vq", "prior=codes", "loss=vqvae", "sampler=code_transformer", "sampler.epochs=2", "model.latent_dim=4"]
VQ += ["posterior.code_dim=2", "posterior.n_codes=16", "diagnostics.every_n_epochs=3"]  # fitted as the run ends
VQ += ["threads=1"]  # the transformer's fit to the last bit: the automatic thread count follows the machine's load


@pytest.mark.parametrize("model", [[], VQ], ids=["default", "vq_transformer"])
def test_a_resume_from_the_last_batch_of_an_epoch_finishes_like_an_uninterrupted_run(model, tmp_path):
    """A checkpoint taken as an epoch's last batch ends (every 5 steps, 5 per epoch) is before that epoch's
    validation, which Lightning then skips on resume: validation must not move the training's random state. The
    VQ-VAE's codebook, its counts and its fitted transformer come back to the last bit too."""
    import shutil

    keep = ["_target_=lightning.pytorch.callbacks.ModelCheckpoint", "every_n_train_steps=5", "save_top_k=-1"]
    keep += ["mode=max", "auto_insert_metric_name=false", "filename='e{epoch}'"]  # mode: another state_key
    keep += ["dirpath=${paths.output_dir}/kept"]  # an override holding an interpolation is taken as typed
    args = ["trainer.max_epochs=3", "~callbacks.diagnostics", "logger=csv", "trainer.limit_train_batches=5", *model]
    args += [f"+callbacks.kept.{value}" for value in keep]
    train_in_process(args, tmp_path / "straight")
    shutil.copytree(tmp_path / "straight", tmp_path / "resumed", ignore=shutil.ignore_patterns("*.ckpt"))
    epoch_end = tmp_path / "straight" / "kept" / "e1.ckpt"
    assert torch.load(epoch_end, weights_only=True)["global_step"] == 10
    shutil.copy(epoch_end, tmp_path / "resumed" / "checkpoints" / "last.ckpt")
    train_in_process([*args, "resume=true"], tmp_path / "resumed")
    final = {
        name: torch.load(tmp_path / name / "checkpoints" / "last.ckpt", weights_only=True)
        for name in ("straight", "resumed")
    }
    assert final["resumed"]["global_step"] == final["straight"]["global_step"] == 15
    for key, tensor in final["straight"]["state_dict"].items():
        assert torch.equal(tensor, final["resumed"]["state_dict"][key]), key


def test_the_readmes_plain_python_model_trains_with_a_plain_trainer(capsys):
    """`examples/model_in_python.py`, as docs/python.md prints it: the parts as objects, no Hydra."""
    import runpy
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "examples" / "model_in_python.py"
    code = script.read_text().split('"""', 2)[2].strip()
    assert code in (script.parents[1] / "docs" / "python.md").read_text(), "docs/python.md shows the example"
    runpy.run_path(str(script), run_name="__main__")
    assert "nats after 20 steps" in capsys.readouterr().out


def test_a_model_built_from_objects_saves_and_loads_with_its_objects_given_again(tmp_path):
    from functools import partial

    from vae_lightning.likelihoods import Bernoulli
    from vae_lightning.losses import ELBO
    from vae_lightning.nets.mlp import MLPVAE
    from vae_lightning.priors import StandardNormal
    from vae_lightning.schedules import Constant

    def parts():
        net = MLPVAE((1, 4, 4), hidden_dims=[8])
        return {"net": net, "prior": StandardNormal(net), "loss": ELBO(Bernoulli())}

    module = VAEModule(**parts(), beta=partial(Constant, value=1.0), optimizer=partial(torch.optim.Adam, lr=1e-2))
    stored = {"input_shape", "compile", "data", "nll_samples", "mutual_info", "mi_samples"}
    assert set(module.hparams) == stored  # the values; not the parts (objects, factories)
    options = {"logger": False, "enable_progress_bar": False, "enable_model_summary": False}
    trainer = L.Trainer(max_steps=3, accelerator="cpu", default_root_dir=tmp_path, **options)
    trainer.fit(module, datamodule=Blobs(batch_size=16))
    trainer.save_checkpoint(tmp_path / "m.ckpt")
    loaded = VAEModule.load_from_checkpoint(tmp_path / "m.ckpt", **parts(), optimizer=OPTIMIZER)
    for name, tensor in module.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
    from vae_lightning.core.errors import CheckpointError
    from vae_lightning.run.checkpoints import load_module

    with pytest.raises(CheckpointError, match=r"built from objects in Python.*load_from_checkpoint\(path, net="):
        load_module(tmp_path / "m.ckpt")  # the tools rebuild a model from its configs
    from vae_lightning.run.checkpoints import check_resume

    with pytest.raises(CheckpointError, match=r"no network or objective settings.*trainer.fit\(VAEModule\(net="):
        check_resume(tmp_path / "m.ckpt", {}, {})  # train.py's resume, which trains the checkpoint's own model


@pytest.mark.parametrize(
    "loops",
    [[1], {"fit_loop": "x"}, {"fit_loop": {"epoch_loop.manual_optimization.optim_step_progress": {"total": "9"}}}],
)
def test_counting_manual_steps_leaves_loops_that_are_not_counters_alone(loops):
    from vae_lightning.core.training_state import count_manual_steps_as_automatic

    checkpoint = {"loops": loops}
    count_manual_steps_as_automatic(checkpoint)
    assert checkpoint == {"loops": loops}


def test_hydra_builds_the_run_model_recursively_and_from_settings_stores_what_rebuilds_it(tmp_path):
    """`instantiate(cfg.module)` is the run's model (its parts are `_partial_` factories that the module calls in
    order); `from_settings` builds the same model and stores the settings, from which a checkpoint rebuilds it."""
    from hydra.utils import instantiate

    from tests.conftest import compose_train
    from vae_lightning.nets.conv import ConvVAE
    from vae_lightning.posteriors import InverseAutoregressiveFlow
    from vae_lightning.priors import VampPrior

    overrides = ["model=conv", "model/norm=group", "posterior=iaf", "prior=vamp", "prior.n_pseudo_inputs=3"]
    overrides += ["loss/likelihood=logistic"]
    cfg = compose_train(overrides, tmp_path)
    torch.manual_seed(0)
    by_hydra = instantiate(cfg.module, input_shape=(3, 16, 16))
    torch.manual_seed(0)
    by_settings = VAEModule.from_settings(cfg.module, input_shape=(3, 16, 16), data=cfg.dataset)
    assert isinstance(by_hydra.net, ConvVAE) and isinstance(by_hydra.prior, VampPrior)
    assert isinstance(by_hydra.net.posterior, InverseAutoregressiveFlow)
    assert by_hydra.state_dict().keys() == by_settings.state_dict().keys()
    for name, tensor in by_hydra.state_dict().items():
        assert torch.equal(tensor, by_settings.state_dict()[name]), name
    stored = by_settings.hparams
    assert stored["net"]["_target_"] == "vae_lightning.nets.conv.ConvVAE" and stored["net"]["_partial_"] is True
    assert stored["data"]["_target_"] == cfg.dataset._target_ and list(stored["input_shape"]) == [3, 16, 16]
    rebuilt = VAEModule.from_checkpoint({"hyper_parameters": dict(stored), "state_dict": by_settings.state_dict()})
    assert type(rebuilt.loss_fn.likelihood) is type(by_settings.loss_fn.likelihood)


def test_parts_given_as_factories_are_built_with_what_they_need(tmp_path):
    """In Python, a part may be a factory (a class, a `functools.partial`) called with the images' shape, the
    likelihood's outputs per pixel, the code size or the network; a bad value in it names its key."""
    from functools import partial

    from vae_lightning.likelihoods import GaussianChannelSigma
    from vae_lightning.losses import ELBO
    from vae_lightning.nets.mlp import MLPVAE
    from vae_lightning.posteriors import InverseAutoregressiveFlow
    from vae_lightning.priors import MixtureOfGaussians

    module = VAEModule(
        net=partial(MLPVAE, hidden_dims=[8], latent_dim=3),
        loss=ELBO(partial(GaussianChannelSigma, sigma=0.2)),
        prior=partial(MixtureOfGaussians, n_components=2),
        posterior=partial(InverseAutoregressiveFlow, n_steps=1, hidden_dims=[8]),
        input_shape=(3, 4, 4),
    )
    assert module.net.input_shape == (3, 4, 4) and module.net.latent_dim == 3
    assert module.loss_fn.likelihood.log_sigma.shape[0] == 3  # one scale per channel: it was given the shape
    terms = module.objective(torch.rand(5, 3, 4, 4), 1.0)
    assert torch.isfinite(terms.loss)
    with pytest.raises(ConfigValueError, match=r"`prior\.n_components"):
        VAEModule(net=partial(MLPVAE, hidden_dims=[8]), loss=ELBO(), prior=partial(MixtureOfGaussians, n_components=0),
                  input_shape=(1, 4, 4))  # fmt: skip


def test_plain_progress_writes_a_line_per_epoch_and_a_few_for_the_test(caplog):
    """Where the output is not a terminal: no bars, a log line per epoch with its losses, a few for the test."""
    import logging

    from vae_lightning.callbacks.progress import PlainProgress, progress_bar

    assert isinstance(progress_bar(), PlainProgress)  # pytest's captured output is not a terminal
    settings = {"net": NET, "loss": LOSS, "beta": BETA, "optimizer": OPTIMIZER}
    module = VAEModule.from_settings(settings, input_shape=(1, 4, 4), nll_samples=0, mutual_info=False)
    options = {"logger": False, "enable_checkpointing": False, "enable_model_summary": False, "accelerator": "cpu"}
    trainer = L.Trainer(
        max_epochs=2, limit_train_batches=3, limit_test_batches=8, callbacks=[PlainProgress()], **options
    )
    with caplog.at_level(logging.INFO, logger="progress"):
        trainer.fit(module, datamodule=Blobs(batch_size=4))
        trainer.test(module, datamodule=Blobs(batch_size=4), verbose=False)
    lines = [r.getMessage() for r in caplog.records if r.name == "progress"]
    assert [line.split(":")[0] for line in lines[:2]] == ["epoch 1/2", "epoch 2/2"]
    assert "train/loss" in lines[0] and "val/loss" in lines[0]
    assert lines[2:] == [line for line in lines[2:] if line.startswith("test: ")] and 2 <= len(lines[2:]) <= 5


def test_a_long_loop_writes_a_few_lines_where_there_is_no_terminal(caplog):
    import logging

    from vae_lightning.core.progress import progress

    with caplog.at_level(logging.INFO, logger="progress"):
        assert list(progress(iter(range(10)), 10, "Preprocessing x", unit="image")) == list(range(10))
    lines = [r.getMessage() for r in caplog.records if r.name == "progress"]
    assert [line.split(" (")[0] for line in lines] == [f"Preprocessing x: {n} of 10 images" for n in (2, 5, 8, 10)]


def test_updates_with_a_gradient_above_max_norm_are_skipped_and_leave_weights_and_optimizer_as_they_were():
    from vae_lightning.callbacks.skip import SkipLargeUpdates

    torch.manual_seed(0)
    start = VAEModule.from_settings(
        {"net": NET, "loss": LOSS, "beta": BETA, "optimizer": OPTIMIZER}, input_shape=(1, 4, 4)
    )
    skip_all = SkipLargeUpdates(max_norm=1e-9)
    module, trainer = fit_blobs([skip_all], max_epochs=1)
    for name, tensor in start.state_dict().items():
        assert torch.equal(module.state_dict()[name], tensor), name  # no step moved a weight
    assert skip_all.skipped == 5 and trainer.global_step == 5  # Lightning still counts them as steps
    assert not trainer.optimizers[0].state  # Adam never saw a gradient: no moments, no step count
    assert trainer.callback_metrics["train/skipped_updates"] == 5
    skip_none = SkipLargeUpdates(max_norm=1e9)
    module, _ = fit_blobs([skip_none], max_epochs=1)
    assert skip_none.skipped == 0 and not torch.equal(
        module.state_dict()["net.encoder.0.weight"], start.state_dict()["net.encoder.0.weight"]
    )
    with pytest.raises(ConfigValueError) as bad:
        SkipLargeUpdates(max_norm=0)
    assert bad.value.key == "max_norm"
