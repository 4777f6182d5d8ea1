"""A VAE built from objects in plain Python and fitted by a plain `lightning.Trainer`: no Hydra, no `_target_`.
docs/python.md prints the code below; `tests/test_module.py` runs it."""

from functools import partial

import lightning as L
import torch

from vae_lightning.data.digits import DigitsDataModule
from vae_lightning.likelihoods import Bernoulli
from vae_lightning.losses import ELBO
from vae_lightning.module import VAEModule
from vae_lightning.nets.mlp import MLPVAE
from vae_lightning.priors import StandardNormal
from vae_lightning.schedules import Constant

data = DigitsDataModule(batch_size=64)  # scikit-learn's 8x8 digits: nothing to download
net = MLPVAE(data.input_shape, hidden_dims=[128], latent_dim=2)
model = VAEModule(
    net=net,
    prior=StandardNormal(net),
    loss=ELBO(Bernoulli()),
    beta=partial(Constant, value=1.0),  # the KL weight over the run: called with total_steps
    optimizer=partial(torch.optim.Adam, lr=1e-3),  # called with the model's parameters
)
trainer = L.Trainer(max_epochs=2, limit_train_batches=10, logger=False, enable_checkpointing=False)
trainer.fit(model, datamodule=data)
print(f"val/loss {float(trainer.callback_metrics['val/loss']):.1f} nats after {trainer.global_step} steps")
