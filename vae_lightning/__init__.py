"""vae_lightning: variational autoencoder experiments on PyTorch Lightning and Hydra."""

from pathlib import Path

__version__ = "0.1.0"

# The Hydra configs of `train.py`, `evaluate` and `morph` (the project is installed with `pip install -e .`).
CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
