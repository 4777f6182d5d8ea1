"""The peer's side of `benchmarks/models.py`, run in pythae's own virtual environment (pythae is a peer, never a
dependency of ours): trains pythae 0.1.2's VAE, IWAE, beta-TCVAE, beta-VAE, VAMP and FactorVAE on the given training
images with the same 784-200-200-50 tanh network, dynamic binarisation, Adam (lr 1e-3), batch 100 and epochs,
and saves each trained encoder, decoder (and pseudo-inputs) as plain tensors, so that our estimator scores them.
VAE_IAF (2 MADE blocks of 3 x 128, pythae's defaults, as our `posterior=iaf`), whose flow our network cannot hold,
is scored here on our test images with our estimator's formula (`flow_posterior_scores`); so is VQVAE (25
positions of 2 values, 128 codes, its moving-average codebook), whose codebook our network does not hold: the
PSNR of its reconstructions (`reconstruction_scores`).
FactorVAE: TC weight 10 and our discriminator's layout (three hidden layers of 1000, LeakyReLU 0.2; pythae's
default has five), trained by pythae's adversarial trainer with the paper's Adam for the discriminator (lr 1e-4,
betas 0.5, 0.9); pythae splits each batch in two halves, one for the VAE and one for the permuted codes.

    <pythae venv>/bin/python benchmarks/peers/pythae_models.py --data train.npz --out DIR --epochs 50 --seeds 1 2
"""

from __future__ import annotations

import argparse
import json
import math
import time
from itertools import pairwise
from pathlib import Path

import numpy as np
import torch
from pythae.data.datasets import DatasetOutput
from pythae.models import (
    CIWAE,
    IWAE,
    MIWAE,
    VAE,
    VAE_IAF,
    VAMP,
    VQVAE,
    BetaTCVAE,
    BetaTCVAEConfig,
    BetaVAE,
    BetaVAEConfig,
    CIWAEConfig,
    FactorVAE,
    FactorVAEConfig,
    IWAEConfig,
    MIWAEConfig,
    VAE_IAF_Config,
    VAEConfig,
    VAMPConfig,
    VQVAEConfig,
)
from pythae.models.base.base_utils import ModelOutput
from pythae.models.nn import BaseDecoder, BaseDiscriminator, BaseEncoder
from pythae.pipelines import TrainingPipeline
from pythae.trainers import AdversarialTrainerConfig, BaseTrainerConfig
from torch import nn

LATENT, HIDDEN, PIXELS = 50, 200, 784
MODELS = {
    "vae": (VAE, lambda: VAEConfig()),
    "iwae": (IWAE, lambda: IWAEConfig(number_samples=5)),
    "iwae10": (IWAE, lambda: IWAEConfig(number_samples=10)),
    "iwae50": (IWAE, lambda: IWAEConfig(number_samples=50)),
    "tcvae": (BetaTCVAE, lambda: BetaTCVAEConfig(alpha=1.0, beta=6.0, gamma=1.0, use_mss=False)),
    "beta_vae": (BetaVAE, lambda: BetaVAEConfig(beta=6.0)),
    "vamp": (VAMP, lambda: VAMPConfig(number_components=500)),
    "factor_vae": (FactorVAE, lambda: FactorVAEConfig(gamma=10.0)),
    "vae_iaf": (VAE_IAF, lambda: VAE_IAF_Config(n_made_blocks=2, n_hidden_in_made=3, hidden_size=128)),
    "miwae": (MIWAE, lambda: MIWAEConfig(number_gradient_estimates=5, number_samples=10)),
    "ciwae": (CIWAE, lambda: CIWAEConfig(number_samples=10, beta=0.5)),
    # 128 codes with pythae's moving-average codebook (it has no dead-code restarts), commitment 0.25, as ours
    "vqvae": (VQVAE, lambda: VQVAEConfig(num_embeddings=128, use_ema=True, commitment_loss_factor=0.25)),
}
CODE_DIM = 2  # the VQ-VAE's values per position: 25 positions of 2, as our `vq` row
# models whose posterior our network cannot hold (pythae's flow): scored here, with our estimator's formula
SCORED_HERE = ("vae_iaf", "vqvae")
LOG_2PI = math.log(2 * math.pi)
ACTIVE_UNIT_THRESHOLD = 0.01


