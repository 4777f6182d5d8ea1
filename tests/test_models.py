"""The model family end to end: every pairing of prior, objective and likelihood builds and trains a step; each
option trains, saves, reloads, evaluates and resumes as a run of `train.py`; checkpoints of the format before
the family still load, evaluate, morph and resume; a new prior is one class and one config file."""

from __future__ import annotations

import functools
import itertools
import json
import math
import re
import shutil
import textwrap
from pathlib import Path

import pytest
import torch

from tests.conftest import ROOT, compose_tool, train_in_process
from vae_lightning.core.config import CONF_DIR, build
from vae_lightning.core.errors import CheckpointError, ConfigValueError, VAELightningError
from vae_lightning.module import VAEModule
from vae_lightning.run.checkpoints import check_resume, load_module

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "tiny_v1.ckpt"
PRIORS = sorted(path.stem for path in (CONF_DIR / "prior").glob("*.yaml"))
OBJECTIVES = sorted(path.stem for path in (CONF_DIR / "loss").glob("*.yaml"))
LIKELIHOODS = sorted(path.stem for path in (CONF_DIR / "loss" / "likelihood").glob("*.yaml"))
SHORT = [
    "trainer.max_epochs=2",
    "trainer.limit_train_batches=4",
    "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=2",
    "eval.nll_samples=8",
    "eval.mi_samples=100",
    "threads=1",
    "diagnostics.every_n_epochs=2",
    "model.latent_dim=3",
]


def option_config(group: str, name: str) -> dict:
    from omegaconf import OmegaConf

    path = CONF_DIR / group / f"{name}.yaml"
    node = OmegaConf.to_container(OmegaConf.load(path))
    node.pop("defaults", None)
    if path.read_text().startswith("# @package _global_"):  # the option sets keys of other groups too
        node = node[group.split("/")[-1]]
    return node


NETS = {
    "mlp": {"_target_": "vae_lightning.nets.mlp.MLPVAE", "hidden_dims": [8], "latent_dim": 2},
    "conv": {"_target_": "vae_lightning.nets.conv.ConvVAE", "channels": [4], "latent_dim": 2},
    "ladder": {"_target_": "vae_lightning.nets.ladder.LadderVAE", "hidden_dims": [8, 4], "latent_dims": [2, 2]},
}


@pytest.mark.parametrize("model", sorted(NETS))
def test_every_pairing_of_prior_objective_and_likelihood_trains_a_step(model):
    """The priors x 5 objectives x 6 likelihoods on a small network (the ladder with its own prior, the others
    with the rest): each builds, takes a step that changes every parameter it has (the prior's and the
    likelihood's too), and decodes images in [0, 1]; beta-TCVAE with a prior that does not factorise is refused,
    naming `prior`. The conv network's VampPrior has group norm."""
    net = NETS[model]
    priors = ["ladder"] if model == "ladder" else [name for name in PRIORS if name not in ("ladder", "codes")]
    x = torch.rand(6, 1, 4, 4)
    objectives = [name for name in OBJECTIVES if name != "vqvae"]  # the VQ-VAE's: tests/test_vq.py
    for prior, objective, likelihood in itertools.product(priors, objectives, LIKELIHOODS):
        if objective == "seed" and likelihood != "bernoulli":
            continue  # the seed's MSE objective has no likelihood
        loss = option_config("loss", objective)
        if objective != "seed":
            loss["likelihood"] = option_config("loss/likelihood", likelihood)
        prior_config = option_config("prior", prior) | ({"n_pseudo_inputs": 3} if prior == "vamp" else {})
        grouped = {"norm": option_config("model/norm", "group")} if model == "conv" and prior == "vamp" else {}
        torch.manual_seed(0)
        settings = {
            "net": net | grouped,
            "loss": loss,
            "beta": {"_target_": "vae_lightning.schedules.Constant", "_partial_": True},
            "optimizer": {"_target_": "vae_lightning.optim.adam", "_partial_": True, "lr": 0.1},
        }
        if objective == "tcvae" and prior != "standard_normal":
            with pytest.raises(ConfigValueError, match="factorises") as refused:
                VAEModule.from_settings(settings, input_shape=(1, 4, 4), prior=prior_config)
            assert refused.value.key == "prior"
            continue
        module = VAEModule.from_settings(settings, input_shape=(1, 4, 4), prior=prior_config)
        module.loss_fn.fit_to_data(100)
        before = {name: p.detach().clone() for name, p in module.named_parameters()}
        optimizer = module.configure_optimizers()["optimizer"]
        terms = module.objective(x, 1.0)
        terms.loss.backward()
        optimizer.step()
        case = (prior, objective, likelihood)
        assert torch.isfinite(terms.loss) and set(terms.terms) == set(module.loss_fn.term_names), case
        unchanged = [name for name, p in module.named_parameters() if torch.equal(p, before[name])]
        # the prior's and the likelihood's parameters moved; the MMD sees a mixture prior only through samples,
        # whose discrete choice of component passes no gradient to the mixture weights
        exempt = ("net.", "prior.logits") if objective == "mmd" else ("net.",)
        assert not [name for name in unchanged if not name.startswith(exempt)], case
        images = module.decode_image(module.prior.sample(4, torch.Generator().manual_seed(0)))
        assert images.shape == (4, 1, 4, 4) and 0 <= float(images.min()) <= float(images.max()) <= 1, case


