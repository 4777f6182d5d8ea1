"""Data sets that stream from shards written by litdata (`dataset=shards`, written by `vae-shards`), for image sets
larger than memory: each process reads its own part of each epoch from the shard files, keeping a few chunks in
memory, and a run stopped mid-epoch resumes where its last checkpoint left the epoch.

A shard folder holds one litdata data set per split (`train/`, `val/`, `test/`), each sample a uint8 image
(C, H, W) and its label, and `vae_shards.json`: the format version, the image shape, the label names, every
sample's label per split (a few bytes each, so that labels, attributes and the sample scores need no pass over
the images), for UTKFace and CelebA shards every sample's full labels (`tables`: age, gender and race; the 40
attributes and the identity) and how many files were skipped. Training batches are shuffled by litdata (chunks,
then samples within the chunks in memory) from the run's seed, anew each epoch; validation and test come in order.

litdata needs torchvision in its metadata but not to stream; on a CPU-only torch, install it without its
dependencies (docs/data.md, "Large data sets").
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from vae_lightning.core import checks
from vae_lightning.core.config import is_plain
from vae_lightning.core.errors import ConfigValueError, DataNotFoundError
from vae_lightning.data.celeba import celeba_attributes
from vae_lightning.data.in_memory import Attribute, one_vs_rest
from vae_lightning.data.protocol import VAEDataModule
from vae_lightning.data.utkface import utkface_attributes, utkface_factors

log = logging.getLogger(__name__)

SHARDS_FORMAT = 1  # the layout of a shard folder and its vae_shards.json; another is refused
METADATA = "vae_shards.json"
SPLITS = ("train", "val", "test")
# how vae-shards labelled the photos (its `labels` option), and the integers kept per sample for each: UTKFace's
# (age, gender, race), CelebA's 40 attributes and its identity
KINDS = {"folder": 0, "utkface": 3, "celeba": 41}
INSTALL = 'pip install "vae_lightning[shards]" && pip install --no-deps litdata==0.2.76'


def litdata_module() -> Any:
    """litdata, or a DataNotFoundError that says how to install it."""
    try:
        import litdata
    except ImportError:
        raise DataNotFoundError(f"Streaming from shards needs litdata: {INSTALL}") from None
    return litdata


def streaming() -> Any:
    """`vae_lightning.data.streaming` (the classes built on litdata), once litdata is known to be there."""
    litdata_module()
    from vae_lightning.data import streaming as module

    return module


def malformed(meta: dict[str, Any]) -> str | None:
    """What in a vae_shards.json of this format is not as vae-shards writes it (None: nothing): the image shape,
    the label names, the labels of each split."""
    shape = meta.get("input_shape")
    if not (isinstance(shape, list) and len(shape) == 3 and all(type(v) is int and v > 0 for v in shape)):
        return "input_shape is not three positive integers"
    if shape[0] not in (1, 3) or shape[1] != shape[2]:
        return "input_shape is not a square grey or colour image"
    names = meta.get("class_names")
    if not (isinstance(names, dict) and all(k.isdigit() and isinstance(v, str) for k, v in names.items())):
        return "class_names is not a map of label numbers to names"
    labels = meta.get("labels")
    if not (isinstance(labels, dict) and set(labels) == set(SPLITS)):
        return "labels has not one list per split"
    if not all(isinstance(v, list) and all(type(x) is int for x in v) for v in labels.values()):
        return "labels are not lists of integers"
    kind = meta.get("kind", "folder")
    if kind not in KINDS:
        return f"kind is not one of {', '.join(KINDS)}"
    if kind == "folder":
        return None
    tables = meta.get("tables")
    if not (isinstance(tables, dict) and set(tables) == set(SPLITS)):
        return "tables has not one list per split"
    for split, rows in tables.items():
        if not (isinstance(rows, list) and len(rows) == len(labels[split])):
            return "tables are not one row per sample"
        if not all(isinstance(r, list) and len(r) == KINDS[kind] and all(type(x) is int for x in r) for r in rows):
            return f"tables' rows are not {KINDS[kind]} integers each"
    names = meta.get("attribute_names", [])
    if kind == "celeba" and not (
        isinstance(names, list) and len(names) == 40 and all(isinstance(n, str) for n in names)
    ):
        return "attribute_names is not CelebA's 40 names"
    return None


def is_url(root: str) -> bool:
    return "://" in str(root)


def split_dir(root: str, split: str) -> str:
    """Where split `split` of the shard folder `root` (a path or a URL) is."""
    return f"{root.rstrip('/')}/{split}" if is_url(root) else str(Path(root).expanduser() / split)


def unreadable(root: str, bad: Exception) -> DataNotFoundError:
    """The store client's reason, on one line (Azure's span several)."""
    return DataNotFoundError(f"dataset.root={root} cannot be read: {' '.join(str(bad).split())}")


def read_s3(root: str, bucket: str, key: str, storage_options: dict[str, Any]) -> str | None:
    """The text of object `key` in an S3 (or S3-compatible) `bucket`, None where there is none; `storage_options`
    as boto3's client takes them (e.g. its `endpoint_url`), the credentials from the usual AWS variables or files."""
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return boto3.client("s3", **storage_options).get_object(Bucket=bucket, Key=key)["Body"].read().decode()
    except ClientError as bad:
        if bad.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
            return None
        raise unreadable(root, bad) from None
    except (BotoCoreError, ValueError) as bad:
        raise unreadable(root, bad) from None


