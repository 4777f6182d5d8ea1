"""Decoding, cropping and resizing photos into small uint8 tensors, robust to the bad files real folders hold.

`decode_crop_resize` turns one file into a (C, size, size) uint8 array or a reason it was skipped:
- zero-byte, truncated or non-image files are skipped (the reason is kept and counted);
- CMYK, palette, alpha and 16-bit images are converted; EXIF orientation is applied;
- JPEGs are decoded in draft mode (the decoder's DCT scaling) at the smallest scale that still leaves the crop
  at least `size` pixels wide, which is what makes preprocessing fast;
- the crop box (a square in the stored image's pixels, or the centred square when None) is clipped to the
  image, then resized with an antialiasing filter; or (`Item.pad`) the whole image is resized into the square
  and padded with black;
- single-channel or palette images with a handful of values (segmentation masks, trimaps) are skipped: they
  are label maps, not photos.

`list_photos` lists the photos of a folder, leaving out the folders that data sets use for annotations, masks
and thumbnails.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff")
# folders that hold label maps, annotations or previews next to photos (Oxford-IIIT Pet's trimaps, ...)
NOT_PHOTO_FOLDERS = frozenset(
    {"annotations", "trimaps", "masks", "mask", "xmls", "segmentation", "segmentations", "thumbnails", "thumbs"}
)
MASK_COLOURS = 16  # a single-channel image with at most this many values is a mask or label map
Box = tuple[float, float, float, float]  # left, top, right, bottom in the stored image's pixels

# EXIF orientation -> the transpose that shows the photo upright (as ImageOps.exif_transpose does)
_ORIENTATION = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}

ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file is an error, not a grey half-image


@dataclass(frozen=True)
class Item:
    """One source image: its path, an optional crop box, and integer labels (e.g. age, breed)."""

    path: str
    box: Box | None = None
    labels: tuple[int, ...] = ()
    pad: bool = False  # resize the whole image into the square, padded with black, instead of cropping it


def square_around(box: Box, margin: float, width: int, height: int) -> Box:
    """The square centred on `box`, each side grown by `margin` times the box's longer side, then fitted
    inside the image (shifted, and shrunk only when the image is smaller than the square)."""
    left, top, right, bottom = box
    side = max(right - left, bottom - top) * (1.0 + 2.0 * margin)
    side = max(1.0, min(side, width, height))
    cx, cy = (left + right) / 2, (top + bottom) / 2
    x0 = min(max(cx - side / 2, 0.0), width - side)
    y0 = min(max(cy - side / 2, 0.0), height - side)
    return (x0, y0, x0 + side, y0 + side)


def centre_square(width: int, height: int) -> Box:
    side = min(width, height)
    x0, y0 = (width - side) / 2, (height - side) / 2
    return (x0, y0, x0 + side, y0 + side)


def to_8bit(image: Image.Image, grayscale: bool) -> Image.Image:
    """Any Pillow mode -> "L" or "RGB"; 16- and 32-bit images are scaled, not clipped."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or array.max() > 255 else 255.0
        image = Image.fromarray(np.clip(array / top * 255.0 + 0.5, 0, 255).astype(np.uint8))
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image)
    target = "L" if grayscale else "RGB"
    return image if image.mode == target else image.convert(target)


def decode_crop_resize(item: Item, size: int, grayscale: bool, margin: float = 0.0) -> np.ndarray | str:
    """(C, size, size) uint8, or the reason the file was skipped."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow warns about odd EXIF blocks; we only need the pixels
            with Image.open(item.path) as image:
                width, height = image.size
                stored_mode = image.mode  # before any draft decoding to grey
                box = (
                    centre_square(width, height) if item.box is None else square_around(item.box, margin, width, height)
                )
                if item.pad:
                    box = (0.0, 0.0, float(width), float(height))
                side = min(box[2] - box[0], box[3] - box[1]) if not item.pad else max(width, height)
                orientation = image.getexif().get(0x0112, 1) if hasattr(image, "getexif") else 1
                if image.format == "JPEG" and side > size:
                    scale = size / side  # the decoder may shrink by up to this much
                    image.draft("L" if grayscale else "RGB", (math.ceil(width * scale), math.ceil(height * scale)))
                    fx, fy = image.size[0] / width, image.size[1] / height
                    box = (box[0] * fx, box[1] * fy, min(box[2] * fx, image.size[0]), min(box[3] * fy, image.size[1]))
                image.load()
                if stored_mode in ("1", "L", "P") and image.getcolors(MASK_COLOURS) is not None:
                    return f"not a photo: {len(image.getcolors(MASK_COLOURS))} distinct values (a mask or label map?)"
                image = to_8bit(image, grayscale)
                if item.pad:  # upright first: the padding goes along the shown image's short side
                    if orientation in _ORIENTATION:
                        image = image.transpose(_ORIENTATION[orientation])
                    image = ImageOps.pad(image, (size, size), Image.Resampling.BILINEAR, color=0)
                else:
                    image = image.resize((size, size), Image.Resampling.BILINEAR, box=box, reducing_gap=2.0)
                    if orientation in _ORIENTATION:
                        image = image.transpose(_ORIENTATION[orientation])
                array = np.asarray(image, dtype=np.uint8)
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError, Image.DecompressionBombError) as bad:
        return f"{type(bad).__name__}: {bad}"
    array = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
    return np.array(array, dtype=np.uint8, order="C", copy=True)


def _is_photo(path: Path, root: Path) -> bool:
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        return False
    parts = path.relative_to(root).parts
    if any(part.startswith(".") for part in parts) or NOT_PHOTO_FOLDERS & {part.lower() for part in parts[:-1]}:
        return False
    return not any(word in path.stem.lower() for word in ("mask", "trimap")) and path.is_file()


def iter_photos(root: Path) -> Iterator[Path]:
    """The photo files under `root`, recursively (through symbolic links to folders, each real folder once, so a
    link loop ends), in no particular order: image files, without hidden ones, those under annotation, mask or
    thumbnail folders, and those named as masks."""
    seen: set[str] = set()
    for folder, subfolders, files in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:
            subfolders[:] = []
            continue
        seen.add(real)
        subfolders[:] = [d for d in subfolders if not d.startswith(".") and d.lower() not in NOT_PHOTO_FOLDERS]
        for name in files:
            path = Path(folder) / name
            if _is_photo(path, root):
                yield path


def list_photos(root: Path) -> list[Path]:
    """`iter_photos`, sorted."""
    return sorted(iter_photos(root))


def has_photos(root: Path) -> bool:
    return any(True for _ in iter_photos(root))