RUNS = {
    "mixture_iwae_continuous_bernoulli": ["prior=mixture", "loss=iwae", "loss/likelihood=continuous_bernoulli"],
    "vamp_pixel_sigma": ["prior=vamp", "prior.n_pseudo_inputs=12", "loss/likelihood=gaussian_pixel_sigma"],
    "tcvae_stratified": ["loss=tcvae", "loss.stratified=true"],
    "mmd_logistic": ["loss=mmd", "loss/likelihood=logistic", "model.output_bias_from_data=true"],
    "factor_gaussian": ["loss=factor", "loss.hidden_dims=[16,16]", "loss/likelihood=gaussian"],
    "iaf": ["posterior=iaf", "posterior.hidden_dims=[16,16]", "posterior.h_dim=4"],
    "miwae_dreg": ["loss=miwae", "loss.k=2", "loss.m=2", "loss.dreg=true"],
    "gmm_sampler": ["sampler=gmm", "sampler.n_components=3"],
    "ciwae": ["loss=ciwae", "loss.k=3"],
    "ladder": ["model=ladder", "prior=ladder", "model.hidden_dims=[16,8]", "model.latent_dims=[4,2]"],
    "vq": ["posterior=vq", "prior=codes", "loss=vqvae", "sampler=code_transformer", "posterior.code_dim=1"],
    "conv_ladder": [
        "model=conv_ladder",
        "prior=ladder",
        "model.channels=[8,16]",
        "model.hidden_dims=[16,8]",
        "model.latent_dims=[4,2]",
        "model.output_bias_from_data=true",
    ],
    "conv_vamp_channel_sigma": [
        "model=conv",
        "model.channels=[8,16]",
        "model.output_bias_from_data=true",
        "model/norm=group",
        "prior=vamp",
        "prior.n_pseudo_inputs=12",
        "loss=iwae",
        "loss/likelihood=gaussian_channel_sigma",
    ],
}


