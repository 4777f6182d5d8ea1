"""Training objectives. Each is an `nn.Module` that receives the network, the prior and the batch, draws what it
needs (one code per row, or k), and returns the batch's loss with its own named terms. Each states its
reduction; `beta` is the schedule's weight of the KL (or of its parts). One class per `conf/loss/*.yaml`.

- `ELBO`   (default): per-sample negative ELBO in nats. recon = -log p(x|z) summed over pixels,
  kl = KL(q(z|x) || p(z)) summed over latent dims (closed form or single-sample, as the prior offers), both
  averaged over the batch; loss = recon + beta * kl. With beta = 1 the loss is the negative ELBO per sample.
- `IWAE`: the importance-weighted bound (Burda et al. 2016) with k samples per row, drawn and decoded as one
  batch: loss = -mean_x [logsumexp_k (log p(x|z_k) + beta (log p(z_k) - log q(z_k|x))) - log k], nats per
  sample; k = 1 is the ELBO. `dreg`: the doubly reparameterised gradient (Tucker et al. 2019).
- `MIWAE`: Rainforth et al. 2018. The mean of m independent IWAE bounds of k samples each; nats per sample.
- `CIWAE`: Rainforth et al. 2018. elbo_weight * ELBO + (1 - elbo_weight) * IWAE bound on the same k samples.
- `BetaTCVAE`: Chen et al. 2018. The KL split into index-code mutual information, total correlation (TC) and
  dimension-wise KL, with log q(z) estimated over the batch by minibatch-weighted or (`stratified`)
  minibatch-stratified sampling, which need the data set's size N (the model gives it); loss = recon + beta *
  (mi + tc_weight * tc + dw_kl), per sample, averaged over the batch. A factorised prior only.
- `InfoVAE`: Zhao et al. 2019. loss = recon + beta * kl_weight * kl + mmd_weight * MMD^2(q(z), p(z)), where
  MMD^2 is the unbiased estimate between the batch's codes and as many prior samples (Gaussian kernel of
  bandwidth^2 = latent dims); kl_weight 0 is the MMD-VAE. The MMD is one number for the batch, added to each
  sample's loss.
- `FactorVAE`: Kim & Mnih 2018. loss = mean over the batch of (recon + beta * kl + tc_weight * tc_i), where
  tc_i = logit_joint - logit_product of a discriminator D at the sample's code (the density-ratio estimate of the
  total correlation KL(q(z) || prod_j q(z_j))), plus D's own loss: its cross-entropy (mean over the 2N codes
  it classifies, nats) between the batch's codes and the same codes with each dimension permuted across the
  batch. D is the objective's network: its cross-entropy reaches only D (the codes are detached), the TC term
  only the VAE (D's weights are detached there).
- `VQVAE`: van den Oord et al. 2017. loss = recon + beta * kl + commitment_weight * ||z_e - sg(z_q)||^2 (summed
  over the latent dimensions), per sample, averaged over the batch; with `posterior=vq` and `prior=codes`.
- `SeedLoss`: exactly the seed's reduction. recon = squared error averaged over the batch AND the pixels
  (of the sigmoid image), kl = KL summed over the batch AND the latent dims; loss = recon + beta * kl.
  The per-sample ELBO's beta equals the seed's beta times n_pixels times batch_size.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from vae_lightning.core import checks
from vae_lightning.core.config import call
from vae_lightning.core.errors import ConfigValueError
from vae_lightning.distributions import DiagonalGaussian
from vae_lightning.likelihoods import Bernoulli, Likelihood, only_output
from vae_lightning.nets.base import VAENet, VAEOutput
from vae_lightning.priors import Prior

# a likelihood, or a factory of one called with the images' shape (what a `_partial_` config builds)
LikelihoodOrFactory = Likelihood | Callable[..., Likelihood]


@dataclass(frozen=True)
class LossTerms:
    loss: torch.Tensor
    terms: dict[str, torch.Tensor]  # batch means in the objective's units; always "recon" and "kl"
    beta: float
    per_sample: torch.Tensor  # the loss of each sample in the batch, in this objective's units (detached)
    sample: VAEOutput  # the posterior, and one code per row with its decoder outputs

    @property
    def recon(self) -> torch.Tensor:
        return self.terms["recon"]

    @property
    def kl(self) -> torch.Tensor:
        return self.terms["kl"]


class Objective(nn.Module):
    """Base class. `likelihood`: the decoder's p(x|z) (None for an objective without one, like the seed's MSE).
    `term_names`: the terms it logs besides the loss, as `train/<name>`, `val/<name>`, `test/<name>`."""

    term_names: tuple[str, ...] = ("recon", "kl")

    def __init__(self, likelihood: LikelihoodOrFactory | None) -> None:
        super().__init__()
        self.likelihood = likelihood  # a factory (a `_partial_` config) is built by `fit_to_images`

    @property
    def outputs_per_pixel(self) -> int:
        return 1 if self.likelihood is None else self.likelihood.outputs_per_pixel

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        """The decoded image in [0, 1]: the likelihood's mean."""
        return self.likelihood.mean(params) if self.likelihood is not None else torch.sigmoid(only_output(params))

    def fit_to_images(self, input_shape: tuple[int, ...]) -> None:
        """Told the images' shape before the network is built: a likelihood given as a factory is built for it
        (the automatic choice and the per-pixel and per-channel scales depend on it)."""
        if self.likelihood is not None and not isinstance(self.likelihood, Likelihood):
            self.likelihood = call(self.likelihood, "loss.likelihood", input_shape=input_shape)

    def fit_to_data(self, n_train: int) -> None:
        """Told the training set's size when training starts (for estimators that need it)."""

    def fit_to_eval_data(self, n: int) -> None:
        """Told the size of the split about to be validated or tested (used in eval mode, for the same estimators)."""

    def fit_to_net(self, net: VAENet) -> None:
        """Told the network once it is built (an objective with networks of its own sizes them by its codes)."""

    def fit_to_prior(self, prior: Prior) -> None:
        """Told the prior once it is built (an objective that needs a kind of prior refuses others here)."""

    def optimizer_groups(self, parameters: Iterable[nn.Parameter]) -> Any:
        """What the optimizer is given of the model's `parameters`: all of them alike, unless the objective brings
        networks of its own with optimizer settings of their own (then a parameter group each: one Adam with
        two groups steps each group as two Adams would, and is saved and resumed with the model's)."""
        return parameters

    def forward(
        self, net: VAENet, prior: Prior, x: torch.Tensor, beta: float, generator: torch.Generator | None = None
    ) -> LossTerms:
        raise NotImplementedError


