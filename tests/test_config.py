"""Every file in conf/ composes, and what it describes can be built."""

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from tests.conftest import ROOT
from vae_lightning.config import build, check_trainer
from vae_lightning.errors import ConfigValueError
from vae_lightning.losses import SeedLoss
from vae_lightning.schedules import Constant, DelayedRamp

CONF = ROOT / "conf"
GROUPS = [p for p in sorted(CONF.rglob("*")) if p.is_dir() and any(p.glob("*.yaml")) and p.name != "hydra"]


# A nested group exists inside one option of its parent group; some options need a matching data set.
PARENT_OPTION = {"dataset/binarize": ["dataset=mnist"]}
COMPANION = {"model=conv": ["dataset=utkface"]}  # 64x64 images: the digits' 8x8 are too small for its 4 blocks


def options():
    for group in GROUPS:
        name = group.relative_to(CONF).as_posix()
        for option in sorted(group.glob("*.yaml")):
            override = f"{name}={option.stem}"
            yield [*PARENT_OPTION.get(name, []), *COMPANION.get(override, []), override]


def composed(overrides, tmp_path):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("train", overrides=[*overrides, f"paths.output_dir={tmp_path}"])


def build_all(cfg, tmp_path):
    datamodule = build(cfg.dataset, "dataset")
    module = build(cfg.module, "module", keys_are_absolute=True, input_shape=datamodule.input_shape)
    callbacks = [build(node, name) for name, node in (cfg.get("callbacks") or {}).items()]
    loggers = [build(node, name) for name, node in (cfg.get("logger") or {}).items()]
    return datamodule, module, callbacks, loggers


def test_every_group_is_found():
    names = {g.relative_to(CONF).as_posix() for g in GROUPS}
    assert {
        "model",
        "beta",
        "loss",
        "dataset",
        "optimizer",
        "trainer",
        "logger",
        "callbacks",
        "paths",
        "experiment",
        "debug",
        "model/posterior_scale",
        "loss/likelihood",
        "dataset/binarize",
    } <= names


@pytest.mark.parametrize("overrides", list(options()), ids=lambda o: o[-1])
def test_every_option_composes_and_builds(overrides, tmp_path):
    cfg = composed(overrides, tmp_path)
    datamodule, module, _, _ = build_all(cfg, tmp_path)
    x = torch.rand(4, *datamodule.input_shape)
    out = module.net(x)
    assert out.logits.shape == x.shape
    check_trainer(cfg.trainer)
    if cfg.trainer.accelerator != "gpu":
        instantiate(cfg.trainer, logger=False, enable_progress_bar=False)
    module.configure_optimizers()


def test_defaults(tmp_path):
    cfg = composed([], tmp_path)
    assert cfg.dataset._target_.endswith("DigitsDataModule")
    assert cfg.optimized_metric == "val/loss" and cfg.ckpt_path is None and isinstance(cfg.seed, int)
    assert cfg.paths.output_dir == str(tmp_path)
    assert Path(cfg.paths.cache_dir).parent == Path(cfg.paths.data_dir)
    _, module, callbacks, _ = build_all(cfg, tmp_path)
    assert isinstance(module._beta_factory(total_steps=10), Constant)
    assert [type(c).__name__ for c in callbacks][:2] == ["ModelCheckpoint", "ModelCheckpoint"]


def test_haskell_mnist_is_the_seed_run(tmp_path):
    cfg = composed(["experiment=haskell_mnist"], tmp_path)
    datamodule, module, callbacks, _ = build_all(cfg, tmp_path)
    assert datamodule.input_shape == (1, 28, 28) and datamodule.batch_size == 32 and datamodule.pixel_scale == 256
    assert cfg.model.hidden_dims == [1000] and cfg.model.latent_dim == 2
    assert isinstance(module.net.encoder[1], torch.nn.Tanh)
    assert isinstance(module.loss_fn, SeedLoss)
    assert module._beta_factory(total_steps=10)(5) == 0.0
    optimizer = module.configure_optimizers()
    assert optimizer.defaults["lr"] == 1e-3 and optimizer.defaults["eps"] == 1e-6
    assert optimizer.defaults["betas"] == (0.9, 0.999)
    assert cfg.trainer.max_epochs == 100 and cfg.trainer.limit_train_batches == 100
    periodic = [c for c in callbacks if getattr(c, "_every_n_epochs", 0) == 5]
    assert len(periodic) == 1 and periodic[0].save_top_k == -1


def test_haskell_mnist_ramp_ramps_to_1e_4(tmp_path):
    cfg = composed(["experiment=haskell_mnist_ramp"], tmp_path)
    _, module, _, _ = build_all(cfg, tmp_path)
    ramp = module._beta_factory(total_steps=10_000)
    assert isinstance(ramp, DelayedRamp) and ramp(5000) == 0.0 and ramp(10_000) == pytest.approx(1e-4)
    assert cfg.loss._target_.endswith("SeedLoss") and cfg.model.hidden_dims == [1000]


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("model.latent_dim=0", "model.latent_dim"),
        ("model.latent_dim=abc", "model.latent_dim"),
        ("dataset.batch_size=0", "dataset.batch_size"),
        ("dataset.batch_size=-4", "dataset.batch_size"),
        ("module.batches_per_call=0", "module.batches_per_call"),
        ("model/posterior_scale=softplus", None),
    ],
)
def test_bad_values_name_the_key(override, key, tmp_path):
    cfg = composed([override], tmp_path)
    if key is None:
        build_all(cfg, tmp_path)
        return
    with pytest.raises(ConfigValueError) as error:
        build_all(cfg, tmp_path)
    assert error.value.key == key
    assert f"`{key}=" in str(error.value)


@pytest.mark.parametrize(
    "override", ["trainer.max_epochs=abc", "trainer.limit_train_batches=-2", "trainer.limit_val_batches=1.5"]
)
def test_bad_trainer_values_name_the_key(override, tmp_path):
    cfg = composed([override], tmp_path)
    with pytest.raises(ConfigValueError) as error:
        check_trainer(cfg.trainer)
    assert error.value.key == override.split("=")[0]