@pytest.mark.parametrize("name", sorted(RUNS))
def test_each_model_trains_saves_reloads_evaluates_and_resumes(name, tmp_path):
    from vae_lightning.evaluate import evaluate

    run = tmp_path / "run"
    args = [*SHORT, *RUNS[name]]
    train_in_process(args, run)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["status"] == "completed"
    # a flow's and a ladder's posteriors have no per-dimension densities
    gaussian = not {"posterior=iaf", "model=ladder", "model=conv_ladder", "posterior=vq"} & set(RUNS[name])
    information = ("test/total_correlation", "test/mutual_info") if gaussian else ()
    for key in ("test/nll", "test/elbo", "test/active_units", "test/mig", *information):
        assert key in metrics and metrics[key] == metrics[key], key  # present and not NaN
    assert ("test/active_units_layer2" in metrics) == name.endswith("ladder")  # each layer's, for a hierarchy
    assert ("test/codebook_perplexity" in metrics) == (name == "vq")  # and how much of a codebook is used
    factorise = "prior=" not in " ".join(RUNS[name]) and gaussian
    if name == "vq":  # a VQ-VAE's samples are drawn by the transformer it fitted to the training grids
        from vae_lightning.api import TrainedVAE

        vae = TrainedVAE.load(run / "checkpoints" / "last.ckpt")
        assert vae.module.sampler.fitted and vae.sample(3, torch.Generator().manual_seed(0)).shape == (3, 1, 8, 8)
        images = torch.rand(2, 1, 8, 8)
        codes = vae.encode(images)  # the quantised grids: encoding their decodes again may pick other codes
        assert torch.equal(vae.module.net.posterior.vectors(vae.module.net.posterior.nearest(codes)), codes)
        assert vae.interpolate(images[0], images[1], steps=4).shape == (4, 1, 8, 8)
        # a codebook or transformer that cannot be (a stranger's file, altered) is refused as it loads, in one line
        saved = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
        for key, value in (
            ("net.posterior.codebook", float("nan")),
            ("net.posterior.counts", -1.0),
            ("sampler.head.weight", float("inf")),
        ):
            broken = dict(saved) | {"state_dict": dict(saved["state_dict"])}
            broken["state_dict"][key] = torch.full_like(saved["state_dict"][key], value)
            torch.save(broken, tmp_path / "broken.ckpt")
            with pytest.raises(CheckpointError, match=r"posterior=vq|sampler=code_transformer"):
                TrainedVAE.load(tmp_path / "broken.ckpt")
    assert ("test/kl_dim_000" in metrics) == factorise  # only where p(z) and q(z|x) factorise
    checkpoint = run / "checkpoints" / "last.ckpt"
    module = load_module(checkpoint)
    saved = torch.load(checkpoint, weights_only=True)["state_dict"]
    for key, value in module.state_dict().items():
        torch.testing.assert_close(value, saved[key])  # the prior's and likelihood's parameters come back
    owned = ("prior.", "loss_fn.likelihood.", "loss_fn.discriminator.", "net.posterior.", "sampler.")
    assert any(key.startswith(owned) for key in saved) or name in (
        "mmd_logistic",
        "miwae_dreg",
        "ciwae",
        "tcvae_stratified",
        "ladder",  # its prior's networks are the network's
        "conv_ladder",
    )
    output = tmp_path / "evaluate.json"
    scores = evaluate(compose_tool("evaluate", [f"ckpt_path={checkpoint}", "eval.nll_samples=4", f"output={output}"]))
    assert scores["test/loss"] == scores["test/loss"] and output.is_file()
    train_in_process([*args, "trainer.max_epochs=3", "resume=true"], run)
    assert json.loads((run / "metrics.json").read_text())["status"] == "completed"
    hparams = (run / "tensorboard").glob("events.out.tfevents.*")
    assert any(b"prior" in path.read_bytes() or "prior=" not in " ".join(RUNS[name]) for path in hparams)


def test_a_run_counted_in_steps_tells_the_objective_the_training_set_size(tmp_path):
    """With `max_epochs=-1` Lightning counts the steps without loading the training loader; beta-TCVAE still
    learns the set's size (the digits' 1,437 training images)."""
    run = tmp_path / "run"
    args = [arg for arg in SHORT if not arg.startswith("trainer.max_epochs")]
    train_in_process([*args, "trainer.max_epochs=-1", "trainer.max_steps=3", "loss=tcvae"], run)
    assert json.loads((run / "metrics.json").read_text())["status"] == "completed"
    saved = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert int(saved["state_dict"]["loss_fn.dataset_size"]) == 1437


