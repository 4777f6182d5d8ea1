"""UTKFace: aligned & cropped faces named `age_gender_race_datetime.jpg.chip.jpg`.

age 0-116; gender 0 male, 1 female; race 0 White, 1 Black, 2 Asian, 3 Indian, 4 Others; datetime
yyyymmddHHMMSSFFF (17 digits). A malformed name keeps its image with unknown labels (-1).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from vae_lightning.core.errors import DataFormatError, DataNotFoundError
from vae_lightning.data.images import Item, has_photos, list_photos
from vae_lightning.data.in_memory import Attribute, InMemoryDataset, one_vs_rest
from vae_lightning.data.photos import PhotoDataModule
from vae_lightning.data.protocol import require_present

log = logging.getLogger(__name__)

UNKNOWN = (-1, -1, -1)
_RANGES = ((0, 116), (0, 1), (0, 4))
_DATETIME_DIGITS = 17
GENDERS = {0: "male", 1: "female", -1: "gender unknown"}
HOW_TO_GET = (
    "UTKFace has no stable direct download: fetch the 'Aligned&Cropped Faces' archive (UTKFace.tar.gz, or "
    "crop_part1.tar.gz) from the links on https://susanqq.github.io/UTKFace/, unpack it and point "
    "`dataset.root` (or `dataset.faces.root`) at the folder that holds the *.jpg.chip.jpg files."
)


def parse_utkface_name(name: str) -> tuple[int, int, int] | None:
    """(age, gender, race) from a UTKFace file name, or None when the name is malformed."""
    stem = name
    for suffix in (".chip.jpg", ".jpg"):
        stem = stem.removesuffix(suffix)
    fields = stem.split("_")
    if len(fields) != 4 or not all(f.isdigit() for f in fields):
        return None
    values = tuple(int(f) for f in fields[:3])
    if len(fields[3]) != _DATETIME_DIGITS:
        return None
    if not all(low <= v <= high for v, (low, high) in zip(values, _RANGES, strict=True)):
        return None
    return values  # type: ignore[return-value]


def read_landmarks(path: Path) -> dict[str, tuple[float, float, float, float]]:
    """{in-the-wild file name: bounding box of its 68 points} from a UTKFace `landmark_list` file."""
    boxes = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 1 + 136:
            raise DataFormatError(
                f"{path}, line {number}: expected a name and 136 coordinates, got {len(fields)} fields."
            )
        xs = [float(v) for v in fields[1::2]]
        ys = [float(v) for v in fields[2::2]]
        boxes[fields[0]] = (min(xs), min(ys), max(xs), max(ys))
    return boxes


class UTKFaceSource:
    """Every photo under `root` (recursive) with labels (age, gender, race) from its name. With `landmarks` (a
    landmark_list file), the in-the-wild images it lists are cropped to the box of their 68 points instead."""

    name = "utkface"

    def __init__(self, root: str, landmarks: str | None = None) -> None:
        self.root = Path(root).expanduser()
        self.landmarks = Path(landmarks).expanduser() if landmarks else None

    def missing(self) -> DataNotFoundError | None:
        if not self.root.is_dir():
            return DataNotFoundError(f"The UTKFace folder {self.root} does not exist. {HOW_TO_GET}")
        if not has_photos(self.root):
            return DataNotFoundError(f"The UTKFace folder {self.root} holds no images. {HOW_TO_GET}")
        if self.landmarks is not None and not self.landmarks.is_file():
            return DataNotFoundError(
                f"The UTKFace landmark file {self.landmarks} (the data set's `landmarks` key) does not exist: point it "
                "at a landmark_list file from https://susanqq.github.io/UTKFace/, or set it to null for the photos "
                "as they are."
            )
        return None

    def prepare(self) -> None:
        """UTKFace has no stable download."""

    def items(self) -> list[Item]:
        require_present(self)
        boxes = read_landmarks(self.landmarks) if self.landmarks else None
        items, malformed = [], []
        for path in list_photos(self.root):
            if boxes is not None and path.name not in boxes:
                continue
            labels = parse_utkface_name(path.name)
            if labels is None:
                malformed.append(path.name)
            items.append(Item(str(path), boxes[path.name] if boxes is not None else None, labels or UNKNOWN))
        if boxes is not None and not items:
            raise DataNotFoundError(f"None of the images listed in {self.landmarks} is under {self.root}.")
        if malformed:
            log.warning(
                "UTKFace: %d file names do not follow age_gender_race_datetime.jpg.chip.jpg; their labels "
                "are unknown (-1): %s",
                len(malformed),
                ", ".join(malformed[:5]),
            )
        log.info("utkface: %d faces in %s", len(items), self.root)
        return items

    def test_paths(self) -> set[str] | None:
        return None

    def class_names(self) -> dict[int, str]:
        return dict(GENDERS)


RACES = {0: "White", 1: "Black", 2: "Asian", 3: "Indian", 4: "Others"}


AGE_GROUP_YEARS = 10  # age as a factor: decades (0-9, 10-19, ...), with 90 and above in one group


def utkface_factors(table: torch.Tensor) -> dict[str, torch.Tensor]:
    """From the (age, gender, race) columns: `age` in decades, `gender` and `race` (-1 where unknown)."""
    age = table[:, 0]
    decade = torch.where(age >= 0, (age // AGE_GROUP_YEARS).clamp(max=9), torch.full_like(age, -1))
    return {"age": decade, "gender": table[:, 1].clone(), "race": table[:, 2].clone()}


def utkface_attributes(table: torch.Tensor) -> dict[str, Attribute]:
    """From the (age, gender, race) columns: `age` (a quantity: "older"), `female` and `male`, and one per race."""
    age = table[:, 0].float()
    age[table[:, 0] < 0] = float("nan")
    return (
        {"age": Attribute(age, numeric=True)}
        | one_vs_rest(table[:, 1], {1: "female", 0: "male"})
        | one_vs_rest(table[:, 2], RACES)
    )


class UTKFaceDataModule(PhotoDataModule):
    """UTKFace faces; the batch label is gender (-1 unknown); age and race stay in `label_table`."""

    def __init__(self, root: str, cache_dir: str, landmarks: str | None = None, **kwargs) -> None:
        super().__init__(cache_dir, **kwargs)
        self.source = UTKFaceSource(root, landmarks)
        self.class_names = self.source.class_names()
        problem = self.source.missing()
        if problem is not None:
            self.problems.add(problem)
        self.problems.raise_if_any()

    def load_splits(self):
        data = self.load_source(self.source)
        return self.split(data, data.labels[:, 1], test_paths=None)

    def attributes(self, split: InMemoryDataset) -> dict[str, Attribute]:
        return utkface_attributes(split.label_table)

    def factors(self, split: InMemoryDataset) -> dict[str, torch.Tensor]:
        return utkface_factors(split.label_table)
