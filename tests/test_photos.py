"""Photo data sets: parsers, robust decoding, crops, the preprocessing cache and the datamodules."""

import os
import time

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import SHARED_DATA
from tests.photo_fixtures import photo, save_jpeg, write_bad_files, write_cu_dogs, write_oxford_pet, write_utkface
from vae_lightning.core.errors import ConfigErrors, DataNotFoundError
from vae_lightning.data import cache as cache_module
from vae_lightning.data.cache import cached_preprocess
from vae_lightning.data.dogs import DogsDataModule, DogsSource, parse_parts_file, parse_voc_head_box, read_pet_list
from vae_lightning.data.faces_dogs import DOG, HUMAN, FacesDogsDataModule
from vae_lightning.data.images import Item, decode_crop_resize, list_photos, square_around
from vae_lightning.data.photos import stratified_split
from vae_lightning.data.samplers import BalancedBatches
from vae_lightning.data.utkface import UTKFaceDataModule, UTKFaceSource, parse_utkface_name, read_landmarks


@pytest.mark.parametrize(
    ("name", "labels"),
    [
        ("100_1_0_20170110183726390.jpg.chip.jpg", (100, 1, 0)),
        ("1_0_3_20161220144830816.jpg.chip.jpg", (1, 0, 3)),
        ("26_0_2_20170104023102422.jpg", (26, 0, 2)),
        ("61_1_20170109142408075.jpg.chip.jpg", None),  # a field missing
        ("25_0_1_2017010914240807.jpg.chip.jpg", None),  # a 16-digit datetime
        ("39_1_20170116174525125.jpg.chip.jpg", None),
        ("130_0_0_20170110183726390.jpg.chip.jpg", None),  # age out of range
        ("x_0_0_20170110183726390.jpg.chip.jpg", None),
        ("000001.jpg", None),
    ],
)
def test_utkface_names(name, labels):
    assert parse_utkface_name(name) == labels


def test_real_utkface_sample_keeps_the_malformed_name_with_unknown_labels():
    folder = SHARED_DATA / "utkface" / "crop_part1"
    if not folder.is_dir():
        pytest.skip(f"{folder} is not present")
    items = {os.path.basename(i.path): i.labels for i in UTKFaceSource(str(folder)).items()}
    assert len(items) == 41
    assert items["61_1_20170109142408075.jpg.chip.jpg"] == (-1, -1, -1)
    assert items["100_1_0_20170110183726390.jpg.chip.jpg"] == (100, 1, 0)


def test_real_landmark_list_parses():
    path = SHARED_DATA / "utkface" / "official_landmark_demo" / "landmark_list.txt"
    if not path.is_file():
        pytest.skip(f"{path} is not present")
    boxes = read_landmarks(path)
    assert boxes and all(left < right and top < bottom for left, top, right, bottom in boxes.values())


def test_landmark_crops_use_the_listed_in_the_wild_images(tmp_path):
    root = tmp_path / "wild"
    save_jpeg(photo(400, 300, 0, box=(100, 50, 200, 170)), root / "1_0_0_20170109150557335.jpg")
    save_jpeg(photo(400, 300, 1), root / "not_listed.jpg")
    points = " ".join(f"{100 + (i % 2) * 100} {50 + (i % 3) * 60}" for i in range(68))
    landmarks = tmp_path / "landmark_list.txt"
    landmarks.write_text(f"1_0_0_20170109150557335.jpg {points} \n")
    (item,) = UTKFaceSource(str(root), str(landmarks)).items()
    assert item.box == (100.0, 50.0, 200.0, 170.0) and item.labels == (1, 0, 0)
    crop = decode_crop_resize(item, 16, grayscale=False)
    assert crop[0].mean() > 200 and crop[1].mean() < 60  # the red face box fills the crop


def test_a_missing_landmark_file_names_the_key_and_where_to_get_one(tmp_path):
    root = tmp_path / "faces"
    save_jpeg(photo(64, 64, 0), root / "1_0_0_20170109150557335.jpg")
    problem = UTKFaceSource(str(root), str(tmp_path / "abc")).missing()
    assert problem is not None and "`landmarks` key" in str(problem) and "susanqq.github.io" in str(problem)


