"""Parser for the IDX format of the MNIST files (optionally gzip-compressed).

Layout: two zero bytes, a type code (0x08 = uint8), the number of dimensions, then each dimension as a
big-endian uint32, then the data row-major. Images are `>I 2051, count, rows, cols`; labels `>I 2049, count`.
The file's length must match its header exactly; any count is accepted, so subsets are valid files.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np

from vae_lightning.core.errors import DataFormatError

IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049
_UINT8 = 0x08
_GZIP_MAGIC = b"\x1f\x8b"


def read_bytes(path: Path) -> bytes:
    """The file's bytes, decompressed when it is gzip (detected by content, not by name)."""
    try:
        raw = Path(path).read_bytes()
    except OSError as bad:
        raise DataFormatError(
            f"{path} cannot be read ({bad.strerror or bad}). Check the file and its permissions."
        ) from None
    if not raw.startswith(_GZIP_MAGIC):
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as bad:
        raise DataFormatError(f"{path} is a damaged gzip file ({bad}). Delete it and fetch it again.") from None


def parse_idx(data: bytes, expected_magic: int, source: str = "<bytes>") -> np.ndarray:
    """The uint8 array stored in an IDX byte string whose magic number must be `expected_magic`."""
    if len(data) < 4:
        raise DataFormatError(f"{source} is too short to be an IDX file ({len(data)} bytes).")
    magic = struct.unpack(">I", data[:4])[0]
    if magic != expected_magic:
        raise DataFormatError(
            f"{source} has IDX magic number {magic}, expected {expected_magic} "
            f"({'images' if expected_magic == IMAGES_MAGIC else 'labels'}). Is it the right file?"
        )
    if data[2] != _UINT8:
        raise DataFormatError(f"{source} stores type code {data[2]:#04x}; only uint8 (0x08) is supported.")
    n_dims = data[3]
    header_size = 4 + 4 * n_dims
    if len(data) < header_size:
        raise DataFormatError(f"{source} is truncated inside its header.")
    shape = struct.unpack(f">{n_dims}I", data[4:header_size])
    expected = header_size + int(np.prod(shape, dtype=np.int64))
    if len(data) != expected:
        state = "truncated" if len(data) < expected else "longer than its header says"
        raise DataFormatError(
            f"{source} is {state}: its header promises shape {tuple(shape)} ({expected} bytes), "
            f"the file has {len(data)} bytes. Delete it and fetch it again."
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header_size).reshape(shape)


def read_idx(path: Path, expected_magic: int) -> np.ndarray:
    return parse_idx(read_bytes(path), expected_magic, source=str(path))


def encode_idx(array: np.ndarray) -> bytes:
    """The IDX bytes of a uint8 array: images (N, rows, cols) get magic 2051, labels (N,) magic 2049."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = struct.pack(">HBB", 0, _UINT8, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()
