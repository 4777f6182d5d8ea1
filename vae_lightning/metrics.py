"""What the module measures, in memory that does not grow with the data set.

- `RunningMeans`: sample-weighted means of a few scalars over an epoch, buffered and summed on the device (no
  host synchronisation per batch), which also remembers the first step whose values were not finite.
- `importance_sampled_log_likelihood` (Burda et al. 2016): log p(x) ~ logsumexp_k [log p(x|z_k) + log p(z_k)
  - log q(z_k|x)] - log K with z_k ~ q(z|x) and the model's prior p(z); a stochastic lower bound that tightens as
  K grows. Per sample, nats.
- `LatentStats`: over a whole test split, streamed batch by batch: active units (Burda et al. 2016: dimensions u
  with Cov_x(E_q[z_u]) > 0.01, E_q[z] read as the posterior's `code`: a flow's is its code at the Gaussian's
  mean, not its mean), the KL of each latent dimension averaged over the samples (where the prior
  factorises), and a seeded uniform subsample of the posteriors (with their labels) for
- `aggregate_posterior_information`: with the aggregate posterior q(z) taken as the mixture of the given N
  posteriors and one z drawn from each, the usual estimate of I(x; z) under q (Hoffman & Johnson 2016, as
  computed by He et al. 2019), E_x[-H(q(z|x))] - E_z[log q(z)], and the total correlation of q(z) (Chen et al.
  2018), E_z[log q(z) - sum_d log q(z_d)]; in blocks of samples and of components, so memory is independent of N;
- `mutual_information_gap` (MIG, Chen et al. 2018): of a labelled factor, the gap between the two latent
  dimensions that carry the most information about it, over its entropy; 1 when one dimension alone encodes it;
  `factor_information_gaps` gives it for each labelled factor of a data set (UTKFace's age, gender and race).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from sklearn.metrics import mutual_info_score

from vae_lightning.distributions import LOG_2PI, DiagonalGaussian, PosteriorDistribution

ACTIVE_UNIT_THRESHOLD = 0.01


class RunningMeans:
    """Sample-weighted running means of the scalars `names`, kept as device tensors until `means` is asked.

    A step's values are copied into a row of a buffer (one copy per step: the training step adds them every
    time); the rows are folded into float64 sums, and checked for the first step whose values were not finite,
    when the means or that step are asked for, and when the buffer is full."""

    ROWS = 64  # steps buffered before a fold

    def __init__(self, names: Sequence[str]) -> None:
        self.names = tuple(names)
        self.reset()

    def reset(self) -> None:
        self.rows: torch.Tensor | None = None  # (ROWS, len(names)): the values of the steps not folded yet
        self.sums: torch.Tensor | None = None  # float64 sums of value x samples over the folded steps
        self.count = 0
        self.buffered: list[tuple[int, int]] = []  # (samples, step) of each buffered row
        self.first_bad: tuple[int, dict[str, float]] | None = None

    def add(self, values: torch.Tensor, n: int, step: int = -1) -> None:
        """`values`: one scalar per name (a 1-D tensor), each a mean over `n` samples, at optimizer step `step`."""
        if self.rows is None:
            self.rows = values.new_zeros((self.ROWS, len(self.names)))
            self.sums = torch.zeros(len(self.names), dtype=torch.float64, device=values.device)
        self.rows[len(self.buffered)].copy_(values.detach())
        self.buffered.append((n, step))
        if len(self.buffered) == self.ROWS:
            self._fold()

    def _fold(self) -> None:
        """Adds the buffered rows to the sums, first noting the earliest one that is not finite."""
        if not self.buffered:
            return
        rows = self.rows[: len(self.buffered)]
        finite = torch.isfinite(rows).all(dim=1)
        if self.first_bad is None and not bool(finite.all()):
            i = int(finite.logical_not().nonzero()[0])
            self.first_bad = self.buffered[i][1], dict(zip(self.names, rows[i].tolist(), strict=True))
        samples = torch.tensor([n for n, _ in self.buffered], dtype=torch.float64, device=rows.device)
        self.sums += samples @ rows.double()
        self.count += sum(n for n, _ in self.buffered)
        self.buffered = []

    def first_non_finite(self) -> tuple[int, dict[str, float]] | None:
        """(step, values) of the first step whose values were not finite, or None."""
        self._fold()
        return self.first_bad

    def means(self, reduce: Callable[[torch.Tensor], torch.Tensor] | None = None) -> dict[str, float]:
        """The means so far; `reduce` sums (sums, count) over processes first. Empty when nothing was added."""
        self._fold()
        if self.sums is None:
            return {}
        totals = torch.cat([self.sums, self.sums.new_tensor([self.count])])
        if reduce is not None:
            totals = reduce(totals)
        *sums, count = totals.tolist()
        return {name: total / count for name, total in zip(self.names, sums, strict=True)}


def importance_sampled_log_likelihood(
    net, prior, likelihood, x: torch.Tensor, k: int, chunk: int = 100, generator: torch.Generator | None = None
) -> torch.Tensor:
    """log p(x) estimated with `k` importance samples from q(z|x), `chunk` samples at a time; shape (batch,).
    `generator` (on the images' device) makes the draws reproducible."""
    posterior = net.infer(x)
    log_weights = []
    for start in range(0, k, chunk):
        n = min(chunk, k - start)
        z, log_q = posterior.rsample_with_log_prob(generator, n)  # (n, batch, latent), (n, batch)
        params = net.decode(z.reshape(-1, z.shape[-1]))
        repeated_x = x.unsqueeze(0).expand(n, *x.shape).reshape(-1, *x.shape[1:])
        log_px_z = likelihood.log_prob(repeated_x, params).view(n, -1)
        log_weights.append(log_px_z + prior.log_prob(z) - log_q)
    return torch.logsumexp(torch.cat(log_weights), dim=0) - math.log(k)


def active_units(variance: torch.Tensor, threshold: float = ACTIVE_UNIT_THRESHOLD) -> int:
    """The number of latent dimensions whose posterior mean varies across the data by more than `threshold`."""
    return int((variance > threshold).sum())


def aggregate_posterior_information(
    posterior: DiagonalGaussian,
    generator: torch.Generator | None = None,
    sample_block: int = 256,
    component_block: int = 1024,
) -> dict[str, float]:
    """{"mutual_info": I(x; z), "total_correlation": TC(q(z))} for the N samples whose posteriors are given, in
    nats: O(N^2) time, memory of one (sample_block, component_block, latent) block."""
    loc, scale = posterior.loc, posterior.scale
    n, d = loc.shape
    negative_entropy = (-0.5 * d * (1 + LOG_2PI) - scale.log().sum(-1)).mean()
    z = loc + scale * torch.randn(loc.shape, generator=generator, dtype=loc.dtype).to(loc.device)
    log_q_sum, log_marginals_sum = 0.0, 0.0
    for start in range(0, n, sample_block):
        zb = z[start : start + sample_block, None, :]  # (b, 1, d) against components (1, c, d)
        log_q = torch.full((len(zb),), -math.inf, dtype=loc.dtype, device=loc.device)
        log_marginals = torch.full((len(zb), d), -math.inf, dtype=loc.dtype, device=loc.device)
        for first in range(0, n, component_block):
            m, s = loc[None, first : first + component_block], scale[None, first : first + component_block]
            per_dim = -0.5 * ((zb - m) / s).pow(2) - s.log() - 0.5 * LOG_2PI
            log_q = torch.logaddexp(log_q, torch.logsumexp(per_dim.sum(-1), dim=1))
            log_marginals = torch.logaddexp(log_marginals, torch.logsumexp(per_dim, dim=1))
        log_q_sum += float((log_q - math.log(n)).sum())
        log_marginals_sum += float((log_marginals - math.log(n)).sum())
    return {
        "mutual_info": float(negative_entropy) - log_q_sum / n,
        "total_correlation": (log_q_sum - log_marginals_sum) / n,
    }


MIG_BINS = 20  # equal-width bins of each latent dimension's posterior means (Locatello et al. 2019)


def mutual_information_gap(codes: torch.Tensor, labels: torch.Tensor, bins: int = MIG_BINS) -> float | None:
    """MIG of the factor `labels` (N,) in the codes (N, latent): the two largest I(z_j; factor) over the latent
    dimensions, each dimension cut into `bins` equal-width bins, their gap divided by H(factor). None when
    the factor takes one value only."""
    factor = labels.cpu().numpy()
    _, counts = np.unique(factor, return_counts=True)
    if len(counts) < 2:
        return None
    p = counts / counts.sum()
    entropy = float(-(p * np.log(p)).sum())
    informations = []
    for column in codes.float().cpu().numpy().T:
        edges = np.histogram_bin_edges(column, bins=bins)
        informations.append(mutual_info_score(factor, np.digitize(column, edges[1:-1])))
    top = [*sorted(informations, reverse=True), 0.0]
    return (top[0] - top[1]) / entropy


def factor_information_gaps(net, datamodule, n: int) -> dict[str, float]:
    """`mig_<factor>` for each labelled factor of the test split (`datamodule.test_factors()`: name -> (N,)
    labels, negative where unknown, which are left out), on the posterior means of the first `n` test samples
    in the data module's own test loader (the same samples on every process)."""
    factors = datamodule.test_factors()
    if not factors or n < 2:
        return {}
    device, codes, seen = next(net.parameters()).device, [], 0
    for x, _ in datamodule.test_dataloader():
        with torch.no_grad():
            codes.append(net.infer(x.to(device)).code)
        seen += len(x)
        if seen >= n:
            break
    codes = torch.cat(codes)[:n]
    gaps = {}
    for name, labels in factors.items():
        labels = labels[: len(codes)]
        known = labels >= 0
        gap = mutual_information_gap(codes[known.to(codes.device)], labels[known]) if known.sum() > 1 else None
        if gap is not None:
            gaps[f"mig_{name}"] = gap
    return gaps


class LatentStats:
    """Statistics of the posteriors of a whole data split, added batch by batch: memory of O(latent) plus
    `keep` posteriors, a uniform random subsample (seeded; the `keep` smallest of one random key per sample)."""

    def __init__(self, keep: int = 2000, seed: int = 0) -> None:
        self.keep = keep
        self.generator = torch.Generator().manual_seed(seed)
        self.count = 0
        # (3 or 2, latent): sum of loc, sum of loc^2 and, where the prior factorises, sum of KL; in float64
        self.sums: torch.Tensor | None = None
        self.kept: tuple[torch.Tensor, ...] | None = None  # keys, loc, scale, labels
        self.gaussian = True  # every posterior added was a diagonal Gaussian

    def add(
        self,
        posterior: PosteriorDistribution,
        kl_per_dim: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> None:
        """A batch's posteriors, the KL of each of their dimensions (None where the prior does not factorise)
        and their labels (for MIG). Active units and MIG read each posterior's `code`; the mutual information and
        total correlation need diagonal Gaussian posteriors and are left out for others."""
        loc = posterior.code.detach()
        gaussian = posterior.gaussian
        self.gaussian = self.gaussian and gaussian is not None
        scale = gaussian.scale.detach() if gaussian is not None else torch.ones_like(loc)
        rows = [loc, loc.pow(2)] + ([kl_per_dim.detach()] if kl_per_dim is not None else [])
        batch = torch.stack(rows).double().sum(1)
        self.sums = batch if self.sums is None else self.sums + batch
        self.count += len(loc)
        if self.keep:
            keys = torch.rand(len(loc), generator=self.generator).to(loc.device)
            labels = torch.full((len(loc),), -1, device=loc.device) if labels is None else labels.to(loc.device)
            kept = (keys, loc, scale, labels)
            if self.kept is not None:
                kept = tuple(torch.cat(pair) for pair in zip(self.kept, kept, strict=True))
            order = kept[0].argsort()[: self.keep]
            self.kept = tuple(part[order] for part in kept)

    def results(self, reduce: Callable[[torch.Tensor], torch.Tensor] | None = None, mutual_info: bool = True):
        """{"active_units", "mutual_info" and "total_correlation" (on this process's subsample), "mig" (of the
        labels, where they take two values or more), "kl_dim_NNN" (where the prior factorises)}; `reduce` sums
        the streamed sums over processes."""
        if self.sums is None:
            return {}
        rows = len(self.sums)
        totals = torch.cat([self.sums.flatten(), self.sums.new_tensor([self.count])])
        if reduce is not None:
            totals = reduce(totals)
        count = float(totals[-1])
        mean, mean_square, *kl = (totals[:-1].view(rows, -1) / count).unbind()
        variance = (mean_square - mean.pow(2)) * count / max(count - 1, 1)
        values = {"active_units": float(active_units(variance)) if count > 1 else 0.0}
        if mutual_info and self.kept is not None and self.gaussian:
            generator = torch.Generator().manual_seed(int(self.generator.initial_seed()))
            values |= aggregate_posterior_information(DiagonalGaussian(*self.kept[1:3]), generator)
        if self.kept is not None and len(self.kept[1]) > 1:
            mig = mutual_information_gap(self.kept[1], self.kept[3])
            if mig is not None:
                values["mig"] = mig
        if kl:
            values |= {f"kl_dim_{i:03d}": value for i, value in enumerate(kl[0].tolist())}
        return values
