"""Export a trained model as a folder people share, with no pickle in it:

    vae-export ckpt_path=<run>/checkpoints/last.ckpt output=<folder> [dataset.root=<the training data>]

The folder (see `run.exported`) holds the weights as safetensors, the settings as JSON, what the tools need from
the training data (the direction of every attribute, the label names, the mean code of each label: computed
here, from the data where the user says it is, so that the folder needs none) and a model card (`README.md` in
the Hugging Face Hub's format: YAML front matter, the test metrics of the run, the command that trained it, the
samples and reconstructions pictures, how to load it). Without the training data on this machine the model is
exported without attributes, with a warning. `TrainedVAE.from_pretrained(<folder>)`, `vae-morph` and `vae-demo`
(`ckpt_path=<folder>` or a Hub repository id) read it; `TrainedVAE.push_to_hub` shares it.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import hydra
import yaml
from omegaconf import DictConfig

from vae_lightning.core.config import check_command_line, user_config_dirs
from vae_lightning.core.errors import ConfigErrors, DataNotFoundError, VAELightningError
from vae_lightning.core.files import read_metrics
from vae_lightning.run.tools import run_tool

log = logging.getLogger("export")


def model_card(data_name: str, metrics: dict[str, Any], command: str | None, attributes: list[str], latent: int) -> str:
    """The model card: the Hub's YAML front matter, then what the model is, its test metrics, how it was trained
    and how to load it."""
    front = {
        "library_name": "vae_lightning",
        "tags": ["vae", "variational-autoencoder", "pytorch-lightning", "safetensors"],
        "datasets": [data_name],
        "metrics": sorted(name.removeprefix("test/") for name in metrics),
    }
    rows = "\n".join(f"| `{name}` | {value:.6g} |" for name, value in sorted(metrics.items()))
    table = f"| metric | value |\n| --- | --- |\n{rows}" if rows else "No test metrics were recorded."
    trained = f"```\n{command}\n```" if command else "The command that trained it was not recorded."
    if attributes:
        moves = "It carries the directions of its training data's attributes, so it morphs with no data set on the "
        moves += "machine: " + ", ".join(f"`{name}`" for name in attributes) + "."
    else:
        moves = "It carries no attribute directions (no training data at hand when exported, or no attribute with "
        moves += "images both with and without it)."
    return f"""---
{yaml.safe_dump(front, sort_keys=False).strip()}
---

# A variational autoencoder trained with vae_lightning

A {latent}-D latent space over the images of {data_name}. The weights are `model.safetensors` and the settings
`config.json`; nothing in this folder runs code when loaded. {moves}

## Test metrics

{table}

## How it was trained

{trained}

![samples](samples.png)

![reconstructions: inputs above, decodes below](reconstructions.png)

## How to use it

```python
from vae_lightning.api import TrainedVAE

vae = TrainedVAE.from_pretrained("<this folder or user/repo>")
z = vae.encode("photo.jpg")
images = vae.decode(z)
samples = vae.sample(16)
```

or `vae-morph ckpt_path=<this folder> source=photo.jpg mode=attribute` and `vae-demo ckpt_path=<this folder>`
(`pip install "vae_lightning[hub]"`).
"""


def export(cfg: DictConfig) -> Path:
    """Writes the folder `cfg.output`; returns it."""
    from vae_lightning.api import TrainedVAE

    ckpt = Path(cfg.ckpt_path).expanduser()
    vae = TrainedVAE.load(ckpt, config_dirs=user_config_dirs())
    try:
        datamodule = vae.datamodule(cfg.dataset, cfg.paths)
    except (DataNotFoundError, ConfigErrors) as missing:
        datamodule = None
        log.warning("Exporting without the training data, so without attributes or reconstructions: %s", missing)
    run = ckpt.parent.parent
    record = read_metrics(run / "metrics.json") or {}
    metrics = {k: float(v) for k, v in record.items() if k.startswith("test/") and isinstance(v, int | float)}
    metrics = {k: v for k, v in metrics.items() if not k.startswith("test/kl_dim_")}
    overrides = run / ".hydra" / "overrides.yaml"
    command = None
    if overrides.is_file():
        command = " ".join(["python train.py", *map(str, yaml.safe_load(overrides.read_text()) or [])])
    data_name = str((vae.module.hparams.get("data") or {}).get("_target_", "?")).rsplit(".", 1)[-1]
    data_name = data_name.removesuffix("DataModule")
    data = vae.data_summary(datamodule) if datamodule is not None else None
    attributes = list(data.directions) if data is not None else []  # those with a direction (both sides seen)
    card = model_card(data_name, metrics, command, attributes, vae.latent_dim)
    output = Path(cfg.output).expanduser()
    try:
        vae.save_pretrained(output, datamodule, card, data)
    except OSError as bad:
        raise VAELightningError(f"Could not write {output} ({bad}). Choose another output=<folder>.") from None
    log.info("Exported %s to %s (%s)", ckpt, output, ", ".join(sorted(p.name for p in output.iterdir())))
    print(json.dumps({"output": str(output), "attributes": attributes}))
    return output


@hydra.main(version_base="1.3", config_path="conf", config_name="export")
def hydra_app(cfg: DictConfig) -> None:
    run_tool(export, cfg)


def main() -> None:
    """The `vae-export` command."""
    check_command_line(sys.argv[1:], "export")  # a mistyped name is one line, before Hydra composes anything
    hydra_app()


if __name__ == "__main__":
    main()
