"""What keeps a training step cheap: empty per-batch hooks skipped, epoch-level means, iterator-mode steps."""

from __future__ import annotations

import csv
import types

import lightning as L
import pytest
import torch
from lightning import Callback
from lightning.pytorch.callbacks import ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger

from vae_lightning.callbacks.batch_hooks import (
    EVALUATION_BATCH_HOOKS,
    TRAINING_BATCH_HOOKS,
    skip_empty_batch_hooks,
)
from vae_lightning.callbacks.diagnostics import Projector
from vae_lightning.callbacks.progress import ProgressBar
from vae_lightning.data.in_memory import (
    EpochBatches,
    EpochShuffle,
    InMemoryDataModule,
    InMemoryDataset,
    SampledBatches,
    keep_batch,
)
from vae_lightning.errors import ConfigValueError, DivergedError
from vae_lightning.module import EpochMeans, VAEModule

NET = {"_target_": "vae_lightning.nets.mlp.MLPVAE", "hidden_dims": [16], "latent_dim": 2}
LOSS = {"_target_": "vae_lightning.losses.ELBO"}
BETA = {"_target_": "vae_lightning.schedules.Constant", "_partial_": True, "value": 1.0}
OPTIMIZER = {"_target_": "vae_lightning.optim.adam", "_partial_": True, "lr": 1e-3}


class CountsBatches(Callback):
    def __init__(self) -> None:
        self.train_batch_ends = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.train_batch_ends += 1


def test_empty_hooks_are_switched_off_and_overridden_ones_kept():
    counter, checkpoint, bar, projector = CountsBatches(), ModelCheckpoint(), TQDMProgressBar(), Projector()
    skip_empty_batch_hooks([counter, checkpoint, bar, projector])
    assert callable(counter.on_train_batch_end) and counter.on_train_batch_start is None
    assert callable(checkpoint.on_train_batch_end)  # step-based saving lives there
    assert checkpoint.on_before_backward is None and checkpoint.on_validation_batch_end is None
    assert callable(bar.on_train_batch_end) and callable(bar.on_validation_batch_end)
    assert all(getattr(projector, hook) is None for hook in TRAINING_BATCH_HOOKS + EVALUATION_BATCH_HOOKS)
    assert callable(projector.on_validation_epoch_end)


def test_the_module_skips_only_its_empty_training_hooks():
    module = VAEModule(NET, LOSS, BETA, OPTIMIZER, input_shape=(1, 4, 4))
    assert all(getattr(module, hook) is None for hook in TRAINING_BATCH_HOOKS)
    # the evaluation loops inspect the signatures of these, so they stay methods
    assert all(callable(getattr(module, hook)) for hook in EVALUATION_BATCH_HOOKS)

    class Subclass(VAEModule):
        def on_after_backward(self) -> None:
            pass

    assert callable(Subclass(NET, LOSS, BETA, OPTIMIZER, input_shape=(1, 4, 4)).on_after_backward)


def test_epoch_means_are_weighted_by_batch_size_and_summed_over_processes():
    means = EpochMeans()
    means.add({"loss": torch.tensor(1.0), "kl": torch.tensor(0.0)}, 3)
    means.add({"loss": torch.tensor(5.0), "kl": torch.tensor(2.0)}, 1)
    assert means.pop(lambda totals: totals) == pytest.approx({"loss": 2.0, "kl": 0.5})
    assert means.pop(lambda totals: totals) == {}  # emptied
    means.add({"loss": torch.tensor(1.0)}, 2)
    # a second process with the same sums and counts: the mean is unchanged, the reduction is applied
    seen = []
    assert means.pop(lambda totals: seen.append(totals.clone()) or totals * 2) == {"loss": 1.0}
    assert seen[0].tolist() == [[2.0], [2.0]]  # sums, counts


class Blobs(InMemoryDataModule):
    input_shape = (1, 4, 4)

    def load_splits(self):
        g = torch.Generator().manual_seed(0)
        data = InMemoryDataset(torch.rand(96, 1, 4, 4, generator=g), torch.zeros(96, dtype=torch.long))
        return data, data.subset(torch.arange(40)), data.subset(torch.arange(40))


