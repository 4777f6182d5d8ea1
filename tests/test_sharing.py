"""A trained model as a folder people share (`vae-export`, `TrainedVAE.from_pretrained`): safetensors and JSON
only, usable with no training data on the machine, by folder or by Hub repository id from huggingface_hub's cache,
and as guarded as a checkpoint against a hostile sender. The installed wheel's commands are in test_package."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import compose_tool, compose_train, train_in_process
from vae_lightning.core.errors import CheckpointError, ConfigValueError, DataNotFoundError

pytest.importorskip("safetensors", reason='the hub extra is not installed: pip install -e ".[hub]"')

SAFE = {".safetensors", ".json", ".md", ".png"}


def write_photos(folder: Path) -> Path:
    """Two classes of twelve 24x24 photos: red-ish cats and blue-ish dogs."""
    rng = np.random.default_rng(0)
    for label, channel in (("cats", 0), ("dogs", 2)):
        (folder / label).mkdir(parents=True)
        for i in range(12):
            pixels = rng.integers(0, 90, (24, 24, 3), dtype=np.uint8)
            pixels[..., channel] = 230
            Image.fromarray(pixels).save(folder / label / f"{i}.png")
    return folder


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[Path, Path, Path]:
    """(exported folder, its checkpoint, a photo kept apart) of a model trained on a photo folder with two
    classes, exported by `vae-export`'s function, after which the photo folder is deleted."""
    from vae_lightning.export import export

    tmp = tmp_path_factory.mktemp("sharing")
    photos = write_photos(tmp / "photos")
    kept = shutil.copy(photos / "dogs" / "0.png", tmp / "friend.png")
    args = ["dataset=images", f"dataset.root={photos}", "dataset.image_size=16", "model.channels=[8,16]"]
    train_in_process([*args, "model.latent_dim=3", "debug=fast", "~callbacks.diagnostics"], tmp / "run")
    ckpt = tmp / "run" / "checkpoints" / "last.ckpt"
    export(compose_tool("export", [f"ckpt_path={ckpt}", f"output={tmp / 'shared'}", f"dataset.root={photos}"]))
    shutil.rmtree(photos)
    return tmp / "shared", ckpt, Path(kept)


def test_the_exported_folder_holds_no_pickle_and_a_model_card(exported):
    folder, _, _ = exported
    names = {p.name for p in folder.iterdir()}
    assert {"model.safetensors", "config.json", "data.json", "data.safetensors", "README.md"} <= names
    assert {"samples.png", "reconstructions.png"} <= names
    assert {p.suffix for p in folder.iterdir()} <= SAFE
    for path in folder.iterdir():  # no pickle inside any file either (a zip of pickles starts PK, a pickle \x80)
        assert not path.read_bytes().startswith((b"PK", b"\x80")), path
    card = (folder / "README.md").read_text()
    front = card.split("---")[1]
    assert "library_name: vae_lightning" in front and "- ImageFolder" in front and "- nll" in front
    assert "| `test/nll` |" in card  # the command that trained it: in the wheel's test (a real train.py run)
    config = json.loads((folder / "config.json").read_text())
    data = config["hyper_parameters"]["data"]  # the data set's settings without its folders
    assert data["image_size"] == 16 and data["root"] is None and data["cache_dir"] is None
    assert config["preprocessing"]["input_shape"] == [3, 16, 16]
    assert json.loads((folder / "data.json").read_text())["attributes"].keys() == {"cats", "dogs"}


def test_from_pretrained_works_with_no_training_data(exported, tmp_path, monkeypatch):
    from vae_lightning.api import TrainedVAE

    folder, ckpt, friend = exported
    monkeypatch.chdir(tmp_path)  # any folder
    vae = TrainedVAE.from_pretrained(folder)
    original = TrainedVAE.load(ckpt)
    z = vae.encode(friend)
    assert torch.allclose(z, original.encode(friend))
    assert vae.decode(z).shape == (1, 3, 16, 16) and vae.sample(4).shape == (4, 3, 16, 16)
    frames = vae.morph_attribute(friend, "dogs", scale=2.0, steps=3)
    direction, what = vae.attribute_direction("dogs")
    assert torch.allclose(frames[-1:], vae.decode(z + 2 * direction), atol=1e-6) and "dogs" in what
    assert vae.interpolate(friend, friend, steps=2).shape == (2, 3, 16, 16)
    assert vae.exported.class_names == {0: "cats", 1: "dogs"} and set(vae.exported.label_means) == {0, 1}
    with pytest.raises(ConfigValueError, match="exported model's attributes: cats, dogs"):
        vae.attribute_direction("Smiling")
    with pytest.raises(DataNotFoundError, match="does not exist"):  # its data set, without its folders
        vae.datamodule()


