"""End-to-end runs of `train(cfg)` in this process, composed as `python train.py ...` composes them."""

from __future__ import annotations

import json
import logging
import os
import signal

import pytest
import torch
from lightning import Callback

from tests.conftest import SHARED_DATA, tensorboard_events, train_in_process, write_mnist
from tests.photo_fixtures import write_cu_dogs, write_utkface
from vae_lightning.core.errors import CheckpointError
from vae_lightning.core.signals import RunInterrupted, stop_on_signals
from vae_lightning.data.protocol import VAEDataModule
from vae_lightning.module import VAEModule
from vae_lightning.run.checkpoints import load_module

SCALARS = [f"{stage}/{name}" for stage in ("train", "val", "test") for name in ("loss", "recon", "kl", "beta")]
NO_PICTURES = "~callbacks.diagnostics"


def events(run_dir):
    return tensorboard_events(run_dir / "tensorboard", images=0, scalars=0)


def completed(run_dir) -> dict:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "completed", metrics
    for name in ("val/loss", "val/recon", "val/kl", "test/loss", "test/recon", "test/kl", "test/beta", "test/psnr"):
        assert isinstance(metrics[name], float), name
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    return metrics


def test_the_default_run_leaves_everything_a_user_reads(digits_run):
    metrics = completed(digits_run)
    assert metrics["val/beta"] == 1.0 and metrics["test/loss"] > 0 and metrics["test/nll"] > 0
    per_dim = sorted(name for name in metrics if name.startswith("test/kl_dim_"))
    assert per_dim == ["test/kl_dim_000", "test/kl_dim_001"]  # one per latent dimension, summing to the KL
    assert sum(metrics[name] for name in per_dim) == pytest.approx(metrics["test/kl"], rel=1e-4)
    accumulator = events(digits_run)
    assert set(SCALARS) <= set(accumulator.Tags()["scalars"])
    assert "epoch" not in accumulator.Tags()["scalars"]  # Lightning's epoch counter stays out of SCALARS
    assert [e.step for e in accumulator.Scalars("train/loss")] == list(range(1, 11))  # every step (debug=fast)
    assert [e.step for e in accumulator.Scalars("val/loss")] == [5, 10]
    assert {"val/reconstructions", "val/latent_scatter"} <= set(accumulator.Tags()["images"])
    module = load_module(digits_run / "checkpoints" / "last.ckpt")
    assert module.net.latent_dim == 2 and module.net.input_shape == (1, 8, 8)
    lightning_loaded = VAEModule.load_from_checkpoint(digits_run / "checkpoints" / "last.ckpt", weights_only=True)
    for name, tensor in module.state_dict().items():
        assert torch.equal(tensor, lightning_loaded.state_dict()[name]), name


def test_mnist_from_generated_idx_files_with_dynamic_binarisation(tmp_path):
    root = write_mnist(tmp_path / "mnist", n_train=300, n_test=60)
    args = ["dataset=mnist", f"dataset.root={root}", "dataset.download=false", "debug=fast", "dataset/binarize=dynamic"]
    train_in_process([*args, NO_PICTURES], tmp_path / "run")
    completed(tmp_path / "run")


def test_mnist_on_the_real_sample(shared_mnist_dir, tmp_path):
    train_in_process(["dataset=mnist", f"dataset.root={shared_mnist_dir}", "debug=fast", NO_PICTURES], tmp_path / "run")
    completed(tmp_path / "run")


def test_csv_logger_keeps_each_start_in_its_own_file(tmp_path):
    train_in_process(["debug=fast", "logger=csv", NO_PICTURES], tmp_path / "run")
    (metrics_csv,) = (tmp_path / "run" / "csv").glob("*/metrics.csv")
    header = metrics_csv.read_text().splitlines()[0].split(",")
    assert {"train/loss", "val/loss", "test/loss"} <= set(header)


@pytest.fixture
def faces_and_dogs(tmp_path):
    return write_utkface(tmp_path / "utkface", n=40), write_cu_dogs(tmp_path / "cu_dogs", per_breed=10)