class WithLikelihood(Objective):
    """Base class of the objectives built on a likelihood (Bernoulli pixels when none is given)."""

    def __init__(self, likelihood: LikelihoodOrFactory | None = None) -> None:
        super().__init__(likelihood if likelihood is not None else Bernoulli())


class ELBO(WithLikelihood):
    """Negative ELBO per sample (nats), averaged over the batch. `free_bits` (nats; 0: off): the free bits of
    Kingma et al. (2016) - each group of the KL (a latent dimension, or a ladder's layer: `Prior.kl_groups`)
    whose mean over the batch is below `free_bits` counts as `free_bits`, with no gradient, so nothing is gained
    by pushing it lower; the logged `kl` stays the KL itself. `spectral_weight` (0: off): the spectral
    regularisation of Vahdat & Kautz (2020), `spectral_weight` times the sum over the network's linear and
    convolutional layers of the largest singular value of each weight (a convolution's kernel as a matrix of
    output channels by the rest), computed exactly, added once to the batch's loss and logged as `spectral`: it
    keeps the layers smooth where deep hierarchies become unstable. `kl_balance` (a ladder's layers): NVAE's KL
    balancing (Vahdat & Kautz 2020), a warm-up per layer: while beta is below 1, the KL of layer l is weighted by
    gamma_l = c_l / mean(c), c_l = (its batch mean + 0.01) / (its size / the smallest layer's size), the weights
    held constant (no gradient) - a layer that carries more than its share of the KL per dimension is pulled
    harder, so no layer takes all the information while the others collapse; from beta 1 on the plain sum."""

    def __init__(
        self,
        likelihood: LikelihoodOrFactory | None = None,
        free_bits: float = 0.0,
        spectral_weight: float = 0.0,
        kl_balance: bool = False,
    ) -> None:
        super().__init__(likelihood)
        self.free_bits = checks.number("free_bits", free_bits, low=0.0)
        self.spectral_weight = checks.number("spectral_weight", spectral_weight, low=0.0)
        self.kl_balance = checks.boolean("kl_balance", kl_balance)
        if self.spectral_weight:
            self.term_names = (*ELBO.term_names, "spectral")

    def fit_to_prior(self, prior: Prior) -> None:
        if self.free_bits and prior.kl_grouped_by is None:
            reason = f"needs a prior whose KL splits into groups (standard_normal, ladder), not {type(prior).__name__}"
            raise ConfigValueError("free_bits", reason, self.free_bits)
        if self.kl_balance and prior.kl_grouped_by != "layer":
            reason = f"balances the KLs of a ladder's layers (model=ladder prior=ladder), not of {type(prior).__name__}"
            raise ConfigValueError("kl_balance", reason, self.kl_balance)

    def forward(self, net, prior, x, beta, generator=None) -> LossTerms:
        out = net(x, generator)
        recon_per_sample = -self.likelihood.log_prob(x, out.params)
        kl_per_sample = prior.kl(out.posterior, out.z, out.log_q)
        balance = self.kl_balance and float(beta) < 1.0
        if self.free_bits or balance:
            groups = prior.kl_groups(out.posterior, out.z)
            if groups is None:
                reason = "needs per-dimension KLs: a Gaussian posterior (this one is a flow) or the ladder"
                key, value = ("loss.free_bits", self.free_bits) if self.free_bits else ("loss.kl_balance", True)
                raise ConfigValueError(key, reason, value)
            if self.free_bits:
                floored = groups.mean(0) < self.free_bits  # per group, over the batch
                groups = torch.where(floored, self.free_bits, groups)
            if balance:
                groups = groups * balancing_weights(groups, net.latent_dims)
            per_sample = recon_per_sample + beta * groups.sum(-1)
        else:
            per_sample = recon_per_sample + beta * kl_per_sample
        terms = {"recon": recon_per_sample.mean(), "kl": kl_per_sample.mean()}
        loss = per_sample.mean()
        if self.spectral_weight:
            terms["spectral"] = spectral_norms(net)
            loss = loss + self.spectral_weight * terms["spectral"]
        return LossTerms(loss, terms, beta, per_sample.detach(), out)


