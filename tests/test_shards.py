"""Streaming shards (`vae-shards`, `dataset=shards`): conversion, training, exact resume mid-epoch, DDP, and the
one-line errors. Real processes: in the slow suite, which CI runs after installing litdata."""

from __future__ import annotations

import contextlib
import json
import signal
import time

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from tests.conftest import one_line_error, run_command, run_train
from tests.test_processes import start_train, wait_for
from vae_lightning.core.errors import ConfigValueError, DataNotFoundError, VAELightningError

pytestmark = pytest.mark.slow
litdata = pytest.importorskip("litdata", reason="litdata is not installed (the shards extra; see pyproject.toml)")


def write_folder(folder, n=120, size=40, seed=0):
    """`n` JPEGs in two class folders (`dark`, `light`) and one file that is not an image."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        label = "dark" if i % 2 else "light"
        (folder / label).mkdir(parents=True, exist_ok=True)
        base = 40 if label == "dark" else 200
        pixels = np.clip(base + rng.normal(0, 30, (size, size + 8, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / label / f"{i:04d}.jpg", quality=90)
    (folder / "light" / "broken.jpg").write_bytes(b"not an image")
    return folder


def convert(source, output, *extra):
    args = ["-m", "vae_lightning.shards", f"source={source}", f"output={output}", "image_size=16", "workers=2"]
    return run_command([*args, *extra])


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    folder = write_folder(tmp_path_factory.mktemp("photos"))
    output = tmp_path_factory.mktemp("shards") / "faces"
    result = convert(folder, output)
    assert result.returncode == 0, result.stderr[-3000:]
    return folder, output, json.loads(result.stdout.strip().splitlines()[-1])


def settings(source, output, **changes):
    keys = {"image_size": 16, "grayscale": False, "fit": "crop", "val_fraction": 0.1, "test_fraction": 0.1}
    keys |= {"split_seed": 0, "workers": 2, "chunk_bytes": "64MB"}
    return OmegaConf.create({"source": str(source), "output": str(output)} | keys | changes)


def test_a_folder_converts_with_its_labels_splits_and_skipped_files_and_only_once(shards, tmp_path, caplog):
    from vae_lightning.shards import write_shards

    folder, output, summary = shards
    meta = json.loads((output / "vae_shards.json").read_text())
    assert summary["skipped"] == 1 and sum(summary["sizes"].values()) == 120
    assert meta["input_shape"] == [3, 16, 16] and set(meta["class_names"].values()) == {"dark", "light"}
    assert {split: len(labels) for split, labels in meta["labels"].items()} == summary["sizes"]
    assert min(summary["sizes"].values()) > 0
    with caplog.at_level("INFO"):
        assert write_shards(settings(folder, output)) == meta  # done: not written twice
    assert "already written" in caplog.text
    with pytest.raises(VAELightningError, match="other settings"):
        write_shards(settings(folder, output, image_size=24))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataNotFoundError, match=r"holds no images.*Point `source`"):
        write_shards(settings(tmp_path / "empty", tmp_path / "out"))
    with pytest.raises(ConfigValueError, match=r"output='s3://bucket/faces'.*writes to a local folder.*copy"):
        write_shards(settings(folder, "s3://bucket/faces"))  # not a local folder named s3:
    with pytest.raises(ConfigValueError, match="split_seed='abc'"):  # not torch's error at the split
        write_shards(settings(folder, tmp_path / "out", split_seed="abc"))
    stream = litdata.StreamingDataset(str(output / "train"))
    first = stream[0]
    assert first["image"].dtype == np.uint8 and first["image"].shape == (3, 16, 16)


def test_utkface_and_celeba_shards_keep_every_label_for_the_morphs_and_celebas_official_partition(tmp_path):
    """`labels=utkface`: each face's age, gender and race from its name, kept per sample in stored order, give the
    attributes and MIG factors `dataset=utkface` gives; `labels=celeba`: the 40 attributes, the official partition
    as the splits, the batch label named by `labels.label` (another name refused naming that key)."""
    from tests.photo_fixtures import write_celeba, write_utkface
    from vae_lightning.data.shards import ShardsDataModule
    from vae_lightning.data.utkface import parse_utkface_name
    from vae_lightning.shards import write_shards

    faces = write_utkface(tmp_path / "utkface", n=24, bad=False)
    utkface = {"_target_": "vae_lightning.shards.UTKFaceLabels"}
    meta = write_shards(settings(faces, tmp_path / "faces", labels=utkface))
    assert meta["kind"] == "utkface" and meta["class_names"] == {"0": "male", "1": "female"}
    everyone = sorted(parse_utkface_name(p.name) or (-1, -1, -1) for p in faces.iterdir())  # unknown: -1
    assert sorted(tuple(row) for rows in meta["tables"].values() for row in rows) == everyone
    for split in ("train", "val", "test"):
        assert [row[1] for row in meta["tables"][split]] == meta["labels"][split]  # the gender, sample by sample
    data = ShardsDataModule(str(tmp_path / "faces"))
    data.setup()
    attributes = data.attributes(data.train_set)
    assert list(attributes) == ["age", "female", "male", "White", "Black", "Asian", "Indian", "Others"]
    ages = torch.tensor([float(row[0]) if row[0] >= 0 else float("nan") for row in meta["tables"]["train"]])
    assert attributes["age"].numeric
    torch.testing.assert_close(attributes["age"].values, ages, equal_nan=True)  # unknown ages: NaN
    assert set(data.test_factors()) == {"age", "gender", "race"}

    celeba = write_celeba(tmp_path / "celeba", n=12)
    labels = {"_target_": "vae_lightning.shards.CelebALabels", "label": "Smiling", "crop": 148}
    meta = write_shards(settings(celeba, tmp_path / "celeba_shards", labels=labels))
    assert meta["sizes"] == {"train": 4, "val": 4, "test": 4}  # the fixture's partition: 0, 1, 2 in turn
    assert meta["class_names"] == {"0": "not Smiling", "1": "Smiling"} and len(meta["attribute_names"]) == 40
    smiling = meta["attribute_names"].index("Smiling")
    assert meta["labels"]["train"] == [max(row[smiling], 0) for row in meta["tables"]["train"]]
    data = ShardsDataModule(str(tmp_path / "celeba_shards"))
    data.setup()
    assert list(data.attributes(data.val_set)) == meta["attribute_names"]
    with pytest.raises(ConfigValueError, match="one of CelebA's attributes") as refused:
        write_shards(settings(celeba, tmp_path / "other", labels=labels | {"label": "Smiley"}))
    assert refused.value.key == "labels.label"
    broken = meta | {"tables": {"train": [[0]], "val": [], "test": []}}
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "vae_shards.json").write_text(json.dumps(broken))
    with pytest.raises(DataNotFoundError, match=r"not a shard index vae-shards wrote \(tables"):
        ShardsDataModule(str(tmp_path / "broken"))


@pytest.fixture
def s3_server(tmp_path, monkeypatch):
    """A local S3 server (moto's), its endpoint; credentials in the environment, as users give them."""
    pytest.importorskip("moto", reason="moto is not installed (the shards-test extra; see pyproject.toml)")
    for name, value in (
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_DEFAULT_REGION", "us-east-1"),
    ):
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("LITDATA_CACHE_DIR", str(tmp_path / "litdata_cache"))
    with local_server(["moto.server", "-p"]) as endpoint:
        yield endpoint


@contextlib.contextmanager
def local_server(module_and_port_flag: list[str], program: str | None = None):
    """`python -m <module> ... <port>` (or `program ... <port>`) on a free port, once it accepts connections: its
    http endpoint."""
    import socket
    import subprocess
    import sys

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [*([program] if program else [sys.executable, "-m"]), *module_and_port_flag, str(port)]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.2)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_training_streams_from_shards_in_an_s3_store_draws_its_pictures_and_tests(shards, s3_server, tmp_path):
    """`dataset.root=s3://...` with the store's endpoint in `dataset.storage_options`: the run trains (each sample
    of each epoch once), tests, fits its sampler and draws its pictures from the shards copied to a local S3
    server, and `evaluate` scores its checkpoint on the local copy (local training: the DDP and resume tests); a
    missing folder, another scheme and a credential in the options are refused in one line each."""
    import boto3

    _, output, summary = shards
    client = boto3.client("s3", endpoint_url=s3_server)
    client.create_bucket(Bucket="data")
    for path in output.rglob("*"):
        if path.is_file():
            client.upload_file(str(path), "data", f"faces/{path.relative_to(output)}")
    where = [f"dataset.storage_options={{endpoint_url: '{s3_server}'}}", "dataset=shards", "dataset.batch_size=16"]
    where += ["dataset.root=s3://data/faces", "trainer.max_epochs=2", "eval.nll_samples=5"]
    result = run_train([*where, "sampler=gmm", "sampler.n_components=2"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["status"] == "completed" and np.isfinite(metrics["test/nll"])
    pictures = {p.name for p in (tmp_path / "images").iterdir()}
    assert {"reconstructions.png", "samples.png", "latent_scatter.png"} <= pictures
    checkpoint = tmp_path / "checkpoints" / "last.ckpt"
    steps = torch.load(checkpoint, weights_only=True)["global_step"]
    assert steps == 2 * -(-summary["sizes"]["train"] // 16)  # each sample of each epoch once
    evaluated = run_command(["-m", "vae_lightning.evaluate", f"ckpt_path={checkpoint}", f"dataset.root={output}"])
    assert evaluated.returncode == 0 and "test/nll" in json.loads(evaluated.stdout), evaluated.stderr[-2000:]
    from vae_lightning.data.shards import ShardsDataModule

    with pytest.raises(DataNotFoundError, match=r"s3://data/nothing holds no vae_shards\.json"):
        ShardsDataModule("s3://data/nothing", storage_options={"endpoint_url": s3_server})
    with pytest.raises(DataNotFoundError, match=r"azure:// URL.*az:// is not supported"):
        ShardsDataModule("az://data/faces")
    secret = {"endpoint_url": s3_server, "aws_secret_access_key": "x"}
    with pytest.raises(VAELightningError, match=r"storage_options\.aws_secret_access_key='\*\*\*'.*credential"):
        ShardsDataModule("s3://data/faces", storage_options=secret)


def assert_one_epoch_streams(data, summary) -> None:
    """A training epoch of the data module streams every training sample once, each with its label."""
    torch.manual_seed(0)
    data.setup("fit")
    labels = torch.cat([y for _, y in data.train_dataloader()])
    assert len(labels) == summary["sizes"]["train"]
    assert sorted(labels.tolist()) == sorted(data.meta["labels"]["train"])


def test_shards_stream_from_google_cloud_storage(shards, tmp_path, monkeypatch):
    """`dataset.root=gs://...`: the shard folder copied to a local Cloud Storage server (an emulator, reached as
    google-cloud-storage reaches one, through STORAGE_EMULATOR_HOST) streams every training sample of an epoch
    once with its label, and the pictures' validation samples; a missing folder is refused in one line. (The
    training loop over a remote folder: the S3 test.)"""
    pytest.importorskip("gcp_storage_emulator", reason="no Cloud Storage emulator (the shards-test extra)")
    storage = pytest.importorskip("google.cloud.storage", reason="google-cloud-storage is not installed (shards)")
    from vae_lightning.data.shards import ShardsDataModule

    _, output, summary = shards
    monkeypatch.setenv("LITDATA_CACHE_DIR", str(tmp_path / "litdata_cache"))
    with local_server(["gcp_storage_emulator", "start", "--in-memory", "--port"]) as endpoint:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", endpoint)
        bucket = storage.Client(project="test").create_bucket("data")
        for path in output.rglob("*"):
            if path.is_file():
                bucket.blob(f"faces/{path.relative_to(output)}").upload_from_filename(str(path))
        data = ShardsDataModule("gs://data/faces", batch_size=16, storage_options={"project": "test"})
        assert_one_epoch_streams(data, summary)
        images, _ = data.diagnostic_samples(4)
        assert images.shape == (4, *data.input_shape)
        missing = r"gs://data/nothing holds no vae_shards\.json.*output=<folder>.*then copy"
        with pytest.raises(DataNotFoundError, match=missing):
            ShardsDataModule("gs://data/nothing", storage_options={"project": "test"})


# Azurite's documented development account and its well-known key (a local server's, no secret)
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def test_shards_stream_from_azure_blob_storage_with_the_key_from_the_environment(shards, tmp_path, monkeypatch):
    """`dataset.root=azure://<container>/<folder>` with `dataset.storage_options.account_url` and the account key
    in AZURE_STORAGE_KEY: the shard folder copied to a local Azure Blob Storage server (Azurite) streams every
    training sample of an epoch once with its label; the key reaches the store's clients but not the data
    module's configuration or its saved state; a missing folder, a missing account URL and a credential in the
    options are refused in one line each."""
    import shutil

    azurite = shutil.which("azurite-blob")
    if azurite is None:
        pytest.skip("Azurite is not installed (npm install -g azurite; .ci/run installs it where npm is)")
    blob = pytest.importorskip("azure.storage.blob", reason="azure-storage-blob is not installed (the shards extra)")
    from vae_lightning.data.shards import ShardsDataModule

    _, output, summary = shards
    monkeypatch.setenv("LITDATA_CACHE_DIR", str(tmp_path / "litdata_cache"))
    monkeypatch.setenv("AZURE_STORAGE_KEY", AZURITE_KEY)
    command = ["--inMemoryPersistence", "--skipApiVersionCheck", "--silent", "--blobPort"]
    with local_server(command, program=azurite) as endpoint:
        account_url = f"{endpoint}/{AZURITE_ACCOUNT}"
        container = blob.BlobServiceClient(account_url, credential=AZURITE_KEY).create_container("data")
        for path in output.rglob("*"):
            if path.is_file():
                container.upload_blob(f"faces/{path.relative_to(output)}", path.read_bytes())
        options = {"account_url": account_url}
        data = ShardsDataModule("azure://data/faces", batch_size=16, storage_options=options)
        assert_one_epoch_streams(data, summary)
        assert data.storage_options == options and AZURITE_KEY not in json.dumps(data.state_dict(), default=str)
        missing = r"azure://data/nothing holds no vae_shards\.json.*then copy"
        with pytest.raises(DataNotFoundError, match=missing):
            ShardsDataModule("azure://data/nothing", storage_options=options)
        with pytest.raises(ConfigValueError, match=r"storage_options.*account_url"):
            ShardsDataModule("azure://data/faces")
        with pytest.raises(VAELightningError, match=r"storage_options\.credential='\*\*\*'.*environment"):
            ShardsDataModule("azure://data/faces", storage_options=options | {"credential": AZURITE_KEY})
        monkeypatch.setenv("AZURE_STORAGE_KEY", "d3Jvbmc=")  # a wrong key: the server's refusal, on one line
        with pytest.raises(DataNotFoundError, match=r"^dataset\.root=azure://data/faces cannot be read: [^\n]+$"):
            ShardsDataModule("azure://data/faces", storage_options=options)


def test_bad_shard_folders_are_refused_with_what_to_do(shards, tmp_path):
    from vae_lightning.data.shards import ShardsDataModule

    _, output, _ = shards
    with pytest.raises(DataNotFoundError, match=r"holds no vae_shards\.json.*vae-shards source="):
        ShardsDataModule(str(tmp_path))
    with pytest.raises(ConfigValueError, match="16x16") as refused:
        ShardsDataModule(str(output), image_size=32)
    assert refused.value.key == "dataset.image_size"
    (tmp_path / "vae_shards.json").write_text(json.dumps({"format": 99}))
    with pytest.raises(DataNotFoundError, match="format 99"):
        ShardsDataModule(str(tmp_path))
    meta = json.loads((output / "vae_shards.json").read_text())
    for key, value in (("input_shape", [3, 16, "16"]), ("labels", {"train": [0.5]}), ("class_names", [1])):
        (tmp_path / "vae_shards.json").write_text(json.dumps(meta | {key: value}))
        with pytest.raises(DataNotFoundError, match=f"not a shard index vae-shards wrote \\({key}"):
            ShardsDataModule(str(tmp_path))
    assert "does not exist" in one_line_error(run_train(["dataset=shards", "dataset.root=/no/such"], tmp_path / "r"))


def test_a_run_killed_mid_epoch_resumes_to_the_weights_of_an_uninterrupted_run(shards, tmp_path):
    """A checkpoint every 3 steps (7 per epoch): the killed run's last one is mid-epoch; resumed, it sees the
    rest of that epoch's samples once and ends at the same step with the same weights."""
    _, output, _ = shards
    args = ["dataset=shards", f"dataset.root={output}", "dataset.batch_size=14", "trainer.max_epochs=4"]
    args += [
        "logger=csv",
        "~callbacks.diagnostics",
        "eval.nll_samples=2",
        "+callbacks.last_checkpoint.every_n_train_steps=3",
    ]
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    uninterrupted = start_train(args, straight, tmp_path / "data")
    process = start_train(args, killed, tmp_path / "data")
    wait_for(killed / "checkpoints" / "last.ckpt", process)
    time.sleep(0.3)
    process.send_signal(signal.SIGKILL)
    process.communicate()
    saved = torch.load(killed / "checkpoints" / "last.ckpt", weights_only=True)
    output_text = uninterrupted.communicate(timeout=300)[0]
    assert uninterrupted.returncode == 0, output_text[-3000:]
    final = torch.load(straight / "checkpoints" / "last.ckpt", weights_only=True)
    assert saved["global_step"] < final["global_step"], "the run finished before it was killed"
    result = run_train([*args, "resume=true"], killed)
    assert result.returncode == 0, result.stderr[-3000:]
    resumed = torch.load(killed / "checkpoints" / "last.ckpt", weights_only=True)
    assert resumed["global_step"] == final["global_step"]
    for key, value in final["state_dict"].items():
        torch.testing.assert_close(resumed["state_dict"][key], value, rtol=0, atol=0)


def test_ddp_streams_a_part_of_each_epoch_to_each_process(shards, tmp_path):
    _, output, summary = shards
    run = tmp_path / "run"
    args = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "dataset=shards", f"dataset.root={output}"]
    result = run_train([*args, "dataset.batch_size=8", "trainer.max_epochs=2", "eval.nll_samples=2"], run)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert json.loads((run / "metrics.json").read_text())["status"] == "completed"
    steps = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]
    per_process = summary["sizes"]["train"] // 2  # litdata's even share (drop_last under DDP)
    assert steps == 2 * -(-per_process // 8)