def test_cu_dogs_parts_and_real_layout(tmp_path):
    parts = tmp_path / "p.txt"
    parts.write_text("231 77\n273 76\n249 103\n201 3\n229 36\n253 32\n279 32\n299 1\n")  # SEED README example
    assert parse_parts_file(parts) == (201.0, 1.0, 299.0, 103.0)
    real = SHARED_DATA / "dogs" / "CU_Dogs"
    if real.is_dir():
        source = DogsSource(str(real))
        assert source.layout() == ("CU Dogs", real) and len(source.items()) == 3
        assert source.breeds[8] == "American_water_spaniel"  # 009.American_water_spaniel -> label 8


def test_oxford_pet_real_annotations():
    folder = SHARED_DATA / "dogs" / "oxford_iiit_pet"
    if not folder.is_dir():
        pytest.skip(f"{folder} is not present")
    name, box = parse_voc_head_box(folder / "annotations" / "xmls" / "american_bulldog_10.xml")
    assert name == "dog" and box[0] < box[2] and box[1] < box[3]
    assert read_pet_list(folder / "annotations" / "list.txt")["american_bulldog_10"][1] == 2
    items = DogsSource(str(folder)).items()
    assert len(items) == 10 and all(item.box is not None for item in items)


def test_square_crop_is_clipped_to_the_image():
    assert square_around((10, 10, 30, 20), 0.0, 100, 100) == (10.0, 5.0, 30.0, 25.0)
    assert square_around((0, 0, 20, 20), 0.5, 100, 100) == (0.0, 0.0, 40.0, 40.0)  # shifted inside
    assert square_around((0, 0, 90, 50), 0.5, 100, 60) == (15.0, 0.0, 75.0, 60.0)  # shrunk to the image


def test_bad_files_are_skipped_or_converted(tmp_path):
    files = write_bad_files(tmp_path)
    for kind in ("empty", "truncated", "text"):
        assert isinstance(decode_crop_resize(Item(str(files[kind])), 32, grayscale=False), str), kind
    cmyk = decode_crop_resize(Item(str(files["cmyk"])), 32, grayscale=False)
    assert cmyk.shape == (3, 32, 32) and cmyk.dtype == np.uint8
    sixteen = decode_crop_resize(Item(str(files["sixteen_bit"])), 32, grayscale=True)
    assert sixteen.shape == (1, 32, 32) and sixteen[0, 0, 0] < 10 and sixteen[0, -1, -1] > 245  # scaled, not clipped
    rotated = decode_crop_resize(Item(str(files["rotated"])), 32, grayscale=True)[0]
    assert rotated[:10].mean() > 200 and rotated[-10:].mean() < 50  # the white half is on top once shown upright


def test_dog_face_crop_follows_the_keypoints(tmp_path):
    root = write_cu_dogs(tmp_path / "cu", per_breed=2, without_parts=0)
    item = DogsSource(str(root)).items()[0]
    crop = decode_crop_resize(item, 32, grayscale=False, margin=0.0).astype(float)
    assert crop[1].mean() > 180 and crop[0].mean() < 90  # the green face box


def test_cache_hits_rebuilds_and_ignores_leftovers(tmp_path, monkeypatch):
    root = write_utkface(tmp_path / "faces", n=6, bad=False)
    items = UTKFaceSource(str(root)).items()
    calls = []
    original = cache_module.preprocess
    monkeypatch.setattr(cache_module, "preprocess", lambda *a, **k: calls.append(1) or original(*a, **k))
    params = {"image_size": 16, "grayscale": False, "margin": 0.1}
    cache_dir = tmp_path / "cache"
    (cache_dir).mkdir()
    (cache_dir / ".utkface-junk.123.tmp").write_bytes(b"half a file from a killed run")
    first = cached_preprocess("utkface", items, params, cache_dir)
    second = cached_preprocess("utkface", items, params, cache_dir)
    assert len(calls) == 1 and torch.equal(first.images, second.images)
    cached_preprocess("utkface", items, params | {"image_size": 8}, cache_dir)
    assert len(calls) == 2  # a parameter changed
    later = time.time() + 5
    os.utime(items[0].path, (later, later))
    cached_preprocess("utkface", items, params, cache_dir)
    assert len(calls) == 3  # a source file changed


