"""The pictures of what the VAE learned. Each class is one config option under `callbacks.diagnostics.pictures`
(remove one with `~callbacks.diagnostics.pictures.<name>`) and turns a `View` of the fixed validation samples
into outputs: image grids, matplotlib figures, histograms or a Projector embedding.

Every picture works on small and lopsided data: one sample, fewer samples than it asks for, one class only,
no dog among the samples of a faces and dogs set, any latent size, grey or colour, 8x8 to 128x128 images.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from sklearn.decomposition import PCA

from vae_lightning.callbacks.grid import enlarge, picture
from vae_lightning.callbacks.plots import bar_figure, colours_by_label, histogram_figure, image_figure, scatter_figure
from vae_lightning.core import checks
from vae_lightning.metrics import ACTIVE_UNIT_THRESHOLD

log = logging.getLogger(__name__)


@dataclass
class View:
    """The fixed validation samples of one drawing and what the model makes of them."""

    images: torch.Tensor  # (N, C, H, W) in [0, 1], on the module's device
    labels: torch.Tensor  # (N,), on the CPU
    names: dict[int, str]  # label -> name
    ends: tuple[int, int] | None  # the labels interpolations join (the data module's `interpolation_ends`)
    loc: torch.Tensor  # (N, latent) the posteriors' codes (a Gaussian's: its mean)
    scale: torch.Tensor  # (N, latent) the posteriors' standard deviations
    losses: torch.Tensor  # (N,) each sample's validation loss, on the CPU
    kl_per_dim: torch.Tensor | None  # (latent,) the mean KL of each dimension, where the prior factorises
    module: Any  # the VAEModule (for `decode_image` and its prior)
    epoch: int

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.module.decode_image(z.to(self.loc.device)).float().cpu()

    def top_layer(self) -> range:
        """The code's dimensions of its top layer: all of them, but for a hierarchical network's code."""
        sizes = self.module.net.latent_dims or [self.loc.shape[1]]
        return range(sum(sizes[:-1]), sum(sizes))

    def decode_from_top(self, z: torch.Tensor) -> torch.Tensor:
        """Decodes of codes whose layers below the top are the generative model's (`VAENet.complete`)."""
        with torch.no_grad():
            return self.decode(self.module.net.complete(z.to(self.loc.device)))

    def new_codes(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """`n` codes of new images, from the model's sampler (its prior unless `sampler=` says otherwise)."""
        return self.module.sampler.sample(n, self.module.prior, generator).float().cpu()

    def prior_mean(self) -> torch.Tensor:
        return self.module.prior.mean().detach().float().cpu()

    def prior_stddev(self) -> torch.Tensor:
        return self.module.prior.stddev().detach().float().cpu()

    def activity(self) -> tuple[torch.Tensor, str]:
        """Each dimension's activity and its name: the KL where the prior factorises, else the variance of the
        posterior means across the samples."""
        if self.kl_per_dim is not None:
            return self.kl_per_dim, "KL"
        loc = self.loc.float().cpu()
        return (loc.var(0) if len(loc) > 1 else torch.zeros(loc.shape[1])), "var"

    def name(self, label: int) -> str:
        return str(self.names.get(int(label), int(label)))


@dataclass
class Histogram:
    tag: str
    values: np.ndarray


@dataclass
class Embedding:
    tag: str
    points: torch.Tensor  # (N, 3 or more)
    metadata: list[str]  # each sample's label
    thumbnails: torch.Tensor  # (N, 3, H, W) in [0, 1]


class Picture:
    """Base class. `final_only`: drawn only at the end of training."""

    final_only = False

    def __call__(self, view: View) -> list[tuple[str, Any]]:
        raise NotImplementedError


class Reconstructions(Picture):
    """`val/reconstructions`: rows of inputs, each above the decodes of their posterior means."""

    def __init__(self, n_images: int = 16) -> None:
        self.n_images = checks.positive_int("n_images", n_images)

    def __call__(self, view: View) -> list[tuple[str, Any]]:
        x = view.images[: self.n_images]
        recon = view.decode(view.loc[: self.n_images])
        n_cols = min(8, len(x))
        rows = []
        for start in range(0, len(x), n_cols):
            rows += [x[start : start + n_cols].float().cpu(), recon[start : start + n_cols]]
        return [("val/reconstructions", picture(torch.cat(rows), nrow=n_cols))]


class Samples(Picture):
    """`val/samples`: decodes of codes drawn by the model's sampler with a fixed seed (from the standard normal
    prior the same codes in every drawing; a learned prior or a fitted mixture moves as it trains)."""

    def __init__(self, n_images: int = 16, seed: int = 0) -> None:
        self.n_images = checks.positive_int("n_images", n_images)
        self.seed = checks.non_negative_int("seed", seed)

    def __call__(self, view: View) -> list[tuple[str, Any]]:
        generator = torch.Generator().manual_seed(self.seed)
        z = view.new_codes(self.n_images, generator)
        return [("val/samples", picture(view.decode(z), nrow=min(8, self.n_images)))]


def two_dimensional(loc: np.ndarray) -> tuple[np.ndarray, tuple[str, str]]:
    """Points to plot and the names of their axes: z itself for 1 and 2 dimensions, else the first two
    principal components."""
    if loc.shape[1] == 1:
        return np.concatenate([loc, np.zeros_like(loc)], axis=1), ("z1", "(one latent dimension)")
    if loc.shape[1] == 2 or len(loc) < 3:
        return loc[:, :2], ("z1", "z2")
    pca = PCA(n_components=2).fit(loc)
    ratio = pca.explained_variance_ratio_
    return pca.transform(loc), (f"PC1 of z ({ratio[0]:.0%} of variance)", f"PC2 of z ({ratio[1]:.0%})")


class LatentScatter(Picture):
    """`val/latent_scatter`: the posterior means coloured by label; the first two principal components when the
    latent space has more than two dimensions (the axes say so)."""

    def __call__(self, view: View) -> list[tuple[str, Any]]:
        points, axes = two_dimensional(view.loc.float().cpu().numpy())
        labels = view.labels.numpy()
        title = f"Latent means of {len(points)} validation samples, epoch {view.epoch}"
        return [("val/latent_scatter", scatter_figure(points, labels, view.names, axes, title))]


class LatentGrid(Picture):
    """Latent dimension 2: `val/latent_grid`, the seed's `grid_size` x `grid_size` decodes spanning the occupied
    range (1st to 99th percentile) of the posterior means, with latent axes; dimension 1: one row along z1.
    More dimensions: `val/latent_traversal`, one row per most active dimension (by KL where the prior factorises,
    else by the variance of the posterior means), decoding a sweep of it from -3 to +3 of the prior's standard
    deviation around a validation sample's mean; of a hierarchical code, the top layer's dimensions, with the
    layers below as the generative model makes them from it."""

    def __init__(self, grid_size: int = 15, n_dims: int = 8, steps: int = 11) -> None:
        self.grid_size = checks.integer("grid_size", grid_size, low=2)
        self.n_dims = checks.positive_int("n_dims", n_dims)
        self.steps = checks.integer("steps", steps, low=2)

    def _range(self, values: torch.Tensor) -> tuple[float, float]:
        low, high = float(torch.quantile(values, 0.01)), float(torch.quantile(values, 0.99))
        if high - low < 1e-3:  # one sample, or a collapsed dimension: a span around it
            low, high = low - 1.0, high + 1.0
        return low, high

    def __call__(self, view: View) -> list[tuple[str, Any]]:
        loc = view.loc.float().cpu()
        if loc.shape[1] <= 2:
            return [("val/latent_grid", self._grid(view, loc))]
        return [("val/latent_traversal", self._traversal(view, loc, view.scale.float().cpu()))]

    def _grid(self, view: View, loc: torch.Tensor) -> Figure:
        (x0, x1) = self._range(loc[:, 0])
        if loc.shape[1] == 1:
            z = torch.linspace(x0, x1, self.grid_size)[:, None]
            image = picture(view.decode(z), nrow=self.grid_size, padding=1)
            return image_figure(image, f"Decodes along z1 (epoch {view.epoch})", extent=(x0, x1, 0, 1), xlabel="z1")
        y0, y1 = self._range(loc[:, 1])
        z1 = torch.linspace(x0, x1, self.grid_size)
        z2 = torch.linspace(y1, y0, self.grid_size)  # top row: the largest z2
        grid = torch.stack(torch.meshgrid(z2, z1, indexing="ij")[::-1], dim=-1).reshape(-1, 2)
        image = picture(view.decode(grid), nrow=self.grid_size, padding=1)
        title = (
            f"Decodes of a {self.grid_size}x{self.grid_size} grid over the occupied latent range (epoch {view.epoch})"
        )
        return image_figure(image, title, extent=(x0, x1, y0, y1), xlabel="z1", ylabel="z2")

    def _traversal(self, view: View, loc: torch.Tensor, scale: torch.Tensor) -> Figure:
        activity, measure = view.activity()
        top = view.top_layer()  # a hierarchical code: its top layer, the layers below following it
        dims = [top[i] for i in activity[top.start : top.stop].argsort(descending=True)[: self.n_dims].tolist()]
        sweep = torch.linspace(-3.0, 3.0, self.steps)
        spread = view.prior_stddev()
        rows = []
        for dim in dims:
            z = loc[:1].repeat(self.steps, 1)
            z[:, dim] = loc[0, dim] + sweep * spread[dim]
            rows.append(view.decode_from_top(z))
        cells = enlarge(rows[0][:1]).shape[-1] + 2
        image = picture(torch.cat(rows), nrow=self.steps)
        row_labels = [(2 + cells * (i + 0.5), f"z{d} ({measure} {activity[d]:.2f})") for i, d in enumerate(dims)]
        col_labels = [(2 + cells * (j + 0.5), f"{v:+.1f}") for j, v in enumerate(sweep.tolist())]
        which = "dimensions" if len(top) == loc.shape[1] else "dimensions of the top layer"
        title = f"Traversals of the {len(dims)} most active {which} around a validation sample (epoch {view.epoch})"
        xlabel = "offset from its mean, in prior standard deviations"
        return image_figure(image, title, row_labels=row_labels, col_labels=col_labels, xlabel=xlabel)


def farthest_pair(loc: torch.Tensor) -> tuple[int, int]:
    """The two samples whose posterior means are farthest apart."""
    a, b = divmod(int(torch.cdist(loc, loc).argmax()), len(loc))
    return a, b


def interpolation_pairs(
    labels: torch.Tensor, names: dict[int, str], loc: torch.Tensor, n_pairs: int, ends: tuple[int, int] | None = None
):
    """Pairs of sample indices to interpolate, and a caption saying how they were chosen: from label `ends[0]` to
    label `ends[1]` when the data set names two ends (faces and dogs: human to dog); else samples with different
    labels; else (an end missing, or one label only) the two samples farthest apart in latent space; with one
    sample, from it to the prior's mean (index -1)."""
    if len(labels) == 1:
        return [(0, -1)], "only one validation sample: from it to the prior's mean"
    farthest = "between the two samples farthest apart in latent space"
    if ends is not None:
        start, end = (str(names.get(label, label)) for label in ends)
        froms, tos = (torch.nonzero(labels == label).flatten().tolist() for label in ends)
        if not froms or not tos:
            return [farthest_pair(loc)], f"no {end if froms else start} among the validation samples: {farthest}"
        pairs = [(froms[i % len(froms)], tos[i % len(tos)]) for i in range(n_pairs)]
        return list(dict.fromkeys(pairs)), f"{start} (left) to {end} (right)"
    values = labels.tolist()
    pairs = []
    for a, value in enumerate(values):
        b = next((j for j in range(a + 1, len(values)) if values[j] != value), None)
        if b is not None and len(pairs) < n_pairs:
            pairs.append((a, b))
    if pairs:
        return pairs, "pairs of validation samples with different labels"
    return [farthest_pair(loc)], f"one label only among the validation samples: {farthest}"


class Interpolations(Picture):
    """`val/interpolations`: per row, an input, `steps` decodes along the straight line between the two
    posterior means, and the other input (human to dog for faces and dogs). `steps=25` is the seed's latent
    path. The title says how the pairs were chosen."""

    def __init__(self, n_pairs: int = 4, steps: int = 10) -> None:
        self.n_pairs = checks.positive_int("n_pairs", n_pairs)
        self.steps = checks.integer("steps", steps, low=2)

    def __call__(self, view: View) -> list[tuple[str, Any]]:
        loc = view.loc.float().cpu()
        pairs, how = interpolation_pairs(view.labels, view.names, loc, self.n_pairs, view.ends)
        t = torch.linspace(0.0, 1.0, self.steps)[:, None]
        images = view.images.float().cpu()
        rows = []
        for a, b in pairs:
            end = view.prior_mean() if b < 0 else loc[b]
            path = view.decode((1 - t) * loc[a] + t * end)
            target = path[-1:] if b < 0 else images[b : b + 1]
            rows.append(torch.cat([images[a : a + 1], path, target]))
        image = picture(torch.cat(rows), nrow=self.steps + 2)
        title = f"Interpolations in latent space, {how}; first and last columns: the inputs (epoch {view.epoch})"
        return [("val/interpolations", image_figure(image, title))]


LABEL_GAP = 18  # pixels between the rows of a grid that carries a line of text above each cell


class BestWorst(Picture):
    """`val/best_worst`: the `n` best and `n` worst reconstructed samples (inputs over their reconstructions),
    each with its loss."""

    def __init__(self, n: int = 8) -> None:
        self.n = checks.positive_int("n", n)

    def __call__(self, view: View) -> list[tuple[str, Any]]:
        n = max(1, min(self.n, len(view.losses) // 2))
        order = view.losses.argsort()
        chosen = torch.cat([order[:n], order.flip(0)[:n]])
        inputs = view.images[chosen.to(view.images.device)].float().cpu()
        recon = view.decode(view.loc[chosen.to(view.loc.device)])
        gap = LABEL_GAP  # the rows are this far apart, and each input's loss is written in the gap above it
        image = picture(torch.cat([inputs[:n], recon[:n], inputs[n:], recon[n:]]), nrow=n, padding=gap)
        cell = enlarge(inputs[:1]).shape[-1] + gap
        losses = view.losses[chosen].tolist()
        texts = [
            (gap + cell * (i % n) + (cell - gap) / 2, gap / 2 + cell * 2 * (i // n), f"{v:.3g}")
            for i, v in enumerate(losses)
        ]
        title = (
            f"Best {n} (rows 1-2) and worst {n} (rows 3-4) reconstructions: inputs above outputs, with each "
            f"sample's loss (epoch {view.epoch})"
        )
        return [("val/best_worst", image_figure(image, title, cell_texts=texts))]


class LossHistogram(Picture):
    """The loss of each validation sample: `val/per_sample_loss` in HISTOGRAMS and `val/loss_histogram`."""

    def __call__(self, view: View) -> list[tuple[str, Any]]:
        values = view.losses.numpy()
        title = f"Loss of each of {len(values)} validation samples (epoch {view.epoch})"
        return [
            ("val/per_sample_loss", Histogram("val/per_sample_loss", values)),
            ("val/loss_histogram", histogram_figure(values, title, "loss")),
        ]


class LatentHealth(Picture):
    """The KL of each latent dimension averaged over the samples (collapsed dimensions sit at 0), where the prior
    factorises over the dimensions (a mixture prior does not: the bars then show the variance of each dimension's
    posterior mean, and the title says so), against the active-unit threshold: `val/kl_per_dim` in HISTOGRAMS
    (where the prior factorises) and `val/latent_health`."""

    def __call__(self, view: View) -> list[tuple[str, Any]]:
        loc = view.loc.float().cpu()
        variance = loc.var(0) if len(loc) > 1 else torch.zeros(loc.shape[1])
        active = int((variance > ACTIVE_UNIT_THRESHOLD).sum())
        activity, measure = view.activity()
        order = activity.argsort(descending=True)
        health = f"{active} of {len(variance)} dimensions active (posterior-mean variance > {ACTIVE_UNIT_THRESHOLD})"
        if measure == "KL":
            what, axis = f"KL of each latent dimension (nats, averaged over {len(loc)} samples)", "KL (nats)"
        else:
            what = (
                f"Variance of each latent dimension's posterior mean over {len(loc)} samples (the prior does not "
                "factorise, so the KL does not split by dimension)"
            )
            axis = "variance of the mean"
        title = f"{what}, largest first; {health} (epoch {view.epoch})"
        figure = bar_figure(activity[order].numpy(), [f"z{i}" for i in order.tolist()], title, axis)
        outputs: list[tuple[str, Any]] = [("val/latent_health", figure)]
        if measure == "KL":
            outputs.insert(0, ("val/kl_per_dim", Histogram("val/kl_per_dim", activity.numpy())))
        return outputs


class Projector(Picture):
    """TensorBoard's PROJECTOR, at the end of training: the posterior means with their labels as metadata and
    the images as a sprite, coloured by label (`in_label_colours`). Means of 1 or 2 dimensions are padded with
    zeros to 3, which its PCA view needs, and the tensor is then named `val/latent_means_padded_to_3d`, so the
    Projector's list says so. The Projector lists no tensor of a single point, so one sample writes nothing and
    says why in the log."""

    final_only = True

    def __call__(self, view: View) -> list[tuple[str, Any]]:
        if len(view.loc) < 2:
            log.info("Projector: not written, as TensorBoard's Projector shows no embedding of a single sample.")
            return []
        points = view.loc.float().cpu()
        dims = points.shape[1]
        tag = "val/latent_means"
        if dims < 3:
            points = torch.cat([points, torch.zeros(len(points), 3 - dims)], dim=1)
            tag += "_padded_to_3d"
        metadata = [view.name(label) for label in view.labels.tolist()]
        thumbnails = in_label_colours(view.images.float().cpu(), view.labels)
        return [(tag, Embedding(tag, points, metadata, thumbnails))]


def in_label_colours(images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) thumbnails in the colours the latent scatter gives each label: grey images are drawn in
    their label's colour, colour images get a frame of it. The Projector shows the sprite's thumbnails as its
    points and opens on "No color map" (neither its config nor its bookmarks can choose one), so this is what
    shows the labels when it opens; "Color by: label" colours them as well."""
    colour_of = colours_by_label(labels.tolist())
    colours = torch.tensor([colour_of[label][:3] for label in labels.tolist()], dtype=images.dtype)
    colours = colours / colours.amax(dim=1, keepdim=True)  # as bright as the colour allows, for dark backgrounds
    colours = colours[:, :, None, None]  # (N, 3, 1, 1)
    if images.shape[1] == 1:
        return images * colours
    framed = colours.expand_as(images).clone()
    width = max(1, images.shape[-1] // 8)
    framed[..., width:-width, width:-width] = images[..., width:-width, width:-width]
    return framed
