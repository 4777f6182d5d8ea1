"""vae_lightning: variational autoencoder experiments on PyTorch Lightning and Hydra.

Train with `vae-train` (or `python train.py` in a clone), evaluate with `vae-evaluate`, morph with `vae-morph`;
use a trained model from Python with `vae_lightning.api.TrainedVAE`.
"""

__version__ = "0.1.0"