def test_balanced_batches():
    domain = torch.tensor([0] * 10 + [1] * 4)
    sampler = BalancedBatches(range(14), domain, batch_size=4, seed=3)
    batches = list(sampler)
    assert len(batches) == 5
    for batch in batches:
        assert sorted(domain[batch].tolist()) == [0, 0, 1, 1]
    assert sorted(i for b in batches for i in b if i < 10) == list(range(10))  # every human once per epoch
    assert list(sampler) == batches
    sampler.set_epoch(1)
    assert list(sampler) != batches
    shares = [
        BalancedBatches(torch.utils.data.DistributedSampler(range(14), 2, rank, seed=3), domain, 4, 3)
        for rank in (0, 1)
    ]  # what Lightning injects under DDP
    assert len(list(shares[0])) == len(list(shares[1])) == 3
    humans = [{i for batch in share for i in batch if i < 10} for share in shares]
    assert humans[0] and humans[1] and not humans[0] & humans[1]  # each process has its own share of humans


def test_utkface_datamodule_skips_and_counts_bad_files(tmp_path, caplog):
    root = write_utkface(tmp_path / "faces", n=20)
    dm = UTKFaceDataModule(str(root), str(tmp_path / "cache"), image_size=32, batch_size=4)
    dm.setup("fit")
    total = len(dm.train_set) + len(dm.val_set) + len(dm.test_set)
    assert total == 20 + 2 + 3  # good faces, malformed names, CMYK + 16-bit + rotated; 3 files skipped
    assert "skipped 3 of 28" in caplog.text and "truncated" not in caplog.text.split("skipped")[0]
    images, _ = dm.train_set.__getitems__([0, 1])
    assert images.dtype == torch.float32 and images.shape == (2, 3, 32, 32) and 0 <= images.min() <= images.max() <= 1


def test_seven_bad_photos_are_counted_and_the_first_five_named_in_one_warning(tmp_path, caplog):
    root = write_utkface(tmp_path / "faces", n=12, bad=False)
    bad = [root / f"{40 + i}_0_0_2017010100000{i:04d}.jpg.chip.jpg" for i in range(7)]
    for path in bad:
        path.write_text("not a photo\n")
    dm = UTKFaceDataModule(str(root), str(tmp_path / "cache"), image_size=16, batch_size=4)
    dm.setup("fit")
    (warning,) = [r.getMessage() for r in caplog.records if "could not be read" in r.getMessage()]
    assert "skipped 7 of 21 files" in warning and warning.endswith(" and 2 more")
    assert sum(str(path) in warning for path in bad) == 5
    assert len(dm.train_set) + len(dm.val_set) + len(dm.test_set) == 14  # the good faces and the malformed names


def test_dogs_datamodule_uses_the_official_split(tmp_path):
    root = write_cu_dogs(tmp_path / "cu", per_breed=8)
    dm = DogsDataModule(str(root), str(tmp_path / "cache"), image_size=16, batch_size=2, grayscale=True)
    dm.setup("fit")
    assert len(dm.test_set) == 6 and len(dm.train_set) + len(dm.val_set) == 18
    assert dm.input_shape == (1, 16, 16) and set(dm.train_set.labels.tolist()) <= {8, 36, 54}


def test_oxford_pet_keeps_dogs_only_and_official_test(tmp_path):
    root = write_oxford_pet(tmp_path / "pet", dogs=12, cats=3)
    source = DogsSource(str(root))
    items = source.items()
    assert source.layout()[0] == "Oxford-IIIT Pet" and len(items) == 12 and source.fallbacks == 1
    assert source.breeds == {10: "beagle"}
    assert len(source.test_paths()) == 4