def balancing_weights(groups: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    """NVAE's KL balancing weights of the layers whose per-sample KLs are `groups` (N, L) and sizes `sizes`: c_l =
    (the batch mean of layer l's KL + 0.01) / (its size / the smallest size), divided by their mean; no gradient."""
    relative_size = torch.tensor(sizes, dtype=groups.dtype, device=groups.device) / min(sizes)
    share = (groups.detach().abs().mean(0) + 0.01) / relative_size
    return share / share.mean()


def spectral_norms(net: nn.Module) -> torch.Tensor:
    """The sum over `net`'s linear and convolutional layers of the largest singular value of each weight (as a
    matrix: output channels by the rest), exact, with its gradient."""
    layers = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.ConvTranspose2d)
    weights = [m.weight.flatten(1) for m in net.modules() if isinstance(m, layers)]
    return torch.stack([torch.linalg.matrix_norm(w.float(), ord=2) for w in weights]).sum()


class VQVAE(WithLikelihood):
    """The VQ-VAE's objective (van den Oord et al. 2017), per sample, averaged over the batch: loss = recon +
    beta * kl + commitment_weight * commitment. recon = -log p(x|z_q) summed over pixels, decoded at the
    straight-through code; kl = the prior's KL (positions * log K under `prior=codes`: a constant, there so that
    the logged terms and test/elbo are the paper's bound); commitment = ||z_e - sg(z_q)||^2 summed over the
    latent dimensions, which keeps the encoder's outputs near the codes they chose. The codebook moves by its
    own moving averages (`posterior=vq`), so the paper's codebook term is not part of the loss."""

    term_names = ("recon", "kl", "commitment")

    def __init__(self, likelihood: LikelihoodOrFactory | None = None, commitment_weight: float = 0.25) -> None:
        super().__init__(likelihood)
        self.commitment_weight = checks.number("commitment_weight", commitment_weight, low=0.0)

    def fit_to_net(self, net: VAENet) -> None:
        if not callable(getattr(net.posterior, "vectors", None)):
            reason = "loss=vqvae needs posterior=vq (a codebook)"
            raise ConfigValueError("posterior", reason, type(net.posterior).__name__)

    def forward(self, net, prior, x, beta, generator=None) -> LossTerms:
        out = net(x, generator)
        recon = -self.likelihood.log_prob(x, out.params)
        kl = prior.kl(out.posterior, out.z, out.log_q)
        commitment = (out.posterior.continuous - out.posterior.quantised).pow(2).sum(-1)
        per_sample = recon + beta * kl + self.commitment_weight * commitment
        terms = {"recon": recon.mean(), "kl": kl.mean(), "commitment": commitment.mean()}
        return LossTerms(per_sample.mean(), terms, beta, per_sample.detach(), out)