def read_gcs(root: str, bucket: str, key: str, storage_options: dict[str, Any]) -> str | None:
    """The text of object `key` in a Google Cloud Storage `bucket`, None where there is none; `storage_options` as
    google-cloud-storage's `Client` takes them (e.g. its `project`), the credentials from Google's application
    default credentials (`GOOGLE_APPLICATION_CREDENTIALS`, or `gcloud auth application-default login`)."""
    try:
        from google.api_core.exceptions import GoogleAPIError, NotFound
        from google.auth.exceptions import GoogleAuthError
        from google.cloud import storage
    except ImportError:
        raise DataNotFoundError(
            f"dataset.root={root}: reading gs:// needs google-cloud-storage: pip install google-cloud-storage"
        ) from None
    try:
        return storage.Client(**storage_options).bucket(bucket).blob(key).download_as_text()
    except NotFound:
        return None
    except (GoogleAPIError, GoogleAuthError, ValueError, OSError) as bad:
        raise unreadable(root, bad) from None


def read_azure(root: str, container: str, blob: str, client_options: dict[str, Any]) -> str | None:
    """The text of `blob` in an Azure Blob Storage `container`, None where there is none; `client_options` as
    azure-storage-blob's `BlobServiceClient` takes them (`account_url`, and the credential `client_options` adds
    from the environment)."""
    try:
        from azure.core.exceptions import AzureError, ResourceNotFoundError
        from azure.storage.blob import BlobServiceClient
    except ImportError:
        raise DataNotFoundError(
            f"dataset.root={root}: reading azure:// needs azure-storage-blob: pip install azure-storage-blob"
        ) from None
    try:
        return BlobServiceClient(**client_options).get_blob_client(container, blob).download_blob().readall().decode()
    except ResourceNotFoundError:
        return None
    except (AzureError, ValueError, OSError) as bad:
        raise unreadable(root, bad) from None


# the object stores a shard folder can be read from, by URL scheme (litdata streams the shards of each)
REMOTE_READERS = {"s3": read_s3, "gs": read_gcs, "azure": read_azure}
# where an azure:// run finds its credential: an account key, or a shared access signature (Azure's CLI names)
AZURE_CREDENTIALS = ("AZURE_STORAGE_KEY", "AZURE_STORAGE_SAS_TOKEN")


def client_options(root: str, storage_options: dict[str, Any]) -> dict[str, Any]:
    """What the store's client is built with: `storage_options`, and for azure:// the credential from the
    environment (`AZURE_CREDENTIALS`; none: anonymous, for a public container). Azure's client takes its
    credential among its options, and a run writes its configuration into its checkpoints, so the configuration
    never holds it: it is added here, for the clients of this process only."""
    if not root.startswith("azure://"):
        return storage_options
    if not storage_options.get("account_url"):
        reason = "an azure:// root needs the storage account's URL, e.g. {account_url: https://<account>.blob.core."
        reason += "windows.net}"
        raise ConfigValueError("storage_options", reason, storage_options)
    credential = next((os.environ[name] for name in AZURE_CREDENTIALS if os.environ.get(name)), None)
    return storage_options | ({"credential": credential} if credential else {})


