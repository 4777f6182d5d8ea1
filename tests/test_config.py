"""Every file in conf/ composes, what it describes can be built, and bad values name their keys."""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from tests.conftest import compose_train
from tests.photo_fixtures import write_celeba, write_oxford_pet, write_utkface
from vae_lightning.core.checks import trainer_values
from vae_lightning.core.config import CONF_DIR, build
from vae_lightning.core.errors import ConfigErrors, ConfigValueError, VAELightningError
from vae_lightning.losses import SeedLoss
from vae_lightning.module import VAEModule
from vae_lightning.run.trainer import build_run
from vae_lightning.schedules import Constant, DelayedRamp

TOOL_GROUPS = ("hydra", "labels")  # not options of train.py (labels: vae-shards')
GROUPS = [
    p
    for p in sorted(CONF_DIR.rglob("*"))
    if p.is_dir() and any(p.glob("*.yaml")) and p.relative_to(CONF_DIR).parts[0] not in TOOL_GROUPS
]
# A nested group exists inside one option of its parent group; some options need a matching data set.
PARENT_OPTION = {
    "dataset/binarize": ["dataset=mnist"],
    "loss/likelihood": ["loss=elbo"],
    "model/posterior_scale": ["model=mlp"],
    "model/norm": ["model=conv", "dataset=utkface"],
}
COMPANION = {"model=conv": ["dataset=utkface"]}  # 64x64 images: the digits' 8x8 are too small for its 4 blocks
COMPANION |= {"model=ladder": ["prior=ladder"], "prior=ladder": ["model=ladder"]}  # the ladder and its prior
COMPANION |= {"model=conv_ladder": ["prior=ladder", "dataset=utkface"]}
# the VQ-VAE's three parts need each other (a code of 10 values: two positions of posterior=vq's 5)
VQ = ["model.latent_dim=10", "prior=codes", "loss=vqvae", "posterior=vq"]
COMPANION |= {option: [o for o in VQ if o != option] for option in ("posterior=vq", "prior=codes", "loss=vqvae")}
COMPANION |= {"sampler=code_transformer": VQ}


