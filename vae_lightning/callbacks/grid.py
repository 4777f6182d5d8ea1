"""Tile a batch of images into one picture (no torchvision dependency)."""

from __future__ import annotations

import math

import numpy as np
import torch

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
