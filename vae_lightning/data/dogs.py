"""Dog faces from three layouts, detected under `root`:

- CU Dogs (Columbia): `dogImages/NNN.Breed/*.jpg`, `dogParts/NNN.Breed/<name>.txt` (8 keypoints `x y`: eyes,
  nose, ear tips and bases, head top), `training.txt` / `testing.txt` (the official split).
- Oxford-IIIT Pet: `images/*.jpg`, `annotations/xmls/<name>.xml` (PASCAL VOC head box), `annotations/list.txt`
  (`name CLASS-ID SPECIES BREED-ID`, species 2 = dog), `annotations/trainval.txt` / `test.txt`.
- A plain folder of dog photos, e.g. already cropped dog faces (centre crop), read as `dataset=images` reads any
  folder (`data/folder.py`): the label is the first sub-folder (a breed), `dog` for photos directly in root.
  Annotation, mask and thumbnail folders are not read as photos (see `images.list_photos`). A folder of other
  photos (cats, microscope images) is `dataset=images`.

The face is the square around the keypoints (or head box) grown by `margin`, clipped to the image; an image
without annotation falls back to the centre square, and the count is reported. A root that holds several
layouts (say CU Dogs beside a folder of Oxford-IIIT Pet) is refused with the sub-folders to choose from.
"""

from __future__ import annotations

import logging
import os
import shutil
import tarfile
import xml.etree.ElementTree as ET
from pathlib import Path

from vae_lightning.core import checks
from vae_lightning.core.errors import DataFormatError, DataNotFoundError
from vae_lightning.data.download import DownloadError, download
from vae_lightning.data.folder import ROOT_LABEL, ImageFolderSource
from vae_lightning.data.images import IMAGE_SUFFIXES, Item, has_photos, list_photos
from vae_lightning.data.photos import PhotoDataModule
from vae_lightning.data.protocol import require_present

log = logging.getLogger(__name__)

PARTS = (
    "right eye",
    "left eye",
    "nose",
    "right ear tip",
    "right ear base",
    "head top",
    "left ear base",
    "left ear tip",
)
PET_ARCHIVES = {
    "images.tar.gz": "5c4f3ee8e5d25df40f4fd59a7f44e54c",
    "annotations.tar.gz": "95a8c909bbe2e81eed6a22bccdf3f68f",
}
PET_MIRRORS = ("https://www.robots.ox.ac.uk/~vgg/data/pets/data/", "https://thor.robots.ox.ac.uk/datasets/pets/")
PET_DOG = 2
HOW_TO_GET = (
    "For CU Dogs (no stable direct download), fetch the Columbia dogs-with-parts archive (CU_Dogs) linked from "
    "https://people.eecs.berkeley.edu/~kanazawa/ and unpack it so that the folder holds dogImages/, dogParts/, "
    "training.txt and testing.txt. Or use Oxford-IIIT Pet: `dataset.download=true` fetches it (images/ and "
    "annotations/). Any folder of dog photos also works (centre-cropped); for photos of anything else use "
    "`dataset=images dataset.root=<folder>`."
)


def parse_parts_file(path: Path) -> tuple[float, float, float, float]:
    """The bounding box (left, top, right, bottom) of the 8 keypoints in a CU Dogs parts file."""
    points = []
    for line in path.read_text().split("\n"):
        fields = line.split()
        if fields:
            if len(fields) != 2:
                raise DataFormatError(f"{path}: expected lines 'x y', got {line!r}.")
            points.append((float(fields[0]), float(fields[1])))
    if len(points) != len(PARTS):
        raise DataFormatError(f"{path}: expected {len(PARTS)} keypoints, got {len(points)}.")
    xs, ys = zip(*points, strict=True)
    return (min(xs), min(ys), max(xs), max(ys))


