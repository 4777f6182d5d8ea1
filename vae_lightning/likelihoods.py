"""Decoder likelihoods p(x|z). Each is an `nn.Module` (it may hold trained parameters, which are then saved
and resumed with the network's), one class per config option (`conf/loss/likelihood/*.yaml`).

The network's decoder returns `outputs_per_pixel` values per pixel, shape (N, outputs_per_pixel, *image_shape);
`log_prob(x, params)` is log p(x|z) summed over all pixels, one value per sample (nats), and `mean(params)` the
image (N, *image_shape) in [0, 1] the likelihood is centred on (what the pictures and tools show).

Densities come from the function torch's own distribution calls (the Bernoulli's
`binary_cross_entropy_with_logits`), except three written out here: the continuous Bernoulli's (torch's loses
its normaliser at large logits; its mean comes from `torch.distributions`), the Gaussian, whose terms are
summed in the order today's presets were trained with (`Normal.log_prob` rounds differently in the last bit,
and Adam's first steps, which divide by the gradients' own size, turn such differences into different runs),
and the discretised logistic, which torch does not offer.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.distributions import ContinuousBernoulli as TorchContinuousBernoulli
from torch.nn import functional as F

from vae_lightning.core import checks
from vae_lightning.core.errors import ConfigValueError
from vae_lightning.distributions import LOG_2PI


class Likelihood(nn.Module):
    """Base class. `input_shape`: the images' (C, H, W), given by the model; needed by likelihoods with
    parameters per channel or pixel, optional for the others."""

    outputs_per_pixel = 1

    def __init__(self, input_shape: Sequence[int] | None = None) -> None:
        super().__init__()
        self.input_shape = None if input_shape is None else tuple(checks.positive_int_list("input_shape", input_shape))

    def log_prob(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


def per_sample(log_prob: torch.Tensor) -> torch.Tensor:
    return log_prob.flatten(1).sum(-1)


def only_output(params: torch.Tensor) -> torch.Tensor:
    """The decoder's single output per pixel, (N, *image_shape), of params (N, 1, *image_shape): a view whose
    gradient is the incoming one reshaped (`params[:, 0]` would write it into a new zero tensor)."""
    return params.squeeze(1)


class Bernoulli(Likelihood):
    """Independent Bernoulli pixels with p = sigmoid(logits).

    For binarised data this is a proper likelihood. For grey levels in [0, 1] it is the usual cross-entropy
    objective (not a normalised density over [0, 1]); its values are then not comparable with the literature
    (`ContinuousBernoulli` is the normalised density).
    """

    def log_prob(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """The negated binary cross-entropy, summed per sample: what `torch.distributions.Bernoulli.log_prob`
        computes pixel by pixel, negated here once per sample instead of once per pixel (the same numbers, and
        neither the distribution object nor a pass over every pixel on the training step)."""
        cross_entropy = F.binary_cross_entropy_with_logits(only_output(params), x, reduction="none")
        return -per_sample(cross_entropy)

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(only_output(params))


SMALL_LOGIT = 1e-3  # below it, the continuous Bernoulli's log normaliser by its Taylor series (error < 1e-12)


class ContinuousBernoulli(Likelihood):
    """The continuous Bernoulli (Loaiza-Ganem & Cunningham 2019): the Bernoulli cross-entropy with its
    normalising constant, a proper density for grey levels in [0, 1]. Its mean (shown in pictures) is not
    sigmoid(logits) but the distribution's mean, which is pulled towards 0.5."""

    def log_prob(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """log p(x) = x l + log C(l) for the logit l, with C(l) = l / (exp(l) - 1) written as log|l| - log(1 -
        exp(-|l|)) - max(l, 0) (its Taylor series -l/2 + l^2/24 near 0): a density on [0, 1] at any logit.
        `torch.distributions.ContinuousBernoulli` forms C from probabilities clamped to float32's 1 - eps, so
        beyond |l| ~ 16 its density no longer integrates to 1 (0.80 at l = 20, 0.40 at l = 40)."""
        logits = only_output(params)
        size = logits.abs()
        log_norm = torch.where(
            size < SMALL_LOGIT,
            -0.5 * logits + logits.pow(2) / 24.0,
            size.clamp(min=SMALL_LOGIT).log() - torch.log(-torch.expm1(-size.clamp(min=SMALL_LOGIT))) - logits.relu(),
        )
        return per_sample(x * logits + log_norm)

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        return TorchContinuousBernoulli(logits=only_output(params), validate_args=False).mean


class Gaussian(Likelihood):
    """Independent Gaussian pixels with mean sigmoid(logits) and a fixed standard deviation `sigma`."""

    def __init__(self, input_shape: Sequence[int] | None = None, sigma: float = 0.1) -> None:
        super().__init__(input_shape)
        self.sigma = checks.number("sigma", sigma, low=0.0, low_inclusive=False)

    def scale(self) -> torch.Tensor | float:
        return self.sigma

    def log_prob(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        sigma = self.scale()
        standardised = (x - torch.sigmoid(only_output(params))) / sigma
        log_sigma = sigma.log() if isinstance(sigma, torch.Tensor) else math.log(sigma)
        return per_sample(-0.5 * standardised.pow(2) - log_sigma - 0.5 * LOG_2PI)

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(only_output(params))


class LearnedSigmaGaussian(Gaussian):
    """Base class: a Gaussian whose standard deviation is trained with the model (from `sigma`, floored at
    `min_sigma`: a density on continuous values grows without bound as sigma goes to 0 on pixels that are
    reconstructed exactly, such as a constant background)."""

    def __init__(self, input_shape: Sequence[int], sigma: float = 0.1, min_sigma: float = 1e-3) -> None:
        super().__init__(input_shape, sigma)
        self.min_sigma = checks.number("min_sigma", min_sigma, low=0.0, low_inclusive=False)
        if self.input_shape is None:
            raise ConfigValueError("input_shape", "is needed for a learned sigma (the model gives it)", input_shape)
        if self.min_sigma >= self.sigma:
            raise ConfigValueError("min_sigma", f"must be below sigma ({self.sigma})", min_sigma)
        self.log_sigma = nn.Parameter(torch.full(self.sigma_shape(), math.log(self.sigma - self.min_sigma)))

    def sigma_shape(self) -> tuple[int, ...]:
        raise NotImplementedError

    def scale(self) -> torch.Tensor:
        return self.log_sigma.exp() + self.min_sigma


class GaussianChannelSigma(LearnedSigmaGaussian):
    """A Gaussian with one learned standard deviation per image channel (the sigma-VAE's shared variance)."""

    def sigma_shape(self) -> tuple[int, ...]:
        return (self.input_shape[0], *([1] * (len(self.input_shape) - 1)))


class GaussianPixelSigma(LearnedSigmaGaussian):
    """A Gaussian with one learned standard deviation per pixel (and channel)."""

    def sigma_shape(self) -> tuple[int, ...]:
        return self.input_shape


class DiscretisedLogistic(Likelihood):
    """A discretised logistic for 8-bit images (Salimans et al. 2017, one component): pixel value v in
    {0, ..., bins-1}, seen as x = v / pixel_scale (the data set's divisor: 255, or the seed's 256), has the
    logistic's mass on [x - h, x + h] with h = 1 / (2 pixel_scale), and the edge bins take the tails, so the
    probabilities of all values sum to 1. A
    true likelihood of the pixel values: bits per dimension need no correction for the quantisation. Two outputs
    per pixel: the mean (through a sigmoid) and the log scale (floored at `min_log_scale`). Written out here, as
    `torch.distributions` has no discretised logistic."""

    outputs_per_pixel = 2

    def __init__(
        self,
        input_shape: Sequence[int] | None = None,
        bins: int = 256,
        min_log_scale: float = -7.0,
        pixel_scale: float | None = None,
    ) -> None:
        super().__init__(input_shape)
        self.bins = checks.integer("bins", bins, low=2)
        self.min_log_scale = checks.number("min_log_scale", min_log_scale)
        scale = float(bins - 1) if pixel_scale is None else pixel_scale
        self.pixel_scale = checks.number("pixel_scale", scale, low=float(self.bins - 1))

    def log_prob(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        mean, log_scale = torch.sigmoid(params[:, 0]), params[:, 1].clamp(min=self.min_log_scale)
        half_bin = 0.5 / self.pixel_scale
        level = torch.round(x * self.pixel_scale).clamp(0, self.bins - 1)  # the stored pixel value
        value = level / self.pixel_scale  # the bin's centre
        inv_scale = torch.exp(-log_scale)
        upper, lower = inv_scale * (value - mean + half_bin), inv_scale * (value - mean - half_bin)
        softplus_upper, softplus_lower = F.softplus(upper), F.softplus(lower)
        # log(sigmoid(upper) - sigmoid(lower)) as lower + log(expm1(upper - lower)) - softplus(upper) -
        # softplus(lower): exact in both tails, where the difference of the two sigmoids underflows
        inner = lower + torch.log(torch.expm1(2.0 * half_bin * inv_scale)) - softplus_upper - softplus_lower
        log_cdf_upper = upper - softplus_upper  # the lowest bin: all the mass below its upper edge
        log_survival_lower = -softplus_lower  # the highest bin: all the mass above its lower edge
        log_p = torch.where(level == 0, log_cdf_upper, torch.where(level == self.bins - 1, log_survival_lower, inner))
        return per_sample(log_p)

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(params[:, 0])


def likelihood_for_images(
    input_shape: Sequence[int], max_bernoulli_values: int = 1024, sigma: float = 0.1
) -> Bernoulli | Gaussian:
    """The default decoder likelihood, the one that fits the data's images: Bernoulli pixels for images of at
    most `max_bernoulli_values` values (digits, MNIST), else Gaussian pixels of standard deviation `sigma` for
    photos (their codes collapse onto the prior under a Bernoulli cross-entropy on colour pixels). Any other
    option of `loss/likelihood` chooses one outright."""
    limit = checks.positive_int("max_bernoulli_values", max_bernoulli_values)
    sigma = checks.number("sigma", sigma, low=0.0, low_inclusive=False)  # refused even where unused
    if math.prod(input_shape) <= limit:
        return Bernoulli(input_shape)
    return Gaussian(input_shape, sigma)
