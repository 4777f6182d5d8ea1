"""Every bad input a user can give ends with one clear message, a non-zero exit and nothing lost."""

import gzip
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from tests.conftest import ROOT, run_train, write_mnist

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Files for the table below: data folders of the wrong kind and checkpoints that are wrong."""
    tmp = tmp_path_factory.mktemp("bad")
    good_run = tmp / "good_run"
    assert run_train(["debug=fast", "logger=csv"], good_run).returncode == 0
    good = good_run / "checkpoints" / "last.ckpt"
    (tmp / "truncated.ckpt").write_bytes(good.read_bytes()[:4000])
    torch.save({"weights": torch.zeros(2)}, tmp / "foreign.ckpt")
    (tmp / "empty").mkdir()
    wrong = tmp / "wrong_layout"
    wrong.mkdir()
    (wrong / "notes.txt").write_text("not MNIST")
    broken = write_mnist(tmp / "broken_mnist", n_train=50, n_test=10)
    data = gzip.decompress((broken / "train-images-idx3-ubyte.gz").read_bytes())
    (broken / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(data[:-100]))
    (tmp / "a_file").write_text("")
    return {"GOOD": str(good), "TMP": str(tmp)}


TABLE = [
    # (overrides, what the message must say)
    (["model=nonexistent"], "Could not find 'model/nonexistent'"),
    (["model.foo=1"], "Key 'foo' is not in struct"),
    (["model.latent_dim=abc"], "Bad config value `model.latent_dim='abc'`: must be a positive integer"),
    (["model.latent_dim=0"], "Bad config value `model.latent_dim=0`"),
    (["optimizer.lr=-0.1"], "Bad config value `optimizer.lr=-0.1`"),
    (["trainer.max_epochs=abc"], "Bad config value `trainer.max_epochs='abc'`"),
    (["dataset=utkface", "dataset.image_size=1"], "Bad config value `dataset.image_size=1`"),
    (["dataset.batch_size=100000"], "`dataset.batch_size=100000`: is larger than the training split"),
    (
        ["dataset=mnist", "dataset.root=/no/such/folder", "dataset.download=false"],
        "MNIST files are missing in /no/such/folder",
    ),
    (["dataset=mnist", "dataset.root=TMP/wrong_layout", "dataset.download=false"], "train-images-idx3-ubyte.gz"),
    (["dataset=mnist", "dataset.root=TMP/broken_mnist"], "truncated"),
    (["dataset=utkface", "dataset.root=TMP/empty"], "holds no images"),
    (["dataset=dogs", "dataset.root=/no/such/dogs"], "The dogs folder /no/such/dogs does not exist"),
    (["ckpt_path=/no/such.ckpt"], "no such checkpoint file"),
    (["ckpt_path=TMP/truncated.ckpt"], "is not a readable checkpoint"),
    (["ckpt_path=TMP/foreign.ckpt"], "was not written by vae_lightning"),
    (["ckpt_path=GOOD", "model.latent_dim=5"], "was saved from a different model"),
    (["hydra.run.dir=TMP/a_file/run"], "cannot be written"),
]


@pytest.mark.parametrize(("overrides", "message"), TABLE, ids=[" ".join(o) for o, _ in TABLE])
def test_bad_input_gets_one_clear_message(overrides, message, inputs, tmp_path):
    overrides = [o.replace("TMP", inputs["TMP"]).replace("GOOD", inputs["GOOD"]) for o in overrides]
    message = message.replace("TMP", inputs["TMP"])
    run_dir = [] if any(o.startswith("hydra.run.dir") for o in overrides) else [f"hydra.run.dir={tmp_path / 'run'}"]
    env = os.environ | {"VAE_DATA_DIR": str(tmp_path / "data"), "PYTHONWARNINGS": "ignore"}
    result = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *overrides, "debug=fast", *run_dir],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 1
    assert message in output, output[-2000:]
    assert "Traceback" not in output


def test_the_good_checkpoint_survives_the_bad_resumes(inputs):
    checkpoint = torch.load(inputs["GOOD"], map_location="cpu", weights_only=False)
    assert checkpoint["global_step"] == 5


def small_module(**kwargs):
    from vae_lightning.module import VAEModule

    return VAEModule(
        {"_target_": "vae_lightning.nets.mlp.MLPVAE", "hidden_dims": [32]},
        {"_target_": "vae_lightning.losses.ELBO"},
        {"_target_": "vae_lightning.schedules.Constant", "_partial_": True},
        {"_target_": "vae_lightning.optim.adam", "_partial_": True},
        input_shape=(1, 8, 8),
        **kwargs,
    )


def test_gradient_clipping_bounds_every_step(tmp_path):
    """module.gradient_clip_val, the documented cure for a diverging run, bounds the gradient norm."""
    import lightning as L

    from vae_lightning.data.digits import DigitsDataModule

    norms = []

    class Watch(L.Callback):
        def on_before_optimizer_step(self, trainer, module, optimizer):
            grads = [p.grad.norm() for p in module.parameters() if p.grad is not None]
            norms.append(float(torch.stack(grads).norm()))

    trainer = L.Trainer(
        max_steps=10,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        callbacks=[Watch()],
        enable_model_summary=False,
    )
    trainer.fit(small_module(gradient_clip_val=0.5), datamodule=DigitsDataModule(batch_size=64))
    assert len(norms) == 10 and max(norms) <= 0.5 + 1e-4
    assert "module.gradient_clip_val" in (ROOT / "README.md").read_text()


SAVER = textwrap.dedent("""
    import sys, torch
    from vae_lightning.checkpoint_io import AtomicCheckpointIO
    io, path, i = AtomicCheckpointIO(), sys.argv[1], 0
    print("ready", flush=True)
    while True:
        i += 1
        io.save_checkpoint({"version": i, "weights": torch.full((3_000_000,), float(i))}, path)