def read_remote(root: str, name: str, storage_options: dict[str, Any]) -> str | None:
    """The text of file `name` in the shard folder at URL `root`, None where the folder has no such file: s3://
    (`read_s3`), gs:// (`read_gcs`) or azure:// (`read_azure`; `storage_options` with its credential,
    `client_options`); another scheme is refused."""
    scheme, _, rest = root.partition("://")
    if scheme not in REMOTE_READERS:
        raise DataNotFoundError(
            f"dataset.root={root}: shards stream from a local folder, an s3:// URL (Amazon S3, or an S3-compatible "
            "store with dataset.storage_options.endpoint_url), a gs:// URL (Google Cloud Storage) or an azure:// "
            f"URL (Azure Blob Storage, azure://<container>/<folder>); {scheme}:// is not supported."
        )
    bucket, _, prefix = rest.partition("/")
    key = f"{prefix.rstrip('/')}/{name}" if prefix.strip("/") else name
    return REMOTE_READERS[scheme](root, bucket, key, storage_options)


def read_metadata(root: str, image_size: int | None = None, storage_options: dict[str, Any] | None = None) -> dict:
    """The shard folder's vae_shards.json, checked: a folder that is not one, one written by another format or
    for another image size than `image_size` (None: any) is refused in one line. `root`: a local folder or an
    s3://, gs:// or azure:// URL (`read_remote`)."""
    if is_url(root):
        text = read_remote(str(root), METADATA, storage_options or {})
        where, exists = f"{root}/{METADATA}", True
    else:
        path = Path(root).expanduser() / METADATA
        text = path.read_text() if path.is_file() else None
        where, exists = str(path), Path(root).expanduser().is_dir()
    if text is None:
        reason = "holds no vae_shards.json" if exists else "does not exist"
        output = "<folder>" if is_url(root) else root
        then = f", then copy the folder to {root} as it is" if is_url(root) else ""
        raise DataNotFoundError(
            f"The shard folder {root} {reason}. Write one with: vae-shards source=<image folder> output={output} "
            f"image_size=<pixels>{then}"
        )
    try:
        meta = json.loads(text)
    except ValueError as bad:
        raise DataNotFoundError(f"{where} cannot be read as JSON ({bad}); write the shards again.") from None
    if meta.get("format") != SHARDS_FORMAT:
        raise DataNotFoundError(
            f"{root} holds shards of format {meta.get('format')!r}, this version reads format {SHARDS_FORMAT}: "
            "write them again with this version's vae-shards."
        )
    problem = malformed(meta)
    if problem is not None:
        raise DataNotFoundError(f"{where} is not a shard index vae-shards wrote ({problem}): write the shards again.")
    side = int(meta["input_shape"][-1])
    if image_size is not None and image_size != side:
        raise ConfigValueError("dataset.image_size", f"the shards in {root} are {side}x{side} pixels", image_size)
    return meta


SECRET_WORDS = ("secret", "token", "password", "credential")


def plain_options(key: str, value: Any) -> dict[str, Any]:
    """`storage_options`: a map of names to plain values, with no credentials (a run's configuration is written
    into its checkpoints: secrets belong in the environment, e.g. AWS_SECRET_ACCESS_KEY)."""
    options = OmegaConf.to_container(value) if isinstance(value, DictConfig) else (value or {})
    if not (isinstance(options, dict) and is_plain(options)):
        raise ConfigValueError(key, "must be a map of option names to values, e.g. {endpoint_url: ...}", value)
    for name in options:
        if any(word in str(name).lower() for word in SECRET_WORDS):
            reason = "holds a credential, which a run writes into its checkpoints: give it in the environment instead"
            raise ConfigValueError(f"{key}.{name}", reason, "***")
    return dict(options)