def test_a_resume_with_another_prior_is_refused_with_the_key(tmp_path):
    run = tmp_path / "run"
    train_in_process([*SHORT, "prior=mixture", "~callbacks.diagnostics"], run)
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    module_cfg = dict(checkpoint["hyper_parameters"])
    module_cfg["prior"] = {"_target_": "vae_lightning.priors.StandardNormal"}
    with pytest.raises(CheckpointError, match=r"`prior\._target_` is 'vae_lightning\.priors\.MixtureOfGaussians'"):
        check_resume(run / "checkpoints" / "last.ckpt", module_cfg, {"max_epochs": 5})


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("prior.n_components=0", "prior.n_components"),
        ("loss.k=0", "loss.k"),
        ("loss.tc_weight=-1", "loss.tc_weight"),
        ("loss.likelihood.min_sigma=0.5", "loss.likelihood.min_sigma"),
        ("loss.likelihood.bins=1", "loss.likelihood.bins"),
        ("model.output_bias_from_data=yes", "model.output_bias_from_data"),
        ("prior.start_from_data=1", "prior.start_from_data"),
    ],
)
def test_bad_values_of_the_new_groups_name_their_key(override, key, tmp_path):
    from tests.conftest import compose_train
    from vae_lightning.run.trainer import build_run

    group = {
        "prior": ["prior=mixture"],
        "prior.start_from_data": ["prior=vamp"],
        "loss.k": ["loss=iwae"],
        "loss.tc_weight": ["loss=tcvae"],
        "loss.likelihood.min_sigma": ["loss/likelihood=gaussian_pixel_sigma"],
        "loss.likelihood.bins": ["loss/likelihood=logistic"],
    }
    chosen = group.get(key, group.get(key.split(".")[0], []))
    with pytest.raises(VAELightningError) as error:
        build_run(compose_train([*chosen, override], tmp_path))
    assert f"`{key}" in str(error.value)


def test_a_checkpoint_of_the_format_before_the_family_loads_evaluates_morphs_and_resumes(tmp_path):
    """`fixtures/tiny_v1.ckpt` was written by the version before priors were a config group (no `prior`
    hyperparameter, decoder outputs without the per-pixel axis)."""
    from vae_lightning.evaluate import evaluate
    from vae_lightning.morph import morph

    saved = torch.load(FIXTURE, weights_only=True)
    assert "prior" not in saved["hyper_parameters"]
    module = load_module(FIXTURE)
    assert type(module.prior).__name__ == "StandardNormal"
    assert module.decode_image(torch.zeros(1, 2)).shape == (1, 1, 8, 8)
    scores = evaluate(compose_tool("evaluate", [f"ckpt_path={FIXTURE}", "eval.nll_samples=4", f"output={tmp_path}/e"]))
    assert scores["test/nll"] > 0
    gif, strip = morph(compose_tool("morph", [f"ckpt_path={FIXTURE}", f"output={tmp_path / 'm.gif'}", "steps=3"]))
    assert gif.is_file() and strip.is_file()
    run = tmp_path / "resumed"
    shutil.copytree(FIXTURE.parent, run / "checkpoints", ignore=shutil.ignore_patterns("*.py", "*.json"))
    from tests.test_baseline import TINY

    short = [arg for arg in TINY if not arg.startswith("trainer.max_epochs")]
    train_in_process([*short, "trainer.max_epochs=2", f"ckpt_path={run / 'checkpoints' / 'tiny_v1.ckpt'}"], run)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["tested_epoch"] == 1


V2 = FIXTURE.parent / "tiny_v2.ckpt"
V2_SETTINGS = ["loss=iwae", "loss.k=2", "prior=mixture", "prior.n_components=2"]