def test_faces_dogs_balances_and_labels_domains(tmp_path):
    faces = UTKFaceSource(str(write_utkface(tmp_path / "faces", n=20, bad=False)))
    dogs = DogsSource(str(write_oxford_pet(tmp_path / "pet", dogs=12, cats=0)))
    dm = FacesDogsDataModule(faces, dogs, str(tmp_path / "cache"), n_per_domain=16, image_size=16, batch_size=4)
    dm.setup("fit")
    everything = torch.cat([dm.train_set.labels, dm.val_set.labels, dm.test_set.labels])
    assert (everything == 0).sum() == 16 and (everything == 1).sum() == 12  # dogs: fewer than asked, all used
    for _, labels in dm.train_dataloader():
        assert labels.tolist().count(0) == labels.tolist().count(1) == 2


def test_missing_and_empty_roots_say_where_to_get_the_data(tmp_path):
    with pytest.raises(DataNotFoundError, match=r"susanqq\.github\.io/UTKFace"):
        UTKFaceSource(str(tmp_path / "missing")).items()
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataNotFoundError, match="holds no images"):
        UTKFaceSource(str(tmp_path / "empty")).items()
    with pytest.raises(DataNotFoundError, match=r"dataset.download=true"):
        DogsSource(str(tmp_path / "empty")).items()


def test_a_root_with_several_dog_layouts_is_refused_naming_the_sub_folders():
    """The shared `dogs/` parent holds CU Dogs and Oxford-IIIT Pet: taking both would have read the trimaps."""
    parent = SHARED_DATA / "dogs"
    if not parent.is_dir():
        pytest.skip(f"{parent} is not present")
    with pytest.raises(DataNotFoundError, match="several data sets") as error:
        DogsSource(str(parent)).items()
    assert "CU_Dogs (CU Dogs)" in str(error.value) and "oxford_iiit_pet (Oxford-IIIT Pet)" in str(error.value)


def test_masks_trimaps_and_annotation_folders_are_never_photos(tmp_path):
    root = tmp_path / "faces"
    for folder in ("dogfacenet", "afhq"):
        for i in range(3):
            save_jpeg(photo(64, 64, i), root / folder / f"{folder}_{i}.jpg")
    trimap = np.ones((64, 64), dtype=np.uint8)
    trimap[16:48, 16:48] = 2
    (root / "annotations" / "trimaps").mkdir(parents=True)
    Image.fromarray(trimap).save(root / "annotations" / "trimaps" / "dogfacenet_0.png")
    Image.fromarray(trimap * 80).save(root / "dogfacenet" / "label_map.png")  # a mask not named as one
    source = DogsSource(str(root))
    assert source.layout() == ("a plain folder of photos", root)
    items = source.items()
    assert len(items) == 7 and not any("annotations" in item.path for item in items)  # the label map is listed...
    assert "not a photo" in decode_crop_resize(
        Item(str(root / "dogfacenet" / "label_map.png")), 16, False
    )  # ...and skipped
    assert source.class_names() == {0: "afhq", 1: "dogfacenet"}
    assert [p.name for p in list_photos(root / "afhq")] == ["afhq_0.jpg", "afhq_1.jpg", "afhq_2.jpg"]


def test_splits_are_stratified_seeded_and_hold_every_group():
    groups = torch.tensor([0] * 40 + [1] * 3 + [2] * 2 + [3])
    spread = torch.arange(46) % 4
    train, val, test = stratified_split(groups, spread, 0.1, 0.1, seed=0)
    assert sorted(torch.cat([train, val, test]).tolist()) == list(range(46))
    assert groups[val].tolist().count(0) == 4 and groups[test].tolist().count(0) == 4
    assert {1} <= set(groups[val].tolist()) and {1} <= set(groups[test].tolist())  # three: one in each split
    assert 2 in groups[val].tolist() and 2 not in groups[test].tolist()  # two: train and val
    assert 3 in groups[train].tolist()  # one: train
    assert len(set(spread[val][groups[val] == 0].tolist())) == 4  # spread over the labels within a group
    again = stratified_split(groups, spread, 0.1, 0.1, seed=0)
    assert all(torch.equal(a, b) for a, b in zip((train, val, test), again, strict=True))


