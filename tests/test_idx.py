import gzip

import numpy as np
import pytest

from tests.conftest import SHARED_DATA
from vae_lightning.core.errors import DataFormatError
from vae_lightning.data import idx


def test_round_trip_of_images_and_labels(tmp_path):
    images = np.arange(3 * 28 * 28, dtype=np.uint32).astype(np.uint8).reshape(3, 28, 28)
    labels = np.array([7, 0, 9], dtype=np.uint8)
    (tmp_path / "i").write_bytes(idx.encode_idx(images))
    (tmp_path / "l.gz").write_bytes(gzip.compress(idx.encode_idx(labels)))
    np.testing.assert_array_equal(idx.read_idx(tmp_path / "i", idx.IMAGES_MAGIC), images)
    np.testing.assert_array_equal(idx.read_idx(tmp_path / "l.gz", idx.LABELS_MAGIC), labels)


def test_header_is_big_endian_with_the_official_magic():
    data = idx.encode_idx(np.zeros((2, 28, 28), np.uint8))
    assert data[:16] == bytes.fromhex("00000803000000020000001c0000001c")


def test_truncated_file_is_rejected_with_the_path():
    data = idx.encode_idx(np.zeros((4, 28, 28), np.uint8))[:-10]
    with pytest.raises(DataFormatError, match="truncated"):
        idx.parse_idx(data, idx.IMAGES_MAGIC, source="/some/file")


def test_truncated_gzip_is_rejected(tmp_path):
    path = tmp_path / "x.gz"
    path.write_bytes(gzip.compress(idx.encode_idx(np.zeros((4, 28, 28), np.uint8)))[:-20])
    with pytest.raises(DataFormatError, match="damaged gzip"):
        idx.read_idx(path, idx.IMAGES_MAGIC)


def test_wrong_magic_and_extra_bytes_are_rejected():
    labels = idx.encode_idx(np.zeros(5, np.uint8))
    with pytest.raises(DataFormatError, match="magic number 2049, expected 2051"):
        idx.parse_idx(labels, idx.IMAGES_MAGIC)
    with pytest.raises(DataFormatError, match="longer than its header"):
        idx.parse_idx(labels + b"\0", idx.LABELS_MAGIC)
    with pytest.raises(DataFormatError, match="too short"):
        idx.parse_idx(b"\0\0", idx.LABELS_MAGIC)


def test_real_mnist_sample_parses():
    folder = SHARED_DATA / "mnist_t10k_first500"
    if not folder.is_dir():
        pytest.skip(f"{folder} is not present")
    images = idx.read_idx(folder / "t10k-images-idx3-ubyte.gz", idx.IMAGES_MAGIC)
    labels = idx.read_idx(folder / "t10k-labels-idx1-ubyte.gz", idx.LABELS_MAGIC)
    assert images.shape == (500, 28, 28) and labels.shape == (500,)
    assert labels[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]  # the well-known first test labels
    assert images.max() == 255 and images[0, 0, 0] == 0
