"""Data beyond the seed: any folder of images (the odd folders users bring), Fashion-MNIST and CelebA in their
official layouts, and attribute morphs from their labels."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import SHARED_DATA, compose_tool, train_in_process
from tests.photo_fixtures import photo, save_jpeg, write_bad_files, write_celeba, write_utkface
from vae_lightning.api import attribute_direction
from vae_lightning.core.errors import ConfigErrors, ConfigValueError, DataNotFoundError, VAELightningError
from vae_lightning.data.celeba import CelebADataModule, read_attributes
from vae_lightning.data.folder import ROOT_LABEL, ImageFolderDataModule
from vae_lightning.data.in_memory import Attribute
from vae_lightning.data.mnist import MNISTDataModule
from vae_lightning.morph import morph

TINY = ["dataset.image_size=16", "model.channels=[16,32]", "model.latent_dim=4", "dataset.batch_size=8"]
QUICK = ["trainer.max_epochs=1", "dataset.min_batches_per_epoch=2", "~callbacks.diagnostics", "eval.nll_samples=2"]


def folder_module(root, tmp_path, **kwargs) -> ImageFolderDataModule:
    dm = ImageFolderDataModule(str(root), str(tmp_path / "cache"), image_size=16, batch_size=4, **kwargs)
    dm.setup("fit")
    return dm


def sizes(dm) -> int:
    return len(dm.train_set) + len(dm.val_set) + len(dm.test_set)


def write_classes(root, n_classes: int, per_class: int, size=(40, 30)):
    for c in range(n_classes):
        for i in range(per_class):
            save_jpeg(photo(*size, seed=c * 1000 + i), root / f"class_{c:03d}" / f"{i}.jpg")
    return root


def write_mixed(root):
    """Every format and mode a user's folder holds, at mixed sizes, and the files that are not photos."""
    root.mkdir(parents=True)
    save_jpeg(photo(300, 200, 1), root / "wide.jpg")
    save_jpeg(photo(60, 90, 2).convert("L"), root / "grey_tall.jpeg")
    rgba = photo(64, 64, 3).convert("RGBA")
    rgba.putalpha(128)
    rgba.save(root / "alpha.png")
    photo(50, 50, 4).convert("P", palette=Image.Palette.ADAPTIVE).save(root / "palette.gif")
    photo(70, 40, 5).save(root / "photo.webp")
    photo(33, 33, 6).save(root / "photo.bmp")
    photo(80, 80, 7).save(root / "photo.tiff")
    bad = write_bad_files(root / "odd")  # 3 unreadable (skipped), CMYK, 16-bit and rotated (converted)
    (root / "README.txt").write_text("photos of my cat\n")
    (root / "labels.csv").write_text("name,label\n")
    mask = np.zeros((64, 64), np.uint8)
    mask[10:30] = 1
    Image.fromarray(mask).save(root / "photo_mask.png")
    (root / "masks").mkdir()
    save_jpeg(photo(64, 64, 8), root / "masks" / "m.jpg")
    return root, bad


def test_a_flat_folder_of_mixed_images_keeps_the_photos_skips_and_counts_the_rest(tmp_path, caplog):
    root, _ = write_mixed(tmp_path / "mine")
    with caplog.at_level(logging.INFO):
        dm = folder_module(root, tmp_path)
    assert sizes(dm) == 7 + 3  # seven formats, and the CMYK, 16-bit and rotated files converted
    assert "skipped 3 of 13 files" in caplog.text  # empty, truncated, text named .jpg; not the mask or the README
    assert dm.class_names == {0: ROOT_LABEL, 1: "odd"}  # the first sub-folder is the label
    images, _ = dm.train_set.__getitems__(list(range(len(dm.train_set))))
    assert images.shape[1:] == (3, 16, 16)


def test_pad_keeps_the_whole_image_and_crop_its_centre(tmp_path):
    wide = np.full((20, 80, 3), 200, np.uint8)  # a bright wide image
    (tmp_path / "w").mkdir()
    for i in range(3):
        Image.fromarray(wide).save(tmp_path / "w" / f"{i}.png")
    padded = folder_module(tmp_path / "w", tmp_path / "p", fit="pad").train_set.images
    cropped = folder_module(tmp_path / "w", tmp_path / "c", fit="crop").train_set.images
    assert padded[0, :, 0].max() == 0 and padded[0, :, 8].min() > 150  # black bars above and below, image between
    assert cropped.min() > 150  # the centre square is all image
    with pytest.raises(ConfigErrors, match="fit"):
        ImageFolderDataModule(str(tmp_path / "w"), str(tmp_path), fit="stretch")
    with pytest.raises(ConfigErrors) as bad:  # not read as true
        ImageFolderDataModule(str(tmp_path / "w"), str(tmp_path), grayscale="maybe")
    assert [problem.key for problem in bad.value.problems] == ["grayscale"]
    with pytest.raises(ConfigErrors) as bad:
        MNISTDataModule(str(tmp_path / "mnist"), download="no")
    assert [problem.key for problem in bad.value.problems] == ["download"]