@dataclass(frozen=True)
class ImportanceWeights:
    """`n` codes per row drawn from q(z|x) and their log weights log w = log p(x|z) - beta (log q(z|x) - log p(z)),
    (n, N), with the terms the objectives log."""

    log_w: torch.Tensor
    log_px_z: torch.Tensor  # (n, N)
    log_ratio: torch.Tensor  # log q(z|x) - log p(z), (n, N)
    sample: VAEOutput  # the posterior and the first code of each row
    normalised: torch.Tensor | None = None  # with `dreg_groups`: the weights normalised within each group, (n, N)


def importance_weights(
    net: VAENet,
    prior: Prior,
    likelihood: Likelihood,
    x: torch.Tensor,
    beta: float,
    n: int,
    generator: torch.Generator | None = None,
    dreg_groups: int = 0,
) -> ImportanceWeights:
    """The log weights of `n` codes per row, decoded in one batch of n * N codes. With `dreg_groups` g > 0, the
    doubly reparameterised gradient (Tucker et al. 2019) of an objective that is sum_k w~_k log w_k within each of
    g groups of n / g codes (w~: the normalised weights): log q(z|x) is taken with its parameters held fixed (no
    score-function term), and the gradient reaching each code is scaled once more by its w~, so the encoder
    receives sum_k w~_k^2 d log w_k / dz_k dz_k/dphi; the decoder's and the prior's parameters receive sum_k
    w~_k d log w_k as in the IWAE gradient. Needs a diagonal Gaussian posterior (its density at any code)."""
    posterior = net.infer(x)
    z, log_q = posterior.rsample_with_log_prob(generator, n)  # (n, N, latent), (n, N)
    if dreg_groups:
        z = z.view_as(z)  # the codes as the weights see them; their gradient is rescaled below
        log_q = posterior.gaussian.detach().log_prob(z)
    params = net.decode(z.flatten(0, 1))
    repeated = x.expand(n, *x.shape).flatten(0, 1)
    log_px_z = likelihood.log_prob(repeated, params).view(n, len(x))
    log_ratio = log_q - prior.log_prob(z)
    log_w = log_px_z - beta * log_ratio
    normalised = None
    if dreg_groups:
        normalised = torch.softmax(log_w.detach().view(dreg_groups, -1, len(x)), dim=1).view(n, len(x))
        if z.requires_grad:
            z.register_hook(lambda grad: grad * normalised[..., None])
    sample = VAEOutput(posterior, z[0], params[: len(x)], log_q[0])
    return ImportanceWeights(log_w, log_px_z, log_ratio, sample, normalised)


