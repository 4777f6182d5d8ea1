"""One photo of one's own as a model's input: upright, cropped to the face as UTKFace frames its faces (or to the
centre square), resized with antialiasing, grey or colour as the model was trained.

Face detection is OpenCV's bundled frontal-face Haar cascade (`pip install "vae_lightning[faces]"`), run on a
copy at most `DETECT_SIDE` pixels wide, so that a large photo is searched as quickly as a small one;
with several faces the largest is used, and without OpenCV, or when no face is found, the centre square. Each
of these is said in the crop's `note` (and logged), so that a tool or a page can show why a crop is what it is.
A large JPEG is decoded at a reduced scale (the decoder's DCT scaling) that leaves its short side at least
`DECODE_SIDE` pixels: every face the detector can find still spans well over the model's 64 or 128 pixels.
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from vae_lightning.core.errors import DataNotFoundError
from vae_lightning.data.images import Box, centre_square, to_8bit

log = logging.getLogger(__name__)

# Where UTKFace's aligned faces sit in their frame, as OpenCV's frontal-face detector sees them (the median
# over the real sample faces): the detected box is this fraction of the frame's side, its centre this far down.
FACE_FRACTION = 0.86
FACE_CENTRE_Y = 0.44
DETECT_SIDE = 800  # pixels: the longer side of the copy the detector searches
DECODE_SIDE = 1024  # pixels: a JPEG's short side is decoded at no less than this


def detect_faces(image: Image.Image) -> list[tuple[int, int, int, int]] | None:
    """The frontal faces (x, y, w, h) in `image`'s pixels that OpenCV's bundled Haar cascade finds, largest
    first; None without OpenCV."""
    try:  # optional dependency, imported where it is used
        import cv2
        import numpy as np
    except ImportError:
        return None
    factor = max(1, math.ceil(max(image.size) / DETECT_SIDE))
    grey = image.convert("L")
    grey = grey.reduce(factor) if factor > 1 else grey
    pixels = np.asarray(grey)
    side = min(pixels.shape)
    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    found = cascade.detectMultiScale(pixels, scaleFactor=1.1, minNeighbors=5, minSize=(side // 8, side // 8))
    faces = [tuple(int(v * factor) for v in box) for box in found]
    return sorted(faces, key=lambda box: box[2] * box[3], reverse=True)


def face_square(face: tuple[int, int, int, int], width: int, height: int) -> Box:
    """The square crop that frames `face` as UTKFace frames its faces, shifted (or shrunk) into the image."""
    x, y, w, h = face
    side = min(w / FACE_FRACTION, width, height)
    left = min(max(x + w / 2 - side / 2, 0.0), width - side)
    top = min(max(y + h / 2 - FACE_CENTRE_Y * side, 0.0), height - side)
    return left, top, left + side, top + side


@dataclass
class Crop:
    """A photo as the model's input, with where it came from: `pixels` (C, H, W) in [0, 1]; `box` the square of
    the upright photo it shows (left, top, right, bottom); `faces` how many faces were found (None: not looked
    for, or no OpenCV); `note` what a user should know about the crop, or None."""

    pixels: torch.Tensor
    box: Box
    faces: int | None
    note: str | None
    size: tuple[int, int]  # the upright photo's width and height as decoded


def face_crop(image: Image.Image, input_shape: tuple[int, ...], find_face: bool, name: str = "photo") -> Crop:
    """A PIL image as the model's input: upright (EXIF), the largest face's square (`find_face`) or the centre
    square, resized with antialiasing to the model's size, grey or colour as `input_shape` says."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow warns about odd EXIF blocks; we only need the pixels
        image = to_8bit(ImageOps.exif_transpose(image), grayscale=False)
    width, height = image.size
    box, faces, note = centre_square(width, height), None, None
    if find_face:
        found = detect_faces(image)
        if found is None:
            note = 'OpenCV is not installed (pip install "vae_lightning[faces]"): the centre square of the photo.'
        elif not found:
            faces, note = 0, "No face found: the centre square of the photo."
        else:
            faces, box = len(found), face_square(found[0], width, height)
            note = f"{len(found)} faces found: the largest." if len(found) > 1 else None
    if note:
        log.warning("%s: %s", name, note)
    channels, size = input_shape[0], input_shape[-1]
    small = image.resize((size, size), Image.Resampling.BILINEAR, box=box, reducing_gap=2.0)
    if channels == 1:
        small = small.convert("L")
    pixels = torch.frombuffer(bytearray(small.tobytes()), dtype=torch.uint8).view(size, size, channels)
    return Crop(pixels.permute(2, 0, 1).float().div(255), box, faces, note, (width, height))


def photo_tensor(
    image: Image.Image, input_shape: tuple[int, ...], find_face: bool, name: str = "photo"
) -> torch.Tensor:
    """A PIL image as the model's input (C, H, W) in [0, 1] (see `face_crop`)."""
    return face_crop(image, input_shape, find_face, name).pixels


def open_photo(path: str | Path, input_shape: tuple[int, ...], find_face: bool, name: str | None = None) -> Crop:
    """The photo file `path` as the model's input (see `face_crop`); a file that is missing, not an image,
    truncated or too large for Pillow is one DataNotFoundError naming it (as `name`, default the path)."""
    file = Path(path).expanduser()
    name = str(path) if name is None else name
    if not file.is_file():
        raise DataNotFoundError(f"The image {name} does not exist.")
    try:
        with Image.open(file) as opened:
            if opened.format == "JPEG":
                opened.draft(None, (DECODE_SIDE, DECODE_SIDE))
            opened.load()
            return face_crop(opened, input_shape, find_face, name)
    except UnidentifiedImageError:
        raise DataNotFoundError(
            f"The image {name} could not be read: it is not a JPEG, PNG, WebP or other image file."
        ) from None
    except Image.DecompressionBombError as bad:
        raise DataNotFoundError(
            f"The image {name} could not be read: it is too large to open safely ({bad})."
        ) from None
    except (OSError, ValueError, SyntaxError) as bad:
        raise DataNotFoundError(f"The image {name} could not be read ({type(bad).__name__}: {bad}).") from None


def read_photo(path: str | Path, input_shape: tuple[int, ...], find_face: bool) -> torch.Tensor:
    """The photo file `path` as the model's input (C, H, W) in [0, 1] (see `open_photo`)."""
    return open_photo(path, input_shape, find_face).pixels
