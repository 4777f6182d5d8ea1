import gzip
import hashlib

import pytest
import torch

from tests.conftest import write_mnist
from vae_lightning.core.errors import ConfigErrors, DataFormatError, DataNotFoundError
from vae_lightning.data.binarize import DynamicBinarization, StaticBinarization
from vae_lightning.data.digits import DigitsDataModule
from vae_lightning.data.mnist import FashionMNISTDataModule, MNISTDataModule


def test_digits_splits_are_seeded_and_disjoint():
    dm = DigitsDataModule(batch_size=32)
    dm.setup("fit")
    sizes = (len(dm.train_set), len(dm.val_set), len(dm.test_set))
    assert sizes == (1437, 180, 180)
    images, labels = next(iter(dm.train_dataloader()))
    assert images.shape == (32, 1, 8, 8) and labels.dtype == torch.long
    assert float(images.min()) >= 0.0 and float(images.max()) <= 1.0
    again = DigitsDataModule(batch_size=32)
    again.setup("fit")
    torch.testing.assert_close(again.val_set.images, dm.val_set.images)
    other = DigitsDataModule(batch_size=32, split_seed=1)
    other.setup("fit")
    assert not torch.equal(other.val_set.images, dm.val_set.images)


def test_a_batch_is_fetched_with_one_index():
    dm = DigitsDataModule(batch_size=10)
    dm.setup("fit")
    images, labels = dm.train_set.__getitems__([3, 1, 2])
    assert torch.equal(images[1], dm.train_set.images[1]) and labels.shape == (3,)


def test_mnist_reads_gzip_and_plain_files(tmp_path):
    for compress in (True, False):
        folder = write_mnist(tmp_path / str(compress), n_train=100, n_test=30, compress=compress)
        dm = MNISTDataModule(root=str(folder), download=False, batch_size=16, val_fraction=0.2)
        dm.prepare_data()
        dm.setup("fit")
        assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (80, 20, 30)
        assert dm.train_set.images.shape[1:] == (1, 28, 28)
        assert float(dm.train_set.images.max()) == 1.0


def test_seed_pixel_scale_divides_by_256(mnist_dir):
    dm = MNISTDataModule(root=str(mnist_dir), download=False, pixel_scale=256.0)
    dm.setup("fit")
    assert float(dm.train_set.images.max()) == pytest.approx(255 / 256)


def test_binarisation(mnist_dir):
    static = MNISTDataModule(root=str(mnist_dir), download=False, binarize=StaticBinarization())
    static.setup("fit")
    assert set(static.train_set.images.unique().tolist()) <= {0.0, 1.0}
    dynamic = MNISTDataModule(root=str(mnist_dir), download=False, binarize=DynamicBinarization())
    dynamic.setup("fit")
    first, _ = dynamic.train_set.__getitems__(list(range(50)))
    second, _ = dynamic.train_set.__getitems__(list(range(50)))
    assert set(first.unique().tolist()) <= {0.0, 1.0}
    assert not torch.equal(first, second)  # drawn afresh at every fetch
    assert set(dynamic.val_set.images.unique().tolist()) <= {0.0, 1.0}  # drawn once


def test_missing_folder_names_the_path_and_the_files(tmp_path):
    dm = MNISTDataModule(root=str(tmp_path / "nowhere"), download=False)
    with pytest.raises(DataNotFoundError) as error:
        dm.prepare_data()
    assert str(tmp_path / "nowhere") in str(error.value)
    assert "train-images-idx3-ubyte.gz" in str(error.value) and "dataset.download" in str(error.value)


def test_mismatched_counts_are_rejected(tmp_path):
    folder = write_mnist(tmp_path / "m", n_train=50, n_test=20)
    (folder / "train-labels-idx1-ubyte.gz").write_bytes((folder / "t10k-labels-idx1-ubyte.gz").read_bytes())
    with pytest.raises(DataFormatError, match="50 images but"):
        MNISTDataModule(root=str(folder), download=False).setup("fit")


def test_a_batch_larger_than_the_training_split_is_cut_to_it_with_a_warning(mnist_dir, caplog):
    dm = MNISTDataModule(root=str(mnist_dir), download=False, batch_size=10_000)
    dm.setup("fit")
    assert dm.batch_size == len(dm.train_set) == 108
    assert "dataset.batch_size=10000 is larger than the training split (108 samples)" in caplog.text
    assert len(next(iter(dm.train_dataloader()))[0]) == 108


def test_bad_values_are_reported_together():
    with pytest.raises(ConfigErrors) as error:
        DigitsDataModule(batch_size=0, val_fraction=2.0, test_fraction=-1)
    assert [p.key for p in error.value.problems] == ["batch_size", "val_fraction", "test_fraction"]
    assert next(p.key for p in error.value.under("dataset").problems) == "dataset.batch_size"


@pytest.fixture
def mirror(tmp_path, serve):
    """A loopback HTTP server serving generated MNIST files."""
    served = write_mnist(tmp_path / "served")
    return served, serve(served)


@pytest.mark.parametrize("kind", [MNISTDataModule, FashionMNISTDataModule])
def test_download_verifies_md5_and_falls_back_to_the_second_mirror(kind, tmp_path, monkeypatch, mirror):
    served, url = mirror
    md5s = {key: (name, hashlib.md5((served / name).read_bytes()).hexdigest()) for key, (name, _) in kind.files.items()}
    monkeypatch.setattr(kind, "files", md5s)
    monkeypatch.setattr(kind, "mirrors", ("http://127.0.0.1:9/", url))  # the first refuses connections
    target = tmp_path / "downloaded"
    dm = kind(root=str(target), download=True)
    dm.prepare_data()
    assert sorted(p.name for p in target.iterdir()) == sorted(name for name, _ in md5s.values())
    dm.setup("fit")
    assert len(dm.test_set) == 40


@pytest.mark.parametrize("kind", [MNISTDataModule, FashionMNISTDataModule])
def test_download_with_wrong_md5_keeps_no_file(kind, tmp_path, monkeypatch, mirror):
    _, url = mirror
    monkeypatch.setattr(kind, "mirrors", (url,))  # serves files whose MD5 differs from the published ones
    target = tmp_path / "downloaded"
    with pytest.raises(DataNotFoundError, match="MD5 mismatch"):
        kind(root=str(target), download=True).prepare_data()
    assert list(target.iterdir()) == []


def test_gzip_detection_is_by_content(tmp_path):
    folder = write_mnist(tmp_path / "m", compress=False)
    raw = (folder / "t10k-labels-idx1-ubyte").read_bytes()
    (folder / "t10k-labels-idx1-ubyte").write_bytes(gzip.compress(raw))
    dm = MNISTDataModule(root=str(folder), download=False)
    dm.setup("fit")
    assert len(dm.test_set) == 40