@pytest.fixture(scope="module")
def photo_roots(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("photos")
    faces, dogs = write_utkface(tmp / "utkface", n=8, bad=False), write_oxford_pet(tmp / "dogs", dogs=6, cats=0)
    celeba = write_celeba(tmp / "celeba", n=6)
    return [
        f"dataset.root={faces}",
        f"dataset.faces.root={faces}",
        f"dataset.dogs.root={dogs}",
        f"dataset.root={celeba}",
    ]


def roots_for(overrides: list[str], roots: list[str]) -> list[str]:
    """The photo roots that the chosen data set has (root for utkface and dogs, faces/dogs for the mixed set)."""
    dataset = next((o.split("=")[1] for o in overrides if o.startswith("dataset=")), None)
    experiment = next((o for o in overrides if o.startswith("experiment=")), "")
    if dataset == "faces_dogs" or "dogpeople" in experiment or "faces" in experiment:
        return [r for r in roots if r.startswith(("dataset.faces", "dataset.dogs"))]
    if dataset in ("utkface", "images"):  # a folder of faces is a folder of images too
        return [roots[0]]
    if dataset == "celeba":
        return [roots[3]]
    if dataset == "dogs":
        return [roots[2].replace("dataset.dogs.root", "dataset.root")]
    return []


def shard_root(photo_roots: list[str], tmp_path: Path) -> Path:
    """Shards of the photo fixture's faces, where litdata is installed (else a folder that has none)."""
    output = tmp_path / "shards"
    if importlib.util.find_spec("litdata") is not None:
        from omegaconf import OmegaConf

        from vae_lightning.shards import write_shards

        source = photo_roots[0].split("=", 1)[1]
        keys = {"image_size": 16, "grayscale": False, "fit": "crop", "val_fraction": 0.2, "test_fraction": 0.2}
        keys |= {"split_seed": 0, "workers": 1, "chunk_bytes": "64MB", "source": source, "output": str(output)}
        write_shards(OmegaConf.create(keys))
    return output


# the packages the tracker options need (their extras); on a machine without them the options fail clearly
TRACKER_EXTRAS = {"logger=mlflow": ("mlflow",), "logger=wandb": ("wandb",), "logger=many": ("mlflow", "wandb")}


def options():
    for group in GROUPS:
        name = group.relative_to(CONF_DIR).as_posix()
        for option in sorted(group.glob("*.yaml")):
            override = f"{name}={option.stem}"
            yield [*PARENT_OPTION.get(name, []), *COMPANION.get(override, []), override]


def test_every_group_is_found():
    names = {g.relative_to(CONF_DIR).as_posix() for g in GROUPS}
    expected = {"model", "beta", "loss", "dataset", "optimizer", "trainer", "logger", "callbacks", "paths"}
    assert expected | {"experiment", "debug", "model/posterior_scale", "loss/likelihood", "dataset/binarize"} <= names


@pytest.mark.parametrize("overrides", list(options()), ids=lambda o: o[-1])
def test_every_option_composes_and_builds(overrides, photo_roots, tmp_path):
    on_this_machine = ["trainer.accelerator=cpu", "trainer.devices=1"]  # trainer=gpu and ddp: built, not run
    if "trainer=ddp" in overrides:
        on_this_machine.append("trainer.strategy=auto")
    on_this_machine.append(f"paths.mlflow_uri=sqlite:///{tmp_path / 'mlflow.db'}")
    if overrides[-1] == "dataset=shards":
        on_this_machine.append(f"dataset.root={shard_root(photo_roots, tmp_path)}")
    cfg = compose_train([*overrides, *roots_for(overrides, photo_roots), *on_this_machine], tmp_path / "run")
    if overrides[-1] == "dataset=shards" and importlib.util.find_spec("litdata") is None:
        with pytest.raises(VAELightningError, match=r"needs litdata: pip install"):  # the shards extra's
            build_run(cfg)
        return
    missing = [extra for extra in TRACKER_EXTRAS.get(overrides[-1], ()) if importlib.util.find_spec(extra) is None]
    if missing:  # a tracker without its extra: one message that says how to install it
        with pytest.raises(VAELightningError, match=rf"needs {missing[0]}: pip install -e"):
            build_run(cfg)
        return
    datamodule, module, trainer = build_run(cfg)
    x = torch.rand(4, *datamodule.input_shape)
    assert module.loss_fn.mean(module.net(x).params).shape == x.shape
    module.configure_optimizers()
    assert trainer.max_epochs == cfg.trainer.max_epochs


@functools.cache
def composed_unresolved(overrides: tuple[str, ...]) -> dict:
    """The config of `overrides` as a plain dict, interpolations unresolved (composed once per worker: most
    options share the default as their comparison)."""
    return OmegaConf.to_container(compose_train(list(overrides), Path("run")), resolve=False)


# the groups whose options may set keys of other groups: experiments and debug modes compose a whole run
WHOLE_RUN = ("experiment", "debug")


@pytest.mark.parametrize(
    "overrides",
    [o for o in options() if o[-1].split("=")[0].split("/")[0] not in WHOLE_RUN],
    ids=lambda o: o[-1],
)
def test_an_option_sets_only_the_keys_of_its_own_group(overrides):
    """`dataset=utkface` leaves the network and the objective as the default's (the default network and
    likelihood follow the data's images instead), `prior=vamp` the network, `hparams_search=optuna` the KL
    schedule: every top-level node but the option's own group (and Hydra's) is the default's, unresolved."""
    group = overrides[-1].split("=")[0].split("/")[0]
    before, after = composed_unresolved(tuple(overrides[:-1])), composed_unresolved(tuple(overrides))
    for key in before.keys() | after.keys():
        if key in (group, "hydra") or (group == "hparams_search" and key == "optimized_metric"):
            continue
        assert before.get(key) == after.get(key), f"{overrides[-1]} changed `{key}`"


def test_a_monitored_metric_the_model_does_not_log_is_named_before_training(tmp_path):
    """Lightning finds a misspelt monitor only after the first epoch, before any checkpoint is written (a sweep's
    misspelt `optimized_metric` is in the bad values' list above)."""
    early_stop = "+callbacks.early_stop={_target_: lightning.pytorch.callbacks.EarlyStopping, monitor: val/elbo}"
    with pytest.raises(ConfigErrors) as refused:
        build_run(compose_train(["callbacks.best_checkpoint.monitor=val/los", early_stop], tmp_path / "typo"))
    keys = [problem.key for problem in refused.value.problems]
    assert keys == ["callbacks.best_checkpoint.monitor", "callbacks.early_stop.monitor"]
    assert "it logs val/beta, val/kl, val/loss, val/recon" in str(refused.value.problems[0])
    own_term = ["loss=tcvae", "callbacks.best_checkpoint.monitor=val/tc"]
    build_run(compose_train(own_term, tmp_path / "tc"))  # an objective's own terms are logged too
    build_run(compose_train(["callbacks.best_checkpoint.monitor=train/loss_epoch"], tmp_path / "train"))
    mine = "+callbacks.early_stop={_target_: lightning.pytorch.callbacks.EarlyStopping, monitor: mine/score}"
    build_run(compose_train([mine], tmp_path / "mine"))  # a namespace of the user's own callbacks: theirs to log
    build_run(compose_train(["optimized_metric=test/nll"], tmp_path / "sweep"))  # a sweep may rank by the test


def test_a_callback_or_logger_set_to_null_is_off(tmp_path):
    cfg = compose_train(["callbacks.hparams=null", "callbacks.sample_score=null", "logger.tensorboard=null"], tmp_path)
    _, _, trainer = build_run(cfg)
    names = {type(callback).__name__ for callback in trainer.callbacks}
    assert "HParams" not in names and "SampleScore" not in names and "Diagnostics" in names
    assert None not in trainer.callbacks and None not in trainer.loggers  # Lightning calls every one it is given
    assert not any(type(logger).__name__ == "TensorBoardLogger" for logger in trainer.loggers)


def test_the_headline_command_trains_a_network_and_likelihood_fit_for_photos(photo_roots, tmp_path):
    """`dataset=faces_dogs beta=ramp` with the default network and likelihood: the convolutional VAE (latent 128)
    and Gaussian pixels on the 64x64 photos; the digits keep the seed's MLP and Bernoulli pixels."""
    cfg = compose_train(["dataset=faces_dogs", "beta=ramp", *roots_for(["dataset=faces_dogs"], photo_roots)], tmp_path)
    _, module, _ = build_run(cfg)
    assert type(module.net).__name__ == "ConvVAE" and module.net.latent_dim == 128
    assert type(module.loss_fn.likelihood).__name__ == "Gaussian" and module.loss_fn.likelihood.sigma == 0.1
    _, digits, _ = build_run(compose_train([], tmp_path / "digits"))
    assert type(digits.net).__name__ == "MLPVAE" and digits.net.latent_dim == 2
    assert type(digits.loss_fn.likelihood).__name__ == "Bernoulli"


def test_photos_the_default_network_cannot_take_name_the_options_to_choose(photo_roots, tmp_path):
    roots = roots_for(["dataset=utkface"], photo_roots)
    cfg = compose_train(["dataset=utkface", "dataset.image_size=50", *roots], tmp_path)
    with pytest.raises(ConfigErrors) as error:
        build_run(cfg)
    message = str(error.value)
    assert "`model=auto`" in message and "dataset.image_size=48 or 64, or model=mlp" in message
    assert "\n" not in message.strip()


def test_defaults(tmp_path):
    cfg = compose_train([], tmp_path)
    assert cfg.dataset._target_.endswith("DigitsDataModule") and cfg.model._target_.endswith("network_for_images")
    assert cfg.optimized_metric == "val/loss" and cfg.ckpt_path is None and isinstance(cfg.seed, int)
    assert cfg.hydra.run.dir.startswith("outputs/")
    _datamodule, module, trainer = build_run(cfg)
    assert isinstance(module.beta_factory(total_steps=10), Constant)
    assert [c.monitor for c in trainer.checkpoint_callbacks] == ["val/loss", None]  # the best, and last.ckpt


def test_haskell_mnist_is_the_seed_run(mnist_dir, tmp_path):
    cfg = compose_train(["experiment=haskell_mnist", f"dataset.root={mnist_dir}"], tmp_path)
    datamodule, module, trainer = build_run(cfg)
    assert datamodule.input_shape == (1, 28, 28) and datamodule.batch_size == 32 and datamodule.pixel_scale == 256
    assert cfg.model.hidden_dims == [1000] and cfg.model.latent_dim == 2
    assert isinstance(module.net.encoder[1], torch.nn.Tanh) and isinstance(module.loss_fn, SeedLoss)
    assert module.beta_factory(total_steps=10)(5) == 0.0
    optimizer = module.configure_optimizers()["optimizer"]
    assert optimizer.defaults["lr"] == 1e-3 and optimizer.defaults["eps"] == 1e-6
    assert optimizer.defaults["betas"] == (0.9, 0.999)
    assert cfg.trainer.max_epochs == 100 and cfg.trainer.limit_train_batches == 100
    periodic = [c for c in trainer.checkpoint_callbacks if c.save_top_k == -1]
    assert len(periodic) == 1 and periodic[0].every_n_epochs == 5  # the seed's checkpoint every 5 epochs


def test_haskell_mnist_ramp_ramps_to_1e_4(tmp_path):
    cfg = compose_train(["experiment=haskell_mnist_ramp"], tmp_path)
    ramp = instantiate(cfg.beta)(total_steps=10_000)
    assert isinstance(ramp, DelayedRamp) and ramp(5000) == 0.0 and ramp(10_000) == pytest.approx(1e-4)
    assert cfg.loss._target_.endswith("SeedLoss") and cfg.model.hidden_dims == [1000]


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("model.latent_dim=0", "model.latent_dim"),
        ("model.latent_dim=abc", "model.latent_dim"),
        ("model.hidden_dims=[]", "model.hidden_dims"),
        ("optimizer.lr=-0.1", "optimizer.lr"),
        ("beta.value=-1", "beta.value"),
        ("dataset.batch_size=0", "dataset.batch_size"),
        ("dataset.val_fraction=1.5", "dataset.val_fraction"),
        ("trainer.max_epochs=abc", "trainer.max_epochs"),
        ("trainer.limit_train_batches=-2", "trainer.limit_train_batches"),
        ("trainer.limit_val_batches=1.5", "trainer.limit_val_batches"),
        ("eval.nll_samples=-1", "eval.nll_samples"),
        ("+trainer.gradient_clip_val=-1", "trainer.gradient_clip_val"),
        # parts built inside others: named from the config's root, once
        ("callbacks.diagnostics.pictures.samples.n_images=abc", "callbacks.diagnostics.pictures.samples.n_images"),
        ("+callbacks.diagnostics.pictures.samples.seed=-1", "callbacks.diagnostics.pictures.samples.seed"),
        ("callbacks.fit_sampler.every_n_epochs=0", "callbacks.fit_sampler.every_n_epochs"),
        ("callbacks.sample_score.n_samples=abc", "callbacks.sample_score.n_samples"),
        ("callbacks.progress_bar.refresh_rate=-1", "callbacks.progress_bar.refresh_rate"),
        ("trainer.accelerator=tpu2", "trainer.accelerator"),
        ("trainer.devices=abc", "trainer.devices"),
        ("callbacks.last_checkpoint.save_top_k=abc", "callbacks.last_checkpoint.save_top_k"),
        ("callbacks.last_checkpoint.enable_version_counter=maybe", "callbacks.last_checkpoint.enable_version_counter"),
        ("+callbacks.best_checkpoint.save_last=often", "callbacks.best_checkpoint.save_last"),
        ("callbacks.best_checkpoint.mode=up", "callbacks.best_checkpoint.mode"),
        ("callbacks.best_checkpoint.monitor=12345", "callbacks.best_checkpoint.monitor"),
        ("callbacks.last_checkpoint.monitor=loss", "callbacks.last_checkpoint.monitor"),
        ("callbacks.hparams.metrics=abc", "callbacks.hparams.metrics"),
        ("optimized_metric=val/elbo", "optimized_metric"),
        ("callbacks.cpu_threads.requested=abc", "callbacks.cpu_threads.requested"),
        # flags and lists, also of the network model=auto did not pick for these images
        ("optimizer.fused=maybe", "optimizer.fused"),
        ("diagnostics.strict=maybe", "diagnostics.strict"),  # as set, not as the callbacks take it
        ("diagnostics.every_n_epochs=abc", "diagnostics.every_n_epochs"),
        ("diagnostics.n_samples=0", "diagnostics.n_samples"),
        ("model.channels_last=maybe", "model.channels_last"),
        ("model.channels=[0]", "model.channels"),
    ],
)
def test_bad_values_name_the_key(override, key, tmp_path):
    cfg = compose_train([override], tmp_path)
    with pytest.raises(ConfigErrors) as error:
        build_run(cfg)
    (problem,) = error.value.problems
    assert isinstance(problem, ConfigValueError) and problem.key == key
    assert f"`{key}=" in str(error.value)


