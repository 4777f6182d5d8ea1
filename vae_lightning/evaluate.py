"""Evaluate a checkpoint on its data set's test split, with no training config:

    python -m vae_lightning.evaluate ckpt_path=<file.ckpt> [dataset.<key>=<value> ...] [eval.nll_samples=1000]
        [output=<metrics.json>]

Computes the test loss terms, `test/elbo`, `test/nll` (importance sampled, `eval.nll_samples` samples),
`test/active_units`, `test/mutual_info` and the KL of each latent dimension, and writes them to
`metrics.json` next to the checkpoint (or to `output`). `dataset.*` overrides change the data set the
checkpoint recorded, e.g. `dataset.root=/data/mnist` for the same data in another place.
"""

from __future__ import annotations

import json
import logging
import sys
import warnings
from pathlib import Path

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from vae_lightning import checks
from vae_lightning.checkpoints import load_module
from vae_lightning.errors import DataNotFoundError, VAELightningError

log = logging.getLogger("evaluate")
USAGE = "Usage: python -m vae_lightning.evaluate ckpt_path=<file.ckpt> [dataset.<key>=<value>] [output=<file>]"


def evaluate(ckpt_path: str, dataset_overrides: dict, nll_samples: int | None, output: str | None) -> Path:
    import lightning as L

    from vae_lightning.config import build
    from vae_lightning.run_files import write_metrics

    module = load_module(ckpt_path)
    data = module.hparams.get("data")
    if not data:
        raise DataNotFoundError(f"{ckpt_path} does not record its data set; it was not written by train.py.")
    data = OmegaConf.to_container(OmegaConf.merge(data, dataset_overrides), resolve=True)
    if nll_samples is not None:
        module.nll_samples = checks.non_negative_int("eval.nll_samples", nll_samples)
    datamodule = build(data, "dataset")
    trainer = L.Trainer(
        accelerator="auto",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=True,
    )
    trainer.test(module, datamodule=datamodule, verbose=False)
    metrics = {name: float(value) for name, value in trainer.callback_metrics.items() if name.startswith("test/")}
    target = Path(output).expanduser() if output else Path(ckpt_path).expanduser().parent / "metrics.json"
    try:
        written = write_metrics(target.parent, metrics, "completed")
        if target.name != "metrics.json":
            written.replace(target)
    except OSError as bad:
        raise VAELightningError(f"Could not write {target}: {bad}. Choose another output=<file>.") from None
    log.info("%s\nwritten to %s", json.dumps(metrics, indent=2, sort_keys=True), target)
    return target


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("lightning").handlers.clear()
    warnings.filterwarnings("ignore", module="lightning")
    if any(arg in ("-h", "--help") for arg in argv):
        print(__doc__)
        return 0
    try:
        cfg = OmegaConf.from_dotlist(argv)
        unknown = set(cfg.keys()) - {"ckpt_path", "dataset", "eval", "output"}
        if unknown:
            raise checks.ConfigValueError(sorted(unknown)[0], f"is not an argument. {USAGE}", cfg[sorted(unknown)[0]])
        if "ckpt_path" not in cfg:
            raise checks.ConfigValueError("ckpt_path", f"is required. {USAGE}", None)
        evaluate(str(cfg.ckpt_path), cfg.get("dataset", {}), cfg.get("eval", {}).get("nll_samples"), cfg.get("output"))
    except VAELightningError as error:
        print(f"Error: {error}", file=sys.stderr)
        return 1
    except OmegaConfBaseException as error:
        print(f"Error: bad argument ({str(error).splitlines()[0]}). {USAGE}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
