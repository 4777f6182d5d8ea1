"""Train a VAE from a clone: `python train.py [group=option ...] [key=value ...]`, the same as `vae-train`."""

from vae_lightning.train import main

if __name__ == "__main__":
    main()