# what an option needs beside it to build (on the digits' 8x8 images)
COMPANIONS = {
    "model=conv": ["model.channels=[8]"],
    "model=conv_ladder": ["model.channels=[8]", "prior=ladder"],
    "model=ladder": ["prior=ladder"],
    "prior=ladder": ["model=ladder"],
    "posterior=vq": ["prior=codes", "loss=vqvae", "model.latent_dim=10"],
    "prior=codes": ["posterior=vq", "loss=vqvae", "model.latent_dim=10"],
    "loss=vqvae": ["posterior=vq", "prior=codes", "model.latent_dim=10"],
    "sampler=code_transformer": ["posterior=vq", "prior=codes", "loss=vqvae", "model.latent_dim=10"],
    "model/norm": ["model=conv", "model.channels=[8]"],
}
MODEL_GROUPS = ["model", "model/norm", "posterior", "prior", "loss", "loss/likelihood", "sampler", "beta"]
MODEL_GROUPS += ["optimizer", "lr_schedule"]


def numeric_keys(node, prefix: str) -> list[str]:
    """The keys under `node` that hold a number (not a flag), in full."""
    if not OmegaConf.is_dict(node):
        return [prefix] if isinstance(node, int | float) and not isinstance(node, bool) else []
    return [key for name in node if not name.startswith("_") for key in numeric_keys(node[name], f"{prefix}.{name}")]


