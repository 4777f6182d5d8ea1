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


def test_the_inference_gap_benchmark_moves_a_trained_encoder_between_posteriors(tmp_path):
    """`inference_gap.py` puts a trained run's network under another posterior: a flow with h on the VAE's encoder
    keeps its Gaussian (h's rows added, the flow at the identity), a Gaussian on the encoder of a flow with h keeps
    the flow's base Gaussian (h's rows dropped); the decoder is the trained one's, frozen."""
    from benchmarks.inference_gap import with_posterior

    def trained(overrides):
        torch.manual_seed(0)
        cfg = compose_run(["experiment=mnist_nll", *overrides], tmp_path / "trained")
        return build(cfg.module, None, input_shape=(1, 28, 28))

    x = (torch.rand(4, 1, 28, 28) > 0.5).float()
    for source, target in ((trained([]), "iaf_h"), (trained(["posterior=iaf"]), "gaussian")):
        moved = with_posterior(source, target, tmp_path, tmp_path)
        assert moved.net.posterior.context_dim == (100 if target == "iaf_h" else 0)
        with torch.no_grad():
            assert torch.allclose(moved.net.encode(x).loc, source.net.encode(x).loc)
            assert torch.allclose(moved.net.encode(x).scale, source.net.encode(x).scale)
            if target == "iaf_h":  # the flow starts at the identity: its code is the Gaussian's mean
                assert torch.allclose(moved.net.infer(x).code, source.net.encode(x).loc, atol=1e-6)
        decoders = zip(moved.net.decoder.parameters(), source.net.decoder.parameters(), strict=True)
        assert all(torch.equal(a, b) and not a.requires_grad for a, b in decoders)