ODD_FOLDERS = {
    "one class, flat": lambda root: write_classes(root, 1, 12) / "class_000",
    "200 classes": lambda root: write_classes(root, 200, 2, size=(20, 20)),
    "lopsided: 30 and 2": lambda root: (write_classes(root / "a", 1, 30), write_classes(root / "b", 1, 2), root)[-1],
    "mixed sizes, modes, text files and masks": lambda root: write_mixed(root)[0],
}


@pytest.mark.parametrize("case", list(ODD_FOLDERS))
def test_odd_folders_train(case, tmp_path):
    root = ODD_FOLDERS[case](tmp_path / "folder")
    train_in_process(["dataset=images", f"dataset.root={root}", *TINY, *QUICK], tmp_path / "run")
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["status"] == "completed"


def test_a_symlinked_tree_is_followed_and_a_link_loop_ends(tmp_path):
    write_classes(tmp_path / "elsewhere", 2, 4)
    root = tmp_path / "linked"
    root.mkdir()
    (root / "cats").symlink_to(tmp_path / "elsewhere" / "class_000")
    (root / "dogs").symlink_to(tmp_path / "elsewhere" / "class_001")
    (root / "cats" / "again").symlink_to(root)  # a loop
    dm = folder_module(root, tmp_path)
    assert sizes(dm) == 8 and set(dm.class_names.values()) == {"cats", "dogs"}


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda root: root, "does not exist"),
        (lambda root: (root.mkdir(), (root / "notes.txt").write_text("x"), root)[-1], "holds no images"),
        (lambda root: save_jpeg(photo(30, 30, 0), root / "only.jpg").parent, "at least 3 images are needed"),
    ],
)
def test_a_folder_that_cannot_train_says_why_in_one_message(make, message, tmp_path):
    root = make(tmp_path / "folder")
    with pytest.raises(VAELightningError, match=message) as error:
        train_in_process(["dataset=images", f"dataset.root={root}", *TINY, *QUICK], tmp_path / "run")
    assert str(root) in str(error.value) or "images are needed" in str(error.value)
    if "exist" in message:
        assert "dataset.root" in str(error.value)  # how to bring one's own data


def test_the_dogs_plain_folder_is_read_as_an_image_folder(tmp_path):
    from vae_lightning.data.dogs import DogsDataModule

    write_classes(tmp_path / "dogs", 2, 5)
    save_jpeg(photo(40, 40, 99), tmp_path / "dogs" / "loose.jpg")
    dm = DogsDataModule(str(tmp_path / "dogs"), str(tmp_path / "cache"), image_size=16)
    dm.setup("fit")
    assert sizes(dm) == 11 and set(dm.class_names.values()) == {"class_000", "class_001", "dog"}


# -- Fashion-MNIST ---------------------------------------------------------------------------------------------
@pytest.fixture
def shared_fashion_dir(tmp_path):
    source = SHARED_DATA / "fashion_mnist_t10k_first500"
    if not source.is_dir():
        pytest.skip(f"{source} is not present")
    folder = tmp_path / "fashion"
    folder.mkdir()
    for kind in ("images-idx3", "labels-idx1"):
        real = source / f"t10k-{kind}-ubyte.gz"
        (folder / real.name).symlink_to(real)
        (folder / f"train-{kind}-ubyte.gz").symlink_to(real)  # a valid subset under the training names
    return folder


def test_the_fashion_mnist_preset_trains_on_the_real_sample(shared_fashion_dir, tmp_path):
    args = ["experiment=fashion_mnist", f"dataset.root={shared_fashion_dir}", "debug=fast", "eval.nll_samples=5"]
    train_in_process([*args, "~callbacks.diagnostics"], tmp_path / "run")
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["test/nll"] > 0
    from vae_lightning.run.checkpoints import load_module

    module = load_module(tmp_path / "run" / "checkpoints" / "last.ckpt")
    assert module.hparams["data"]["_target_"].endswith("FashionMNISTDataModule")
    assert module.hparams["data"]["binarize"]["_target_"].endswith("DynamicBinarization")


def test_fashion_mnist_missing_files_name_the_data_set_and_the_way_to_get_them(tmp_path):
    from vae_lightning.data.mnist import FashionMNISTDataModule

    dm = FashionMNISTDataModule(str(tmp_path / "nowhere"), download=False)
    with pytest.raises(DataNotFoundError, match=r"Fashion-MNIST files are missing in .*nowhere.*dataset.download=true"):
        dm.prepare_data()
    assert FashionMNISTDataModule.class_names[9] == "Ankle boot"


