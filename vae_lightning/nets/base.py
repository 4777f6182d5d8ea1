"""What every VAE network shares: the reparameterised forward pass.

A network subclasses `VAENet`, sets `input_shape`, `latent_dim` and `outputs_per_pixel` (how many values per
pixel its decoder returns: the likelihood's need, given by the model when it builds the network), and implements
`encode(x) -> DiagonalGaussian` (the parameters of a diagonal Gaussian per row) and `decode(z)`, which returns
the likelihood's parameters of shape (N, outputs_per_pixel, *input_shape) for codes z of shape (N, latent_dim).
The network carries the model's posterior part (`use_posterior`; the Gaussian itself by default), and `infer(x)`
is q(z|x), what everything that draws codes asks. A network that can start its decoder
at the data's mean image (`output_bias_from_data`) implements `start_decoder_at(mean)`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from vae_lightning.core.errors import ConfigValueError
from vae_lightning.distributions import DiagonalGaussian, PosteriorDistribution
from vae_lightning.posteriors import DiagonalGaussianPosterior, Posterior

# layers whose output depends on the mode and the rest of the batch
BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)
# the mean intensities whose logits start the decoder are kept this far inside (0, 1): a pixel that is 0 in every
# training image starts at logit 0.001, about -6.9, not at minus infinity
MEAN_MARGIN = 1e-3


@dataclass(frozen=True)
class VAEOutput:
    posterior: PosteriorDistribution
    z: torch.Tensor  # one code per row, drawn from the posterior
    params: torch.Tensor  # the decoder's outputs at z: the likelihood's parameters
    log_q: torch.Tensor | None = None  # log q(z|x) where the draw gave it (a flow's), else None


class VAENet(nn.Module):
    input_shape: tuple[int, ...]
    latent_dim: int
    outputs_per_pixel: int = 1
    output_bias_from_data: bool = False
    latent_dims: list[int] | None = None  # a hierarchical code's layers' sizes, side by side in it (None: one)
    posterior_scale: Callable[[torch.Tensor], torch.Tensor]  # raw encoder outputs -> the Gaussian's scale

    def __init__(self) -> None:
        super().__init__()
        self.posterior: Posterior = DiagonalGaussianPosterior()

    def use_posterior(self, posterior: Posterior) -> None:
        """Draw codes from `posterior` (built for this network's `latent_dim`): its weights become the network's,
        saved as `posterior.*` under it. A posterior that asks for a context (`context_dim`) widens the encoder."""
        self.posterior = posterior
        if posterior.context_dim:
            self.widen_encoder(posterior.context_dim)

    def widen_encoder(self, extra: int) -> None:
        """Make the encoder give `extra` values per row beside its Gaussian (a new last layer), which
        `encode_with_context` returns; called before training, from `use_posterior`."""
        reason = (
            f"asks the network for a context vector, which {type(self).__name__} does not give (no widen_encoder): "
            "posterior.h_dim=0 posterior.context=true gives the flow the image's Gaussian as its context instead"
        )
        raise ConfigValueError("posterior.h_dim", reason, extra)

    def encode_with_context(self, x: torch.Tensor) -> tuple[DiagonalGaussian, torch.Tensor]:
        """The Gaussian of each row and the context vector beside it (N, `posterior.context_dim`)."""
        raise NotImplementedError

    def gaussian_and_context(self, raw: torch.Tensor) -> tuple[DiagonalGaussian, torch.Tensor]:
        """The encoder's last outputs (N, 2 x latent + context) split: the Gaussian's loc and raw scale (through
        the network's `posterior_scale`), then the context vector (N, 0 where the encoder was not widened)."""
        loc, raw_scale = raw[:, : 2 * self.latent_dim].chunk(2, dim=-1)
        return DiagonalGaussian(loc, self.posterior_scale(raw_scale)), raw[:, 2 * self.latent_dim :]

    def fit_to_data(self, dataset: Any) -> None:
        """Called with the training set before training starts (and before a resumed run's weights are restored,
        so those win). With `output_bias_from_data` the decoder starts at the logit of the training images' mean:
        see `start_decoder_at`."""
        if self.output_bias_from_data:
            self.start_decoder_from_data(dataset, "model.output_bias_from_data")

    def complete(self, z: torch.Tensor) -> torch.Tensor:
        """The code as the generative model makes it from its top layer (a hierarchical network recomputes the
        layers below; a one-layer code is its own top): what a change of the top layer alone decodes to."""
        return z

    def fit_to_prior(self, prior: nn.Module) -> None:
        """Called with the model's prior once both are built: a network that works with certain priors only
        refuses the others here. Every network refuses batch norm under a prior that runs images of its own through
        the encoder (`encodes_inputs`: the VampPrior's pseudo-inputs), whose density would then depend on the
        network's mode and the batch."""
        if getattr(prior, "encodes_inputs", False) and any(isinstance(layer, BATCH_NORMS) for layer in self.modules()):
            reason = (
                f"batch norm does not go with {type(prior).__name__}: its pseudo-inputs would be normalised by their "
                "own batch's statistics in training and by the running ones in eval (and would move those); use "
                "model/norm=group"
            )
            raise ConfigValueError("model.norm", reason, "batch")

    def start_decoder_from_data(self, dataset: Any, key: str) -> None:
        """`start_decoder_at` the training images' mean (kept `MEAN_MARGIN` inside (0, 1)); `key`: the setting
        that asked for it, named if the data set cannot give its mean."""
        if not hasattr(dataset, "mean_image"):
            reason = "needs a training set with a mean_image() method (the package's data sets have one)"
            raise ConfigValueError(key, reason, True)
        self.start_decoder_at(dataset.mean_image().clamp(MEAN_MARGIN, 1 - MEAN_MARGIN))

    def start_decoder_at(self, mean: torch.Tensor) -> None:
        """Sets the decoder's last bias so that its first output per pixel (the logits of the pixel's mean for
        the Bernoulli, Gaussian and logistic likelihoods, of its parameter for the continuous Bernoulli) is
        logit(`mean`) where the layers before it give zero: an untrained decoder then draws the mean image
        instead of grey, and the codes need not carry it. `mean`: (C, H, W) in (0, 1)."""
        reason = f"is not offered by {type(self).__name__} (it has no start_decoder_at)"
        raise ConfigValueError("model.output_bias_from_data", reason, True)

    def encode(self, x: torch.Tensor) -> DiagonalGaussian:
        """The Gaussian of each row: a network implements this, or `encode_with_context`, whose Gaussian it is."""
        return self.encode_with_context(x)[0]

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def infer(self, x: torch.Tensor) -> PosteriorDistribution:
        """q(z|x) of each row: the posterior part applied to the network's Gaussian (and to the context vector
        beside it, where the posterior asks for one)."""
        if self.posterior.context_dim:
            return self.posterior(*self.encode_with_context(x))
        return self.posterior(self.encode(x))

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> VAEOutput:
        """Infer, draw one code per row, decode: what a single-sample objective needs (compiled with
        `compile=true`)."""
        posterior = self.infer(x)
        z, log_q = posterior.draw(generator)
        return VAEOutput(posterior, z, self.decode(z), log_q)
