"""End-to-end runs of train.py on generated and real data (slow)."""

import json

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.conftest import SHARED_DATA, run_train, write_mnist
from vae_lightning.module import VAEModule

pytestmark = pytest.mark.slow

SCALARS = [f"{stage}/{name}" for stage in ("train", "val", "test") for name in ("loss", "recon", "kl", "beta")]
IMAGES = ["val/reconstructions", "val/samples"]


def events(run_dir):
    accumulator = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"images": 0, "scalars": 0})
    accumulator.Reload()
    return accumulator


def assert_complete_run(result, run_dir):
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (run_dir / ".hydra" / "config.yaml").is_file()
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "completed"
    for name in ("val/loss", "val/recon", "val/kl", "test/loss", "test/recon", "test/kl", "test/beta"):
        assert isinstance(metrics[name], float), name
    accumulator = events(run_dir)
    assert set(SCALARS) <= set(accumulator.Tags()["scalars"])
    assert set(IMAGES) <= set(accumulator.Tags()["images"])
    assert "tensorboard --logdir" in result.stdout + result.stderr
    return metrics, accumulator


def test_default_run_on_digits(tmp_path):
    run_dir = tmp_path / "run"
    result = run_train(["debug=fast", "trainer.max_epochs=2"], run_dir)
    metrics, accumulator = assert_complete_run(result, run_dir)
    assert metrics["val/beta"] == 1.0 and metrics["test/loss"] > 0
    recon = accumulator.Images("val/reconstructions")
    assert len(recon) == 3 and recon[-1].width > 8 and recon[-1].height > 8  # 2 epochs and the end
    assert [e.step for e in accumulator.Scalars("train/loss")] == list(range(10))  # every step: log_every_n_steps=1

    model = VAEModule.load_from_checkpoint(run_dir / "checkpoints" / "last.ckpt", map_location="cpu")
    model.eval()
    assert model.net.latent_dim == 2 and model.net.input_shape == (1, 8, 8)
    with torch.no_grad():
        assert model.net.encode(torch.rand(3, 1, 8, 8)).loc.shape == (3, 2)


def test_mnist_on_generated_idx_files(tmp_path):
    root = write_mnist(tmp_path / "mnist", n_train=300, n_test=60)
    run_dir = tmp_path / "run"
    result = run_train(
        ["dataset=mnist", f"dataset.root={root}", "dataset.download=false", "debug=fast", "dataset/binarize=dynamic"],
        run_dir,
    )
    assert_complete_run(result, run_dir)


def test_mnist_on_the_real_sample(shared_mnist_dir, tmp_path):
    run_dir = tmp_path / "run"
    result = run_train(
        ["dataset=mnist", f"dataset.root={shared_mnist_dir}", "debug=fast", "logger=tensorboard"], run_dir
    )
    assert_complete_run(result, run_dir)


def test_haskell_mnist_trains_with_the_seed_shapes(tmp_path):
    root = write_mnist(tmp_path / "mnist", n_train=200, n_test=40)
    run_dir = tmp_path / "run"
    result = run_train(["experiment=haskell_mnist", f"dataset.root={root}", "debug=fast"], run_dir)
    assert_complete_run(result, run_dir)
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    shapes = {name: tuple(t.shape) for name, t in checkpoint["state_dict"].items()}
    assert shapes["net.encoder.0.weight"] == (1000, 784) and shapes["net.encoder.2.weight"] == (4, 1000)
    assert shapes["net.decoder.0.weight"] == (1000, 2) and shapes["net.decoder.2.weight"] == (784, 1000)
    hparams = checkpoint["hyper_parameters"]
    assert hparams["loss"]["_target_"].endswith("SeedLoss") and hparams["optimizer"]["eps"] == 1e-6


def test_csv_logger(tmp_path):
    run_dir = tmp_path / "run"
    result = run_train(["debug=fast", "logger=csv"], run_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    header = (run_dir / "csv" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"train/loss", "val/loss", "test/loss"} <= set(header)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["model.latent_dim=0"], "model.latent_dim"),
        (["dataset.batch_size=-1"], "dataset.batch_size"),
        (["model=nonexistent"], "Could not find 'model/nonexistent'"),
        (["dataset=mnist", "dataset.root=/no/such/folder", "dataset.download=false"], "/no/such/folder"),
    ],
)
def test_bad_config_fails_with_one_clear_message(args, expected, tmp_path):
    run_dir = tmp_path / "run"
    result = run_train([*args, "debug=fast"], run_dir)
    output = result.stdout + result.stderr
    assert result.returncode == 1
    assert expected in output
    assert "Traceback" not in output