def test_a_repo_id_loads_from_the_hub_cache_offline(exported, tmp_path, monkeypatch):
    """The folder placed in a Hugging Face cache as `snapshot_download` leaves it; HF_HUB_OFFLINE=1."""
    pytest.importorskip("huggingface_hub", reason='the hub extra is not installed: pip install -e ".[hub]"')
    folder, _, friend = exported
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--friends--dogs"
    shutil.copytree(folder, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    from vae_lightning.api import TrainedVAE

    vae = TrainedVAE.from_pretrained("friends/dogs")
    assert vae.encode(friend).shape == (1, 3)
    assert TrainedVAE.from_pretrained("friends/dogs", revision=commit).latent_dim == 3
    with pytest.raises(DataNotFoundError, match="could not be had from the Hub"):
        TrainedVAE.from_pretrained("friends/cats")


def test_evaluate_scores_the_folder_on_data_the_user_gives(exported, tmp_path):
    from vae_lightning.evaluate import evaluate

    folder, _, _ = exported
    photos = write_photos(tmp_path / "photos")
    metrics = evaluate(compose_tool("evaluate", [f"ckpt_path={folder}", f"dataset.root={photos}", "eval.nll_samples=2",
                                                 f"output={tmp_path / 'm.json'}"]))  # fmt: skip
    assert "test/nll" in metrics and (tmp_path / "m.json").is_file()


def test_morph_and_the_demo_take_the_folder(exported, tmp_path):
    from vae_lightning.demo.main import load_model
    from vae_lightning.morph import morph

    folder, _, friend = exported
    args = [f"ckpt_path={folder}", f"source={friend}", "mode=attribute", "attribute=dogs", "steps=3"]
    gif, strip = morph(compose_tool("morph", [*args, f"output={tmp_path / 'm.gif'}"]))
    assert gif.is_file() and strip.is_file()
    with pytest.raises(DataNotFoundError, match="does not exist"):  # the validation photos: data to give
        morph(compose_tool("morph", [f"ckpt_path={folder}", f"output={tmp_path / 'n.gif'}"]))
    model = load_model(compose_tool("demo", [f"ckpt_path={folder}"]))
    assert model.attributes == ["cats", "dogs"] and model.data_problem is None
    photo = model.photo(str(friend))
    assert model.along(photo, "dogs", 1.0).size[0] >= 16


# -- an exported folder is as guarded as a checkpoint ----------------------------------------------------------
def altered(folder: Path, tmp_path: Path, change) -> Path:
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    change(copy)
    return copy


def edit_json(name: str, edit):
    def change(folder: Path) -> None:
        value = json.loads((folder / name).read_text())
        edit(value)
        (folder / name).write_text(json.dumps(value))

    return change


def lying_header(folder: Path) -> None:
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes((10**9).to_bytes(8, "little") + data[8:])


def truncated(folder: Path) -> None:
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])


def other_shapes(folder: Path) -> None:
    import safetensors.torch

    tensors = safetensors.torch.load_file(str(folder / "model.safetensors"))
    name = next(iter(tensors))
    tensors[name] = torch.zeros(7)
    safetensors.torch.save_file(tensors, str(folder / "model.safetensors"))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (edit_json("config.json", lambda c: c["hyper_parameters"]["loss"].update(_target_="os.system")),
         r"`loss._target_` names `os.system`"),
        (edit_json("config.json", lambda c: c["hyper_parameters"]["net"].update(latent_dim="${oc.env:HOME}")),
         "holds an interpolation"),
        (edit_json("config.json", lambda c: c["hyper_parameters"]["net"].update(latent_dim=9)),
         "its config builds"),
        (edit_json("config.json", lambda c: c.update(format="other/9")), "not of the format"),
        (lambda f: (f / "config.json").write_text("{not json"), "is not valid JSON"),
        (lambda f: (f / "model.safetensors").unlink(), "it has no model.safetensors"),
        (lambda f: (f / "data.json").unlink(), "it has no data.json"),
        (lying_header, "is not a readable safetensors file"),
        (truncated, "is not a readable safetensors file"),
        (other_shapes, "was saved from a different model"),
        (edit_json("data.json", lambda d: d["attributes"].update(birds="s")), "direction of attribute 'birds'"),
    ],
)  # fmt: skip
def test_a_hostile_or_broken_exported_folder_is_one_line(exported, tmp_path, change, message):
    from vae_lightning.api import TrainedVAE

    folder = altered(exported[0], tmp_path, change)
    with pytest.raises(CheckpointError, match=message) as refused:
        TrainedVAE.from_pretrained(folder)
    assert "\n" not in str(refused.value) and str(Path.home()) not in str(refused.value)