@pytest.mark.parametrize(
    "option",
    [f"{group}={path.stem}" for group in MODEL_GROUPS for path in sorted((CONF_DIR / group).glob("*.yaml"))],
)
def test_every_number_of_every_model_option_refuses_a_word_and_names_its_own_key(option, tmp_path):
    """A key's error names the key a user set, however deep the part is built (inside the network, a factory of
    the objective, or a sub-config Hydra builds)."""
    group = option.partition("=")[0]
    base = ["dataset=digits", *COMPANIONS.get(option, COMPANIONS.get(group, [])), option]
    node, composed = group.replace("/", "."), compose_train(base, tmp_path)
    keys = numeric_keys(OmegaConf.select(composed, node), node)
    for key in [key for key in keys if group != "loss" or not key.startswith("loss.likelihood.")]:  # its own group
        cfg = composed.copy()  # as `key=abc` on the command line sets it
        OmegaConf.update(cfg, key, "abc")
        with pytest.raises((ConfigValueError, ConfigErrors)) as refused:
            VAEModule.from_settings(cfg.module, input_shape=(1, 8, 8), data=cfg.dataset)
        problems = refused.value.problems if isinstance(refused.value, ConfigErrors) else [refused.value]
        assert [problem.key for problem in problems] == [key], option


@pytest.mark.parametrize(("key", "value"), [("threads", "0"), ("threads", "-2"), ("threads", "abc"), ("seed", "abc")])
def test_a_bad_thread_count_or_seed_names_its_key_before_anything_is_built(key, value, tmp_path):
    from vae_lightning.train import train

    with pytest.raises(ConfigValueError) as error:
        train(compose_train([f"{key}={value}"], tmp_path / "run"))
    assert error.value.key == key and f"{key}=" in str(error.value)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_all_bad_values_are_reported_in_one_message(tmp_path):
    cfg = compose_train(["dataset.batch_size=-1", "dataset.split_seed=-3", "trainer.max_epochs=abc"], tmp_path)
    with pytest.raises(ConfigErrors) as error:
        build_run(cfg)
    assert [p.key for p in error.value.problems] == ["dataset.batch_size", "dataset.split_seed", "trainer.max_epochs"]
    assert str(error.value).startswith("3 problems:")


