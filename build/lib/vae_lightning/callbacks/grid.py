"""Tile a batch of images into one picture (no torchvision dependency), and write pictures as PNG and GIF files."""

from __future__ import annotations

import math
import os

import numpy as np
import torch
from PIL import Image

MIN_CELL = 28  # pixels: tiny images (the digits' 8x8) are enlarged to at least this, so TensorBoard shows them


def make_grid(images: torch.Tensor, nrow: int = 8, padding: int = 2, pad_value: float = 1.0) -> torch.Tensor:
    """Images (N, C, H, W) in [0, 1] -> one (C, rows * (H + p) + p, nrow * (W + p) + p) picture, row-major.

    Grey images stay one channel; empty cells at the end are filled with `pad_value`.
    """
    if images.dim() != 4:
        raise ValueError(f"expected (N, C, H, W) images, got shape {tuple(images.shape)}")
    n, c, h, w = images.shape
    ncol = max(1, min(nrow, n))
    nrows = max(1, math.ceil(n / ncol))
    grid = images.new_full((c, nrows * (h + padding) + padding, ncol * (w + padding) + padding), pad_value)
    for i in range(n):
        row, col = divmod(i, ncol)
        top, left = padding + row * (h + padding), padding + col * (w + padding)
        grid[:, top : top + h, left : left + w] = images[i]
    return grid


def to_uint8_hwc(grid: torch.Tensor) -> torch.Tensor:
    """A (C, H, W) picture in [0, 1] as (H, W, C) uint8, for PNG files."""
    return grid.clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0)


def enlarge(images: torch.Tensor, min_side: int = MIN_CELL) -> torch.Tensor:
    """Small images (N, C, H, W) repeated by an integer factor (nearest neighbour) to at least `min_side`."""
    factor = max(1, -(-min_side // images.shape[-1]))
    if factor == 1:
        return images
    return images.repeat_interleave(factor, -1).repeat_interleave(factor, -2)


def picture(images: torch.Tensor, nrow: int, padding: int = 2) -> np.ndarray:
    """Images (N, C, H, W) in [0, 1], tiny ones enlarged, as one (H, W, 3) uint8 picture."""
    grid = make_grid(enlarge(images.detach().float().cpu()), nrow=nrow, padding=padding)
    return to_uint8_hwc(grid.expand(3, *grid.shape[1:])).numpy()


def to_pil(image: torch.Tensor) -> Image.Image:
    """A (C, H, W) image in [0, 1] as a PIL image (grey for one channel, RGB for three)."""
    array = to_uint8_hwc(image.detach().float().cpu()).numpy()
    return Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array)


def strip(images: torch.Tensor, min_side: int = MIN_CELL) -> Image.Image:
    """Images (N, C, H, W) in [0, 1] side by side in one row, enlarged to at least `min_side`."""
    return to_pil(make_grid(enlarge(images.detach().float().cpu(), min_side), nrow=len(images)))


def write_gif(frames: torch.Tensor, path: str | os.PathLike, frame_ms: int = 80, pause_ms: int = 800) -> None:
    """Frames (N, C, H, W) in [0, 1] as an endless GIF that goes there and back (0..N-1, then N-2..1), resting
    `pause_ms` on the first and the last frame."""
    pictures = [to_pil(f) for f in frames]
    n = len(pictures)
    order = list(range(n)) + list(range(n - 2, 0, -1))
    durations = [pause_ms if i in (0, n - 1) else frame_ms for i in order]
    first, *rest = (pictures[i] for i in order)
    first.save(path, save_all=True, append_images=rest, duration=durations, loop=0, disposal=1)


def write_morph(
    frames: torch.Tensor,
    ends: list[torch.Tensor],
    gif: str | os.PathLike,
    png: str | os.PathLike,
    min_side: int,
    frame_ms: int = 80,
    pause_ms: int = 800,
) -> None:
    """A morph's two files: the frames (N, C, H, W) as a there-and-back GIF, and a PNG strip of the first end
    image ((C, H, W) or (1, C, H, W)), the frames, then the other ends; every image enlarged to at least
    `min_side`."""
    frames = frames.detach().float().cpu()
    write_gif(enlarge(frames, min_side), gif, frame_ms, pause_ms)
    first, *rest = (end.detach().float().cpu().reshape(-1, *frames.shape[1:]) for end in ends)
    strip(torch.cat([first, frames, *rest]), min_side).save(png)
