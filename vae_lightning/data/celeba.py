"""CelebA, aligned and cropped: `img_align_celeba/NNNNNN.jpg` (178x218), `list_attr_celeba.txt` (the 40 binary
attributes, 1 or -1), `list_eval_partition.txt` (0 train, 1 validation, 2 test) and, where present,
`identity_CelebA.txt`, all in `root` (the text files may also sit in `Anno/` and `Eval/`, as in the release).

Each face is the usual centre square of side `crop` (148: the face and hair, as PyTorch-VAE and most VAE papers
crop it) resized to `image_size`. The 40 attributes are labels (`label_table` columns, `attributes()` for the
attribute morph); `label` picks the one that colours the pictures and the Projector. A partial copy is read as
it is: images without an attribute row keep unknown attributes (-1), and when the official partition leaves the
validation or test split empty among the images present, a seeded split of them is used instead (said in the log).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from vae_lightning.core import checks
from vae_lightning.core.errors import ConfigValueError, DataFormatError, DataNotFoundError
from vae_lightning.data.images import Item, list_photos
from vae_lightning.data.in_memory import Attribute, InMemoryDataset
from vae_lightning.data.photos import PhotoDataModule
from vae_lightning.data.protocol import require_present

log = logging.getLogger(__name__)

WIDTH, HEIGHT = 178, 218
HOW_TO_GET = (
    "CelebA has no stable direct download: get 'Align&Cropped Images' (img_align_celeba.zip) and the annotation "
    "files list_attr_celeba.txt, list_eval_partition.txt (and identity_CelebA.txt) from the links on "
    "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html, unzip the images so that `dataset.root` holds "
    "img_align_celeba/000001.jpg ..., and put the text files beside that folder."
)


def _text_file(root: Path, name: str) -> Path | None:
    for candidate in (root / name, root / "Anno" / name, root / "Eval" / name):
        if candidate.is_file():
            return candidate
    return None


def read_attributes(path: Path) -> tuple[list[str], dict[str, tuple[int, ...]]]:
    """(the 40 attribute names, {image name: 40 values of 0 or 1}) from `list_attr_celeba.txt`: a count line,
    the names line, then `NNNNNN.jpg` and one value of 1 or -1 per name (CRLF or LF, one or two spaces)."""
    lines = path.read_text().splitlines()
    if len(lines) < 2 or not lines[0].strip().isdigit():
        raise DataFormatError(f"{path}: expected an image count on line 1 and the attribute names on line 2.")
    names = lines[1].split()
    rows = {}
    for number, line in enumerate(lines[2:], start=3):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 1 + len(names) or any(v not in ("1", "-1") for v in fields[1:]):
            raise DataFormatError(f"{path}, line {number}: expected an image name and {len(names)} values of 1 or -1.")
        rows[fields[0]] = tuple(int(v == "1") for v in fields[1:])
    return names, rows


def read_name_numbers(path: Path) -> dict[str, int]:
    """{image name: integer} from `list_eval_partition.txt` or `identity_CelebA.txt` (`NNNNNN.jpg <n>` lines)."""
    table = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2 or not fields[1].lstrip("-").isdigit():
            raise DataFormatError(f"{path}, line {number}: expected an image name and a number.")
        table[fields[0]] = int(fields[1])
    return table


class CelebASource:
    """CelebA's aligned faces in `root` with their attributes, official partition and identities."""

    name = "celeba"

    def __init__(self, root: str, crop: int = 148) -> None:
        self.root = Path(root).expanduser()
        self.crop = checks.integer("crop", crop, low=8)
        if self.crop > WIDTH:
            raise ConfigValueError("crop", f"must be at most the images' width, {WIDTH}", crop)
        self.attribute_names: list[str] = []
        self.partition: dict[str, int] = {}

    def missing(self) -> DataNotFoundError | None:
        images = self.root / "img_align_celeba"
        if not images.is_dir() or not any(images.glob("*.jpg")):
            return DataNotFoundError(f"The CelebA folder {self.root} holds no img_align_celeba/*.jpg. {HOW_TO_GET}")
        if _text_file(self.root, "list_attr_celeba.txt") is None:
            return DataNotFoundError(f"The CelebA folder {self.root} has no list_attr_celeba.txt. {HOW_TO_GET}")
        return None

    def prepare(self) -> None:
        """CelebA has no stable download."""

    def items(self) -> list[Item]:
        require_present(self)
        self.attribute_names, rows = read_attributes(_text_file(self.root, "list_attr_celeba.txt"))
        partition = _text_file(self.root, "list_eval_partition.txt")
        identities = _text_file(self.root, "identity_CelebA.txt")
        self.partition = read_name_numbers(partition) if partition else {}
        identity = read_name_numbers(identities) if identities else {}
        unknown = (-1,) * len(self.attribute_names)
        side = self.crop
        box = ((WIDTH - side) / 2, (HEIGHT - side) / 2, (WIDTH + side) / 2, (HEIGHT + side) / 2)
        items, without_row = [], 0
        for path in list_photos(self.root / "img_align_celeba"):
            attributes = rows.get(path.name)
            without_row += attributes is None
            labels = (*(attributes or unknown), identity.get(path.name, -1))
            items.append(Item(str(path), box, labels))
        if without_row:
            log.warning(
                "celeba: %d images have no row in list_attr_celeba.txt; their attributes are unknown (-1)", without_row
            )
        log.info("celeba: %d faces in %s", len(items), self.root)
        return items

    def test_paths(self) -> set[str] | None:
        return None

    def class_names(self) -> dict[int, str]:
        return {}

    def official_splits(self, paths: list[str]) -> list[torch.Tensor] | None:
        """The (train, validation, test) indices of the images at `paths` by the official partition read by
        `items`; None (with a warning: a seeded split is used instead) where it leaves a split empty."""
        parts = torch.tensor([self.partition.get(Path(p).name, -1) for p in paths])
        official = [torch.nonzero(parts == k).flatten() for k in (0, 1, 2)]
        if all(len(part) for part in official):
            return official
        log.warning(
            "celeba: the official partition leaves a split empty among the %d images here (train %d, validation %d, "
            "test %d): using a seeded split of them instead",
            len(paths),
            *(len(part) for part in official),
        )
        return None