# -- CelebA ----------------------------------------------------------------------------------------------------
CELEBA = SHARED_DATA / "celeba"


def test_the_real_attribute_file_parses(tmp_path):
    if not CELEBA.is_dir():
        pytest.skip(f"{CELEBA} is not present")
    names, rows = read_attributes(CELEBA / "list_attr_celeba.txt")
    assert len(names) == 40 and names[0] == "5_o_Clock_Shadow" and "Smiling" in names
    assert sorted(rows) == [f"{i:06d}.jpg" for i in range(1, 11)] and set(rows["000001.jpg"]) == {0, 1}


def test_celeba_uses_the_official_partition_and_its_attributes(tmp_path):
    root = write_celeba(tmp_path / "celeba", rows_for=10)
    dm = CelebADataModule(str(root), str(tmp_path / "cache"), label="Smiling", image_size=16, batch_size=4)
    dm.setup("fit")
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (4, 4, 4)  # partition 0, 1, 2 in turn
    assert dm.class_names == {0: "not Smiling", 1: "Smiling"}
    attributes = dm.attributes(dm.train_set)
    assert len(attributes) == 40 and not attributes["Smiling"].numeric
    smiling = attributes["Smiling"].values
    assert torch.isnan(smiling).sum() == 1  # image 12 has no row: unknown (image 11 is in validation)
    with pytest.raises(ConfigValueError, match=r"dataset\.label"):
        bad = CelebADataModule(str(root), str(tmp_path / "cache"), label="Smile", image_size=16)
        bad.setup("fit")


def test_celeba_trains_on_the_real_sample_and_a_missing_folder_says_where_to_get_it(tmp_path, caplog):
    if not CELEBA.is_dir():
        pytest.skip(f"{CELEBA} is not present")
    with caplog.at_level(logging.WARNING):
        train_in_process(["dataset=celeba", f"dataset.root={CELEBA}", *TINY, *QUICK], tmp_path / "run")
    assert "official partition leaves a split empty" in caplog.text  # the ten sample images are all training ones
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["status"] == "completed"
    with pytest.raises(ConfigErrors, match=r"img_align_celeba.*mmlab.ie.cuhk.edu.hk"):
        CelebADataModule(str(tmp_path / "nowhere"), str(tmp_path))


# -- attribute morphs ------------------------------------------------------------------------------------------
def test_attribute_directions_have_their_closed_forms():
    codes = torch.tensor([[1.0, 0.0], [3.0, 2.0], [0.0, 5.0], [2.0, 1.0]])
    present = Attribute(torch.tensor([1.0, 1.0, 0.0, float("nan")]))
    direction, _ = attribute_direction(codes, present, "x")
    assert torch.allclose(direction, torch.tensor([2.0, 1.0]) - torch.tensor([0.0, 5.0]))
    age = torch.tensor([10.0, 20.0, 30.0, 40.0])
    line = torch.stack([0.5 * age + 1, -0.1 * age], 1)  # codes exactly linear in age
    direction, what = attribute_direction(line, Attribute(age, numeric=True), "age")
    assert torch.allclose(direction, torch.tensor([0.5, -0.1]) * age.std(), atol=1e-5) and "standard deviation" in what


def frames(gif) -> int:
    from PIL import ImageSequence

    return len({frame.convert("RGB").tobytes() for frame in ImageSequence.Iterator(Image.open(gif))})


def test_morph_attribute_smiling_on_celeba_and_older_on_utkface(tmp_path):
    celeba = write_celeba(tmp_path / "celeba")
    faces = write_utkface(tmp_path / "utkface", n=24, bad=False)
    for name, data in (("celeba", celeba), ("utkface", faces)):
        train_in_process([f"dataset={name}", f"dataset.root={data}", *TINY, *QUICK], tmp_path / name)
    for name, attribute in (("celeba", "Smiling"), ("utkface", "age")):
        checkpoint = tmp_path / name / "checkpoints" / "last.ckpt"
        args = [f"ckpt_path={checkpoint}", f"dataset.root={tmp_path / name}", "mode=attribute"]
        args = [*args, f"attribute={attribute}", "steps=4", "scale=3"]
        gif, strip = morph(compose_tool("morph", [*args, f"output={tmp_path / name}.gif"]))
        assert frames(gif) >= 2 and strip.is_file()  # the decodes move (a barely trained decoder: not every step)
        assert checkpoint.with_name(f"last.ckpt.attribute_{attribute}.pt").is_file()  # cached per attribute
    with pytest.raises(ConfigValueError, match=r"attribute=.*Smile.*age, female, male, White"):
        morph(
            compose_tool(
                "morph", [f"ckpt_path={checkpoint}", f"dataset.root={faces}", "mode=attribute", "attribute=Smile"]
            )
        )