def flow_posterior_scores(model, images: torch.Tensor, k: int = 1000, chunk: int = 100) -> dict[str, float]:
    """test/nll, test/elbo and test/inference_gap (each with its standard error over the test images) and active
    units of a VAE_IAF, computed as our module computes them: -log p(x) by importance sampling with `k` codes per
    image from the flow posterior (its log density by the change of variables) and the standard normal prior, all
    constants included; the ELBO, the mean of the same `k` log weights; the gap, log p(x) - ELBO per image; active
    units from the flow at the Gaussian's mean."""
    nlls, elbos, codes = [], [], []
    with torch.no_grad():
        for x in images.split(100):
            out = model.encoder(x)
            mu, std = out.embedding, torch.exp(0.5 * out.log_covariance)
            codes.append(model.iaf_flow.inverse(mu).out)
            log_weights = []
            for _ in range(k // chunk):
                z0 = mu + std * torch.randn((chunk, *mu.shape))
                flowed = model.iaf_flow.inverse(z0.flatten(0, 1))
                z = flowed.out.view(chunk, *mu.shape)
                log_q = (-0.5 * ((z0 - mu) / std).pow(2) - std.log() - 0.5 * LOG_2PI).sum(-1)
                log_q = log_q - flowed.log_abs_det_jac.view(chunk, -1)
                log_pz = (-0.5 * z.pow(2) - 0.5 * LOG_2PI).sum(-1)
                logits = model.decoder.layers(z.flatten(0, 1))
                repeated = x.flatten(1).expand(chunk, *x.flatten(1).shape).flatten(0, 1)
                log_px_z = -nn.functional.binary_cross_entropy_with_logits(logits, repeated, reduction="none").sum(-1)
                log_weights.append(log_px_z.view(chunk, -1) + log_pz - log_q)
            log_weights = torch.cat(log_weights)
            nlls.append(-(torch.logsumexp(log_weights, 0) - math.log(k)))
            elbos.append(log_weights.mean(0))
    variance = torch.cat(codes).var(0)
    active = float((variance > ACTIVE_UNIT_THRESHOLD).sum())
    nll, elbo = torch.cat(nlls), torch.cat(elbos)
    scores = {"test/active_units": active}
    for key, values in (("test/nll", nll), ("test/elbo", elbo), ("test/inference_gap", -nll - elbo)):
        scores[key] = float(values.mean())
        scores[f"{key}_se"] = float(values.std() / math.sqrt(len(values)))  # over the test images, as our module's
    return scores


def reconstruction_scores(model, images: torch.Tensor) -> dict[str, float]:
    """test/psnr of a VQVAE as our module computes it: 10 log10(1 / the mean squared error per pixel) of the
    reconstructions decoded from the quantised codes."""
    total = 0.0
    with torch.no_grad():
        for x in images.split(100):
            total += float((model(DatasetOutput(data=x)).recon_x - x).pow(2).sum())
    return {"test/psnr": 10 * math.log10(images.numel() / total)}


def stack(sizes: list[int]) -> nn.Sequential:
    """Linear layers with tanh between them: the layout of our MLPVAE, so the weights load into it as they are."""
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(pairwise(sizes)):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(nn.Tanh())
    return nn.Sequential(*layers)


class Encoder(BaseEncoder):
    def __init__(self) -> None:
        super().__init__()
        self.layers = stack([PIXELS, HIDDEN, HIDDEN, 2 * LATENT])

    def forward(self, x):
        loc, log_var = self.layers(x.flatten(1)).chunk(2, dim=-1)
        return ModelOutput(embedding=loc, log_covariance=log_var)


class GridEncoder(BaseEncoder):
    """The VQ-VAE's encoder: the network's first 50 outputs as pythae's grid of 25 positions of 2 values,
    (N, 2, 1, 25), the order of our flat code (position by position)."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = stack([PIXELS, HIDDEN, HIDDEN, 2 * LATENT])

    def forward(self, x):
        code = self.layers(x.flatten(1))[:, :LATENT]
        return ModelOutput(embedding=code.view(len(x), 1, LATENT // CODE_DIM, CODE_DIM).permute(0, 3, 1, 2))


class GridDecoder(BaseDecoder):
    def __init__(self) -> None:
        super().__init__()
        self.layers = stack([LATENT, HIDDEN, HIDDEN, PIXELS])

    def forward(self, z):
        flat = z.permute(0, 2, 3, 1).reshape(len(z), LATENT)  # back to our flat order
        return ModelOutput(reconstruction=torch.sigmoid(self.layers(flat)).view(len(z), 1, 28, 28))


class Decoder(BaseDecoder):
    def __init__(self) -> None:
        super().__init__()
        self.layers = stack([LATENT, HIDDEN, HIDDEN, PIXELS])

    def forward(self, z):
        return ModelOutput(reconstruction=torch.sigmoid(self.layers(z)).view(len(z), 1, 28, 28))


class Discriminator(BaseDiscriminator):
    """Our FactorVAE's discriminator layout: the codes, three hidden layers of 1000 with LeakyReLU 0.2, 2 logits."""

    def __init__(self) -> None:
        super().__init__()
        sizes = [LATENT, 1000, 1000, 1000]
        layers: list[nn.Module] = []
        for n_in, n_out in pairwise(sizes):
            layers += [nn.Linear(n_in, n_out), nn.LeakyReLU(0.2)]
        self.layers = nn.Sequential(*layers, nn.Linear(sizes[-1], 2))

    def forward(self, z):
        return self.layers(z)


class DynamicallyBinarised(torch.utils.data.Dataset):
    """Each fetch draws the pixels afresh as Bernoulli(grey level), as our `dataset/binarize=dynamic` does."""

    def __init__(self, grey: np.ndarray) -> None:
        self.grey = torch.from_numpy(grey).float().div(255.0).unsqueeze(1)

    def __len__(self) -> int:
        return len(self.grey)

    def __getitem__(self, index):
        return DatasetOutput(data=torch.bernoulli(self.grey[index]))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--test", type=Path, help="our test images (npz, `test`: float in [0, 1]) for SCORED_HERE")
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = np.load(args.data)
    for name in args.models:
        for seed in args.seeds:
            target = args.out / f"{name}_seed{seed}.pt"
            if not target.is_file():
                train(name, seed, data, args.out, args.epochs, target)
            if name in SCORED_HERE:
                score_here(name, target, args.test)


def build(name: str):
    model_cls, make_config = MODELS[name]
    config = make_config()
    config.input_dim, config.latent_dim, config.reconstruction_loss = (1, 28, 28), LATENT, "bce"
    if name == "vqvae":  # pythae's VQVAE has no choice of reconstruction loss: the squared error
        return model_cls(config, encoder=GridEncoder(), decoder=GridDecoder())
    return model_cls(config, encoder=Encoder(), decoder=Decoder())


def score_here(name: str, target: Path, test: Path) -> None:
    """Scores of a model in SCORED_HERE on the test images of `test` (kept in its weights file under the test
    file's name), from its saved weights."""
    weights = torch.load(target, weights_only=True)
    scores = weights.setdefault("scores", {})
    if scores.get(test.stem):
        return
    model = build(name)
    model.encoder.layers.load_state_dict(weights["encoder"])
    model.decoder.layers.load_state_dict(weights["decoder"])
    images = torch.from_numpy(np.load(test)["test"])
    if name == "vqvae":
        model.quantizer.load_state_dict(weights["quantizer"])
        scores[test.stem] = reconstruction_scores(model.eval(), images)
    else:
        model.iaf_flow.load_state_dict(weights["flow"])
        torch.manual_seed(0)
        scores[test.stem] = flow_posterior_scores(model.eval(), images)
    torch.save(weights, target)


def train(name: str, seed: int, data, out: Path, epochs: int, target: Path) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
    model = build(name)
    common = {
        "output_dir": str(out / f"{name}_seed{seed}_pythae"),
        "num_epochs": epochs,
        "per_device_train_batch_size": 100,
        "per_device_eval_batch_size": 100,
        "no_cuda": True,
        "seed": seed,
        "steps_saving": None,
    }
    if name == "factor_vae":
        model.set_discriminator(Discriminator())
        trainer = AdversarialTrainerConfig(
            **common,
            autoencoder_learning_rate=1e-3,
            discriminator_learning_rate=1e-4,
            discriminator_optimizer_params={"betas": (0.5, 0.9)},
        )
    else:
        trainer = BaseTrainerConfig(**common, learning_rate=1e-3, optimizer_cls="Adam")
    start = time.perf_counter()
    TrainingPipeline(model=model, training_config=trainer)(
        train_data=DynamicallyBinarised(data["train"]), eval_data=DynamicallyBinarised(data["val"])
    )
    seconds = time.perf_counter() - start
    weights = {
        "encoder": model.encoder.layers.state_dict(),
        "decoder": model.decoder.layers.state_dict(),
        "seconds": seconds,
    }
    if name == "vae_iaf":
        weights["flow"] = model.iaf_flow.state_dict()
    if name == "vqvae":
        weights["quantizer"] = model.quantizer.state_dict()
    if name == "vamp":
        with torch.no_grad():
            weights["pseudo_inputs"] = model.pseudo_inputs(model.idle_input).view(-1, 1, 28, 28).clone()
    torch.save(weights, target)
    print(json.dumps({"model": name, "seed": seed, "seconds": round(seconds, 1)}), flush=True)


if __name__ == "__main__":
    main()