def test_faces_and_dogs_splits_and_pictures_hold_both_domains_on_the_real_samples(tmp_path):
    faces, dogs = SHARED_DATA / "utkface", SHARED_DATA / "dogs" / "oxford_iiit_pet"
    if not faces.is_dir() or not dogs.is_dir():
        pytest.skip(f"{SHARED_DATA} is not present")
    dm = FacesDogsDataModule(UTKFaceSource(str(faces)), DogsSource(str(dogs)), str(tmp_path), image_size=16)
    dm.setup("fit")
    for split in (dm.train_set, dm.val_set, dm.test_set):
        assert set(split.labels.tolist()) == {0, 1}
    assert dm.batch_size == len(dm.train_set)  # 64 asked, fewer training images: the split's size
    n_humans, n_dogs = (int((dm.val_set.labels == domain).sum()) for domain in (HUMAN, DOG))
    pairs = min(n_humans, n_dogs, 2)
    _, labels = dm.diagnostic_samples(4)
    # a human first, then a dog, alternately while both last; then the rest of the larger domain
    rest = [HUMAN if n_humans > n_dogs else DOG] * (min(4, n_humans + n_dogs) - 2 * pairs)
    assert labels.tolist() == [HUMAN, DOG] * pairs + rest


def test_bad_values_and_missing_roots_are_reported_in_one_message(tmp_path):
    with pytest.raises(ConfigErrors) as error:
        UTKFaceDataModule(str(tmp_path / "nowhere"), str(tmp_path), image_size=1, batch_size=0)
    keys = [getattr(p, "key", None) for p in error.value.problems]
    assert keys == ["batch_size", "image_size", None] and "nowhere" in str(error.value)
    with pytest.raises(ConfigErrors) as error:  # the user's first faces_dogs run: both roots named at once
        FacesDogsDataModule(UTKFaceSource(str(tmp_path / "faces")), DogsSource(str(tmp_path / "dogs")), str(tmp_path))
    assert "UTKFace folder" in str(error.value) and "dogs folder" in str(error.value)


def test_oxford_pet_download_verifies_and_unpacks(tmp_path, monkeypatch):
    import functools
    import hashlib
    import http.server
    import tarfile
    import threading

    from vae_lightning.data import dogs as dogs_module

    built = write_oxford_pet(tmp_path / "built", dogs=4, cats=1)
    served = tmp_path / "served"
    served.mkdir()
    for folder in ("images", "annotations"):
        with tarfile.open(served / f"{folder}.tar.gz", "w:gz") as tar:
            tar.add(built / folder, arcname=folder)
    md5s = {name: hashlib.md5((served / name).read_bytes()).hexdigest() for name in dogs_module.PET_ARCHIVES}
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setattr(
            dogs_module, "PET_MIRRORS", ("http://127.0.0.1:9/", f"http://127.0.0.1:{server.server_address[1]}/")
        )
        monkeypatch.setattr(dogs_module, "PET_ARCHIVES", md5s)
        root = tmp_path / "pets"
        source = DogsSource(str(root), download=True)
        source.prepare()
        assert source.layout()[0] == "Oxford-IIIT Pet" and len(source.items()) == 4
        assert not list(root.glob(".unpacking-*"))
        monkeypatch.setattr(dogs_module, "PET_ARCHIVES", dict.fromkeys(md5s, "0" * 32))  # published MD5s differ
        with pytest.raises(DataNotFoundError, match="MD5 mismatch"):
            DogsSource(str(tmp_path / "other"), download=True).prepare()
    finally:
        server.shutdown()


def test_preprocessing_workers_end_cleanly_under_the_runs_signal_handlers(tmp_path):
    """The pool's workers inherit the run's SIGINT/SIGTERM handlers through fork; they must still end when the
    pool terminates them (else the run hangs once the photos are decoded)."""
    from vae_lightning.core.signals import stop_on_signals
    from vae_lightning.data.cache import preprocess

    items = [Item(str(save_jpeg(photo(40, 40, i), tmp_path / f"{i}.jpg"))) for i in range(4 * 32 + 1)]
    with stop_on_signals():
        result = preprocess(items, 8, grayscale=False, workers=2)
    assert len(result.paths) == len(items)
