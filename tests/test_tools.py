"""`evaluate` and `morph` on real checkpoints, called in this process as their Hydra apps call them."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from omegaconf import OmegaConf
from PIL import Image, ImageSequence

from tests.checkpoint_payloads import hostile_checkpoints
from tests.conftest import SHARED_DATA, compose_tool, train_in_process, trained_data_args, write_mnist
from tests.photo_fixtures import photo, save_jpeg
from vae_lightning.core.errors import CheckpointError, DataNotFoundError, VAELightningError
from vae_lightning.data.faces import FACE_FRACTION, read_photo
from vae_lightning.evaluate import evaluate
from vae_lightning.morph import morph
from vae_lightning.run.tools import run_tool


@pytest.fixture(scope="module")
def nll_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("nll")
    root = write_mnist(tmp / "mnist", n_train=200, n_test=50)
    args = [
        "experiment=mnist_nll",
        f"dataset.root={root}",
        "debug=fast",
        "eval.nll_samples=20",
        "~callbacks.diagnostics",
    ]
    train_in_process(args, tmp / "run")
    moved = tmp / "moved"
    root.rename(moved)  # the data set is elsewhere now: a dataset override points at it
    return tmp / "run", moved


def test_evaluate_reports_every_metric_on_stdout_and_in_a_file(nll_run, capsys):
    run_dir, mnist = nll_run
    trained = json.loads((run_dir / "metrics.json").read_text())
    assert trained["test/nll"] <= -trained["test/elbo"] + 1.0  # the importance-sampled bound is tighter
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    capsys.readouterr()
    metrics = evaluate(
        compose_tool("evaluate", [f"ckpt_path={checkpoint}", f"dataset.root={mnist}", "eval.nll_samples=30"])
    )
    assert json.loads(capsys.readouterr().out) == metrics  # stdout carries the results only
    assert json.loads((checkpoint.parent / "metrics.json").read_text())["status"] == "completed"
    assert {"test/nll", "test/elbo", "test/loss", "test/psnr", "test/mutual_info", "test/kl_dim_000"} <= set(metrics)
    out = run_dir / "m.json"
    cheap = ["eval.nll_samples=0", "eval.mutual_info=false", f"output={out}"]
    evaluate(compose_tool("evaluate", [f"ckpt_path={checkpoint}", f"dataset.root={mnist}", *cheap]))
    assert not {"test/nll", "test/mutual_info"} & set(json.loads(out.read_text()))


def test_evaluate_accepts_only_the_checkpoints_data_keys(nll_run, tmp_path):
    run_dir, _mnist = nll_run
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    with pytest.raises(
        VAELightningError,
        match=r"`dataset.faces.root` is not a key of this checkpoint's data set "
        r"\(MNISTDataModule\); its keys are .*root",
    ):
        evaluate(compose_tool("evaluate", [f"ckpt_path={checkpoint}", f"dataset.faces.root={tmp_path}"]))
    with pytest.raises(DataNotFoundError, match="/no/such/folder"):
        evaluate(
            compose_tool(
                "evaluate", [f"ckpt_path={checkpoint}", "dataset.root=/no/such/folder", "dataset.download=false"]
            )
        )


def test_the_tools_refuse_hostile_checkpoints_without_running_them(digits_run, tmp_path):
    marker = tmp_path / "marker"
    for hostile in hostile_checkpoints(digits_run / "checkpoints" / "last.ckpt", tmp_path, marker):
        for tool, function in (("evaluate", evaluate), ("morph", morph)):
            with pytest.raises(CheckpointError):
                function(compose_tool(tool, [f"ckpt_path={hostile}", f"output={tmp_path / 'out.gif'}"]))
    assert not marker.exists() and not (tmp_path / "out.gif").exists()


def test_a_missing_checkpoint_argument_is_one_line(capsys):
    with pytest.raises(SystemExit) as exit_:
        run_tool(evaluate, compose_tool("evaluate", []))
    assert exit_.value.code == 1 and capsys.readouterr().err.strip() == (
        "Error: ckpt_path is required: give the checkpoint file as ckpt_path=<file.ckpt>."
    )


def frames_of(gif):
    return [frame.convert("RGB").tobytes() for frame in ImageSequence.Iterator(Image.open(gif))]


def test_morph_without_photos_goes_from_a_validation_human_to_a_dog(faces_dogs_run, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    gif, strip = morph(
        compose_tool(
            "morph",
            [
                f"ckpt_path={faces_dogs_run}",
                *trained_data_args(faces_dogs_run),
                f"output={tmp_path / 'm.gif'}",
                "steps=7",
            ],
        )
    )
    frames = frames_of(gif)
    assert len(frames) == 7 + 5 and len(set(frames)) == 7  # there and back; every frame differs
    assert Image.open(strip).size[0] >= 9 * 128  # source, 7 frames, target
    assert "human (left) to dog (right)" in caplog.text


def uncropped_portrait(path):
    """A real UTKFace face placed off-centre in a larger photo, as a user's ordinary photo would hold it."""
    face = Image.open(sorted((SHARED_DATA / "utkface" / "crop_part1").glob("*.jpg"))[0]).convert("RGB")
    canvas = photo(640, 480, 0)
    canvas.paste(face.resize((240, 240)), (330, 60))
    save_jpeg(canvas, path)
    return path


