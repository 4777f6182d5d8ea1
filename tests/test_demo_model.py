"""The web demo's model side (no Gradio needed): an upload is cropped and encoded once, sliders only decode, a
bad upload is a message, GIF and strip are written, and the 2-D grid's pixel <-> code mapping is consistent."""

from __future__ import annotations

import pytest
from PIL import Image

from tests.conftest import trained_data
from vae_lightning.api import TrainedVAE
from vae_lightning.demo.model import DemoInputError, DemoModel


@pytest.fixture(scope="module")
def demo_model(faces_dogs_run):
    vae = TrainedVAE.load(faces_dogs_run)
    return DemoModel(vae, vae.datamodule(trained_data(faces_dogs_run)), None, find_face=True)


def test_a_photo_is_encoded_once_and_the_slider_decodes(demo_model, tmp_path):
    file = tmp_path / "friend.png"
    Image.new("RGB", (300, 200), (120, 90, 60)).save(file)
    photo = demo_model.photo(file, "friend.png")
    assert photo.loc.shape == (demo_model.vae.latent_dim,)
    assert "No face found" in photo.message  # a flat picture: the centre square, and the page says so
    near, far = demo_model.along(photo, "dog", 0.0), demo_model.along(photo, "dog", 1.0)
    assert near.size == far.size and near.size[0] >= 256
    gif, png = demo_model.write_morph(
        demo_model.along_frames(photo, "dog", 1.0, 4), [photo.crop.pixels], tmp_path / "out", "friend_dog", 80, 800
    )
    assert gif.is_file() and png.is_file()


@pytest.mark.parametrize("content", [b"not an image", b"\xff\xd8\xff\xe0" + b"\0" * 40])
def test_a_bad_upload_is_a_message(demo_model, tmp_path, content):
    file = tmp_path / "bad.jpg"
    file.write_bytes(content)
    with pytest.raises(DemoInputError, match=r"bad\.jpg could not be read"):
        demo_model.photo(file, "bad.jpg")
    with pytest.raises(DemoInputError, match="Upload a photo"):
        demo_model.photo(None)


def test_the_grid_mapping_inverts(demo_model):
    demo_model.grid_range = ((-2.0, 2.0), (-1.0, 3.0))
    size = (720, 720)
    for code in [(-2.0, 3.0), (0.0, 1.0), (1.5, -0.5)]:
        x, y = demo_model.grid_pixel(code, size)
        assert demo_model.grid_code((x, y), size) == pytest.approx(code)
    assert demo_model.grid_code((size[0] / 15 / 2, size[1] / 15 / 2), size) == pytest.approx((-2.0, 3.0))


def test_a_one_class_folder_opens_without_the_attribute_tab_and_says_why(tmp_path):
    """Five photos of one class, a 2-D latent: no image lacks the only attribute, so the page has no attribute
    tab (and says why) instead of failing at start; the 2-D grid still works."""
    import shutil

    from tests.conftest import compose_tool, train_in_process
    from tests.photo_fixtures import real_faces
    from vae_lightning.demo.main import load_model

    faces = real_faces()[:5]
    if len(faces) < 5:
        pytest.skip("the shared photos are not present")
    (tmp_path / "photos" / "friends").mkdir(parents=True)
    for face in faces:
        shutil.copy(face, tmp_path / "photos" / "friends")
    args = ["dataset=images", f"dataset.root={tmp_path / 'photos'}", "model.latent_dim=2", "debug=fast"]
    train_in_process([*args, "~callbacks.diagnostics"], tmp_path / "run")
    args = [f"ckpt_path={tmp_path / 'run' / 'checkpoints' / 'last.ckpt'}", f"dataset.root={tmp_path / 'photos'}"]
    model = load_model(compose_tool("demo", args))
    assert model.attributes == [] and "no image without it" in model.data_problem
    assert model.grid((0.0, 0.0)).size == model.grid_picture_size
