"""Use a trained model from Python: python examples/use_a_trained_model.py <checkpoint> [<output folder>]

Encodes eight validation images of the checkpoint's data set, decodes them again, draws eight samples from the
prior and interpolates between the first two images; writes each as a row of pictures (PNG) and prints the shapes.
"""

import sys
from pathlib import Path

from vae_lightning.api import TrainedVAE

vae = TrainedVAE.load(sys.argv[1])  # checked as evaluate and morph check it; device="cuda" for a GPU
out = Path(sys.argv[2] if len(sys.argv) > 2 else ".")
images, labels = vae.datamodule().diagnostic_samples(8)  # (8, C, H, W) in [0, 1], from its validation split
z = vae.encode(images)  # posterior means, (8, latent_dim); photos work too: vae.encode(["me.jpg"], find_face=True)
print("codes", tuple(z.shape), "input", vae.input_shape)
vae.picture(images).save(out / "inputs.png")
vae.picture(vae.decode(z)).save(out / "reconstructions.png")  # the same as vae.reconstruct(images)
vae.picture(vae.sample(8)).save(out / "samples.png")
vae.picture(vae.interpolate(images[0], images[1], steps=10)).save(out / "interpolation.png")