def with_gradient_of(value: torch.Tensor, surrogate: torch.Tensor) -> torch.Tensor:
    """`value`, differentiated as `surrogate` is: value + surrogate - surrogate.detach()."""
    return value.detach() + surrogate - surrogate.detach()


class IWAE(WithLikelihood):
    """The importance-weighted bound with `k` samples per row, decoded in one batch of k * N codes. The logged
    recon and kl are the averages of -log p(x|z_k) and log q(z_k|x) - log p(z_k) over the k samples. With `dreg`
    the gradient is the doubly reparameterised one (Tucker et al. 2019; `importance_weights`): the same loss, the
    same gradient in expectation for beta 1, less variance for the encoder's; it needs `posterior=gaussian`."""

    def __init__(self, likelihood: LikelihoodOrFactory | None = None, k: int = 5, dreg: bool = False) -> None:
        super().__init__(likelihood)
        self.k = checks.positive_int("k", k)
        self.dreg = checks.boolean("dreg", dreg)
        self.m = 1  # independent bounds averaged (MIWAE)

    def fit_to_net(self, net: VAENet) -> None:
        if self.dreg and not net.posterior.factorised:
            reason = "does not go with the loss's `dreg: true`, which needs the posterior's density at any code"
            raise ConfigValueError("posterior", reason + ": use posterior=gaussian", type(net.posterior).__name__)

    def forward(self, net, prior, x, beta, generator=None) -> LossTerms:
        n = self.m * self.k
        weights = importance_weights(net, prior, self.likelihood, x, beta, n, generator, self.m if self.dreg else 0)
        grouped = weights.log_w.view(self.m, self.k, len(x))
        bound = (torch.logsumexp(grouped, dim=1) - math.log(self.k)).mean(0)  # (N,)
        per_sample = -bound
        loss = per_sample.mean()
        if self.dreg:
            normalised = weights.normalised.view(self.m, self.k, len(x))
            loss = with_gradient_of(loss, -(normalised * grouped).sum(1).mean(0).mean())
        terms = {"recon": -weights.log_px_z.mean(), "kl": weights.log_ratio.mean()}
        return LossTerms(loss, terms, beta, per_sample.detach(), weights.sample)


class MIWAE(IWAE):
    """MIWAE (Rainforth et al. 2018): the mean of `m` independent importance-weighted bounds of `k` samples each
    (m * k codes per row, decoded in one batch), nats per sample, averaged over the batch. m = 1 is the IWAE,
    k = 1 the ELBO averaged over m samples; a larger m at the same m * k trades bound tightness for a better
    encoder gradient."""

    def __init__(
        self, likelihood: LikelihoodOrFactory | None = None, k: int = 10, m: int = 5, dreg: bool = False
    ) -> None:
        super().__init__(likelihood, k, dreg)
        self.m = checks.positive_int("m", m)


class CIWAE(WithLikelihood):
    """CIWAE (Rainforth et al. 2018): per sample, elbo_weight * ELBO + (1 - elbo_weight) * IWAE bound, both on the
    same `k` codes (the ELBO as their mean log weight), nats per sample, averaged over the batch. elbo_weight 1 is
    the ELBO of k samples, 0 the IWAE."""

    def __init__(self, likelihood: LikelihoodOrFactory | None = None, k: int = 10, elbo_weight: float = 0.5) -> None:
        super().__init__(likelihood)
        self.k = checks.positive_int("k", k)
        self.elbo_weight = checks.number("elbo_weight", elbo_weight, low=0.0, high=1.0)

    def forward(self, net, prior, x, beta, generator=None) -> LossTerms:
        weights = importance_weights(net, prior, self.likelihood, x, beta, self.k, generator)
        iwae = torch.logsumexp(weights.log_w, dim=0) - math.log(self.k)
        bound = self.elbo_weight * weights.log_w.mean(0) + (1 - self.elbo_weight) * iwae
        per_sample = -bound
        terms = {"recon": -weights.log_px_z.mean(), "kl": weights.log_ratio.mean()}
        return LossTerms(per_sample.mean(), terms, beta, per_sample.detach(), weights.sample)