def test_a_fit_steps_once_per_batch_calls_callbacks_and_logs_epoch_means(tmp_path):
    """Iterator-mode training_step: one optimizer step per batch, limit_train_batches respected, callbacks
    that implement per-batch hooks still called; val/test means equal the per-sample means."""
    torch.manual_seed(0)
    module = VAEModule(NET, LOSS, BETA, OPTIMIZER, input_shape=(1, 4, 4))
    counter = CountsBatches()
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=2,
        limit_train_batches=5,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[counter],
    )
    skip_empty_batch_hooks(trainer.callbacks)
    trainer.fit(module, datamodule=Blobs(batch_size=16))
    assert trainer.global_step == 10 and counter.train_batch_ends == 10
    assert module.beta_schedule is not None and "train/loss_epoch" in trainer.callback_metrics
    val_loss = float(trainer.callback_metrics["val/loss"])
    trainer.test(module, datamodule=Blobs(batch_size=16), verbose=False)
    test_loss = float(trainer.callback_metrics["test/loss"])
    # the test split is the val split here, both 40 samples in batches of 16, 16 and 8: weighted means
    assert test_loss == pytest.approx(val_loss, rel=0.05)  # the same model and data, fresh noise draws
    assert {"test/elbo", "test/nll", "test/recon", "test/kl", "test/beta"} <= set(trainer.callback_metrics)


def fit_blobs(batches_per_call: int, callbacks=(), logger=False, **trainer_kwargs) -> tuple[VAEModule, L.Trainer]:
    """Two epochs of 5 batches on Blobs unless told otherwise."""
    torch.manual_seed(0)
    module = VAEModule(NET, LOSS, BETA, OPTIMIZER, input_shape=(1, 4, 4), batches_per_call=batches_per_call)
    trainer = L.Trainer(
        **{"max_epochs": 2, "limit_train_batches": 5} | trainer_kwargs,
        accelerator="cpu",
        logger=logger,
        enable_checkpointing=any(isinstance(c, ModelCheckpoint) for c in callbacks),
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=list(callbacks),
    )
    skip_empty_batch_hooks(trainer.callbacks)
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


