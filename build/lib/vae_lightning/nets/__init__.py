"""Encoder/decoder networks. Each network maps images to a DiagonalGaussian posterior and latents to logits."""