class BetaTCVAE(WithLikelihood):
    """beta-TCVAE. Logs recon, kl (log q(z|x) - log p(z) at the drawn code, which the three parts sum to), mi, tc
    and dw_kl. log q(z) at each code of a batch of M is estimated from the batch's M posteriors (Chen et al.
    2018, section 4.1 and appendix C), the data set of size N:

    - minibatch-weighted sampling (the default): log q(z_i) ~ logsumexp_j log q(z_i|x_j) - log(N M); biased,
      as the code's own posterior, far the largest term once posteriors are narrow, is weighted as if the
      batch stood for N M / M samples like it;
    - `stratified`: minibatch-stratified sampling: the code's own posterior weighted 1/N, one other (the next in
      the batch) 1/(M-1) - 1/N, the rest 1/(M-1), an unbiased estimate of q(z_i) (log q(z_i) is then biased
      only by the log's curvature).

    N is the training set's size in training (given when training starts, saved with the model) and the split's
    size in validation and test. The split into three parts needs a prior that factorises over the latent
    dimensions (its dw_kl is a sum of per-dimension KLs); other priors are refused."""

    term_names = ("recon", "kl", "mi", "tc", "dw_kl")

    def __init__(
        self, likelihood: LikelihoodOrFactory | None = None, tc_weight: float = 6.0, stratified: bool = False
    ) -> None:
        super().__init__(likelihood)
        self.tc_weight = checks.number("tc_weight", tc_weight, low=0.0)
        self.stratified = checks.boolean("stratified", stratified)
        self.register_buffer("dataset_size", torch.tensor(0))  # saved, so that a loaded model can still be scored
        self.eval_size = 0  # the size of the split validated or tested, given before it

    def fit_to_data(self, n_train: int) -> None:
        self.dataset_size.fill_(int(n_train))

    def fit_to_eval_data(self, n: int) -> None:
        self.eval_size = int(n)

    def fit_to_net(self, net: VAENet) -> None:
        if not net.posterior.factorised:
            reason = (
                "does not go with loss=tcvae, whose estimate of log q(z) needs per-dimension densities: "
                "use posterior=gaussian"
            )
            raise ConfigValueError("posterior", reason, type(net.posterior).__name__)

    def fit_to_prior(self, prior: Prior) -> None:
        if not prior.factorises:
            reason = (
                "does not go with loss=tcvae, whose dimension-wise KL needs a prior that factorises over the latent "
                "dimensions: use prior=standard_normal"
            )
            raise ConfigValueError("prior", reason, type(prior).__name__)

    def log_weights(self, m: int, n_data: int, device: torch.device) -> torch.Tensor:
        """(M, M): the log weight of posterior j in the estimate of q(z_i) (rows sum to 1 after exp)."""
        if not self.stratified or m < 2:
            return torch.full((m, m), -math.log(n_data * m), device=device)
        weights = torch.full((m, m), 1.0 / (m - 1), dtype=torch.float64)
        index = torch.arange(m)
        weights[index, (index + 1) % m] = 1.0 / (m - 1) - 1.0 / n_data
        weights[index, index] = 1.0 / n_data
        return weights.log().float().to(device)

    def forward(self, net, prior, x, beta, generator=None) -> LossTerms:
        n_data = int(self.dataset_size) if self.training or not self.eval_size else self.eval_size
        if n_data < len(x):
            raise ConfigValueError(
                "loss", "BetaTCVAE needs the training set's size, given when training starts", n_data
            )
        out = net(x, generator)
        posterior, z = out.posterior.gaussian, out.z
        recon = -self.likelihood.log_prob(x, out.params)
        # log q(z_i | x_j) of every code i under every posterior j of the batch, per dimension: (M, M, latent)
        pairwise = DiagonalGaussian(posterior.loc[None], posterior.scale[None]).log_prob_per_dim(z[:, None])
        log_w = self.log_weights(len(x), n_data, z.device)
        log_qz = torch.logsumexp(pairwise.sum(-1) + log_w, dim=1)
        log_prod_qz = torch.logsumexp(pairwise + log_w[..., None], dim=1).sum(-1)
        log_qz_x, log_pz = posterior.log_prob(z), prior.log_prob(z)
        mi, tc, dw_kl = log_qz_x - log_qz, log_qz - log_prod_qz, log_prod_qz - log_pz
        per_sample = recon + beta * (mi + self.tc_weight * tc + dw_kl)
        terms = {"recon": recon.mean(), "kl": (log_qz_x - log_pz).mean(), "mi": mi.mean(), "tc": tc.mean()}
        terms["dw_kl"] = dw_kl.mean()
        return LossTerms(per_sample.mean(), terms, beta, per_sample.detach(), out)