def test_trainer_values_are_checked_before_lightning_sees_them(tmp_path):
    cfg = compose_train(["trainer.max_epochs=abc", "trainer.log_every_n_steps=0"], tmp_path)
    assert [e.key for e in trainer_values(cfg.trainer)] == ["trainer.max_epochs", "trainer.log_every_n_steps"]


def test_a_sub_config_error_is_placed_under_its_group():
    with pytest.raises(ConfigValueError) as error:
        build({"_target_": "vae_lightning.schedules.DelayedRamp", "total_steps": 10, "delay": 2.0}, "beta")
    assert error.value.key == "beta.delay"


def test_the_tools_accept_every_key_of_every_data_set_with_no_hand_kept_list(tmp_path):
    """`evaluate`, `morph`, the demo and `vae-export` declare every key of every data set option (Hydra refuses
    undeclared ones), computed from the options themselves, a user's config folder's included."""
    from tests.conftest import compose_tool
    from vae_lightning.core.config import data_set_keys

    def keys(tree, prefix=""):
        for key, value in tree.items():
            if isinstance(value, dict):
                yield from keys(value, f"{prefix}{key}.")
            elif not key.startswith("_") and key != "defaults":
                yield f"{prefix}{key}"

    declared = set(keys(data_set_keys([CONF_DIR])))
    for option in (CONF_DIR / "dataset").glob("*.yaml"):
        assert set(keys(OmegaConf.to_container(OmegaConf.load(option)))) <= declared, option.name
    cfg = compose_tool("evaluate", ["ckpt_path=x.ckpt", "dataset.fit=pad", "dataset.faces.landmarks=/l.txt"])
    assert cfg.dataset.fit == "pad" and cfg.dataset.faces.landmarks == "/l.txt" and cfg.dataset.root is None
    (tmp_path / "dataset").mkdir()
    (tmp_path / "dataset" / "mine.yaml").write_text("_target_: my.Data\nshards: 8\nroot: /x\n")
    assert {"shards", "root", "fit"} <= set(data_set_keys([CONF_DIR, tmp_path]))