def test_faces_and_dogs_report_skipped_files_and_reuse_the_cache(faces_and_dogs, tmp_path, caplog):
    faces, dogs = faces_and_dogs
    args = [
        "dataset=faces_dogs",
        "beta=ramp",
        "debug=fast",
        f"dataset.faces.root={faces}",
        f"dataset.dogs.root={dogs}",
        "dataset.image_size=32",
        "dataset.batch_size=8",
        "model.latent_dim=8",
        NO_PICTURES,
    ]
    with caplog.at_level(logging.INFO):
        train_in_process(args, tmp_path / "first")
    completed(tmp_path / "first")
    metrics = json.loads((tmp_path / "first" / "metrics.json").read_text())
    for factor in ("age", "gender", "race", "breed"):  # the labelled factors of the humans and of the dogs
        assert 0.0 <= metrics[f"test/mig_{factor}"] <= 1.0, factor
    assert "skipped 3 of" in caplog.text and "centre-cropped" in caplog.text and "preprocessed into" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO):
        train_in_process(args, tmp_path / "second")
    assert "from the cache" in caplog.text


def test_faces_and_dogs_on_the_real_samples_in_one_try(tmp_path):
    """The README's faces-and-dogs command on the shared samples, nothing else (the batch of 64 is cut to the
    split, the splits hold both domains, the conv VAE is chosen): it trains, and its morph's frames differ."""
    from PIL import Image, ImageSequence

    from tests.conftest import compose_tool
    from vae_lightning.morph import morph

    faces, dogs = SHARED_DATA / "utkface", SHARED_DATA / "dogs" / "oxford_iiit_pet"
    if not faces.is_dir() or not dogs.is_dir():
        pytest.skip(f"{SHARED_DATA} is not present")
    args = ["experiment=faces_dogs_conv", f"dataset.faces.root={faces}", f"dataset.dogs.root={dogs}"]
    # the README's command with a smaller conv VAE and 16x16 images, so that the suite stays fast
    shorter = ["dataset.image_size=16", "model.channels=[16,32]", "trainer.max_epochs=6", NO_PICTURES]
    train_in_process([*args, *shorter], tmp_path / "run")
    completed(tmp_path / "run")
    checkpoint = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert type(load_module(checkpoint).net).__name__ == "ConvVAE"
    roots = [f"dataset.faces.root={faces}", f"dataset.dogs.root={dogs}"]
    gif, _ = morph(
        compose_tool("morph", [f"ckpt_path={checkpoint}", *roots, f"output={tmp_path / 'morph.gif'}", "steps=6"])
    )
    frames = {frame.convert("RGB").tobytes() for frame in ImageSequence.Iterator(Image.open(gif))}
    assert len(frames) == 6


PRESETS = {
    "haskell_mnist": {"net.encoder.0.weight": (1000, 784), "net.encoder.2.weight": (4, 1000)},
    "haskell_mnist_ramp": {"net.decoder.0.weight": (1000, 2), "net.decoder.2.weight": (784, 1000)},
    "mnist_nll": {"net.encoder.0.weight": (200, 784), "net.encoder.4.weight": (100, 200)},
    "haskell_dogpeople": {"net.encoder.0.weight": (2000, 2500), "net.encoder.2.weight": (120, 2000)},
    "faces_dogs_conv": {
        "net.encoder_convs.0.weight": (32, 3, 4, 4),
        "net.encoder_head.weight": (256, 4096),
        "net.decoder_head.weight": (4096, 128),
    },
}
# a length that is not a multiple of the preset's validation interval: 2 epochs where it validates every 5th;
# where it validates every epoch, `trainer.max_steps` ending in the middle of one
ODD_LENGTH = {
    "haskell_mnist": ["trainer.max_epochs=2"],
    "haskell_mnist_ramp": ["trainer.max_epochs=2"],
    "haskell_dogpeople": ["trainer.max_epochs=2"],
    "mnist_nll": ["trainer.max_steps=5"],
    "faces_dogs_conv": ["trainer.max_steps=5"],
}