def gaussian_kernel(a: torch.Tensor, b: torch.Tensor, bandwidth_sq: float) -> torch.Tensor:
    """exp(-||a_i - b_j||^2 / (2 bandwidth^2)), (len(a), len(b))."""
    return torch.exp(-torch.cdist(a, b).pow(2) / (2.0 * bandwidth_sq))


def mmd_squared(a: torch.Tensor, b: torch.Tensor, bandwidth_sq: float) -> torch.Tensor:
    """The unbiased estimate of MMD^2 between the samples `a` and `b` (each at least 2 rows) under the Gaussian
    kernel (Gretton et al. 2012): the within-sample means leave out the diagonal."""
    n, m = len(a), len(b)
    k_aa, k_bb = gaussian_kernel(a, a, bandwidth_sq), gaussian_kernel(b, b, bandwidth_sq)
    within_a = (k_aa.sum() - k_aa.diagonal().sum()) / (n * (n - 1))
    within_b = (k_bb.sum() - k_bb.diagonal().sum()) / (m * (m - 1))
    return within_a + within_b - 2.0 * gaussian_kernel(a, b, bandwidth_sq).mean()


class InfoVAE(WithLikelihood):
    """InfoVAE / MMD-VAE. Logs recon, kl and mmd (the batch's MMD^2). Needs batches of at least 2 samples. The
    MMD sees the prior through reparameterised samples only: a mixture prior's weights (its discrete choice of
    component) get no gradient from it."""

    term_names = ("recon", "kl", "mmd")

    def __init__(
        self, likelihood: LikelihoodOrFactory | None = None, mmd_weight: float = 1000.0, kl_weight: float = 0.0
    ) -> None:
        super().__init__(likelihood)
        self.mmd_weight = checks.number("mmd_weight", mmd_weight, low=0.0)
        self.kl_weight = checks.number("kl_weight", kl_weight, low=0.0)

    def forward(self, net, prior, x, beta, generator=None) -> LossTerms:
        out = net(x, generator)
        recon = -self.likelihood.log_prob(x, out.params)
        kl = prior.kl(out.posterior, out.z, out.log_q)
        if len(x) > 1:
            mmd = mmd_squared(out.z, prior.sample(len(x), generator).to(out.z.dtype), float(out.z.shape[-1]))
        else:
            mmd = out.z.new_zeros(())
        per_sample = recon + beta * self.kl_weight * kl + self.mmd_weight * mmd
        terms = {"recon": recon.mean(), "kl": kl.mean(), "mmd": mmd}
        return LossTerms(per_sample.mean(), terms, beta, per_sample.detach(), out)


def density_ratio_tc(discriminator: nn.Module, z: torch.Tensor) -> torch.Tensor:
    """The total correlation estimate of each code (nats): logit_joint - logit_product of `discriminator` at `z`,
    i.e. log q(z) - log prod_j q(z_j) where the discriminator is optimal (the density-ratio trick). Its weights
    are detached here, so the estimate's gradient reaches the codes only."""
    fixed = {name: p.detach() for name, p in discriminator.named_parameters()}
    logits = torch.func.functional_call(discriminator, fixed, (z,))
    return logits[:, 0] - logits[:, 1]


