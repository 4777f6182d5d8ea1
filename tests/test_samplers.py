"""The samplers of new codes: the mixture fitted to the training codes against its closed form (one component is
the Gaussian of the codes' mean and covariance), drawing reproducibly without touching the run's random state,
the prior until it is fitted, and the fit saved with the weights."""

from __future__ import annotations

import json
import math

import pytest
import torch

from tests.conftest import train_in_process
from vae_lightning.nets.mlp import MLPVAE
from vae_lightning.priors import StandardNormal
from vae_lightning.samplers import GaussianMixtureSampler, PriorSampler


def prior(latent=3):
    return StandardNormal(MLPVAE((1, 2, 2), hidden_dims=[3], latent_dim=latent))


def test_one_component_is_the_gaussian_of_the_codes_mean_and_covariance():
    g = torch.Generator().manual_seed(0)
    mixing = torch.tensor([[1.0, 0.0, 0.0], [0.8, 0.6, 0.0], [-0.3, 0.2, 0.5]], dtype=torch.float64)
    codes = torch.randn(5000, 3, generator=g, dtype=torch.float64) @ mixing.T + torch.tensor([1.0, -2.0, 0.5])
    sampler = GaussianMixtureSampler(3, n_components=1)
    sampler.fit(codes)
    centred = codes - codes.mean(0)
    covariance = centred.T @ centred / len(codes)  # the maximum-likelihood covariance
    torch.testing.assert_close(sampler.means[0].double(), codes.mean(0), rtol=1e-5, atol=1e-5)
    fitted = sampler.scale_tril[0].double() @ sampler.scale_tril[0].double().T
    torch.testing.assert_close(fitted, covariance + 1e-6 * torch.eye(3, dtype=torch.float64), rtol=1e-4, atol=1e-5)
    assert float(sampler.weights[0]) == 1.0 and bool(sampler.fitted)
    drawn = sampler.sample(20_000, prior(), torch.Generator().manual_seed(1)).double()
    torch.testing.assert_close(drawn.mean(0), codes.mean(0), atol=0.05, rtol=0)


def test_it_draws_from_the_prior_until_fitted_then_from_the_mixture_reproducibly_and_apart_from_the_run():
    sampler, p = GaussianMixtureSampler(3, n_components=2), prior()
    torch.testing.assert_close(
        sampler.sample(4, p, torch.Generator().manual_seed(5)), p.sample(4, torch.Generator().manual_seed(5))
    )
    codes = torch.cat([torch.randn(300, 3) + 10, torch.randn(300, 3) - 10])
    sampler.fit(codes)
    state = torch.random.get_rng_state()
    a = sampler.sample(400, p, torch.Generator().manual_seed(2))
    assert torch.equal(torch.random.get_rng_state(), state)  # the run's random state is untouched
    torch.testing.assert_close(a, sampler.sample(400, p, torch.Generator().manual_seed(2)))
    assert bool((a.mean(-1).abs() > 5).all())  # each code in one of the two clusters, none where a prior's are
    assert 0.3 < float((a.mean(-1) > 0).float().mean()) < 0.7  # both clusters drawn
    assert PriorSampler().sample(3, p).shape == (3, 3)


def test_fewer_distinct_codes_than_components_leave_the_spare_ones_without_weight():
    sampler = GaussianMixtureSampler(2, n_components=5)
    sampler.fit(torch.tensor([[0.0, 0.0], [1.0, 1.0], [0.0, 0.0], [1.0, 1.0]]).repeat(10, 1))
    assert float(sampler.weights[2:].sum()) == 0.0 and abs(float(sampler.weights.sum()) - 1.0) < 1e-6


def test_a_run_with_the_mixture_sampler_saves_its_fit_and_its_samples_come_from_it(tmp_path):
    from vae_lightning.api import TrainedVAE

    run = tmp_path / "run"
    args = ["trainer.max_epochs=2", "trainer.limit_train_batches=4", "eval.nll_samples=4", "eval.mi_samples=50"]
    train_in_process([*args, "sampler=gmm", "sampler.n_components=3", "diagnostics.every_n_epochs=1"], run)
    assert json.loads((run / "metrics.json").read_text())["status"] == "completed"
    saved = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert bool(saved["state_dict"]["sampler.fitted"]) and saved["state_dict"]["sampler.means"].shape == (3, 2)
    assert (run / "images" / "samples.png").is_file()
    vae = TrainedVAE.load(run / "checkpoints" / "last.ckpt")
    torch.testing.assert_close(vae.module.sampler.means, saved["state_dict"]["sampler.means"])
    images = vae.sample(6, torch.Generator().manual_seed(0))
    assert images.shape == (6, 1, 8, 8) and float(images.min()) >= 0 and float(images.max()) <= 1
    # a fit that is not a mixture (a stranger's file, altered) is refused as the checkpoint loads, in one line
    from vae_lightning.core.errors import CheckpointError

    for name, value in (("sampler.means", float("nan")), ("sampler.weights", -1.0), ("sampler.scale_tril", 0.0)):
        broken = dict(saved) | {"state_dict": dict(saved["state_dict"])}
        broken["state_dict"][name] = torch.full_like(saved["state_dict"][name], value)
        torch.save(broken, tmp_path / "broken.ckpt")
        with pytest.raises(CheckpointError, match="sampler=gmm"):
            TrainedVAE.load(tmp_path / "broken.ckpt")


def test_the_sample_scores_of_known_class_probabilities():
    """Uniform predictions: confidence 1/C, a score of 1, the class entropy log C. One confident class per
    sample, all classes alike: confidence 1, a score of C. All samples one class: a score of 1, entropy 0."""
    from vae_lightning.callbacks.sample_score import sample_scores

    uniform = sample_scores(torch.full((40, 4), 0.25))
    assert uniform["sample_confidence"] == 0.25 and abs(uniform["sample_inception_score"] - 1) < 1e-9
    assert abs(uniform["sample_class_entropy"] - math.log(4)) < 1e-9
    confident = sample_scores(torch.eye(4).repeat(10, 1))
    assert abs(confident["sample_confidence"] - 1) < 1e-9 and abs(confident["sample_inception_score"] - 4) < 1e-6
    one_class = sample_scores(torch.eye(4)[[2] * 40])
    assert abs(one_class["sample_inception_score"] - 1) < 1e-6 and abs(one_class["sample_class_entropy"]) < 1e-6


def test_a_run_scores_its_samples_with_a_classifier_of_its_labels(tmp_path):
    run = tmp_path / "run"
    args = ["trainer.max_epochs=3", "eval.nll_samples=4", "eval.mi_samples=50", "~callbacks.diagnostics"]
    train_in_process(args, run)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test/sample_classifier_accuracy"] > 0.8  # the 8x8 digits are easy to classify
    assert 1 <= metrics["test/sample_inception_score"] <= 10 and 0.1 <= metrics["test/sample_confidence"] <= 1
    assert 0 <= metrics["test/sample_class_entropy"] <= math.log(10) + 1e-6


def test_a_refit_starts_from_the_previous_fit_and_finds_the_same_mixture():
    g = torch.Generator().manual_seed(0)
    codes = torch.cat([torch.randn(400, 2, generator=g) * 0.5 + 4, torch.randn(400, 2, generator=g) * 0.5 - 4])
    sampler = GaussianMixtureSampler(2, n_components=2)
    sampler.fit(codes)
    first = sampler.means.clone()
    sampler.fit(codes)  # from the previous fit: the same optimum
    torch.testing.assert_close(sampler.means, first, atol=1e-3, rtol=0)
    assert sorted(first[:, 0].round().tolist()) == [-4.0, 4.0]