def test_morph_finds_the_face_in_an_ordinary_photo_and_adds_the_dog_direction(faces_dogs_run, tmp_path):
    if not (SHARED_DATA / "utkface").is_dir():
        pytest.skip(f"{SHARED_DATA} is not present")
    friend = uncropped_portrait(tmp_path / "friend.jpg")
    cropped = read_photo(str(friend), (3, 64, 64), find_face=True).permute(1, 2, 0).numpy()
    centre = read_photo(str(friend), (3, 64, 64), find_face=False).permute(1, 2, 0).numpy()
    face = (
        np.asarray(
            Image.open(sorted((SHARED_DATA / "utkface" / "crop_part1").glob("*.jpg"))[0])
            .convert("RGB")
            .resize((64, 64)),
            dtype=np.float32,
        )
        / 255
    )
    assert np.abs(cropped - face).mean() < np.abs(centre - face).mean()  # the crop is the face, not the background
    assert 0.7 < FACE_FRACTION < 1.0
    args = [
        f"ckpt_path={faces_dogs_run}",
        *trained_data_args(faces_dogs_run),
        f"source={friend}",
        "mode=attribute",
        f"output={tmp_path / 'dog.gif'}",
        "steps=5",
        "scale=1.5",
    ]
    gif, strip = morph(compose_tool("morph", args))
    assert len(set(frames_of(gif))) == 5 and strip.is_file()
    assert faces_dogs_run.with_name("last.ckpt.attribute_dog.pt").is_file()  # cached beside the checkpoint


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["source=/no/such.jpg", "target=/no/such.jpg"], "/no/such.jpg does not exist"),
        (["source=TEXT", "target=TEXT"], "could not be read"),
        (["source=TEXT", "mode=attribute"], "could not be read"),  # before the data (not given here) is looked for
        (["steps=1"], "steps"),
        (["mode=sideways"], "mode"),
    ],
)
def test_morph_errors_say_what_is_wrong(args, error, faces_dogs_run, tmp_path):
    (tmp_path / "text.jpg").write_text("not a picture")
    args = [a.replace("TEXT", str(tmp_path / "text.jpg")) for a in args]
    with pytest.raises(VAELightningError, match=error):
        morph(compose_tool("morph", [f"ckpt_path={faces_dogs_run}", f"output={tmp_path / 'x.gif'}", *args]))


def test_morph_on_digits_uses_two_validation_samples_with_different_labels(digits_run, tmp_path):
    gif, _ = morph(
        compose_tool(
            "morph",
            [f"ckpt_path={digits_run / 'checkpoints' / 'last.ckpt'}", "steps=4", f"output={tmp_path / 'd.gif'}"],
        )
    )
    assert len(set(frames_of(gif))) == 4
    with pytest.raises(VAELightningError, match=r"`attribute=None`: must be one of the attributes of the checkpoint's"):
        morph(
            compose_tool(
                "morph",
                [
                    f"ckpt_path={digits_run / 'checkpoints' / 'last.ckpt'}",
                    "mode=attribute",
                    f"output={tmp_path / 'e.gif'}",
                ],
            )
        )


def test_a_checkpoint_does_not_choose_the_store_a_tool_reads_from(tmp_path, monkeypatch):
    """A stranger's checkpoint trained on S3 shards names an endpoint: a tool reading its data uses the user's
    (none given: the default), never the checkpoint's, as for the data roots; the user's own endpoint is taken.
    Making paths absolute leaves a store's options (a region) alone."""
    from types import SimpleNamespace

    from vae_lightning.run.tools import absolute_locations, checkpoint_data_config

    data = {"_target_": "vae_lightning.data.shards.ShardsDataModule", "root": "s3://theirs/shards", "batch_size": 8}
    data |= {"num_workers": 0, "image_size": None, "storage_options": {"endpoint_url": "http://evil.example:9000"}}
    module = SimpleNamespace(hparams={"data": data})
    config = checkpoint_data_config(module, OmegaConf.create({"root": "s3://mine/shards"}))
    assert config["root"] == "s3://mine/shards" and config["storage_options"]["endpoint_url"] is None
    mine = OmegaConf.create({"root": "s3://mine/shards", "storage_options": {"endpoint_url": "http://minio:9000"}})
    assert checkpoint_data_config(module, mine)["storage_options"]["endpoint_url"] == "http://minio:9000"
    monkeypatch.chdir(tmp_path)
    dataset = OmegaConf.create({"root": "shards", "storage_options": {"region_name": "eu-west-1"}})
    assert absolute_locations(dataset) == ["root"]
    assert dataset.root == str(tmp_path / "shards") and dataset.storage_options.region_name == "eu-west-1"
