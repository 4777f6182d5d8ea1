"""Generated photo data sets in the real on-disk layouts, with the kinds of bad files real folders hold."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image


def photo(width: int, height: int, seed: int, box=None, colour=(250, 30, 30)) -> Image.Image:
    """A noisy RGB picture; `box` (left, top, right, bottom) is painted in `colour` (a 'face' to crop)."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 120, size=(height, width, 3), dtype=np.uint8)
    if box is not None:
        left, top, right, bottom = (int(v) for v in box)
        pixels[top:bottom, left:right] = colour
    return Image.fromarray(pixels)


def save_jpeg(image: Image.Image, path: Path, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="JPEG", quality=90, **kwargs)
    return path


def write_bad_files(folder: Path) -> dict[str, Path]:
    """One of each: zero bytes, truncated JPEG, text named .jpg (all skipped); CMYK JPEG, 16-bit PNG and an
    EXIF-rotated JPEG (all converted)."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "empty": folder / "30_0_0_20170101000000001.jpg.chip.jpg",
        "truncated": folder / "31_0_0_20170101000000002.jpg.chip.jpg",
        "text": folder / "32_0_0_20170101000000003.jpg.chip.jpg",
        "cmyk": folder / "33_1_2_20170101000000004.jpg.chip.jpg",
        "sixteen_bit": folder / "34_1_3_20170101000000005.png",
        "rotated": folder / "35_0_1_20170101000000006.jpg.chip.jpg",
    }
    files["empty"].write_bytes(b"")
    buffer = io.BytesIO()
    photo(200, 200, 1).save(buffer, format="JPEG")
    files["truncated"].write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    files["text"].write_text("this is not a picture\n")
    photo(200, 200, 2).convert("CMYK").save(files["cmyk"], format="JPEG")
    ramp = (np.linspace(0, 65535, 200 * 200).reshape(200, 200)).astype(np.uint16)
    Image.fromarray(ramp).save(files["sixteen_bit"])
    # stored with its left half white; orientation 6 means "rotate 90 degrees clockwise to show"
    halves = np.zeros((200, 200, 3), dtype=np.uint8)
    halves[:, :100] = 255
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(halves).save(files["rotated"], format="JPEG", exif=exif)
    return files


def write_utkface(folder: Path, n: int = 24, bad: bool = True) -> Path:
    """Aligned & cropped faces, 200x200, `age_gender_race_datetime.jpg.chip.jpg`, two malformed names."""
    for i in range(n):
        name = f"{(i * 7) % 90 + 1}_{i % 2}_{i % 5}_2017010{i % 9 + 1}120000{i:03d}.jpg.chip.jpg"
        save_jpeg(photo(200, 200, i, box=(50, 40, 150, 160)), folder / name)
    save_jpeg(photo(200, 200, 100), folder / "61_1_20170109142408075.jpg.chip.jpg")  # race missing
    save_jpeg(photo(200, 200, 101), folder / "25_0_1_2017010914240807.jpg.chip.jpg")  # 16-digit datetime
    if bad:
        write_bad_files(folder / "bad")
    return folder


BREEDS = ("009.American_water_spaniel", "037.Brittany", "055.Curly-coated_retriever")


def write_cu_dogs(folder: Path, per_breed: int = 8, without_parts: int = 2) -> Path:
    """dogImages/NNN.Breed/Breed_NNNNN.jpg (500x375), dogParts/.../*.txt (8 keypoints), training/testing.txt."""
    training, testing = [], []
    k = 0
    for breed in BREEDS:
        for j in range(per_breed):
            k += 1
            name = f"{breed.split('.', 1)[1]}_{k:05d}.jpg"
            eyes_y = 120 + (k % 5) * 10
            points = [
                (200, eyes_y),
                (260, eyes_y),
                (230, eyes_y + 30),
                (170, eyes_y - 80),
                (195, eyes_y - 45),
                (230, eyes_y - 50),
                (265, eyes_y - 45),
                (290, eyes_y - 80),
            ]
            xs, ys = zip(*points, strict=True)
            save_jpeg(
                photo(500, 375, k, box=(min(xs), min(ys), max(xs), max(ys)), colour=(30, 250, 30)),
                folder / "dogImages" / breed / name,
            )
            if k > without_parts:
                parts = folder / "dogParts" / breed / name.replace(".jpg", ".txt")
                parts.parent.mkdir(parents=True, exist_ok=True)
                parts.write_text("".join(f"{x} {y}\n" for x, y in points))
            (testing if j % 4 == 3 else training).append(f"{breed}/{name}")
    (folder / "training.txt").write_text("\n".join(training) + "\n")
    (folder / "testing.txt").write_text("\n".join(testing) + "\n")
    return folder


def write_oxford_pet(folder: Path, dogs: int = 12, cats: int = 3) -> Path:
    """images/*.jpg, annotations/list.txt (SPECIES 2 = dog), annotations/xmls/*.xml head boxes, test.txt."""
    lines = ["#Image CLASS-ID SPECIES BREED ID", "#ID: 1:37 Class ids", "#SPECIES: 1:Cat 2:Dog"]
    test = []
    for i in range(dogs + cats):
        is_dog = i < dogs
        name = f"{'beagle' if is_dog else 'Bengal'}_{i + 1}"
        box = (120, 60, 300, 240)
        save_jpeg(photo(450, 350, 500 + i, box=box, colour=(30, 30, 250)), folder / "images" / f"{name}.jpg")
        lines.append(f"{name} {11 if is_dog else 6} {2 if is_dog else 1} {5 if is_dog else 2}")
        if i != 1:  # one dog without a head box: centre crop
            xml = folder / "annotations" / "xmls" / f"{name}.xml"
            xml.parent.mkdir(parents=True, exist_ok=True)
            xml.write_text(
                f"<annotation><filename>{name}.jpg</filename><size><width>450</width><height>350</height>"
                f"<depth>3</depth></size><object><name>{'dog' if is_dog else 'cat'}</name><bndbox>"
                f"<xmin>{box[0]}</xmin><ymin>{box[1]}</ymin><xmax>{box[2]}</xmax><ymax>{box[3]}</ymax>"
                "</bndbox></object></annotation>"
            )
        if i % 4 == 0:
            test.append(f"{name} {11 if is_dog else 6} {2 if is_dog else 1} 5")
    (folder / "annotations" / "list.txt").write_text("\n".join(lines) + "\n")
    (folder / "annotations" / "test.txt").write_text("\n".join(test) + "\n")
    return folder


def write_celeba(root, n: int = 12, partition=True, rows_for=None):
    """CelebA's layout: 178x218 JPEGs, the attribute file (CRLF), the partition (here 0, 1, 2 in turn)."""
    names = [f"Attr_{k}" for k in range(38)] + ["Male", "Smiling"]
    lines = [str(n), " ".join(names)]
    for i in range(1, n + 1):
        save_jpeg(photo(178, 218, i, box=(40, 60, 140, 170)), root / "img_align_celeba" / f"{i:06d}.jpg")
        if rows_for is None or i <= rows_for:
            values = ["1" if (i + k) % 2 else "-1" for k in range(40)]
            lines.append(f"{i:06d}.jpg " + "  ".join(values))
    (root / "list_attr_celeba.txt").write_bytes("\r\n".join(lines).encode() + b"\r\n")
    if partition:
        (root / "list_eval_partition.txt").write_text("".join(f"{i:06d}.jpg {i % 3}\n" for i in range(1, n + 1)))
    return root


SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def real_faces() -> list[Path]:
    """The shared UTKFace sample faces (200x200 JPEGs), sorted."""
    return sorted((SHARED_DATA / "utkface").rglob("*.jpg"))


def real_dogs() -> list[Path]:
    """The shared CU Dogs sample photos, sorted."""
    return sorted((SHARED_DATA / "dogs" / "CU_Dogs").rglob("*.jpg"))


def camera_photo(path: Path, width: int, height: int, face: int = 0) -> Path:
    """A camera-sized JPEG made of real photos: a shared dog photo enlarged to width x height as the background,
    and the shared face number `face` enlarged to 0.4 of the height pasted near the middle (one face to find)."""
    background = Image.open(real_dogs()[0]).convert("RGB").resize((width, height), Image.Resampling.BILINEAR)
    side = int(0.4 * height)
    person = Image.open(real_faces()[face]).convert("RGB").resize((side, side), Image.Resampling.BILINEAR)
    background.paste(person, ((width - side) // 2, (height - side) // 3))
    return save_jpeg(background, path)


def group_photo(path: Path) -> Path:
    """Two real faces of different sizes side by side on a grey photo (the larger one on the right)."""
    canvas = Image.new("RGB", (900, 500), (128, 128, 128))
    small, large = (Image.open(real_faces()[i]).convert("RGB") for i in (1, 2))
    canvas.paste(small.resize((260, 260)), (60, 120))
    canvas.paste(large.resize((400, 400)), (440, 50))
    return save_jpeg(canvas, path)
