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
    for x, y, label in zip(xs, ys, labels.tolist(), strict=True):
        if _MARGIN <= x <= size and _MARGIN <= y <= size:
            draw.ellipse([x - 2, y - 2, x + 2, y + 2], fill=palette[label])
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
    """Images (N, C, H, W) in [0, 1], enlarged to at least 64 px, in a grid with a caption under each."""
    images = enlarge(images, 64)
    n, _, h, w = images.shape
    cells = []
    for i in range(n):
        cell = Image.new("RGB", (w, h + 14), "white")
        cell.paste(Image.fromarray(to_uint8_hwc(images[i].expand(3, h, w)).numpy()), (0, 0))
        ImageDraw.Draw(cell).text((2, h + 1), captions[i][: w // 6], fill="black", font=_FONT)
        cells.append(torch.from_numpy(np.asarray(cell)).permute(2, 0, 1).float() / 255)
    grid = to_uint8_hwc(make_grid(torch.stack(cells), nrow=nrow)).numpy()
    if not title:
        return grid
    canvas = Image.new("RGB", (grid.shape[1], grid.shape[0] + 16), "white")
    canvas.paste(Image.fromarray(grid), (0, 16))
    ImageDraw.Draw(canvas).text((4, 2), title, fill="black", font=_FONT)
    return np.asarray(canvas)
