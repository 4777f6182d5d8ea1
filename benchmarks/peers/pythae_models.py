"""The peer's side of `benchmarks/models.py`, run in pythae's own virtual environment (pythae is a peer, never a
dependency of ours): trains pythae 0.1.2's VAE, IWAE, beta-TCVAE, beta-VAE, VAMP and FactorVAE on the given training
images with the same 784-200-200-50 tanh network, dynamic binarisation, Adam (lr 1e-3), batch 100 and epochs,
and saves each trained encoder, decoder (and pseudo-inputs) as plain tensors, so that our estimator scores them.
FactorVAE: TC weight 10 and our discriminator's layout (three hidden layers of 1000, LeakyReLU 0.2; pythae's
default has five), trained by pythae's adversarial trainer with the paper's Adam for the discriminator (lr 1e-4,
betas 0.5, 0.9); pythae splits each batch in two halves, one for the VAE and one for the permuted codes.

    <pythae venv>/bin/python benchmarks/peers/pythae_models.py --data train.npz --out DIR --epochs 50 --seeds 1 2
"""

from __future__ import annotations

import argparse
import json
import time
from itertools import pairwise
from pathlib import Path

import numpy as np
import torch
from pythae.data.datasets import DatasetOutput
from pythae.models import (
    IWAE,
    VAE,
    VAMP,
    BetaTCVAE,
    BetaTCVAEConfig,
    BetaVAE,
    BetaVAEConfig,
    FactorVAE,
    FactorVAEConfig,
    IWAEConfig,
    VAEConfig,
    VAMPConfig,
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
    "tcvae": (BetaTCVAE, lambda: BetaTCVAEConfig(alpha=1.0, beta=6.0, gamma=1.0, use_mss=False)),
    "beta_vae": (BetaVAE, lambda: BetaVAEConfig(beta=6.0)),
    "vamp": (VAMP, lambda: VAMPConfig(number_components=500)),
    "factor_vae": (FactorVAE, lambda: FactorVAEConfig(gamma=10.0)),
}


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
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = np.load(args.data)
    for name in args.models:
        model_cls, make_config = MODELS[name]
        for seed in args.seeds:
            target = args.out / f"{name}_seed{seed}.pt"
            if target.is_file():
                continue
            torch.manual_seed(seed)
            np.random.seed(seed)
            config = make_config()
            config.input_dim, config.latent_dim, config.reconstruction_loss = (1, 28, 28), LATENT, "bce"
            model = model_cls(config, encoder=Encoder(), decoder=Decoder())
            common = {
                "output_dir": str(args.out / f"{name}_seed{seed}_pythae"),
                "num_epochs": args.epochs,
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
            if name == "vamp":
                with torch.no_grad():
                    weights["pseudo_inputs"] = model.pseudo_inputs(model.idle_input).view(-1, 1, 28, 28).clone()
            torch.save(weights, target)
            print(json.dumps({"model": name, "seed": seed, "seconds": round(seconds, 1)}), flush=True)


if __name__ == "__main__":
    main()
