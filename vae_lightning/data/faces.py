"""One photo of one's own as a model's input: upright, cropped to the face as UTKFace frames its faces (or to the
centre square), resized with antialiasing, grey or colour as the model was trained.

Face detection is OpenCV's bundled frontal-face Haar cascade (`pip install "vae_lightning[faces]"`); without
OpenCV, or when no face is found, the centre square is used, with a warning.
"""

from __future__ import annotations

import logging
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


def detect_face(image: Image.Image) -> tuple[int, int, int, int] | None:
    """The largest frontal face (x, y, w, h) that OpenCV's bundled Haar cascade finds, or None."""
    try:  # optional dependency, imported where it is used
        import cv2
        import numpy as np
    except ImportError:
        log.warning('OpenCV is not installed (pip install "vae_lightning[faces]"): using the centre of the photo.')
        return None
    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    grey = np.asarray(image.convert("L"))
    side = min(grey.shape)
    faces = cascade.detectMultiScale(grey, scaleFactor=1.1, minNeighbors=5, minSize=(side // 8, side // 8))
    if len(faces) == 0:
        return None
    x, y, w, h = max(faces, key=lambda box: box[2] * box[3])
    return int(x), int(y), int(w), int(h)


def face_square(face: tuple[int, int, int, int], width: int, height: int) -> Box:
    """The square crop that frames `face` as UTKFace frames its faces, shifted (or shrunk) into the image."""
    x, y, w, h = face
    side = min(w / FACE_FRACTION, width, height)
    left = min(max(x + w / 2 - side / 2, 0.0), width - side)
    top = min(max(y + h / 2 - FACE_CENTRE_Y * side, 0.0), height - side)
    return left, top, left + side, top + side


def photo_tensor(
    image: Image.Image, input_shape: tuple[int, ...], find_face: bool, name: str = "photo"
) -> torch.Tensor:
    """A PIL image as the model's input (C, H, W) in [0, 1]: upright (EXIF), the face square (`find_face`) or the
    centre square, resized with antialiasing to the model's size, grey or colour as `input_shape` says."""
    image = to_8bit(ImageOps.exif_transpose(image), grayscale=False)
    width, height = image.size
    box = centre_square(width, height)
    if find_face:
        face = detect_face(image)
        if face is None:
            log.warning("No face found in %s: using the centre square of the photo.", name)
        else:
            box = face_square(face, width, height)
    channels, size = input_shape[0], input_shape[-1]
    image = image.resize((size, size), Image.Resampling.BILINEAR, box=box, reducing_gap=2.0)
    if channels == 1:
        image = image.convert("L")
    pixels = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8).view(size, size, channels)
    return pixels.permute(2, 0, 1).float().div(255)


def read_photo(path: str | Path, input_shape: tuple[int, ...], find_face: bool) -> torch.Tensor:
    """The photo file `path` as the model's input (C, H, W) in [0, 1] (see `photo_tensor`)."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise DataNotFoundError(f"The image {path} does not exist.")
    try:
        with Image.open(file) as opened:
            opened.load()
            return photo_tensor(opened, input_shape, find_face, str(path))
    except (OSError, UnidentifiedImageError, ValueError) as bad:
        raise DataNotFoundError(f"The image {path} could not be read ({type(bad).__name__}: {bad}).") from None
