"""What the module measures, in memory that does not grow with the data set.

- `RunningMeans`: sample-weighted means of a few scalars over an epoch, buffered and summed on the device (no
  host synchronisation per batch), which also remembers the first step whose values were not finite.
- `importance_sampled_log_likelihood` (Burda et al. 2016): log p(x) ~ logsumexp_k [log p(x|z_k) + log p(z_k)
  - log q(z_k|x)] - log K with z_k ~ q(z|x) and the model's prior p(z); a stochastic lower bound that tightens as
  K grows. Per sample, nats.
- `LatentStats`: over a whole test split, streamed batch by batch: active units (Burda et al. 2016: dimensions u
  with Cov_x(E_q[z_u]) > 0.01, E_q[z] read as the posterior's `code`: a flow's is its code at the Gaussian's
  mean, not its mean), the KL of each latent dimension averaged over the samples (where the prior
  factorises), the total correlation and an upper bound on I(x; z) of `gaussian_information` with jackknife
  standard errors (`jackknife`), and on a seeded uniform subsample of the posteriors, the lower bound
  `mutual_info_lower_bound` and MIG. docs/estimates.md says why these estimators and what each can miss.
- `discriminator_total_correlation`: the total correlation of codes by a discriminator of its own (the
  density-ratio trick), which sees the non-linear dependence the Gaussian estimate cannot; for small codes.
- `mutual_information_gap` (MIG, Chen et al. 2018): of a labelled factor, the gap between the two latent
  dimensions that carry the most information about it, over its entropy; 1 when one dimension alone encodes it;
  `factor_information_gaps` gives it for each labelled factor of a data set (UTKFace's age, gender and race).
"""

from __future__ import annotations