""")


def test_a_kill_during_checkpoint_saves_leaves_the_old_or_the_new_file(tmp_path):
    from vae_lightning.leftovers import remove_leftovers

    path = tmp_path / "checkpoints" / "last.ckpt"
    for delay in (0.3, 0.45, 0.6, 0.77):
        process = subprocess.Popen([sys.executable, "-c", SAVER, str(path)], cwd=ROOT, stdout=subprocess.PIPE)
        assert process.stdout.readline().strip() == b"ready"
        time.sleep(delay)
        process.send_signal(signal.SIGKILL)
        process.wait()
        if path.exists():
            checkpoint = torch.load(path, weights_only=False)
            assert float(checkpoint["weights"][-1]) == checkpoint["version"]  # complete, not half written
        remove_leftovers(path.parent)
        assert [p.name for p in path.parent.iterdir()] in ([], ["last.ckpt"])


def test_divergence_keeps_the_last_good_checkpoint(tmp_path):
    """Epoch 0 trains and saves; in epoch 1 the learning rate jumps to 1e20: the run stops with
    DivergedError, and last.ckpt still holds epoch 0's finite weights."""
    import lightning as L

    from vae_lightning.checkpoint_io import AtomicCheckpointIO
    from vae_lightning.data.digits import DigitsDataModule
    from vae_lightning.errors import DivergedError

    class Sabotage(L.Callback):
        def on_train_epoch_start(self, trainer, module):
            if trainer.current_epoch == 1:
                for group in trainer.optimizers[0].param_groups:
                    group["lr"] = 1e20

    module = small_module()
    last = L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path, filename="last", monitor=None, save_top_k=1)
    trainer = L.Trainer(
        max_epochs=3,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        plugins=[AtomicCheckpointIO()],
        callbacks=[last, Sabotage()],
        enable_model_summary=False,
    )
    with pytest.raises(DivergedError, match="Training diverged at optimizer step"):
        trainer.fit(module, datamodule=DigitsDataModule(batch_size=64))
    checkpoint = torch.load(tmp_path / "last.ckpt", weights_only=False)
    assert checkpoint["epoch"] == 0
    assert all(torch.isfinite(t).all() for t in checkpoint["state_dict"].values())
