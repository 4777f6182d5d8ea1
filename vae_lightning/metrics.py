"""Evaluation metrics of a trained VAE, each in nats where it is a likelihood.

- `importance_sampled_log_likelihood` (Burda et al. 2016): log p(x) ~ logsumexp_k [log p(x|z_k) + log p(z_k)
  - log q(z_k|x)] - log K with z_k ~ q(z|x); a stochastic lower bound that tightens as K grows. Per sample.
- `active_units` (Burda et al. 2016): dimensions u with Cov_x(E_q[z_u]) > 0.01.
- `mutual_information`: the usual estimate of I(x; z) under q (Hoffman & Johnson 2016, as computed by
  He et al. 2019): E_x[-H(q(z|x))] - E_{z ~ q(z)}[log q(z)], the aggregate posterior q(z) taken as the mixture
  of the samples' posteriors.
"""

from __future__ import annotations

import math

import torch

from vae_lightning.distributions import LOG_2PI, DiagonalGaussian, standard_normal_log_prob

ACTIVE_UNIT_THRESHOLD = 0.01


def importance_sampled_log_likelihood(
    net, likelihood, x: torch.Tensor, k: int, chunk: int = 100, generator: torch.Generator | None = None
) -> torch.Tensor:
    """log p(x) estimated with `k` importance samples from q(z|x), `chunk` samples at a time; shape (batch,)."""
    posterior = net.encode(x)
    log_weights = []
    for start in range(0, k, chunk):
        n = min(chunk, k - start)
        eps = torch.randn((n, *posterior.loc.shape), generator=generator, dtype=posterior.loc.dtype).to(x.device)
        z = posterior.loc + posterior.scale * eps  # (n, batch, latent)
        flat_z = z.reshape(-1, z.shape[-1])
        logits = net.decode(flat_z)
        repeated_x = x.unsqueeze(0).expand(n, *x.shape).reshape(-1, *x.shape[1:])
        log_px_z = likelihood.log_prob(repeated_x, logits).view(n, -1)
        log_pz = standard_normal_log_prob(z)
        log_qz = posterior.log_prob(z)
        log_weights.append(log_px_z + log_pz - log_qz)
    return torch.logsumexp(torch.cat(log_weights), dim=0) - math.log(k)


def active_units(loc: torch.Tensor, threshold: float = ACTIVE_UNIT_THRESHOLD) -> int:
    """The number of latent dimensions whose posterior mean varies across the data by more than `threshold`."""
    if len(loc) < 2:
        return 0
    return int((loc.var(dim=0) > threshold).sum())


def mutual_information(
    posterior: DiagonalGaussian, chunk: int = 1000, generator: torch.Generator | None = None
) -> float:
    """I(x; z) under q for the samples whose posteriors are given (N of them), in nats; O(N^2) in chunks."""
    loc, scale = posterior.loc, posterior.scale
    n, d = loc.shape
    negative_entropy = (-0.5 * d * (1 + LOG_2PI) - scale.log().sum(-1)).mean()
    z = loc + scale * torch.randn(loc.shape, generator=generator, dtype=loc.dtype).to(loc.device)
    log_q_aggregate = []
    for start in range(0, n, chunk):
        zc = z[start : start + chunk, None, :]  # (c, 1, d) against every posterior (1, n, d)
        log_density = (-0.5 * ((zc - loc[None]) / scale[None]).pow(2) - scale[None].log() - 0.5 * LOG_2PI).sum(-1)
        log_q_aggregate.append(torch.logsumexp(log_density, dim=1) - math.log(n))
    return float(negative_entropy - torch.cat(log_q_aggregate).mean())
