"""The speed benchmark compares like with like: its plain-torch columns compute the same loss as the model."""

from __future__ import annotations

import pytest
import torch

from benchmarks.common import compose_run
from benchmarks.train_step import MODELS, PlainModel
from vae_lightning.core.config import build

CASES = {
    name: ["experiment=mnist_nll", *overrides, "model.hidden_dims=[16]", "model.latent_dim=3"]
    for name, overrides in MODELS.items()
}
CASES["ladder"] = ["experiment=mnist_nll", *MODELS["ladder"], "model.hidden_dims=[16,8]", "model.latent_dim=3"]
CASES["ladder_d1"] = ["experiment=mnist_nll", *MODELS["ladder_d1"], "model.hidden_dims=[16,8]", "model.latent_dim=3"]
CASES["vq"] = ["experiment=mnist_nll", *MODELS["vq"], "model.hidden_dims=[16]", "model.latent_dim=4"]
CASES["faces_dogs_conv"] = ["experiment=faces_dogs_conv", "model.channels=[4,8]", "model.latent_dim=3"]
CASES["faces_dogs_ladder"] = ["experiment=faces_dogs_ladder", "model.channels=[4,8]", "model.hidden_dims=[16,8]"]
CASES["faces_dogs_ladder"] += ["model.latent_dim=3"]


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_plain_columns_compute_the_models_loss(name, tmp_path):
    """At the same seed (the same noise), `train_step.py`'s plain-torch model gives the framework's loss, for
    every model it times and for the conv preset's net (channels-last)."""
    faces = name.startswith("faces")
    if faces:
        assert compose_run(CASES[name], tmp_path).model.channels_last
    cfg = compose_run(CASES[name], tmp_path)
    torch.manual_seed(0)
    module = build(cfg.module, None, input_shape=(3, 64, 64) if faces else (1, 28, 28))
    module.loss_fn.fit_to_data(1000)
    plain = PlainModel(cfg, module)
    plain.n_data = 1000
    x = (torch.rand(8, *module.hparams.input_shape) > 0.5).float()
    torch.manual_seed(1)
    ours = module.objective(x, 1.0).loss.detach()
    torch.manual_seed(1)
    theirs = plain(x).detach()
    torch.testing.assert_close(theirs, ours, rtol=1e-5, atol=1e-4)