def test_a_checkpoint_of_the_manual_optimization_format_loads_and_resumes_exactly(tmp_path):
    """`fixtures/tiny_v2.ckpt` (one epoch) was written while the module stepped its optimizer by hand and kept
    `gradient_clip_val` among its settings; `tiny_v2_two_epochs.pt` holds the weights that the same version
    reached after two epochs without a stop. Today's version loads it, evaluates it, and resumes it to those
    weights up to float rounding (its IWAE draws the codes and their log density in one call, since the posterior
    is a part, which orders the sums of the backward pass differently: 1e-8 apart after two steps, where a lost
    optimizer state or step count would be orders of magnitude more)."""
    from vae_lightning.evaluate import evaluate

    saved = torch.load(V2, weights_only=True)
    assert "gradient_clip_val" in saved["hyper_parameters"]
    assert saved["loops"]["fit_loop"]["epoch_loop.manual_optimization.optim_step_progress"]["total"]["completed"] == 2
    module = load_module(V2)
    assert type(module.prior).__name__ == "MixtureOfGaussians" and module.loaded_step == 2
    scores = evaluate(compose_tool("evaluate", [f"ckpt_path={V2}", "eval.nll_samples=4", f"output={tmp_path}/e"]))
    assert math.isfinite(scores["test/nll"])
    run = tmp_path / "resumed"
    (run / "checkpoints").mkdir(parents=True)
    shutil.copy(V2, run / "checkpoints" / "last.ckpt")
    from tests.test_baseline import TINY

    short = [arg for arg in TINY if not arg.startswith("trainer.max_epochs")]
    train_in_process([*short, *V2_SETTINGS, "trainer.max_epochs=2", "resume=true"], run)
    resumed = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert resumed["global_step"] == 4
    expected = torch.load(FIXTURE.parent / "tiny_v2_two_epochs.pt", weights_only=True)
    assert expected.keys() == resumed["state_dict"].keys()
    for key, tensor in expected.items():
        torch.testing.assert_close(resumed["state_dict"][key], tensor, rtol=1e-5, atol=1e-6, msg=key)


@pytest.mark.parametrize("model", ["mlp", "conv"])
def test_the_decoder_can_start_at_the_mean_of_the_training_images(model):
    """With `output_bias_from_data` the decoder's last bias is the logit of the training images' mean (per pixel
    for the MLP, per channel for the conv net), kept 1e-3 inside (0, 1): with its weights at zero, the decoder
    draws exactly that mean. The second output per pixel (here the logistic's log scale) is left as it was."""
    from vae_lightning.data.in_memory import InMemoryDataset
    from vae_lightning.nets.conv import ConvVAE
    from vae_lightning.nets.mlp import MLPVAE

    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (50, 3, 8, 8), generator=g, dtype=torch.uint8)
    images[:, 0, 0, 0] = 0  # a pixel black in every image
    dataset = InMemoryDataset(images, torch.zeros(50, dtype=torch.long))
    mean = images.double().mean(0).div(255).float()
    torch.testing.assert_close(dataset.mean_image(), mean)
    kwargs = {"input_shape": (3, 8, 8), "latent_dim": 2, "outputs_per_pixel": 2, "output_bias_from_data": True}
    net = MLPVAE(hidden_dims=[16], **kwargs) if model == "mlp" else ConvVAE(channels=[4, 8], **kwargs)
    last = net.decoder[-1] if model == "mlp" else net.decoder_convs[-1]
    second = last.bias.detach().clone().view(2, -1)[1]
    net.fit_to_data(dataset)
    with torch.no_grad():
        last.weight.zero_()
    params = net.decode(torch.randn(4, 2, generator=g))
    expected = mean if model == "mlp" else mean.mean((1, 2), keepdim=True).expand(3, 8, 8)
    expected = expected.clamp(1e-3, 1 - 1e-3)
    torch.testing.assert_close(torch.sigmoid(params[:, 0]), expected.expand(4, 3, 8, 8), atol=1e-4, rtol=0)
    assert float(torch.sigmoid(params[0, 0, 0, 0, 0])) == pytest.approx(1e-3) or model == "conv"
    torch.testing.assert_close(last.bias.detach().view(2, -1)[1], second)