@pytest.mark.parametrize("preset", list(PRESETS))
def test_every_preset_at_an_odd_length_keeps_its_final_weights_and_names_the_tested_ones(
    preset, faces_and_dogs, tmp_path
):
    from tests.test_final_weights import agreeing

    faces, dogs = faces_and_dogs
    data = [f"dataset.root={write_mnist(tmp_path / 'mnist', n_train=200, n_test=40)}"]
    if "mnist" not in preset:
        data = [f"dataset.faces.root={faces}", f"dataset.dogs.root={dogs}", "dataset.batch_size=8"]
    short = ["trainer.limit_train_batches=3", "trainer.limit_val_batches=2", "trainer.limit_test_batches=2"]
    args = [f"experiment={preset}", *short, *ODD_LENGTH[preset], NO_PICTURES, "eval.nll_samples=5", *data]
    train_in_process(args, tmp_path / "run")
    completed(tmp_path / "run")
    agreeing(tmp_path / "run", final_step=6 if "max_epochs" in ODD_LENGTH[preset][0] else 5)
    checkpoint = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    shapes = {name: tuple(t.shape) for name, t in checkpoint["state_dict"].items()}
    assert PRESETS[preset].items() <= shapes.items()
    load_module(tmp_path / "run" / "checkpoints" / "last.ckpt")


class SignalAt(Callback):
    """Sends this process `signum` at optimizer step `step`, as Ctrl-C or a cluster's SIGTERM would."""

    def __init__(self, step: int, signum: int) -> None:
        self.step, self.signum = step, signum

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), self.signum)


def test_a_second_signal_while_stopping_is_ignored_and_one_outside_training_stops_at_once():
    from vae_lightning.core.signals import StopRequest

    request = StopRequest()
    request.graceful = True  # training: recorded, the run stops at the end of the batch
    request.handle(signal.SIGINT, None)
    request.handle(signal.SIGINT, None)  # a second Ctrl-C during the checkpoint save: ignored, nothing raised
    assert request.signum == signal.SIGINT
    with pytest.raises(RunInterrupted) as interrupted:
        StopRequest().handle(signal.SIGTERM, None)  # preparing data or testing: stops at once
    assert interrupted.value.exit_code == 143


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_the_run_with_a_checkpoint_metrics_and_a_resume_command(signum, tmp_path, monkeypatch):
    from tests.conftest import QUIET, compose_train
    from vae_lightning.train import train

    run_dir = tmp_path / "run"
    signal_at = [f"+callbacks.signal={{_target_: tests.test_train.SignalAt, step: 30, signum: {int(signum)}}}"]
    cfg = compose_train([*QUIET, "trainer.max_epochs=3", NO_PICTURES, "logger=csv", *signal_at], run_dir)
    with stop_on_signals(), pytest.raises(RunInterrupted) as interrupted:
        train(cfg)
    assert interrupted.value.exit_code == 128 + signum
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "interrupted" and "val/loss" in metrics  # the first epoch's validation
    assert "resume=true" in metrics["resume_command"] and f"hydra.run.dir={run_dir}" in metrics["resume_command"]
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 30
    if signum == signal.SIGINT:  # a resume asking for fewer epochs than done is refused before Lightning could
        with pytest.raises(CheckpointError, match=r"`trainer.max_epochs=1` asks for fewer"):
            train_in_process(["trainer.max_epochs=1", NO_PICTURES, "logger=csv", "resume=true"], run_dir)
    train_in_process(["trainer.max_epochs=3", NO_PICTURES, "logger=csv", "resume=true"], run_dir)
    assert completed(run_dir) and torch.load(run_dir / "checkpoints" / "last.ckpt")["global_step"] == 3 * 23


def test_seven_dog_photos_of_seven_breeds_train_with_every_picture(tmp_path):
    """A user's CU Dogs folder with 7 photos (one per breed) and batches of 4: the splits are not empty (the
    breeds are spread, not each split in three), and every picture is drawn on the one validation image."""
    from tests.photo_fixtures import photo, save_jpeg

    for i in range(7):
        save_jpeg(photo(300, 240, i), tmp_path / "cu" / "dogImages" / f"{i + 1:03d}.Breed{i}" / f"Breed{i}_{i:05d}.jpg")
    args = [
        "dataset=dogs",
        f"dataset.root={tmp_path / 'cu'}",
        "dataset.batch_size=4",
        "dataset.image_size=16",
        "model.channels=[16,32]",
        "model.latent_dim=4",
        "trainer.max_epochs=1",
        "diagnostics.every_n_epochs=1",
    ]
    train_in_process(args, tmp_path / "run")  # strict pictures: any failing one fails the test
    assert completed(tmp_path / "run")["val/loss"] != 0
    assert len(list((tmp_path / "run" / "images").glob("*.png"))) >= 8