class FactorVAE(WithLikelihood):
    """FactorVAE: the ELBO with its total correlation penalised by `tc_weight`, estimated by a discriminator of
    `hidden_dims` (LeakyReLU 0.2; the paper's has five layers of 1000) trained in the same step with its own
    optimizer settings, `discriminator_lr` and `discriminator_betas` (the paper's Adam: 1e-4, (0.5, 0.9)), a
    parameter group of the run's optimizer. The codes are permuted from the batch itself. Logs recon, kl, tc (the
    estimate, nats per sample) and discriminator (its cross-entropy, nats per code; 0.69 is chance)."""

    term_names = ("recon", "kl", "tc", "discriminator")

    def __init__(
        self,
        likelihood: LikelihoodOrFactory | None = None,
        tc_weight: float = 10.0,
        hidden_dims: Sequence[int] = (1000, 1000, 1000),
        discriminator_lr: float = 1e-4,
        discriminator_betas: Sequence[float] = (0.5, 0.9),
    ) -> None:
        super().__init__(likelihood)
        self.tc_weight = checks.number("tc_weight", tc_weight, low=0.0)
        self.hidden_dims = checks.positive_int_list("hidden_dims", hidden_dims)
        self.discriminator_lr = checks.number("discriminator_lr", discriminator_lr, low=0.0, low_inclusive=False)
        if len(discriminator_betas) != 2:
            raise ConfigValueError("discriminator_betas", "must be two numbers in [0, 1)", discriminator_betas)
        self.discriminator_betas = tuple(
            checks.number("discriminator_betas", b, low=0.0, high=1.0, high_inclusive=False)
            for b in discriminator_betas
        )
        self.discriminator: nn.Sequential | None = None

    def fit_to_net(self, net: VAENet) -> None:
        sizes = [net.latent_dim, *self.hidden_dims]
        layers: list[nn.Module] = []
        for n_in, n_out in itertools.pairwise(sizes):
            layers += [nn.Linear(n_in, n_out), nn.LeakyReLU(0.2)]
        self.discriminator = nn.Sequential(*layers, nn.Linear(sizes[-1], 2))

    def optimizer_groups(self, parameters: Iterable[nn.Parameter]) -> Any:
        own = list(self.discriminator.parameters())
        owned = set(own)
        rest = [p for p in parameters if p not in owned]
        settings = {"lr": self.discriminator_lr, "betas": self.discriminator_betas}
        return [{"params": rest}, {"params": own, **settings}]

    def forward(self, net, prior, x, beta, generator=None) -> LossTerms:
        out = net(x, generator)
        recon = -self.likelihood.log_prob(x, out.params)
        kl = prior.kl(out.posterior, out.z, out.log_q)
        tc = density_ratio_tc(self.discriminator, out.z.float())
        codes = out.z.detach().float()
        order = torch.rand(codes.shape, device=codes.device, generator=generator).argsort(dim=0)
        permuted = codes.gather(0, order)  # each dimension shuffled across the batch: prod_j q(z_j)
        both = self.discriminator(torch.cat([codes, permuted]))
        labels = torch.cat([torch.zeros(len(codes)), torch.ones(len(codes))]).long().to(codes.device)
        discriminator = nn.functional.cross_entropy(both, labels)
        per_sample = recon + beta * kl + self.tc_weight * tc
        terms = {"recon": recon.mean(), "kl": kl.mean(), "tc": tc.mean(), "discriminator": discriminator}
        return LossTerms(per_sample.mean() + discriminator, terms, beta, per_sample.detach(), out)


class SeedLoss(Objective):
    """The seed's objective: MSE averaged over batch and pixels + beta * KL summed over batch and dims."""

    def __init__(self) -> None:
        super().__init__(None)

    def forward(self, net, prior, x, beta, generator=None) -> LossTerms:
        out = net(x, generator)
        image = torch.sigmoid(only_output(out.params))
        squared_error_per_sample = (image - x).pow(2).flatten(1).mean(-1)
        kl_per_sample = prior.kl(out.posterior, out.z, out.log_q)
        recon = squared_error_per_sample.mean()
        kl = kl_per_sample.sum()
        per_sample = squared_error_per_sample + beta * kl_per_sample
        return LossTerms(recon + beta * kl, {"recon": recon, "kl": kl}, beta, per_sample.detach(), out)
