"""Diagnostics: the pictures, histograms, Projector and PNG files a run leaves, and the morph command."""

import io
import json

import numpy as np
import pytest
import torch
from PIL import Image, ImageSequence
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.conftest import run_train
from vae_lightning.callbacks.diagnostics import interpolation_pairs
from vae_lightning.callbacks.drawing import scatter
from vae_lightning.morph import main as morph_main

IMAGE_TAGS_2D = [
    "val/reconstructions",
    "val/samples",
    "val/latent_scatter",
    "val/latent_grid",
    "val/interpolations",
    "val/best_worst",
]
PNG_NAMES = ["reconstructions", "samples", "latent_scatter", "interpolations", "best_worst"]


def test_interpolation_pairs_are_human_to_dog_when_the_labels_are_domains():
    y = torch.tensor([1, 0, 0, 1, 1, 0])
    assert interpolation_pairs(y, {0: "human", 1: "dog"}, 3) == [(1, 0), (2, 3), (5, 4)]
    assert interpolation_pairs(torch.tensor([3, 3, 5, 3]), {}, 2) == [(0, 2), (1, 2)]


def test_scatter_is_drawn_in_the_label_colours():
    points = np.random.default_rng(0).normal(size=(300, 2))
    picture = scatter(points, np.arange(300) % 3, {0: "a", 1: "b", 2: "c"}, ("z1", "z2"), "title")
    assert picture.shape[2] == 3 and picture.dtype == np.uint8
    plot = picture[40:560, 40:560].reshape(-1, 3)
    assert len({tuple(p) for p in plot[::7]}) > 3  # coloured points, not a blank frame


def decode(event):
    return np.asarray(Image.open(io.BytesIO(event.encoded_image_string)))


@pytest.fixture(scope="module")
def two_d_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("diag") / "run"
    result = run_train(["debug=fast", "trainer.max_epochs=2", "trainer.limit_val_batches=null"], run_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir


@pytest.mark.slow
def test_every_picture_and_histogram_is_in_tensorboard(two_d_run):
    accumulator = EventAccumulator(str(two_d_run / "tensorboard"), size_guidance={"images": 0, "histograms": 0})
    accumulator.Reload()
    assert set(IMAGE_TAGS_2D) <= set(accumulator.Tags()["images"])
    for tag in IMAGE_TAGS_2D:
        events = accumulator.Images(tag)
        assert len(events) >= 3, tag  # every epoch (2) and the end
        picture = decode(events[-1])
        assert picture.dtype == np.uint8 and (picture.ndim == 2 or picture.shape[2] in (3, 4)), tag  # grey or colour
        assert picture.std() > 10, f"{tag} is blank"
    grid = decode(accumulator.Images("val/latent_grid")[-1])
    assert grid.shape[0] == grid.shape[1] >= 15 * 24  # 15 x 15 cells, enlarged from 8x8
    assert {"val/per_sample_loss", "val/kl_per_dim"} <= set(accumulator.Tags()["histograms"])
    kl_per_dim = accumulator.Histograms("val/kl_per_dim")[-1].histogram_value
    assert kl_per_dim.num == 2 and kl_per_dim.min >= 0  # one value per latent dimension


@pytest.mark.slow
def test_projector_hparams_and_png_files(two_d_run):
    config = (two_d_run / "tensorboard" / "projector_config.pbtxt").read_text()
    assert "metadata.tsv" in config and "sprite.png" in config
    (folder,) = [p.parent for p in (two_d_run / "tensorboard").rglob("tensors.tsv")]
    assert len((folder / "tensors.tsv").read_text().splitlines()) == 180  # every validation sample
    assert set((folder / "metadata.tsv").read_text().split()) <= {str(d) for d in range(10)}
    for name in [*PNG_NAMES, "latent_grid"]:
        picture = np.asarray(Image.open(two_d_run / "images" / f"{name}.png"))
        assert picture.std() > 10, name
    accumulator = EventAccumulator(str(two_d_run / "tensorboard"))
    accumulator.Reload()
    assert "_hparams_/session_start_info" in accumulator.PluginTagToContent("hparams")


@pytest.mark.slow
def test_traversals_and_pca_for_a_larger_latent_space(tmp_path):
    run_dir = tmp_path / "run"
    result = run_train(["debug=fast", "model.latent_dim=6", "logger=tensorboard"], run_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (run_dir / "images" / "latent_traversal.png").is_file()
    assert not (run_dir / "images" / "latent_grid.png").exists()
    accumulator = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"images": 0})
    accumulator.Reload()
    assert "val/latent_traversal" in accumulator.Tags()["images"]
    assert decode(accumulator.Images("val/latent_traversal")[-1]).std() > 10


