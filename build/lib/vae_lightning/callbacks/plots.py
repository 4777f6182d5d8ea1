"""matplotlib figures of the diagnostics: labelled image grids, a scatter plot, a histogram and a bar chart.

Figures are built with `matplotlib.figure.Figure` (no pyplot state, safe in any process). An image grid is
shown at one figure pixel per image pixel, with its title and labels around it, so cells stay as large as
the grid made them; titles are wrapped to the figure's width.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure

DPI = 100
FONT = 9  # points
CHAR_PX = 6.5  # the width of one character of FONT at DPI, for wrapping titles


def _wrapped(title: str, width_px: float) -> str:
    return "\n".join(textwrap.wrap(title, max(20, int(width_px / CHAR_PX)))) if title else ""


def image_figure(
    image: np.ndarray,
    title: str,
    *,
    extent: tuple[float, float, float, float] | None = None,
    xlabel: str = "",
    ylabel: str = "",
    row_labels: Sequence[tuple[float, str]] = (),
    col_labels: Sequence[tuple[float, str]] = (),
    cell_texts: Sequence[tuple[float, float, str]] = (),
) -> Figure:
    """An (H, W, 3) uint8 picture at 1:1 scale with a title above it. `extent` gives it data axes with ticks
    (e.g. latent coordinates); `row_labels`/`col_labels` are (pixel position, text) ticks on the left/bottom;
    `cell_texts` are (x, y, text) in pixels: each text is centred there."""
    height, width = image.shape[:2]
    has_axes = extent is not None or row_labels or col_labels
    # room on the left for the row labels (about 6 px a character at this size) or the y axis and its label
    longest = max((len(text) for _, text in row_labels), default=0)
    left = max(70, 16 + 6 * longest) if has_axes or ylabel else 10
    bottom = 45 if has_axes or xlabel else 10
    fig_width = max(width + left + 20, 360)
    title = _wrapped(title, fig_width - 20)
    top = 16 + 14 * (title.count("\n") + 1)
    fig = Figure(figsize=(fig_width / DPI, (height + top + bottom) / DPI), dpi=DPI)
    fig_height = height + top + bottom
    ax = fig.add_axes((left / fig_width, bottom / fig_height, width / fig_width, height / fig_height))
    ax.imshow(image, extent=extent, interpolation="nearest", aspect="auto")
    fig.suptitle(title, fontsize=FONT, y=1 - 6 / fig_height, va="top")
    if extent is None:
        ax.set_xticks([x for x, _ in col_labels], [t for _, t in col_labels], fontsize=FONT - 1)
        ax.set_yticks([y for y, _ in row_labels], [t for _, t in row_labels], fontsize=FONT - 1)
        if not (row_labels or col_labels):
            ax.set_axis_off()
    else:
        ax.tick_params(labelsize=FONT - 1)
    ax.set_xlabel(xlabel, fontsize=FONT)
    ax.set_ylabel(ylabel, fontsize=FONT)
    for x, y, text in cell_texts:
        ax.text(
            x,
            y,
            text,
            fontsize=FONT - 2,
            ha="center",
            va="top",
            color="black",
            bbox={"boxstyle": "square,pad=0.1", "facecolor": "white", "edgecolor": "none", "alpha": 0.8},
        )
    return fig


def colours_by_label(labels: list[int]) -> dict[int, tuple]:
    """{label: RGBA} for the distinct labels in sorted order; the latent scatter and the Projector share it."""
    classes = sorted(set(labels))
    cmap = colormaps["tab10" if len(classes) <= 10 else "tab20"]
    return {label: cmap(i % cmap.N) for i, label in enumerate(classes)}


def scatter_figure(
    points: np.ndarray, labels: np.ndarray, names: dict[int, str], axis_names: tuple[str, str], title: str
) -> Figure:
    """2-D points coloured by label, with axes, ticks and a legend (at most 20 classes named)."""
    fig = Figure(figsize=(6.4, 5.2), dpi=DPI)
    ax = fig.add_axes((0.11, 0.1, 0.6, 0.78))
    size = float(np.clip(3000 / max(len(points), 1), 4, 40))
    for label, colour in colours_by_label(labels.tolist()).items():
        chosen = labels == label
        name = str(names.get(label, label))
        ax.scatter(points[chosen, 0], points[chosen, 1], s=size, color=colour, alpha=0.7, linewidths=0, label=name)
    ax.set_xlabel(axis_names[0], fontsize=FONT)
    ax.set_ylabel(axis_names[1], fontsize=FONT)
    ax.tick_params(labelsize=FONT - 1)
    ax.grid(alpha=0.3)
    handles, texts = ax.get_legend_handles_labels()
    ax.legend(
        handles[:20],
        texts[:20],
        loc="upper left",
        bbox_to_anchor=(1.02, 1.0),
        fontsize=FONT - 1,
        markerscale=max(1.0, 30 / size) ** 0.5,
        title="label",
        title_fontsize=FONT,
        frameon=False,
    )
    fig.suptitle(_wrapped(title, 600), fontsize=FONT, y=0.985, va="top")
    return fig


def histogram_figure(values: np.ndarray, title: str, xlabel: str) -> Figure:
    fig = Figure(figsize=(5.6, 3.6), dpi=DPI)
    ax = fig.add_axes((0.12, 0.15, 0.83, 0.68))
    ax.hist(values, bins=int(np.clip(np.sqrt(len(values)), 1, 60)), color="#4c72b0")
    ax.set_xlabel(xlabel, fontsize=FONT)
    ax.set_ylabel("samples", fontsize=FONT)
    ax.tick_params(labelsize=FONT - 1)
    fig.suptitle(_wrapped(title, 520), fontsize=FONT, y=0.98, va="top")
    return fig


def bar_figure(values: np.ndarray, labels: Sequence[str], title: str, ylabel: str, line: float | None = None) -> Figure:
    """One bar per value (at most 64 shown), with an optional horizontal reference line."""
    values, labels = values[:64], list(labels)[:64]
    fig = Figure(figsize=(max(5.6, 0.16 * len(values) + 1.5), 3.6), dpi=DPI)
    ax = fig.add_axes((0.12, 0.2, 0.83, 0.63))
    ax.bar(range(len(values)), values, color="#4c72b0")
    step = max(1, len(values) // 16)
    ax.set_xticks(range(0, len(values), step), labels[::step], fontsize=FONT - 1, rotation=0)
    ax.set_ylabel(ylabel, fontsize=FONT)
    ax.tick_params(labelsize=FONT - 1)
    if line is not None:
        ax.axhline(line, color="#c44e52", linewidth=1, linestyle="--")
    fig.suptitle(_wrapped(title, 520), fontsize=FONT, y=0.98, va="top")
    return fig