def parse_voc_head_box(path: Path) -> tuple[str, tuple[float, float, float, float]]:
    """(object name, head box) from an Oxford-IIIT Pet PASCAL VOC annotation."""
    try:
        obj = ET.parse(path).getroot().find("object")
        box = obj.find("bndbox")
        coords = tuple(float(box.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
        return obj.findtext("name", ""), coords  # type: ignore[return-value]
    except (ET.ParseError, AttributeError, TypeError, ValueError) as bad:
        raise DataFormatError(f"{path}: not a PASCAL VOC annotation with one bndbox ({bad}).") from None


def read_pet_list(path: Path) -> dict[str, tuple[int, int]]:
    """{image name: (class id, species)} from Oxford-IIIT Pet's list.txt (lines starting with # skipped)."""
    entries = {}
    for line in path.read_text().splitlines():
        fields = line.split()
        if fields and not fields[0].startswith("#") and len(fields) >= 3:
            entries[fields[0]] = (int(fields[1]), int(fields[2]))
    return entries


def _read_split_list(path: Path) -> set[str]:
    return {line.split()[0] for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")}


CU_DOGS, OXFORD_PET, FOLDER = "CU Dogs", "Oxford-IIIT Pet", "a plain folder of photos"


def layout_of(folder: Path) -> str | None:
    """The annotated layout `folder` itself has, if any."""
    if (folder / "dogImages").is_dir():
        return CU_DOGS
    if (folder / "images").is_dir() and (folder / "annotations").is_dir():
        return OXFORD_PET
    return None


def find_layouts(root: Path) -> list[tuple[str, Path]]:
    """(layout, folder) of every data set in `root`: the root's own annotated layout; else, when sub-folders
    have annotated layouts, each of them and each other sub-folder of photos; else the root as a plain folder."""
    own = layout_of(root)
    if own is not None:
        return [(own, root)]
    children = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    annotated = [(layout, child) for child in children if (layout := layout_of(child)) is not None]
    if not annotated:
        return [(FOLDER, root)] if has_photos(root) else []
    others = [(FOLDER, child) for child in children if layout_of(child) is None and has_photos(child)]
    if any(p.is_file() and _is_image_name(p) for p in root.iterdir()):
        others.append((FOLDER, root))
    return annotated + others


def _is_image_name(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


class DogsSource:
    """Dog faces from CU Dogs, Oxford-IIIT Pet or a plain folder of photos (see the module docstring)."""

    name = "dogs"

    def __init__(self, root: str, download: bool = False) -> None:
        self.root = Path(root).expanduser()
        self.download = checks.boolean("download", download)
        self.breeds: dict[int, str] = {}  # label -> breed (or folder) name
        self.fallbacks = 0
        self._test: set[str] | None = None

    def missing(self) -> DataNotFoundError | None:
        if self.download:
            return None  # prepare() fetches Oxford-IIIT Pet into the folder
        if not self.root.is_dir():
            return DataNotFoundError(f"The dogs folder {self.root} does not exist. {HOW_TO_GET}")
        found = find_layouts(self.root)
        if not found:
            return DataNotFoundError(f"The dogs folder {self.root} holds no images. {HOW_TO_GET}")
        if len(found) > 1:
            choices = "; ".join(f"{folder} ({layout})" for layout, folder in found)
            return DataNotFoundError(
                f"The dogs folder {self.root} holds several data sets: {choices}. Point `dataset.dogs.root` (or "
                "`dataset.root`) at one of them."
            )
        return None

    def layout(self) -> tuple[str, Path]:
        require_present(self)
        return find_layouts(self.root)[0]

    def prepare(self) -> None:
        """Download and unpack Oxford-IIIT Pet when asked to and the folder has no data yet."""
        if self.download and not (self.root.is_dir() and has_photos(self.root)):
            self._download_oxford_pet()

    def items(self) -> list[Item]:
        layout, folder = self.layout()
        self.breeds, self.fallbacks, self._test = {}, 0, None
        read = {CU_DOGS: self._cu_dogs, OXFORD_PET: self._oxford_pet, FOLDER: self._folder}[layout]
        items = read(folder)
        if not items:
            raise DataNotFoundError(f"The dogs folder {folder} holds no dog images ({layout}). {HOW_TO_GET}")
        without = f", {self.fallbacks} without a face annotation (centre-cropped)" if self.fallbacks else ""
        log.info("dogs: %s in %s: %d images%s", layout, folder, len(items), without)
        return items

    def test_paths(self) -> set[str] | None:
        return self._test

    def class_names(self) -> dict[int, str]:
        return dict(self.breeds)

    def _breed_index(self, breed: str, number: int | None = None) -> int:
        """The breed's label: its official number minus one where the layout has one, else first-seen order."""
        for index, name in self.breeds.items():
            if name == breed:
                return index
        index = number - 1 if number is not None else len(self.breeds)
        self.breeds[index] = breed
        return index

    def _cu_dogs(self, root: Path) -> list[Item]:
        images_dir, parts_dir = root / "dogImages", root / "dogParts"
        items = []
        for path in list_photos(images_dir):
            relative = path.relative_to(images_dir)
            parts = (parts_dir / relative).with_suffix(".txt")
            box = None
            if parts.is_file():
                box = parse_parts_file(parts)
            else:
                self.fallbacks += 1
            folder = relative.parts[0] if len(relative.parts) > 1 else "000.unknown"
            number, _, breed = folder.partition(".")
            items.append(Item(str(path), box, (self._breed_index(breed, int(number) if number.isdigit() else None),)))
        if (root / "testing.txt").is_file():
            self._test = {str(images_dir / name) for name in _read_split_list(root / "testing.txt")}
        return items

    def _oxford_pet(self, root: Path) -> list[Item]:
        annotations = root / "annotations"
        listed = read_pet_list(annotations / "list.txt") if (annotations / "list.txt").is_file() else None
        items = []
        for path in list_photos(root / "images"):
            xml = annotations / "xmls" / f"{path.stem}.xml"
            box, species_name = None, None
            if xml.is_file():
                species_name, box = parse_voc_head_box(xml)
            is_dog = listed[path.stem][1] == PET_DOG if listed and path.stem in listed else species_name == "dog"
            if not is_dog:
                continue
            if box is None:
                self.fallbacks += 1
            breed = path.stem.rsplit("_", 1)[0]
            class_id = listed[path.stem][0] if listed and path.stem in listed else None
            items.append(Item(str(path), box, (self._breed_index(breed, class_id),)))
        if (annotations / "test.txt").is_file():
            self._test = {str(root / "images" / f"{name}.jpg") for name in _read_split_list(annotations / "test.txt")}
        return items

    def _folder(self, root: Path) -> list[Item]:
        """A plain folder of dog photos is read as `dataset=images` reads any folder; its classes are breeds."""
        folder = ImageFolderSource(str(root), name="dogs")
        items = folder.items()
        names = {label: "dog" if name == ROOT_LABEL else name for label, name in folder.class_names().items()}
        return [Item(item.path, None, (self._breed_index(names[item.labels[0]]),)) for item in items]

    def _download_oxford_pet(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        staging = self.root / f".unpacking-{os.getpid()}"
        try:
            for archive, md5 in PET_ARCHIVES.items():
                try:
                    path = download(archive, PET_MIRRORS, self.root, md5)
                except DownloadError as failure:
                    raise DataNotFoundError(
                        f"Could not download Oxford-IIIT Pet into {self.root}: {failure}. {HOW_TO_GET}"
                    ) from None
                with tarfile.open(path) as tar:
                    if hasattr(tarfile, "data_filter"):  # refuses absolute paths and links out of the folder
                        tar.extractall(staging, filter="data")
                    else:  # Python < 3.10.12
                        tar.extractall(staging)
            for folder in ("images", "annotations"):  # renamed into place only once both archives unpacked
                target = self.root / folder
                if target.exists():
                    shutil.rmtree(target)
                os.replace(staging / folder, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)


class DogsDataModule(PhotoDataModule):
    """Dog faces (CU Dogs, Oxford-IIIT Pet or a plain folder); the batch label is the breed (or folder)."""

    def __init__(self, root: str, cache_dir: str, download: bool = False, **kwargs) -> None:
        super().__init__(cache_dir, **kwargs)
        self.source = DogsSource(root, download)
        problem = self.source.missing()
        if problem is not None:
            self.problems.add(problem)
        self.problems.raise_if_any()

    def prepare_data(self) -> None:
        self.source.prepare()

    def load_splits(self):
        data = self.load_source(self.source)
        self.class_names = self.source.class_names()
        return self.split(data, data.labels[:, 0], self.source.test_paths())