def test_lightnings_clipping_and_accumulation_flags_train_the_default(tmp_path):
    """The Trainer's own flags, as its documentation gives them: accumulating two batches per step halves the
    optimizer steps (the schedules count those), and clipping by norm trains as usual."""
    fast = ["debug=fast", NO_PICTURES, "logger=csv", "trainer.limit_train_batches=6"]
    train_in_process([*fast, "+trainer.gradient_clip_val=0.5", "+trainer.gradient_clip_algorithm=norm"], tmp_path / "c")
    assert completed(tmp_path / "c")["tested_step"] == 6
    train_in_process([*fast, "+trainer.accumulate_grad_batches=2"], tmp_path / "a")
    metrics = completed(tmp_path / "a")
    assert metrics["tested_step"] == 3 and torch.load(tmp_path / "a/checkpoints/last.ckpt")["beta_total_steps"] == 3


def test_an_early_stopping_callback_added_from_the_command_line_stops_the_run(tmp_path):
    """`EarlyStopping` on `val/loss` (no improvement counts unless it is 1000 nats): stopped after the second
    validation of five epochs, tested and recorded as completed."""
    stopping = "{_target_: lightning.pytorch.callbacks.EarlyStopping, monitor: val/loss, min_delta: 1000, patience: 1}"
    args = ["debug=fast", NO_PICTURES, "logger=csv", "trainer.max_epochs=5", f"+callbacks.early_stop={stopping}"]
    train_in_process(args, tmp_path / "run")
    metrics = completed(tmp_path / "run")
    assert metrics["tested_epoch"] == 1


class TwoShapes(VAEDataModule):
    """A user's own data module, no class of the package's data layer but the contract's defaults: 8x8 grey
    squares and crosses in Lightning's own loaders of `(images, labels)` batches."""

    input_shape = (1, 8, 8)

    def setup(self, stage: str) -> None:
        g = torch.Generator().manual_seed(0)
        images = torch.rand(96, 1, 8, 8, generator=g) * 0.2
        images[:48, :, 2:6, 2:6] += 0.8  # squares
        images[48:, :, 3:5, :] += 0.8  # crosses
        images[48:, :, :, 3:5] = 0.9
        self.sets = {
            split: torch.utils.data.TensorDataset(images[index], (index >= 48).long())
            for split, index in (("train", torch.arange(0, 96, 2)), ("val", torch.arange(1, 96, 4)),
                                 ("test", torch.arange(3, 96, 4)))
        }  # fmt: skip

    def train_dataloader(self):
        return torch.utils.data.DataLoader(self.sets["train"], batch_size=8, shuffle=True)

    def val_dataloader(self):
        return torch.utils.data.DataLoader(self.sets["val"], batch_size=8)

    def test_dataloader(self):
        return torch.utils.data.DataLoader(self.sets["test"], batch_size=8)


def test_a_users_own_data_module_trains_and_draws_its_pictures(tmp_path):
    """Given as an option of the user's own config folder (which also makes its class trusted in checkpoints)."""
    (tmp_path / "conf" / "dataset").mkdir(parents=True)
    (tmp_path / "conf" / "dataset" / "two_shapes.yaml").write_text("_target_: tests.test_train.TwoShapes\n")
    args = ["dataset=two_shapes", f"hydra.searchpath=[file://{tmp_path / 'conf'}]", "trainer.max_epochs=2"]
    train_in_process([*args, "logger=csv"], tmp_path / "run")
    metrics = completed(tmp_path / "run")
    assert metrics["test/active_units"] >= 1
    drawn = {path.stem for path in (tmp_path / "run" / "images").glob("*.png")}
    assert {"reconstructions", "samples", "latent_scatter", "interpolations"} <= drawn


def test_a_data_module_outside_the_contract_is_named(tmp_path):
    from omegaconf import open_dict

    from tests.conftest import compose_train
    from vae_lightning.core.errors import ConfigErrors
    from vae_lightning.run.trainer import build_run

    cfg = compose_train([], tmp_path / "run")
    with open_dict(cfg):
        cfg.dataset = {"_target_": "lightning.LightningDataModule"}
    with pytest.raises(ConfigErrors, match=r"`dataset._target_='lightning.LightningDataModule'`: is not a data module"):
        build_run(cfg)