def test_a_network_or_data_set_that_cannot_start_from_the_data_mean_says_so():
    from vae_lightning.data.in_memory import InMemoryDataset
    from vae_lightning.nets.base import VAENet
    from vae_lightning.nets.mlp import MLPVAE

    class Plain(VAENet):
        output_bias_from_data = True

    with pytest.raises(ConfigValueError, match=r"output_bias_from_data=True`: is not offered by Plain"):
        Plain().fit_to_data(InMemoryDataset(torch.zeros(3, 1, 4, 4), torch.zeros(3, dtype=torch.long)))
    net = MLPVAE((1, 4, 4), hidden_dims=[8], output_bias_from_data=True)
    with pytest.raises(ConfigValueError, match=r"output_bias_from_data=True`: needs a training set with a mean_imag"):
        net.fit_to_data(torch.utils.data.TensorDataset(torch.zeros(3, 1, 4, 4)))
    MLPVAE((1, 4, 4), hidden_dims=[8]).fit_to_data(None)  # off: nothing asked of the data


def test_vamp_pseudo_inputs_can_start_as_training_images(caplog):
    """With `start_from_data` each pseudo-input is a distinct training image (kept 0.05 inside (0, 1)), drawn
    from the run's random state; with more pseudo-inputs than images, images repeat."""
    from vae_lightning.data.in_memory import InMemoryDataset
    from vae_lightning.nets.mlp import MLPVAE
    from vae_lightning.priors import VampPrior

    images = torch.rand(20, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    dataset = InMemoryDataset(images, torch.zeros(20, dtype=torch.long))
    net = MLPVAE((1, 4, 4), hidden_dims=[8])
    prior = VampPrior(net, n_pseudo_inputs=6, start_from_data=True)
    torch.manual_seed(3)
    prior.fit_to_data(dataset)
    started = prior.pseudo_inputs().detach()
    clamped = images.clamp(0.05, 0.95)
    matches = [int((clamped - u).abs().flatten(1).amax(1).argmin()) for u in started]
    for u, i in zip(started, matches, strict=True):
        torch.testing.assert_close(u, clamped[i])
    assert len(set(matches)) == 6
    again = VampPrior(net, n_pseudo_inputs=6, start_from_data=True)
    torch.manual_seed(3)
    again.fit_to_data(dataset)
    torch.testing.assert_close(again.pseudo_inputs(), started)  # the same seed, the same images
    many = VampPrior(net, n_pseudo_inputs=50, start_from_data=True)
    many.fit_to_data(dataset)
    assert many.pseudo_inputs().shape == (50, 1, 4, 4)
    dark = VampPrior(net, n_pseudo_inputs=6)
    before = dark.pseudo_inputs().detach().clone()
    dark.fit_to_data(dataset)
    torch.testing.assert_close(dark.pseudo_inputs(), before)  # off: the dark start stays
    with pytest.raises(ConfigValueError, match=r"start_from_data=True`: needs a training set with an images_at"):
        prior.fit_to_data(torch.utils.data.TensorDataset(images))
    assert "set prior.decoder_from_data=true" in caplog.text  # this net's decoder does not start from the data
    caplog.clear()
    started_net = MLPVAE((1, 4, 4), hidden_dims=[8], output_bias_from_data=True)
    VampPrior(started_net, n_pseudo_inputs=6).fit_to_data(dataset)
    assert "decoder_from_data" not in caplog.text
    asked = VampPrior(net, n_pseudo_inputs=6, decoder_from_data=True)  # the prior's own key starts the decoder
    asked.fit_to_data(dataset)
    with torch.no_grad():
        net.decoder[-1].weight.zero_()
        drawn = torch.sigmoid(net.decode(torch.zeros(1, 2)))[0, 0]
    torch.testing.assert_close(drawn, dataset.mean_image().clamp(1e-3, 1 - 1e-3), atol=1e-5, rtol=0)
    assert "decoder_from_data" not in caplog.text


def docs_block(language: str, first_line: str) -> str:
    """The code block of docs/models.md ("Adding a model") that starts with `first_line`, as a user copies it."""
    text = (ROOT / "docs" / "models.md").read_text()
    blocks = re.findall(rf"```{language}\n(.*?)```", text, re.S)
    return next(block for block in blocks if block.startswith(first_line))


LAPLACE = docs_block("python", "# my_priors.py")


def test_a_new_prior_is_one_class_and_one_config_file(tmp_path, monkeypatch):
    """As docs/models.md's "Adding a model" shows: a class in the user's own module, a file in their config folder."""
    (tmp_path / "my_priors.py").write_text(textwrap.dedent(LAPLACE))
    (tmp_path / "conf" / "prior").mkdir(parents=True)
    (tmp_path / "conf" / "prior" / "laplace.yaml").write_text(docs_block("yaml", "# conf/prior/laplace.yaml"))
    monkeypatch.syspath_prepend(str(tmp_path))
    run = tmp_path / "run"
    train_in_process([*SHORT, "prior=laplace", f"hydra.searchpath=[file://{tmp_path / 'conf'}]"], run)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["test/nll"] > 0 and "test/kl_dim_000" not in metrics
    module = load_module(run / "checkpoints" / "last.ckpt", config_dirs=[tmp_path / "conf"])
    assert type(module.prior).__name__ == "LaplacePrior" and module.prior.scale == 0.5
    with pytest.raises(CheckpointError, match=r"names `my_priors\.LaplacePrior`"):
        load_module(run / "checkpoints" / "last.ckpt")  # without the user's folder: refused, not run


FREE_BITS = docs_block("python", "# my_objectives.py")


def test_a_new_objective_is_one_class_and_one_config_file(tmp_path, monkeypatch):
    """As docs/models.md's "Adding a model" shows: the class in the user's module, the option in their config folder
    (its likelihood chosen from the packaged group); the run's loss counts each dimension's free nats."""
    (tmp_path / "my_objectives.py").write_text(textwrap.dedent(FREE_BITS))
    (tmp_path / "conf" / "loss").mkdir(parents=True)
    (tmp_path / "conf" / "loss" / "free_bits.yaml").write_text(
        docs_block("yaml", "# conf/loss/free_bits.yaml").replace("free_nats: 0.5", "free_nats: 2.0")
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    run = tmp_path / "run"
    train_in_process([*SHORT, "loss=free_bits", f"hydra.searchpath=[file://{tmp_path / 'conf'}]"], run)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["status"] == "completed"
    latent_dim = 3
    # each of the 3 dimensions counts at least 2 nats (beta 1), whatever its KL
    assert metrics["test/loss"] >= metrics["test/recon"] + latent_dim * 2.0 - 1e-4
    assert metrics["test/kl"] < latent_dim * 2.0  # the KL itself is below what the loss counts
    module = load_module(run / "checkpoints" / "last.ckpt", config_dirs=[tmp_path / "conf"])
    assert type(module.loss_fn).__name__ == "FreeBitsELBO" and module.loss_fn.free_nats == 2.0


def test_the_configs_of_the_family_build(tmp_path):
    """Each option file builds a factory that builds its part (what the module calls it with), so a typo fails
    here."""
    from vae_lightning.core.config import made
    from vae_lightning.nets.ladder import LadderVAE
    from vae_lightning.nets.mlp import MLPVAE

    net, ladder = MLPVAE((1, 4, 4), [4], 2), LadderVAE((1, 4, 4), [4, 4], [2, 2])
    for name in PRIORS:
        if name == "codes":  # the VQ-VAE's: tests/test_vq.py
            continue
        part = made(build(option_config("prior", name), "prior"), "prior", net=ladder if name == "ladder" else net)
        assert isinstance(part, torch.nn.Module)
    for name in LIKELIHOODS:
        likelihood = build(option_config("loss/likelihood", name), "loss.likelihood")
        assert isinstance(made(likelihood, "loss.likelihood", input_shape=(1, 4, 4)), torch.nn.Module)
    with pytest.raises(ConfigValueError, match=r"prior\.n_pseudo_inputs"):
        made(build(option_config("prior", "vamp") | {"n_pseudo_inputs": 0}, "prior"), "prior", net=net)


def test_the_vamp_option_starts_the_decoder_from_the_data_mean(tmp_path):
    """`prior=vamp` starts the decoder at the data's mean (with PyTorch's default start its codes collapsed onto
    the prior) through its own key, leaving the network's settings alone; the key can be set back."""
    from tests.conftest import compose_train
    from vae_lightning.run.trainer import build_run

    for overrides in (["prior=vamp"], ["experiment=mnist_nll", "prior=vamp"]):
        cfg = compose_train(overrides, tmp_path)
        assert cfg.prior.decoder_from_data is True and cfg.model.output_bias_from_data is False, overrides
    cfg = compose_train(["prior=vamp", "prior.n_pseudo_inputs=3", "trainer.limit_train_batches=1"], tmp_path / "r")
    datamodule, module, _ = build_run(cfg)
    datamodule.setup("fit")
    module.prior.fit_to_data(datamodule.train_dataloader().dataset)
    mean = datamodule.train_dataloader().dataset.mean_image().clamp(1e-3, 1 - 1e-3)
    torch.testing.assert_close(torch.sigmoid(module.net.decoder[-1].bias), mean.flatten())
    assert compose_train(["prior=vamp", "prior.decoder_from_data=false"], tmp_path).prior.decoder_from_data is False


def test_factorvae_trains_its_discriminator_with_its_own_settings_and_only_on_its_own_loss():
    """The discriminator's cross-entropy reaches only the discriminator (the codes are detached), the TC
    estimate only the VAE (the discriminator's weights are detached there); the optimizer steps the
    discriminator as a group of its own, with the paper's Adam settings."""
    from vae_lightning.losses import FactorVAE
    from vae_lightning.nets.mlp import MLPVAE
    from vae_lightning.priors import StandardNormal

    net = MLPVAE((1, 4, 4), hidden_dims=[8], latent_dim=3)
    objective = FactorVAE(hidden_dims=[8])
    objective.fit_to_net(net)
    terms = objective(net, StandardNormal(net), torch.rand(6, 1, 4, 4), 1.0, torch.Generator().manual_seed(0))
    vae, critic = list(net.parameters()), list(objective.discriminator.parameters())
    assert all(
        g is None for g in torch.autograd.grad(terms.terms["discriminator"], vae, allow_unused=True, retain_graph=True)
    )
    assert all(g is None for g in torch.autograd.grad(terms.terms["tc"], critic, allow_unused=True, retain_graph=True))
    assert all(g is not None for g in torch.autograd.grad(terms.loss, [*vae, *critic], allow_unused=True))
    from vae_lightning.optim import adam
    from vae_lightning.schedules import Constant

    module = VAEModule(net, objective, Constant, functools.partial(adam, lr=1e-3))
    groups = module.configure_optimizers()["optimizer"].param_groups
    assert [len(g["params"]) for g in groups] == [len(vae), len(critic)]
    assert (groups[0]["lr"], groups[0]["betas"], groups[1]["lr"], groups[1]["betas"]) == (
        1e-3,
        (0.9, 0.999),
        1e-4,
        (0.5, 0.9),
    )


def test_factorvae_resumes_exactly_with_its_discriminator_and_its_optimizer_state(tmp_path):
    """Four epochs at once, or two then `resume=true` for the rest: the same weights of the VAE and of the
    discriminator (whose Adam moments come back with the model's, as one optimizer's groups)."""
    args = [*SHORT, "loss=factor", "loss.hidden_dims=[16,16]", "trainer.max_epochs=4"]
    train_in_process(args, tmp_path / "straight")
    train_in_process([*args[:-1], "trainer.max_epochs=2"], tmp_path / "resumed")
    train_in_process([*args, "resume=true"], tmp_path / "resumed")
    final = {
        n: torch.load(tmp_path / n / "checkpoints" / "last.ckpt", weights_only=True) for n in ("straight", "resumed")
    }
    assert final["resumed"]["global_step"] == final["straight"]["global_step"] == 16
    assert any(key.startswith("loss_fn.discriminator.") for key in final["straight"]["state_dict"])
    for key, tensor in final["straight"]["state_dict"].items():
        assert torch.equal(tensor, final["resumed"]["state_dict"][key]), key