class CelebADataModule(PhotoDataModule):
    """CelebA faces (see the module docstring); the batch label is the attribute `label` (0 without, 1 with)."""

    def __init__(self, root: str, cache_dir: str, crop: int = 148, label: str = "Male", **kwargs) -> None:
        super().__init__(cache_dir, **kwargs)
        try:
            self.source = CelebASource(root, crop)
        except ConfigValueError as bad:
            self.problems.add(bad)
            self.source = CelebASource(root)
        self.label = str(label)
        self.class_names = {0: f"not {self.label}", 1: self.label}
        problem = self.source.missing()
        if problem is not None:
            self.problems.add(problem)
        self.problems.raise_if_any()

    def load_splits(self):
        data = self.load_source(self.source)
        names = self.source.attribute_names
        if self.label not in names:
            raise ConfigValueError(
                "dataset.label", f"must be one of CelebA's attributes: {', '.join(names)}", self.label
            )
        self.attribute_names = names
        labels = data.labels[:, names.index(self.label)].clamp(min=0)
        official = self.source.official_splits(data.paths)
        if official is not None:
            everything = InMemoryDataset(data.images, labels, label_table=data.labels)
            return tuple(everything.subset(part) for part in official)
        return self.split(data, labels, test_paths=None)

    def attributes(self, split) -> dict[str, Attribute]:
        return celeba_attributes(split.label_table, self.attribute_names)


def celeba_attributes(table: torch.Tensor, names: list[str]) -> dict[str, Attribute]:
    """The 40 attributes (present or not) of each image, from the first columns of its labels; unknown: NaN."""
    values = table[:, : len(names)].float()
    values[values < 0] = float("nan")
    return {name: Attribute(values[:, i], numeric=False) for i, name in enumerate(names)}
