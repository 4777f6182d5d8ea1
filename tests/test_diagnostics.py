"""The pictures: every one works on small and lopsided data, a failing one never ends a run, and a run's
TensorBoard holds them, its HPARAMS and a Projector with points."""

from __future__ import annotations

import io
import json
import logging

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from PIL import Image

from tests.conftest import tensorboard_events, train_in_process
from vae_lightning.callbacks import pictures
from vae_lightning.callbacks.grid import MIN_CELL
from vae_lightning.callbacks.hparams import experiment_hparams
from vae_lightning.callbacks.pictures import Embedding, Histogram, View, interpolation_pairs
from vae_lightning.module import VAEModule

PICTURES = {
    "reconstructions": pictures.Reconstructions(),
    "samples": pictures.Samples(),
    "latent_scatter": pictures.LatentScatter(),
    "latent_grid": pictures.LatentGrid(),
    "interpolations": pictures.Interpolations(),
    "best_worst": pictures.BestWorst(),
    "loss_histogram": pictures.LossHistogram(),
    "latent_health": pictures.LatentHealth(),
    "projector": pictures.Projector(),
}
DOMAINS = {0: "human", 1: "dog"}
# (samples, latent size, channels, image side, labels, label names): small and lopsided on purpose
CASES = {
    "one sample": (1, 2, 1, 8, [3], {}),
    "fewer than asked, one class, 1-D latent": (3, 1, 3, 32, [0, 0, 0], {}),
    "no dog, 64-D latent, 128x128 colour": (5, 64, 3, 128, [0] * 5, DOMAINS),
    "no human, grey": (4, 2, 1, 64, [1] * 4, DOMAINS),
    "humans and dogs": (12, 2, 3, 8, [0, 1] * 6, DOMAINS),
    "ten digits, 64-D latent": (40, 64, 1, 28, list(range(10)) * 4, {}),
}


def make_view(n, latent, channels, side, labels, names) -> View:
    torch.manual_seed(0)
    net = {"_target_": "vae_lightning.nets.mlp.MLPVAE", "hidden_dims": [8], "latent_dim": latent}
    module = VAEModule.from_settings(
        {
            "net": net,
            "loss": {"_target_": "vae_lightning.losses.ELBO"},
            "beta": {"_target_": "vae_lightning.schedules.Constant", "_partial_": True},
            "optimizer": {"_target_": "vae_lightning.optim.adam", "_partial_": True},
        },
        input_shape=(channels, side, side),
    ).eval()
    images = torch.rand(n, channels, side, side)
    with torch.no_grad():
        terms = module.objective(images, 1.0)
        posterior = terms.sample.posterior
        kl = module.prior.kl_per_dim(posterior).mean(0)
    ends = (0, 1) if names == DOMAINS else None
    return View(
        images, torch.tensor(labels), names, ends, posterior.loc, posterior.scale, terms.per_sample, kl, module, epoch=3
    )


def rendered(output) -> np.ndarray | None:
    """The output as the pixels TensorBoard and the PNG file get (None for histograms and embeddings)."""
    if isinstance(output, Figure):
        buffer = io.BytesIO()
        output.savefig(buffer, format="png")
        return np.asarray(Image.open(buffer))
    if isinstance(output, np.ndarray):
        assert output.dtype == np.uint8 and output.ndim == 3 and output.shape[2] == 3
        return output
    assert isinstance(output, Histogram | Embedding)
    return None


def blank(output) -> bool:
    """Whether a picture shows nothing: a figure whose axes hold no points, lines, bars or images (a frame with
    ticks and a title is not a picture), or an image grid of fewer than 8 distinct colours (empty cells)."""
    if isinstance(output, Figure):
        return not any(ax.collections or ax.lines or ax.images or ax.patches for ax in output.axes)
    pixels = rendered(output)
    return pixels is not None and len(np.unique(pixels.reshape(-1, pixels.shape[-1]), axis=0)) < 8


def test_a_figure_with_empty_axes_and_a_grid_of_empty_cells_count_as_blank():
    empty = Figure()
    empty.add_subplot().set_title("val/latent_scatter")
    grid = np.zeros((64, 64, 3), np.uint8)
    grid[::9] = 255  # cell borders
    assert blank(empty) and blank(grid)
    drawn = Figure()
    drawn.add_subplot().scatter([0, 1], [1, 0])
    assert not blank(drawn) and not blank(np.random.default_rng(0).integers(0, 255, (8, 8, 3), dtype=np.uint8))


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("name", list(PICTURES))
def test_every_picture_works_on_small_and_lopsided_data(name, case, caplog):
    view = make_view(*CASES[case])
    with caplog.at_level(logging.INFO):
        outputs = PICTURES[name](view)
    if name == "projector" and len(view.labels) == 1:  # TensorBoard's Projector lists no tensor of one point
        assert outputs == [] and "Projector: not written" in caplog.text
        return
    assert outputs
    for tag, output in outputs:
        assert tag.startswith("val/")
        assert not blank(output), f"{tag} is blank"
        if isinstance(output, Embedding):
            assert output.points.shape[1] >= 3 and len(output.metadata) == len(view.labels)