@pytest.mark.slow
def test_morph_writes_a_gif_with_steps_distinct_frames(two_d_run, tmp_path, capsys):
    checkpoint = two_d_run / "checkpoints" / "last.ckpt"
    gif = tmp_path / "out" / "morph.gif"
    assert morph_main([f"ckpt_path={checkpoint}", f"output={gif}", "steps=7"]) == 0
    frames = [f.convert("RGB").tobytes() for f in ImageSequence.Iterator(Image.open(gif))]
    assert len(frames) == 7 + 5  # there and back
    assert len(set(frames)) == 7
    assert Image.open(gif.with_suffix(".png")).size[0] > 9 * 128  # source, 7 frames, target

    photo = tmp_path / "face.png"
    Image.fromarray((np.random.default_rng(0).random((90, 120, 3)) * 255).astype(np.uint8)).save(photo)
    assert (
        morph_main(
            [f"ckpt_path={checkpoint}", f"output={tmp_path / 'p.gif'}", "steps=4", f"source={photo}", f"target={photo}"]
        )
        == 0
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["ckpt_path=/no/such.ckpt"], "no such checkpoint file"),
        (["ckpt_path=TRUNCATED"], "not a readable checkpoint"),
        (["ckpt_path=FOREIGN"], "not written by vae_lightning"),
        (["ckpt_path=GOOD", "source=/no/such.jpg", "target=/no/such.jpg"], "/no/such.jpg does not exist"),
        (["ckpt_path=GOOD", "source=TEXT", "target=TEXT"], "could not be read"),
        (["ckpt_path=GOOD", "steps=1"], "steps"),
        (["ckpt_path=GOOD", "colour=blue"], "bad argument"),
        ([], "ckpt_path"),
    ],
)
def test_morph_errors_are_one_clear_line(args, message, two_d_run, tmp_path, capsys):
    good = two_d_run / "checkpoints" / "last.ckpt"
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(good.read_bytes()[:5000])
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    text = tmp_path / "text.jpg"
    text.write_text("not a picture")
    replace = {"GOOD": str(good), "TRUNCATED": str(truncated), "FOREIGN": str(foreign), "TEXT": str(text)}
    args = [a.split("=")[0] + "=" + replace.get(a.split("=")[1], a.split("=")[1]) for a in args]
    assert morph_main([*args, f"output={tmp_path / 'x.gif'}"]) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


@pytest.mark.slow
def test_diagnostics_are_written_once_under_ddp(tmp_path):
    run_dir = tmp_path / "run"
    result = run_train(["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "debug=fast"], run_dir)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert json.loads((run_dir / "metrics.json").read_text())["status"] == "completed"
    accumulator = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"images": 0})
    accumulator.Reload()
    for tag in IMAGE_TAGS_2D:
        assert len(accumulator.Images(tag)) == 2, tag  # one epoch and the end, from rank 0 only
    assert len({p.name.split(".")[5] for p in (run_dir / "tensorboard").glob("events.out.tfevents.*")}) == 1
    assert len(list((run_dir / "tensorboard").rglob("tensors.tsv"))) == 1