def test_a_mistyped_option_gets_the_nearest_one(tmp_path):
    from vae_lightning.core.config import unknown_option

    assert unknown_option(["dataset=mnsit"]).endswith("Did you mean mnist?")
    assert "`loss/likelihood` group" in unknown_option(["loss/likelihood=gausian", "model=conv"])
    assert "Did you mean" not in unknown_option(["model=zzzz"])
    assert unknown_option(["-m", "model=conv,mlp", "dataset=mnist", "model.latent_dim=2", "+x=1", "debug=null"]) is None
    assert unknown_option(["model=cnv,mlp"]).startswith("model=cnv is not an option")
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "mine.yaml").write_text("_target_: my.Net\n")
    assert unknown_option(["--config-dir", str(tmp_path), "model=mine"]) is None  # a user's own option
    assert unknown_option(["model=mine"]) is not None
    assert unknown_option(["hydra.searchpath=[file://x]", "model=mine"]) is None  # a search path not followed


def test_a_mistyped_key_gets_the_nearest_one_and_how_to_add_a_key(tmp_path):
    """Hydra's seven lines for a key the config lacks become one, naming the nearest key of the same node."""
    from vae_lightning.core.config import unknown_key

    assert unknown_key(["model.latnt_dim=3"]) == (
        "`model.latnt_dim` is not a key of `model`. Did you mean model.latent_dim? To add a key, give "
        "+model.latnt_dim=3."
    )
    assert "Did you mean dataset.faces.root?" in unknown_key(["dataset=faces_dogs", "dataset.faces.rot=x"])
    assert unknown_key(["bogus.x=1"]).startswith("`bogus` is not a key of the config. Its keys: seed,")
    assert "Did you mean" in unknown_key(["accelerater=cpu"], "evaluate")  # the tools' configs too
    for fine in (["model.latent_dim=3", "dataset=mnist"], ["model=conv"], ["+model.extra=1"], ["-m", "model.x=1,2"]):
        assert unknown_key(fine) is None, fine
    assert unknown_key(["--config-dir", str(tmp_path), "model.foo=1"]) is None  # a search path it does not follow