def test_image_grids_keep_tiny_images_legible():
    view = make_view(*CASES["ten digits, 64-D latent"])
    ((_, grid),) = PICTURES["reconstructions"](view)
    assert grid.shape[1] >= 8 * MIN_CELL  # 8 columns of 28x28 digits, at least 28 px each


def test_interpolation_pairs_say_how_they_were_chosen():
    loc = torch.tensor([[0.0], [1.0], [5.0], [2.0]])
    assert interpolation_pairs(torch.tensor([1, 0, 0, 1]), DOMAINS, loc, 3, ends=(0, 1)) == (
        [(1, 0), (2, 3)],
        "human (left) to dog (right)",
    )
    pairs, how = interpolation_pairs(torch.tensor([0, 0, 0, 0]), DOMAINS, loc, 2, ends=(0, 1))
    assert pairs == [(0, 2)] and how.startswith("no dog among the validation samples")
    # the ends are the data module's to name: any two labels, in either direction
    pairs, how = interpolation_pairs(torch.tensor([4, 9, 9, 4]), {9: "nine"}, loc, 2, ends=(9, 4))
    assert pairs == [(1, 0), (2, 3)] and how == "nine (left) to 4 (right)"
    # without ends, two domains are only two labels
    pairs, how = interpolation_pairs(torch.tensor([1, 0, 0, 1]), DOMAINS, loc, 3)
    assert how == "pairs of validation samples with different labels"
    pairs, how = interpolation_pairs(torch.tensor([7, 7, 7, 7]), {}, loc, 2)
    assert pairs == [(0, 2)] and how.startswith("one label only")
    assert interpolation_pairs(torch.tensor([3]), {}, loc[:1], 2)[0] == [(0, -1)]


class Broken(pictures.Picture):
    def __call__(self, view):
        raise ValueError("a picture that always fails")


def test_a_failing_picture_is_skipped_with_one_warning_and_the_run_completes(tmp_path, caplog):
    broken = "+callbacks.diagnostics.pictures.broken={_target_: tests.test_diagnostics.Broken}"
    with caplog.at_level(logging.WARNING):
        train_in_process(["debug=fast", "diagnostics.strict=false", broken], tmp_path / "run")
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["status"] == "completed"
    skipped = [r.message for r in caplog.records if "Diagnostics:" in r.message]
    assert skipped == [
        "Diagnostics: broken skipped at epoch 0 (ValueError: a picture that always fails)",
        "Diagnostics: broken skipped at epoch 1 (ValueError: a picture that always fails)",
    ]
    assert (tmp_path / "run" / "images" / "latent_scatter.png").is_file()  # the others were drawn


def test_strict_diagnostics_fail_the_run(tmp_path):
    broken = "+callbacks.diagnostics.pictures.broken={_target_: tests.test_diagnostics.Broken}"
    with pytest.raises(ValueError, match="always fails"):
        train_in_process(["debug=fast", broken], tmp_path / "run")


def images_of(run_dir):
    return tensorboard_events(run_dir / "tensorboard", images=0, histograms=0)


def test_a_run_shows_every_picture_in_tensorboard_and_as_png(digits_run):
    accumulator = images_of(digits_run)
    tags = {
        "val/reconstructions",
        "val/samples",
        "val/latent_scatter",
        "val/latent_grid",
        "val/interpolations",
        "val/best_worst",
        "val/loss_histogram",
        "val/latent_health",
    }
    assert tags <= set(accumulator.Tags()["images"])
    for tag in tags:
        events = accumulator.Images(tag)
        assert len(events) == 3, tag  # every epoch (2) and the end
        picture = np.asarray(Image.open(io.BytesIO(events[-1].encoded_image_string)))
        assert picture.std() > 10, f"{tag} is blank"
    assert {"val/per_sample_loss", "val/kl_per_dim"} <= set(accumulator.Tags()["histograms"])
    assert accumulator.Histograms("val/kl_per_dim")[-1].histogram_value.num == 2  # one value per latent dimension
    for name in ("reconstructions", "latent_scatter", "latent_grid", "best_worst", "latent_health"):
        assert np.asarray(Image.open(digits_run / "images" / f"{name}.png")).std() > 10, name