def test_a_diverging_run_stops_with_status_diverged(tmp_path):
    run_dir = tmp_path / "run"
    result = run_train(["optimizer.lr=1e20", "trainer.max_epochs=2", "debug=fast"], run_dir)
    output = result.stdout + result.stderr
    assert result.returncode == 1
    assert "Training diverged at optimizer step" in output and "Traceback" not in output
    assert json.loads((run_dir / "metrics.json").read_text())["status"] == "diverged"
    for checkpoint in (run_dir / "checkpoints").glob("*.ckpt"):  # nothing non-finite was saved
        state = torch.load(checkpoint, map_location="cpu", weights_only=False)["state_dict"]
        assert all(torch.isfinite(t).all() for t in state.values())


@pytest.fixture
def faces_and_dogs(tmp_path):
    from tests.photo_fixtures import write_cu_dogs, write_utkface

    return write_utkface(tmp_path / "utkface", n=40), write_cu_dogs(tmp_path / "cu_dogs", per_breed=10)


def test_faces_dogs_with_the_ramp_reports_skips_and_reuses_the_cache(faces_and_dogs, tmp_path):
    faces, dogs = faces_and_dogs
    args = [
        "dataset=faces_dogs",
        "beta=ramp",
        "debug=fast",
        f"dataset.faces.root={faces}",
        f"dataset.dogs.root={dogs}",
        "dataset.image_size=32",
        "dataset.batch_size=8",
    ]
    first = run_train(args, tmp_path / "first")
    _, accumulator = assert_complete_run(first, tmp_path / "first")
    output = first.stdout + first.stderr
    assert "skipped 3 of" in output and "centre-cropped" in output and "preprocessed into" in output
    image = accumulator.Images("val/reconstructions")[-1]
    assert image.width > 32 * 8
    second = run_train(args, tmp_path / "second")
    assert second.returncode == 0 and "from the cache" in second.stdout + second.stderr


def test_faces_dogs_on_the_real_samples(tmp_path):
    faces, dogs = SHARED_DATA / "utkface", SHARED_DATA / "dogs" / "oxford_iiit_pet"
    if not faces.is_dir() or not dogs.is_dir():
        pytest.skip(f"{SHARED_DATA} is not present")
    args = [
        "dataset=faces_dogs",
        "beta=ramp",
        "debug=fast",
        f"dataset.faces.root={faces}",
        f"dataset.dogs.root={dogs}",
        "dataset.batch_size=8",
    ]
    assert_complete_run(run_train(args, tmp_path / "run"), tmp_path / "run")


def test_haskell_dogpeople_has_the_seed_shapes(faces_and_dogs, tmp_path):
    faces, dogs = faces_and_dogs
    run_dir = tmp_path / "run"
    result = run_train(
        ["experiment=haskell_dogpeople", "debug=fast", f"dataset.faces.root={faces}", f"dataset.dogs.root={dogs}"],
        run_dir,
    )
    assert_complete_run(result, run_dir)
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    shapes = {name: tuple(t.shape) for name, t in checkpoint["state_dict"].items()}
    assert shapes["net.encoder.0.weight"] == (2000, 2500) and shapes["net.encoder.2.weight"] == (120, 2000)
    assert checkpoint["hyper_parameters"]["input_shape"] == (1, 50, 50)


def test_faces_dogs_conv_trains(faces_and_dogs, tmp_path):
    faces, dogs = faces_and_dogs
    run_dir = tmp_path / "run"
    result = run_train(
        [
            "experiment=faces_dogs_conv",
            "debug=fast",
            f"dataset.faces.root={faces}",
            f"dataset.dogs.root={dogs}",
            "dataset.batch_size=8",
        ],
        run_dir,
    )
    assert_complete_run(result, run_dir)


def test_faces_dogs_under_ddp(faces_and_dogs, tmp_path):
    """Lightning hands each process its DistributedSampler share through the balanced batch sampler."""
    faces, dogs = faces_and_dogs
    run_dir = tmp_path / "run"
    result = run_train(
        [
            "dataset=faces_dogs",
            f"dataset.faces.root={faces}",
            f"dataset.dogs.root={dogs}",
            "dataset.image_size=32",
            "dataset.batch_size=8",
            "trainer=ddp",
            "trainer.accelerator=cpu",
            "trainer.devices=2",
            "debug=fast",
        ],
        run_dir,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert json.loads((run_dir / "metrics.json").read_text())["status"] == "completed"
