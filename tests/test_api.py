"""The Python API (`vae_lightning.api.TrainedVAE`) on real checkpoints: every operation's shapes and values
against the model's own layers, each kind of image input preprocessed alike, the same safety checks as the tools,
and the example script of docs/python.md."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.checkpoint_payloads import hostile_checkpoints
from tests.conftest import ROOT, trained_data
from vae_lightning.api import TrainedVAE
from vae_lightning.core.errors import CheckpointError, ConfigValueError
from vae_lightning.data.faces import photo_tensor


@pytest.fixture(scope="module")
def digits_vae(digits_run) -> TrainedVAE:
    return TrainedVAE.load(digits_run / "checkpoints" / "last.ckpt")


@pytest.fixture(scope="module")
def val_images(digits_vae) -> torch.Tensor:
    return digits_vae.datamodule().diagnostic_samples(6)[0]


def test_encode_decode_and_reconstruct_are_the_models_own(digits_vae, val_images):
    net = digits_vae.module.net
    z = digits_vae.encode(val_images)
    assert z.shape == (6, digits_vae.latent_dim)
    with torch.no_grad():
        assert torch.equal(z, net.encode(val_images).loc)
        assert torch.allclose(digits_vae.decode(z), torch.sigmoid(net.decode(z)[:, 0]))
    assert torch.equal(digits_vae.reconstruct(val_images), digits_vae.decode(z))
    assert torch.equal(digits_vae.decode(z[0]), digits_vae.decode(z[:1]))  # one code or a batch of them
    assert not digits_vae.module.training


def test_sample_decodes_standard_normal_codes(digits_vae):
    drawn = digits_vae.sample(5, generator=torch.Generator().manual_seed(3))
    z = torch.randn(5, digits_vae.latent_dim, generator=torch.Generator().manual_seed(3))
    assert drawn.shape == (5, *digits_vae.input_shape) and drawn.min() >= 0 and drawn.max() <= 1
    assert torch.equal(drawn, digits_vae.decode(z))
    assert digits_vae.sample(0).shape == (0, *digits_vae.input_shape)
    for bad in (-1, 2.5, "3"):
        with pytest.raises(ValueError, match="integer >= 0"):
            digits_vae.sample(bad)


def test_interpolate_runs_from_the_first_image_to_the_second(digits_vae, val_images):
    frames = digits_vae.interpolate(val_images[0], val_images[1], steps=5)
    ends = digits_vae.reconstruct(val_images[:2])
    assert frames.shape == (5, *digits_vae.input_shape)
    assert torch.allclose(frames[0], ends[0], atol=1e-6) and torch.allclose(frames[-1], ends[1], atol=1e-6)
    z = digits_vae.encode(val_images[:2])
    assert torch.allclose(frames[2], digits_vae.decode((z[0] + z[1]) / 2)[0], atol=1e-6)
    with pytest.raises(ValueError, match="at least 2 steps"):
        digits_vae.interpolate(val_images[0], val_images[1], steps=1)


def test_paths_pil_images_and_tensors_are_preprocessed_alike(digits_vae, tmp_path):
    photo = Image.effect_mandelbrot((90, 60), (-2, -1, 1, 1), 60).convert("RGB")  # wider than high, colour
    photo.save(tmp_path / "photo.png")
    expected = photo_tensor(photo, digits_vae.input_shape, find_face=False)  # (1, 8, 8): grey, centre square
    batch = digits_vae.images([tmp_path / "photo.png", str(tmp_path / "photo.png"), photo, expected])
    assert batch.shape == (4, 1, 8, 8)
    for image in batch:
        assert torch.equal(image, expected)
    as_bytes = (expected * 255).round().to(torch.uint8)
    assert torch.allclose(digits_vae.images(as_bytes), expected, atol=1e-6)  # uint8 0..255 as well as [0, 1]
    assert torch.equal(digits_vae.encode(tmp_path / "photo.png"), digits_vae.encode(expected))
    assert torch.equal(digits_vae.encode(expected.numpy()), digits_vae.encode(expected))  # numpy arrays too
    assert torch.equal(digits_vae.images([as_bytes.numpy()]), digits_vae.images(as_bytes))


@pytest.mark.parametrize(
    "images, error",
    [
        (torch.rand(2, 3, 8, 8), r"do not fit this model: it takes \(N, \*\(1, 8, 8\)\)"),
        (torch.rand(8, 8), "do not fit this model"),
        ([], "no images given"),
        ([3.0], "must be a path, a PIL image, a tensor or an array"),
        (np.zeros((8, 8, 1)), "do not fit this model"),  # channels last, as PIL's arrays: not guessed
    ],
)
def test_images_that_do_not_fit_say_why(digits_vae, images, error):
    with pytest.raises((ValueError, TypeError), match=error):
        digits_vae.encode(images)


def test_codes_that_do_not_fit_say_why(digits_vae):
    with pytest.raises(ValueError, match=r"it takes \(N, 2\)"):
        digits_vae.decode(torch.zeros(3, 5))


def test_loading_refuses_what_the_tools_refuse(digits_run, tmp_path):
    marker = tmp_path / "pwned"
    for path in hostile_checkpoints(digits_run / "checkpoints" / "last.ckpt", tmp_path, marker):
        with pytest.raises(CheckpointError, match="refused"):
            TrainedVAE.load(path)
        assert not marker.exists(), path


def test_the_attribute_morph_moves_a_photo_towards_the_dogs(faces_dogs_run, tmp_path):
    vae = TrainedVAE.load(faces_dogs_run)
    datamodule = vae.datamodule(trained_data(faces_dogs_run))
    direction, what = vae.attribute_direction(datamodule=datamodule)  # faces and dogs: `dog` by default
    codes = vae.encode(datamodule.train_set.__getitems__(range(len(datamodule.train_set)))[0])
    dogs = datamodule.train_set.labels == 1
    assert torch.allclose(direction, codes[dogs].mean(0) - codes[~dogs].mean(0), atol=1e-5)
    assert what == "s * (mean code with dog - without)"
    assert faces_dogs_run.with_name("last.ckpt.attribute_dog.pt").is_file()  # cached beside the checkpoint
    face = datamodule.val_set.__getitems__([0])[0]
    frames = vae.morph_attribute(face, scale=2.0, steps=3, datamodule=datamodule)
    z = vae.encode(face)[0]
    assert torch.allclose(frames, vae.decode(torch.stack([z, z + direction, z + 2 * direction])), atol=1e-6)
    with pytest.raises(ConfigValueError, match="must be one of the attributes of the checkpoint's data set: dog"):
        vae.attribute_direction("Smiling", datamodule)


def test_digits_have_an_attribute_per_digit(digits_vae):
    datamodule = digits_vae.datamodule()
    assert list(digits_vae.attributes(datamodule)) == [str(d) for d in range(10)]
    frames = digits_vae.morph_attribute(datamodule.val_set.__getitems__([0])[0], "3", steps=4, datamodule=datamodule)
    assert frames.shape == (4, 1, 8, 8)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_a_model_on_a_gpu_takes_cpu_images_and_returns_gpu_results(digits_run, val_images):
    vae = TrainedVAE.load(digits_run / "checkpoints" / "last.ckpt", device="cuda")
    z = vae.encode(val_images)
    assert z.device.type == "cuda" and vae.decode(z.cpu()).device.type == "cuda"
    assert vae.sample(3).device.type == "cuda" and vae.interpolate(val_images[0], val_images[1]).shape[0] == 10


def test_the_readmes_example_script_runs_as_printed(digits_run, tmp_path, monkeypatch, capsys):
    script = ROOT / "examples" / "use_a_trained_model.py"
    code = script.read_text().split('"""', 2)[2].strip()
    assert code in (ROOT / "docs" / "python.md").read_text(), "docs/python.md shows examples/use_a_trained_model.py"
    monkeypatch.setattr(sys, "argv", [str(script), str(digits_run / "checkpoints" / "last.ckpt"), str(tmp_path)])
    runpy.run_path(str(script), run_name="__main__")
    assert "codes (8, 2) input (1, 8, 8)" in capsys.readouterr().out
    for name in ("inputs", "reconstructions", "samples", "interpolation"):
        assert Image.open(tmp_path / f"{name}.png").size[1] >= 64
    assert Image.open(Path(tmp_path) / "interpolation.png").size[0] >= 10 * 64