def test_several_batches_a_call_train_exactly_as_one_batch_a_call(tmp_path):
    """Three batches a training_step call take the same optimizer steps on the same batches as one a call: the
    same weights to the bit, the same logged values at the same steps. A call ends at a multiple of 3 steps or at
    an epoch's end (5 steps an epoch: calls end at steps 3, 5, 6, 9, 10)."""
    one_counter, three_counter = CountsBatches(), CountsBatches()
    one_logger, three_logger = CSVLogger(tmp_path, name="one"), CSVLogger(tmp_path, name="three")
    one, one_trainer = fit_blobs(1, [one_counter], one_logger, log_every_n_steps=2)
    three, three_trainer = fit_blobs(3, [three_counter], three_logger, log_every_n_steps=2)
    assert one_trainer.global_step == three_trainer.global_step == 10
    assert one_counter.train_batch_ends == 10 and three_counter.train_batch_ends == 5  # hooks run once a call
    for (name, a), b in zip(one.state_dict().items(), three.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert one_trainer.callback_metrics.keys() == three_trainer.callback_metrics.keys()
    for name, value in one_trainer.callback_metrics.items():
        assert torch.equal(value, three_trainer.callback_metrics[name]), name
    # train/loss every 2nd optimizer step; val/*, train/*_epoch at each epoch's last step
    steps = logged_steps(one_logger)
    assert steps["train/loss"] == [1, 3, 5, 7, 9] and steps["val/loss"] == [4, 9]
    assert logged_steps(three_logger) == steps


def test_a_call_stops_at_max_steps():
    _, trainer = fit_blobs(4, max_steps=6)
    assert trainer.global_step == 6


class WatchesBackward(Callback):
    """Implements a backward hook, so the module must go through Lightning's `manual_backward` to call it."""

    def __init__(self) -> None:
        self.calls = 0

    def on_after_backward(self, trainer, pl_module) -> None:
        self.calls += 1


def test_backward_skips_lightnings_hooks_only_when_nothing_would_run_in_them():
    """With no backward hook anywhere, `loss.backward()` is called directly; a callback with one gets it called
    every step, and the weights come out the same to the bit either way."""
    plain, plain_trainer = fit_blobs(3)
    watcher = WatchesBackward()
    hooked, hooked_trainer = fit_blobs(3, [watcher])
    assert plain._backward_is_plain and not hooked._backward_is_plain
    assert watcher.calls == hooked_trainer.global_step == plain_trainer.global_step == 10
    for (name, a), b in zip(plain.state_dict().items(), hooked.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


class Sabotage(Callback):
    """Makes the learning rate absurd in the second epoch, so the loss turns NaN or infinite a few steps on."""

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == 1:
            for group in trainer.optimizers[0].param_groups:
                group["lr"] = 1e20


def test_a_divergence_is_reported_at_its_first_step_however_many_batches_a_call():
    """The terms come to the host once a call; the first step with a non-finite loss is still the one named."""
    steps = []
    for k in (1, 4):
        with pytest.raises(DivergedError) as error:
            fit_blobs(k, [Sabotage()], max_epochs=3)
        steps.append(error.value.step)
    assert steps[0] == steps[1] >= 5  # in the second epoch


def test_step_checkpoints_are_saved_at_the_same_steps_as_with_one_batch_a_call(tmp_path):
    saved = []
    for k in (1, 3):
        folder = tmp_path / f"k{k}"
        checkpoint = ModelCheckpoint(dirpath=folder, every_n_train_steps=6, save_top_k=-1, filename="{step}")
        fit_blobs(k, [checkpoint], max_epochs=4)
        saved.append(sorted(p.name for p in folder.glob("*.ckpt")))
    assert saved[0] == saved[1] == ["step=12.ckpt", "step=18.ckpt", "step=6.ckpt"]


@pytest.mark.parametrize(
    ("trainer_kwargs", "callbacks", "key"),
    [
        ({"val_check_interval": 0.5}, [], "trainer.val_check_interval"),
        ({"val_check_interval": 2}, [], "trainer.val_check_interval"),
        ({"val_check_interval": 4, "check_val_every_n_epoch": None}, [], "trainer.val_check_interval"),
        ({}, [ModelCheckpoint(every_n_train_steps=4)], "callbacks.<checkpoint>.every_n_train_steps"),
    ],
)
def test_what_counts_calls_instead_of_steps_is_refused(trainer_kwargs, callbacks, key):
    with pytest.raises(ConfigValueError) as error:
        fit_blobs(3, callbacks, **trainer_kwargs)
    assert error.value.key == key and "module.batches_per_call=3" in str(error.value)


def test_shuffled_batches_are_the_dataloader_batches_without_a_dataloader():
    data = InMemoryDataset(torch.arange(50.0).view(50, 1, 1, 1), torch.arange(50))
    batches = SampledBatches(data, EpochBatches(50, batch_size=16, seed=7))
    loader = torch.utils.data.DataLoader(data, batch_size=16, sampler=EpochShuffle(50, 7), collate_fn=keep_batch)
    for epoch in (0, 3):
        batches.sampler.set_epoch(epoch)
        loader.sampler.set_epoch(epoch)
        ours, theirs = list(batches), list(loader)
        assert len(ours) == len(batches) == 4
        assert all(torch.equal(a[1], b[1]) and torch.equal(a[0], b[0]) for a, b in zip(ours, theirs, strict=True))
    batches.sampler.set_epoch(1)
    assert not torch.equal(next(iter(batches))[1], ours[0][1])  # another epoch, another order


def test_shuffled_batches_shard_like_a_distributed_sampler():
    data = InMemoryDataset(torch.zeros(50, 1, 1, 1), torch.arange(50))
    shards = [SampledBatches(data, EpochBatches(50, batch_size=8, seed=0, rank=r, world_size=3)) for r in range(3)]
    labels = [torch.cat([b[1] for b in shard]) for shard in shards]
    assert [len(s) for s in shards] == [3, 3, 3] and [len(x) for x in labels] == [17, 17, 17]
    assert set(torch.cat(labels).tolist()) == set(range(50))  # every sample, one padded repeat
    order = EpochShuffle(50, 0).permutation()
    assert labels[1].tolist() == order[1::3].tolist()


def test_training_batches_skip_the_dataloader_unless_workers_are_asked_for():
    plain, with_workers = Blobs(batch_size=16), Blobs(batch_size=16, num_workers=1)
    for dm in (plain, with_workers):
        dm.setup("fit")
    assert isinstance(plain.train_dataloader(), SampledBatches)
    assert isinstance(with_workers.train_dataloader(), torch.utils.data.DataLoader)
    assert isinstance(plain.val_dataloader(), torch.utils.data.DataLoader)  # Lightning shards these under DDP


def test_the_progress_bar_redraws_at_most_every_min_interval_and_at_each_epochs_end(monkeypatch):
    drawn = []
    monkeypatch.setattr(TQDMProgressBar, "on_train_batch_end", lambda self, *args: drawn.append(args[-1]))
    for min_interval, expected in ((3600.0, [0, 9]), (0.0, list(range(10)))):
        drawn.clear()
        bar = ProgressBar(min_interval=min_interval)
        bar.train_progress_bar = types.SimpleNamespace(total=10)
        for batch_idx in range(10):
            bar.on_train_batch_end(None, None, None, None, batch_idx)
        assert drawn == expected
