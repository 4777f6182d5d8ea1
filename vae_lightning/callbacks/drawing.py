"""Fast pictures drawn with Pillow (a few milliseconds each, so they can be made every epoch): a labelled
scatter plot, and image grids with a caption under each cell."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from matplotlib import colormaps
from PIL import Image, ImageDraw, ImageFont

from vae_lightning.callbacks.grid import enlarge, make_grid, to_uint8_hwc

_FONT = ImageFont.load_default()
_MARGIN = 40


def colours(n: int) -> list[tuple[int, int, int]]:
    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [tuple(int(255 * c) for c in cmap(i % cmap.N)[:3]) for i in range(n)]


def scatter(
    points: np.ndarray,
    labels: np.ndarray,
    names: dict[int, str],
    axis_names: tuple[str, str],
    title: str,
    size: int = 560,
) -> np.ndarray:
    """An (H, W, 3) uint8 scatter plot of 2-D points coloured by label, with axes ranges and a legend."""
    image = Image.new("RGB", (size + 170, size + 2 * _MARGIN), "white")
    draw = ImageDraw.Draw(image)
    low, high = np.percentile(points, 0.5, axis=0), np.percentile(points, 99.5, axis=0)
    span = np.maximum(high - low, 1e-6)
    low, high = low - 0.05 * span, high + 0.05 * span
    plot = (points - low) / (high - low)
    xs = _MARGIN + plot[:, 0] * (size - _MARGIN)
    ys = _MARGIN + (1 - plot[:, 1]) * (size - _MARGIN)
    draw.rectangle([_MARGIN, _MARGIN, size, size], outline="black")
    classes = sorted(set(labels.tolist()))
    palette = dict(zip(classes, colours(len(classes)), strict=True))
    pixels = np.array(image)
    inside = (xs >= _MARGIN + 2) & (xs <= size - 2) & (ys >= _MARGIN + 2) & (ys <= size - 2)
    cols, rows = xs[inside].astype(int), ys[inside].astype(int)
    rgb = np.array([palette[label] for label in labels[inside].tolist()], dtype=np.uint8).reshape(-1, 3)
    for dy in (-1, 0, 1):  # each point a 3x3 dot
        for dx in (-1, 0, 1):
            pixels[rows + dy, cols + dx] = rgb
    image = Image.fromarray(pixels)
    draw = ImageDraw.Draw(image)
    draw.text((_MARGIN, 10), title, fill="black", font=_FONT)
    draw.text((_MARGIN, size + 6), f"{axis_names[0]}: {low[0]:.2f} .. {high[0]:.2f}", fill="black", font=_FONT)
    draw.text(
        (_MARGIN, size + 20), f"{axis_names[1]}: {low[1]:.2f} .. {high[1]:.2f} (upwards)", fill="black", font=_FONT
    )
    for row, label in enumerate(classes[:30]):
        y = _MARGIN + 16 * row
        draw.rectangle([size + 16, y, size + 26, y + 10], fill=palette[label])
        draw.text((size + 32, y - 1), str(names.get(label, label))[:22], fill="black", font=_FONT)
    return np.asarray(image)


def captioned_grid(images: torch.Tensor, captions: Sequence[str], nrow: int, title: str = "") -> np.ndarray:
    """Images (N, C, H, W) in [0, 1] (tiny ones enlarged to 24 px) in a grid, a caption under each."""
    images = enlarge(images, 24)
    n, c, h, w = images.shape
    caption_h, pad, top = 12, 2, 14 if title else 0
    framed = images.new_ones(n, c, h + caption_h, w)  # room for the caption under each image
    framed[:, :, :h] = images
    grid = to_uint8_hwc(make_grid(framed, nrow=nrow, padding=pad)).numpy()
    canvas = Image.new("RGB", (grid.shape[1], grid.shape[0] + top), "white")
    canvas.paste(Image.fromarray(grid[:, :, 0] if c == 1 else grid).convert("RGB"), (0, top))
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((4, 1), title, fill="black", font=_FONT)
    ncol = min(nrow, n)
    for i, caption in enumerate(captions):
        row, col = divmod(i, ncol)
        if caption:
            x, y = pad + col * (w + pad) + 1, top + pad + row * (h + caption_h + pad) + h
            draw.text((x, y), caption[: max(1, w // 6)], fill="black", font=_FONT)
    return np.asarray(canvas)