import itertools
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
    when the means or that step are asked for, and when the buffer is full.

    A name `<name>_var` beside `<name>` is the step's variance of the per-sample values about the step's own
    mean; it is folded as the second moment var + mean^2 in float64 (where the square of a float32 mean is exact)
    and comes out as `<name>_se`, the standard error of `<name>` over all samples. Squares summed in float32
    would lose that variance to cancellation where the values are large and alike."""

    ROWS = 64  # steps buffered before a fold

    def __init__(self, names: Sequence[str]) -> None:
        self.names = tuple(names)
        # (column of <name>, column of <name>_var) of each value whose standard error is asked for
        self.moments = [
            (self.names.index(name.removesuffix("_var")), i)
            for i, name in enumerate(self.names)
            if name.endswith("_var") and name.removesuffix("_var") in self.names
        ]
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
        rows = rows.double()
        for mean, var in self.moments:
            rows[:, var] += rows[:, mean].square()
        self.sums += samples @ rows
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
        means = {name: total / count for name, total in zip(self.names, sums, strict=True)}
        for mean, var in self.moments:
            second_moment = means.pop(self.names[var])
            spread = max(second_moment - means[self.names[mean]] ** 2, 0.0)
            means[f"{self.names[mean]}_se"] = math.sqrt(spread / max(count - 1, 1))
        return means


def importance_sampled_log_likelihood(
    net, prior, likelihood, x: torch.Tensor, k: int, chunk: int = 100, generator: torch.Generator | None = None
) -> torch.Tensor:
    """log p(x) estimated with `k` importance samples from q(z|x), `chunk` samples at a time; shape (batch,).
    `generator` (on the images' device) makes the draws reproducible."""
    log_weights = log_importance_weights(net, prior, likelihood, x, net.infer(x), k, generator, chunk)
    return torch.logsumexp(log_weights, dim=0) - math.log(k)


def log_importance_weights(
    net,
    prior,
    likelihood,
    x: torch.Tensor,
    posterior,
    n: int,
    generator: torch.Generator | None = None,
    chunk: int = 100,
) -> torch.Tensor:
    """log p(x|z) + log p(z) - log q(z|x) at `n` draws z from `posterior` (any `PosteriorDistribution` of the
    images `x`, the network's own or another), decoded `chunk` draws at a time; shape (n, batch): their mean over
    the draws estimates the ELBO of that posterior, their log-mean-exp log p(x)."""
    log_weights = []
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        z, log_q = posterior.rsample_with_log_prob(generator, m)  # (m, batch, latent), (m, batch)
        params = net.decode(z.reshape(-1, z.shape[-1]))
        repeated_x = x.unsqueeze(0).expand(m, *x.shape).reshape(-1, *x.shape[1:])
        log_px_z = likelihood.log_prob(repeated_x, params).view(m, -1)
        log_weights.append(log_px_z + prior.log_prob(z) - log_q)
    return torch.cat(log_weights)


def best_gaussian_elbo(
    net,
    prior,
    likelihood,
    x: torch.Tensor,
    k: int = 1000,
    steps: int = 1000,
    draws: int = 10,
    lr: float = 1e-2,
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """Cremer et al. (2018)'s split of the inference gap on images `x`, per image, nats: each image gets its own
    diagonal Gaussian q*(z|x), started at the network's Gaussian and fitted to that image's ELBO by Adam (`steps`
    steps of `draws` draws, the learning rate from `lr` down to 0 on a cosine; the network unchanged).

    Returned, each of shape (batch,): `log_px`, importance-sampled from the network's own posterior q (any
    `PosteriorDistribution`, `k` draws, as `test/nll`; q* is no proposal to use: fitted this way it is narrower
    than a correlated posterior, and its weights' tails would bias the estimate low); `elbo`, the ELBO of q (the
    same draws); `elbo_best_gaussian`, the ELBO of q* (`k` draws). log_px - elbo_best_gaussian is the
    approximation gap of diagonal Gaussians, which no Gaussian encoder closes and a richer family can;
    elbo_best_gaussian - elbo is the amortisation gap of a Gaussian encoder (negative where a richer posterior
    does better than the best Gaussian of each image)."""
    with torch.no_grad():
        start = net.encode(x)
    loc, log_scale = start.loc.clone().requires_grad_(), start.scale.log().clone().requires_grad_()
    optimizer = torch.optim.Adam([loc, log_scale], lr=lr)
    # the rate falls to 0 (cosine): at a constant rate the noisy gradients keep q* jittering short of its optimum
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    for _ in range(steps):
        fitted = DiagonalGaussian(loc, log_scale.exp())
        elbo = log_importance_weights(net, prior, likelihood, x, fitted, draws, generator).mean(0)
        # a sum: each image's parameters get their own image's gradient; the network's get none
        loc.grad, log_scale.grad = torch.autograd.grad(-elbo.sum(), [loc, log_scale])
        optimizer.step()
        schedule.step()
    with torch.no_grad():
        fitted = DiagonalGaussian(loc.detach(), log_scale.detach().exp())
        best = log_importance_weights(net, prior, likelihood, x, fitted, k, generator)
        own = log_importance_weights(net, prior, likelihood, x, net.infer(x), k, generator)
    log_px = torch.logsumexp(own, 0) - math.log(k)
    return {"log_px": log_px, "elbo": own.mean(0), "elbo_best_gaussian": best.mean(0)}


def active_units(variance: torch.Tensor, threshold: float = ACTIVE_UNIT_THRESHOLD) -> int:
    """The number of latent dimensions whose posterior mean varies across the data by more than `threshold`."""
    return int((variance > threshold).sum())


def counted_active_units(count: torch.Tensor, code_sum: torch.Tensor, outer_sum: torch.Tensor) -> torch.Tensor:
    """`active_units` of the codes whose count, sum and sum of outer products are given (0 for fewer than 2)."""
    mean = code_sum / count
    variance = (outer_sum.diagonal() / count - mean.pow(2)) * count / (count - 1).clamp(min=1)
    return torch.tensor(float(active_units(variance)) if float(count) > 1 else 0.0, dtype=torch.float64)


def mutual_info_lower_bound(
    posterior: DiagonalGaussian,
    generator: torch.Generator | None = None,
    sample_block: int = 256,
    component_block: int = 1024,
) -> float:
    """A lower bound on I(x; z) from the N posteriors given, nats: with one z_i drawn from each q(z|x_i),
    mean_i [log q(z_i|x_i) - log (1/N sum_j q(z_i|x_j))], the InfoNCE bound with the critic log q(z|x) (Poole
    et al. 2019; the usual estimate of Hoffman & Johnson 2016 and He et al. 2019), below I(x; z) in expectation
    and never above log N. O(N^2) time; memory of one (sample_block, component_block, latent) block."""
    loc, scale = posterior.loc, posterior.scale
    n = len(loc)
    noise = torch.randn(loc.shape, generator=generator, dtype=loc.dtype).to(loc.device)
    z = loc + scale * noise
    own = (-0.5 * noise.pow(2) - scale.log() - 0.5 * LOG_2PI).sum(-1).mean()  # log q(z_i|x_i): at most log N
    log_q_sum = 0.0
    for start in range(0, n, sample_block):
        zb = z[start : start + sample_block, None, :]  # (b, 1, d) against components (1, c, d)
        log_q = torch.full((len(zb),), -math.inf, dtype=loc.dtype, device=loc.device)
        for first in range(0, n, component_block):
            m, s = loc[None, first : first + component_block], scale[None, first : first + component_block]
            per_dim = -0.5 * ((zb - m) / s).pow(2) - s.log() - 0.5 * LOG_2PI
            log_q = torch.logaddexp(log_q, torch.logsumexp(per_dim.sum(-1), dim=1))
        log_q_sum += float((log_q - math.log(n)).sum())
    return float(own) - log_q_sum / n


def gaussian_information(
    count: torch.Tensor, code_sum: torch.Tensor, outer_sum: torch.Tensor, variance_sum: torch.Tensor, log_scale_sum
) -> tuple[torch.Tensor, torch.Tensor]:
    """(TC, MI) of the Gaussian with the aggregate posterior's mean and covariance, from the sums over N diagonal
    Gaussian posteriors N(m_i, diag(s_i^2)) of m_i, m_i m_i^T, s_i^2 and sum_d log s_id; nats. The aggregate's
    covariance is S = Cov(m) + diag(mean s^2) (the law of total covariance, exact for any posteriors).

    - total correlation: 0.5 (sum_d log S_dd - log det S), the TC of N(mean m, S): exactly q(z)'s where q(z) is
      Gaussian; in general it counts only the dependence a covariance carries.
    - mutual information: 0.5 log det S - mean_i sum_d log s_id = E_x KL(q(z|x) || N(mean m, S)), which is
      I(x; z) + KL(q(z) || N(mean m, S)): an upper bound on I(x; z), exact where q(z) is Gaussian, and the
      smallest E_x KL(q(z|x) || g) over Gaussians g (so at most the rate of a standard normal prior)."""
    mean = code_sum / count
    covariance = outer_sum / count - torch.outer(mean, mean) + torch.diag(variance_sum / count)
    log_det = torch.linalg.slogdet(covariance)[1]
    total_correlation = 0.5 * (covariance.diagonal().log().sum() - log_det)
    return total_correlation, 0.5 * log_det - log_scale_sum / count


def discriminator_total_correlation(
    codes: torch.Tensor,
    hidden_dims: Sequence[int] = (128, 128),
    steps: int = 1500,
    batch_size: int = 256,
    lr: float = 1e-3,
    check_every: int = 50,
    seed: int = 0,
) -> tuple[float, float]:
    """(TC, its standard error) of the distribution q(z) that `codes` (N, D) are drawn from, nats: KL(q(z) ||
    prod_j q(z_j)) by the density-ratio trick (Nguyen et al. 2010; the estimate FactorVAE trains on, Kim & Mnih
    2018), with a discriminator of its own (an MLP of `hidden_dims`, LeakyReLU 0.2, Adam at `lr`). Half the codes
    train it against draws of prod_j q(z_j) (each dimension taken from an independent code of that half), a
    quarter chooses the step to keep (the lowest cross-entropy there, checked every `check_every` steps, so that
    it stops before it learns the training codes by heart), and the last quarter gives the estimate: the mean of
    its log-odds log q(z) - log prod_j q(z_j) there, with the standard error over those codes.

    Unlike `gaussian_information`'s TC it sees dependence a covariance does not carry. It is biased low where
    the discriminator cannot learn the ratio from the codes it has, a bias that grows fast with D: meant for
    small codes (docs/estimates.md gives it measured on Gaussians of 10 and 50 dimensions)."""
    generator = torch.Generator().manual_seed(seed)
    codes = codes.detach().float().cpu()
    n, dims = codes.shape
    order = torch.randperm(n, generator=generator)
    fit, check, held = (codes[part] for part in (order[: n // 2], order[n // 2 : 3 * n // 4], order[3 * n // 4 :]))

    def product_of_marginals(pool: torch.Tensor, count: int) -> torch.Tensor:
        return pool.gather(0, torch.randint(len(pool), (count, dims), generator=generator))

    sizes = [dims, *hidden_dims]
    layers: list[torch.nn.Module] = []
    with torch.random.fork_rng(devices=[]):  # the discriminator's start: seeded, the caller's RNG untouched
        torch.manual_seed(seed)
        for n_in, n_out in itertools.pairwise(sizes):
            layers += [torch.nn.Linear(n_in, n_out), torch.nn.LeakyReLU(0.2)]
        discriminator = torch.nn.Sequential(*layers, torch.nn.Linear(sizes[-1], 1))
    optimizer = torch.optim.Adam(discriminator.parameters(), lr=lr)
    check_product = product_of_marginals(check, 4 * len(check))
    softplus = torch.nn.functional.softplus

    def check_loss() -> float:  # cross-entropy on the checking quarter: joint codes 1, product draws 0
        with torch.no_grad():
            return float(softplus(-discriminator(check)).mean() + softplus(discriminator(check_product)).mean())

    best, kept = check_loss(), [p.detach().clone() for p in discriminator.parameters()]
    labels = torch.cat([torch.ones(batch_size), torch.zeros(batch_size)])
    for step in range(1, steps + 1):
        joint = fit[torch.randint(len(fit), (batch_size,), generator=generator)]
        logits = discriminator(torch.cat([joint, product_of_marginals(fit, batch_size)])).squeeze(-1)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % check_every == 0 and (current := check_loss()) < best:
            best, kept = current, [p.detach().clone() for p in discriminator.parameters()]
    with torch.no_grad():
        for parameter, value in zip(discriminator.parameters(), kept, strict=True):
            parameter.copy_(value)
        log_odds = discriminator(held).squeeze(-1)
    return float(log_odds.mean()), float(log_odds.std() / math.sqrt(len(log_odds)))


def jackknife(estimate: Callable[..., torch.Tensor], groups: Sequence[torch.Tensor]) -> tuple[float, float]:
    """(bias-corrected estimate, standard error) of a statistic of sums, by the delete-a-group jackknife (Efron &
    Tibshirani 1993, ch. 11): `groups` are the sums of each of G groups of samples, stacked on the first
    dimension; `estimate(*sums)` is the statistic. The correction removes the estimate's 1/N bias (that of a
    log determinant of a sample covariance, here)."""
    g = len(groups[0])
    whole = estimate(*(part.sum(0) for part in groups))
    left_out = torch.stack([estimate(*(part.sum(0) - part[i] for part in groups)) for i in range(g)])
    corrected = g * whole - (g - 1) * left_out.mean()
    error = ((g - 1) / g * (left_out - left_out.mean()).pow(2).sum()).sqrt()
    return float(corrected), float(error)


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
    """Statistics of the posteriors of a whole data split, added batch by batch: memory of O(latent^2) plus
    `keep` posteriors, a uniform random subsample (seeded; the `keep` smallest of one random key per sample).

    The sums are kept per group of samples (sample i of a process in group i mod `GROUPS`), for the jackknife's
    standard errors; under DDP the processes' sums are added before anything is estimated, so every estimate
    but the subsample's covers the whole split."""

    GROUPS = 10

    def __init__(self, keep: int = 2000, seed: int = 0, layers: Sequence[int] | None = None) -> None:
        """`layers`: the sizes of a hierarchical code's layers, side by side in it (None: one layer)."""
        self.keep, self.layers = keep, list(layers) if layers is not None else None
        self.generator = torch.Generator().manual_seed(seed)
        self.count = 0
        # per group, in float64: count, sums of the codes, of their outer products, of the posteriors' variances,
        # of sum_d log scale, and (where the prior factorises) of the KL of each dimension
        self.sums: dict[str, torch.Tensor] = {}
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
        group = (torch.arange(len(loc), device=loc.device) + self.count) % self.GROUPS
        one_hot = torch.nn.functional.one_hot(group, self.GROUPS).double().T  # (groups, batch)
        code = loc.double()
        rows = {
            "count": one_hot.sum(1),
            "code": one_hot @ code,
            "outer": torch.einsum("gn,ni,nj->gij", one_hot, code, code),
            "variance": one_hot @ scale.double().pow(2),
            "log_scale": one_hot @ scale.double().log().sum(-1),
        }
        if kl_per_dim is not None:
            rows["kl"] = one_hot @ kl_per_dim.detach().double()
        indices = getattr(posterior, "indices", None)  # a quantised code's codebook indices (posterior=vq)
        if indices is not None:
            uses = torch.nn.functional.one_hot(indices.flatten(1), posterior.n_codes).sum(1).double()  # (batch, K)
            rows["codebook"] = one_hot @ uses
        self.sums = {key: self.sums[key] + value if key in self.sums else value for key, value in rows.items()}
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
        """{"active_units" (and "active_units_layer<l>", per layer of a hierarchical code), "codebook_perplexity"
        and "codebook_used" (a quantised code's: exp of the entropy of the codes' share of the split's positions,
        from 1 to the codebook's size, and the fraction of the codebook used at least once), "kl_dim_NNN" (where
        the prior factorises), "total_correlation" and "mutual_info" (the Gaussian estimates of
        `gaussian_information` on the whole split, jackknife-corrected, each with its "_se"), "mutual_info_lower"
        (`mutual_info_lower_bound` on this process's subsample), "mig" (of the labels, where they take two values
        or more)}; `reduce` sums the streamed sums over processes."""
        if not self.sums:
            return {}
        shapes = {key: value.shape for key, value in self.sums.items()}
        totals = torch.cat([value.flatten() for value in self.sums.values()])
        if reduce is not None:
            totals = reduce(totals)
        sums = dict(zip(shapes, totals.split([value.numel() for value in self.sums.values()]), strict=True))
        sums = {key: value.view(shapes[key]) for key, value in sums.items()}
        count = float(sums["count"].sum())
        codes = [sums[key] for key in ("count", "code", "outer")]
        count_all, code_all, outer_all = (part.sum(0) for part in codes)  # over the groups
        values = {"active_units": float(counted_active_units(count_all, code_all, outer_all))}
        if bool((sums["count"] > 1).all()):
            values["active_units_se"] = jackknife(counted_active_units, codes)[1]
        start = 0
        for layer, size in enumerate(self.layers or [], 1):  # "active_units_layer<l>": layer 1 is nearest x
            dims = slice(start, start + size)
            units = counted_active_units(count_all, code_all[dims], outer_all[dims, dims])
            values[f"active_units_layer{layer}"], start = float(units), start + size
        if "codebook" in sums:  # how many codes the split uses, and how evenly: exp of the entropy of their use
            uses = sums["codebook"].sum(0)
            share = uses / uses.sum()
            entropy = -float((share * share.clamp_min(1e-300).log()).sum())
            values |= {"codebook_perplexity": math.exp(entropy), "codebook_used": float((uses > 0).double().mean())}
        if "kl" in sums:
            values |= {f"kl_dim_{i:03d}": value for i, value in enumerate((sums["kl"].sum(0) / count).tolist())}
        if mutual_info and self.gaussian and bool((sums["count"] > 1).all()):
            parts = [sums[key] for key in ("count", "code", "outer", "variance", "log_scale")]
            for i, name in enumerate(("total_correlation", "mutual_info")):
                values[name], values[f"{name}_se"] = jackknife(lambda *s, i=i: gaussian_information(*s)[i], parts)
        if mutual_info and self.kept is not None and self.gaussian and len(self.kept[1]) > 1:
            generator = torch.Generator().manual_seed(int(self.generator.initial_seed()))
            values["mutual_info_lower"] = mutual_info_lower_bound(DiagonalGaussian(*self.kept[1:3]), generator)
        if self.kept is not None and len(self.kept[1]) > 1:
            mig = mutual_information_gap(self.kept[1], self.kept[3])
            if mig is not None:
                values["mig"] = mig
        return values