def test_the_projector_has_points_in_three_dimensions_with_labels(digits_run):
    config = (digits_run / "tensorboard" / "projector_config.pbtxt").read_text()
    assert "metadata.tsv" in config and "sprite.png" in config
    (folder,) = [p.parent for p in (digits_run / "tensorboard").rglob("tensors.tsv")]
    rows = [line.split("\t") for line in (folder / "tensors.tsv").read_text().splitlines()]
    assert len(rows) == 180 and {len(r) for r in rows} == {3} and {r[2] for r in rows} == {"0.0"}  # z3 = 0 padding
    assert folder.name.endswith("latent_means_padded_to_3d")  # the Projector's list of tensors says so
    assert set((folder / "metadata.tsv").read_text().split()) == {str(d) for d in range(10)}  # one label each


def test_the_projector_thumbnails_show_each_label_in_the_latent_scatters_colour():
    """The Projector opens on "No color map", so the sprite's thumbnails carry the labels' colours."""
    from vae_lightning.callbacks.plots import colours_by_label

    blue, orange = (torch.tensor(c[:3], dtype=torch.float32) for c in colours_by_label([0, 1]).values())
    grey = pictures.in_label_colours(torch.ones(3, 1, 8, 8), torch.tensor([7, 2, 7]))
    assert grey.shape == (3, 3, 8, 8) and torch.equal(grey[0], grey[2])  # one colour per label
    assert torch.allclose(grey[1, :, 0, 0], blue / blue.max()) and torch.allclose(
        grey[0, :, 0, 0], orange / orange.max()
    )
    photos = torch.rand(2, 3, 32, 32)
    framed = pictures.in_label_colours(photos, torch.tensor([0, 1]))
    assert torch.equal(framed[:, :, 4:-4, 4:-4], photos[:, :, 4:-4, 4:-4])  # the photo, in a frame 4 px wide
    assert torch.allclose(framed[1, :, 0, 0], orange / orange.max()) and torch.allclose(
        framed[1, :, -4, 3], framed[1, :, 0, 0]
    )


def test_the_default_runs_sprite_is_coloured(digits_run):
    (sprite,) = (digits_run / "tensorboard").rglob("sprite.png")
    pixels = np.asarray(Image.open(sprite).convert("RGB")).astype(int)
    assert np.abs(pixels - pixels.mean(axis=2, keepdims=True)).max() > 100  # not grey


def test_hparams_show_every_group_of_the_runs_choices_and_the_keys_given():
    """Every group that shapes the model or its training, a user's own (`augment`) included; not Hydra's, nor
    paths, callbacks, loggers, debug modes."""
    choices = {
        "augment": "flips",
        "beta": "ramp",
        "model": "mlp",
        "hydra/launcher": "basic",
        "paths": "default",
        "experiment": None,
        "optimizer": "adam",
        "trainer": "ddp",
        "dataset": "digits",
        "loss": "elbo",
    }
    overrides = ["beta=ramp", "model.latent_dim=8", "debug=fast", "hydra.run.dir=x", "trainer=ddp", "~callbacks.x"]
    values, domains = experiment_hparams(choices, overrides)
    expected = {"augment": "flips", "dataset": "digits", "model": "mlp", "beta": "ramp", "model.latent_dim": 8}
    assert values == expected | {"trainer": "ddp", "experiment": "none", "optimizer": "adam", "loss": "elbo"}
    assert domains["beta"] == ["constant", "cyclical", "ramp", "sigmoid", "warmup", "zero"]
    assert "model.latent_dim" not in domains
    experiment = {"experiment": "haskell_mnist", "dataset": "mnist", "model": "mlp", "loss": "seed", "beta": "zero"}
    assert set(experiment_hparams(experiment, ["experiment=haskell_mnist"])[0]) == set(experiment)


def test_a_run_writes_its_hparams_session_with_its_own_metric_tags(digits_run):
    accumulator = tensorboard_events(digits_run / "tensorboard")
    content = accumulator.PluginTagToContent("hparams")
    assert {"_hparams_/experiment", "_hparams_/session_start_info", "_hparams_/session_end_info"} <= set(content)
    assert b"val/loss" in content["_hparams_/experiment"] and b"test/nll" in content["_hparams_/experiment"]
    assert b"hp/" not in content["_hparams_/experiment"] and b"paths" not in content["_hparams_/session_start_info"]
    assert not any(tag.startswith("hp/") for tag in accumulator.Tags()["scalars"])