def test_a_run_stores_its_data_folders_resolved(tmp_path, monkeypatch):
    """A relative root is resolved against the folder the command started in, so that the checkpoint means the
    same folder from anywhere."""
    from vae_lightning.run.tools import absolute_locations

    monkeypatch.chdir(tmp_path)
    cfg = compose_train(["dataset=images", "dataset.root=photos", "dataset.cache_dir=cache"], tmp_path / "run")
    assert sorted(absolute_locations(cfg.dataset)) == ["cache_dir", "root"]
    assert cfg.dataset.root == str(tmp_path / "photos") and cfg.dataset.cache_dir == str(tmp_path / "cache")


def test_a_tool_started_in_another_folder_finds_the_data_the_run_prepared(tmp_path, monkeypatch, caplog):
    """Trained with the README's relative roots in one folder, evaluated from another: the tool names the folder
    to give (rather than download or fail), and with it reads the run's preprocessed data from the per-user
    cache instead of preparing it again."""
    import logging

    from omegaconf import read_write

    from tests.conftest import QUIET
    from vae_lightning.core.config import user_cache_dir
    from vae_lightning.evaluate import evaluate
    from vae_lightning.train import train

    monkeypatch.delenv("VAE_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    (tmp_path / "a").mkdir()
    monkeypatch.chdir(tmp_path / "a")
    write_photos(tmp_path / "a" / "photos")
    args = ["dataset=images", "dataset.root=photos", "dataset.image_size=16", "model.channels=[8,16]", "debug=fast"]
    cfg = compose_train([*QUIET, *args, "~callbacks.diagnostics"], tmp_path / "a" / "run")
    with read_write(cfg):
        cfg.paths.cache_dir = "${oc.env:VAE_CACHE_DIR,${user_cache_dir:}}"  # as train.py composes it
    train(cfg)
    assert any(Path(user_cache_dir()).glob("images-*.pt"))
    ckpt = tmp_path / "a" / "run" / "checkpoints" / "last.ckpt"
    (tmp_path / "b").mkdir()
    monkeypatch.chdir(tmp_path / "b")
    photos = tmp_path / "a" / "photos"
    with pytest.raises(DataNotFoundError, match=rf"trained on {photos}, which is on this machine: give dataset\.root"):
        evaluate(compose_tool("evaluate", [f"ckpt_path={ckpt}"]))
    caplog.set_level(logging.INFO)
    evaluate(compose_tool("evaluate", [f"ckpt_path={ckpt}", f"dataset.root={photos}", "output=m.json"]))
    assert "images from the cache" in caplog.text and "preprocessed into" not in caplog.text
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["m.json"]


def test_exporting_encodes_the_training_images_once_and_says_how_far_it_is(digits_run, caplog):
    """`data_summary` (what `vae-export` computes from the data) gives each attribute the direction that
    `attribute_direction` gives, from one pass over the training split, whose progress is logged (not a terminal)."""
    from vae_lightning.api import TrainedVAE

    vae = TrainedVAE.load(digits_run / "checkpoints" / "last.ckpt")
    datamodule = vae.datamodule()
    with caplog.at_level("INFO", logger="progress"):
        data = vae.data_summary(datamodule)
    lines = [r.getMessage() for r in caplog.records if r.name == "progress"]
    batches = -(-len(datamodule.train_set) // 256)
    assert lines and lines[-1].startswith(f"Encoding the training images (batches of 256): {batches} of {batches}")
    assert len(data.directions) == 10
    for name, (direction, what) in data.directions.items():
        expected, expected_what = vae.attribute_direction(name, datamodule, cache=False)
        torch.testing.assert_close(direction, expected)
        assert what == expected_what