class ShardsDataModule(VAEDataModule):
    """Trains from a shard folder written by `vae-shards` (see the module docstring). `root`: the folder, or an
    s3://, gs:// or azure:// URL of one (streamed through litdata's local cache); `storage_options`: how to reach
    that store (for s3:// boto3's client options, e.g. `endpoint_url` for an S3-compatible one; for gs://
    google-cloud-storage's, e.g. `project`; for azure:// `account_url`; no credentials: `client_options`);
    `image_size`: None, or the size the shards must have (a mismatch is refused); `num_workers`: loader workers
    per process (each streams its own part of the shards)."""

    def __init__(
        self,
        root: str,
        batch_size: int = 64,
        num_workers: int = 0,
        image_size: int | None = None,
        storage_options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        problems = checks.Problems()
        self.batch_size = problems.check(checks.positive_int, "batch_size", batch_size)
        self.num_workers = problems.check(checks.non_negative_int, "num_workers", num_workers)
        self.storage_options = problems.check(plain_options, "storage_options", storage_options)
        problems.raise_if_any()
        litdata_module()  # says how to install it now, before a model is built
        logging.getLogger("litdata").setLevel(logging.WARNING)  # its cache notes, at every loader's start
        self.root = str(root)
        self.client_options = client_options(self.root, self.storage_options)  # not saved: it may hold a credential
        self.meta = read_metadata(self.root, image_size, self.client_options)
        self.input_shape = tuple(int(v) for v in self.meta["input_shape"])
        self.class_names = {int(k): v for k, v in self.meta["class_names"].items()}
        self.train_set: Any = None
        self.val_set: Any = None
        self.test_set: Any = None
        self.train_loader: Any = None
        self.resume_state: dict[str, Any] | None = None  # a checkpoint's place in the training epoch

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        ImageShards = streaming().ImageShards
        seed = torch.initial_seed() % 2**31  # the run's seed (seed_everything runs before setup)
        tables = self.meta.get("tables", {})
        self.train_set, self.val_set, self.test_set = (
            ImageShards(
                split_dir(self.root, split),
                self.meta["labels"][split],
                split == "train",
                seed,
                tables.get(split),
                self.client_options,
            )
            for split in SPLITS
        )

    def _loader(self, split: Any, **options: Any) -> Any:
        if split is None:
            raise RuntimeError("setup() must run before the data is asked for")
        # the loader's own generator: starting its iterator draws from it, not from the run's random state (which
        # a resumed run restores, and which must then give the same noise as in the run it continues)
        generator = torch.Generator().manual_seed(torch.initial_seed() % 2**31)
        return streaming().EpochLoader(
            split, batch_size=self.batch_size, num_workers=self.num_workers, generator=generator, **options
        )

    def train_dataloader(self) -> Any:
        self.train_loader = self._loader(self.train_set)
        if self.resume_state is not None:
            self.train_loader.load_state_dict(self.resume_state)
        return self.train_loader

    def state_dict(self) -> dict[str, Any]:
        """The training loader's place in its epoch, saved with every checkpoint. Lightning saves it in its loop
        state too, but restores it from there only into a loader made after the checkpoint is read, and the
        model asks for the training length (`trainer.estimated_stepping_batches`) before that
        (Lightning-AI/pytorch-lightning#20550): so it is restored here, into the loader Lightning holds."""
        return {"train": self.train_loader.state_dict()} if self.train_loader is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved = state.get("train") if isinstance(state, dict) else None
        if not isinstance(saved, dict):
            return
        # where the saved place is: the URL of a remote split (litdata keeps its chunks in a local cache), else the path
        dataset = saved.get("dataset") if isinstance(saved.get("dataset"), dict) else {}
        where = dataset.get("input_dir_url" if is_url(self.root) else "input_dir_path")
        mine = split_dir(self.root, "train")
        same = where is not None and (
            str(where).rstrip("/") == mine if is_url(self.root) else Path(str(where)).resolve() == Path(mine).resolve()
        )
        if not is_plain(saved) or not same:
            log.warning(
                "The checkpoint's place in the shards of %s does not fit %s: the epoch starts over.", where, mine
            )
            return
        self.resume_state = saved
        if self.train_loader is not None:
            self.train_loader.load_state_dict(saved)

    def val_dataloader(self) -> Any:
        return self._loader(self.val_set)

    def test_dataloader(self) -> Any:
        return self._loader(self.test_set)

    def attributes(self, split: Any) -> dict[str, Attribute]:
        """The morph's directions, from what the metadata holds: as `dataset=utkface` and `dataset=celeba` give
        them for shards of those photos, else one attribute per named label."""
        kind = self.meta.get("kind", "folder")
        if kind == "utkface":
            return utkface_attributes(split.label_table)
        if kind == "celeba":
            return celeba_attributes(split.label_table, self.meta["attribute_names"])
        return one_vs_rest(split.labels, dict(self.class_names))

    def test_factors(self) -> dict[str, torch.Tensor]:
        """UTKFace's age (in decades), gender and race of the test samples, for the MIG; {} for the others."""
        if self.meta.get("kind") != "utkface":
            return {}
        self.setup()
        return utkface_factors(self.test_set.label_table)

    def diagnostic_samples(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The first `n` validation samples: the same in every epoch and process."""
        if self.val_set is None:
            self.setup()
        return self.val_set.__getitems__(range(min(n, len(self.val_set))))