def test_command_line_overrides_holding_an_interpolation_are_read_as_typed():
    """`+callbacks.x.dirpath=${paths.output_dir}/x` is text in the Hydra node, where `paths` does not exist."""
    from vae_lightning.core.config import given_overrides

    hydra_node = OmegaConf.create({"overrides": {"task": ["+callbacks.x.dirpath=${paths.output_dir}/x", "seed=1"]}})
    assert given_overrides(hydra_node) == ["+callbacks.x.dirpath=${paths.output_dir}/x", "seed=1"]


@pytest.mark.parametrize("value", ["auto", 1, -1, "2", "0,1", [0, 1]])
def test_every_form_of_devices_lightning_takes_passes_the_check(value):
    from vae_lightning.core.checks import devices

    assert devices("trainer.devices", value) == value


@pytest.mark.parametrize("value", ["abc", "0,b", [], [0, "x"], True, 1.5, -2])
def test_devices_that_are_no_count_or_indices_are_refused(value):
    from vae_lightning.core.checks import devices

    with pytest.raises(ConfigValueError, match="count"):
        devices("trainer.devices", value)


def test_an_accelerator_this_machine_lacks_is_refused_in_one_line_and_one_it_has_is_taken():
    """`trainer=gpu` on a machine without a GPU names the key and what to use (Lightning's own start-up says
    "No supported gpu backend found!" after the data set is built); on a machine with one, it is taken."""
    from vae_lightning.core.checks import accelerator

    assert accelerator("trainer.accelerator", "cpu") == "cpu" and accelerator("trainer.accelerator", "auto") == "auto"
    if torch.cuda.is_available():
        assert accelerator("trainer.accelerator", "gpu") == "gpu"
        return
    with pytest.raises(ConfigValueError, match=r"no cuda device on this machine.*use auto or cpu") as refused:
        accelerator("trainer.accelerator", "gpu")
    assert refused.value.key == "trainer.accelerator"
