import torch

from vae_lightning.callbacks.grid import make_grid, to_uint8_hwc


def test_grid_places_images_row_major_with_padding():
    images = torch.arange(5, dtype=torch.float32).view(5, 1, 1, 1).expand(5, 1, 2, 3) / 8
    grid = make_grid(images, nrow=3, padding=1, pad_value=1.0)
    assert grid.shape == (1, 2 * 3 + 1, 3 * 4 + 1)
    assert float(grid[0, 1, 1]) == 0.0  # first image, top-left
    assert float(grid[0, 1, 5]) == 0.125  # second image, same row
    assert float(grid[0, 4, 1]) == 0.375  # fourth image, second row
    assert float(grid[0, 4, 9]) == 1.0  # the empty sixth cell is padding
    assert to_uint8_hwc(grid).shape == (7, 13, 1)
