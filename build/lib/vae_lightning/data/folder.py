"""Any folder of images: one's own photos, scans or microscope images (`dataset=images`).

Every image file under `root` (jpg, png, webp, bmp, gif, tiff; nested to any depth, symbolic links followed),
without hidden files, annotation, mask and thumbnail folders (see `images.list_photos`). The label is the first
sub-folder under `root` an image sits in (`root/cats/2019/a.jpg` is a `cats`), so a folder per class gives
classes; images directly in `root` get the label `(root)`, and a flat folder has that one label. Each image
becomes a square: its centre square (`fit=crop`) or the whole image resized into the square and padded with
black (`fit=pad`). Broken files are skipped and counted as for the photo sets, and the result is cached.
"""

from __future__ import annotations

import logging
from pathlib import Path

from vae_lightning.core.errors import ConfigValueError, DataNotFoundError
from vae_lightning.data.cache import Preprocessed, cached_preprocess
from vae_lightning.data.images import Item, has_photos, list_photos
from vae_lightning.data.photos import PhotoDataModule
from vae_lightning.data.protocol import require_present

log = logging.getLogger(__name__)

FITS = ("crop", "pad")
ROOT_LABEL = "(root)"
HOW_TO_BRING = (
    "Point `dataset.root` at a folder of images (jpg, png, webp, bmp, tiff; sub-folders, one per class, "
    "give the labels)."
)


class ImageFolderSource:
    """The images under `root`, labelled by their first sub-folder (see the module docstring)."""

    name = "images"

    def __init__(self, root: str, fit: str = "crop", name: str = "images") -> None:
        self.root = Path(root).expanduser()
        if fit not in FITS:
            raise ConfigValueError("fit", f"must be one of {', '.join(FITS)}", fit)
        self.fit = fit
        self.name = name
        self.labels: dict[int, str] = {}

    def missing(self) -> DataNotFoundError | None:
        if not self.root.is_dir():
            return DataNotFoundError(f"The image folder {self.root} does not exist. {HOW_TO_BRING}")
        if not has_photos(self.root):
            return DataNotFoundError(f"The image folder {self.root} holds no images. {HOW_TO_BRING}")
        return None

    def prepare(self) -> None:
        """Nothing to download: the folder is the user's."""

    def items(self) -> list[Item]:
        require_present(self)
        paths = list_photos(self.root)
        classes = sorted({self.class_of(path) for path in paths})
        index = {name: label for label, name in enumerate(classes)}
        self.labels = dict(enumerate(classes))
        items = [Item(str(path), None, (index[self.class_of(path)],), self.fit == "pad") for path in paths]
        log.info("%s: %d images of %d classes in %s", self.name, len(items), len(classes), self.root)
        return items

    def class_of(self, path: Path) -> str:
        parts = path.relative_to(self.root).parts
        return parts[0] if len(parts) > 1 else ROOT_LABEL

    def test_paths(self) -> set[str] | None:
        return None

    def class_names(self) -> dict[int, str]:
        return dict(self.labels)


class ImageFolderDataModule(PhotoDataModule):
    """A folder of one's own images (see the module docstring); the batch label is the class folder."""

    def __init__(self, root: str, cache_dir: str, fit: str = "crop", **kwargs) -> None:
        super().__init__(cache_dir, **kwargs)
        try:
            self.source = ImageFolderSource(root, fit)
        except ConfigValueError as bad:
            self.problems.add(bad)
            self.source = ImageFolderSource(root)
        problem = self.source.missing()
        if problem is not None:
            self.problems.add(problem)
        self.problems.raise_if_any()

    def load_source(self, source: ImageFolderSource) -> Preprocessed:
        params = {"image_size": self.image_size, "grayscale": self.grayscale, "fit": source.fit}
        return cached_preprocess(source.name, source.items(), params, self.cache_dir, self.preprocess_workers)

    def load_splits(self):
        data = self.load_source(self.source)
        self.class_names = self.source.class_names()
        return self.split(data, data.labels[:, 0], test_paths=None)
