"""Real datasets on disk: image–caption CSVs (open_clip's format), class folders, CoOp split files.

Each loader returns :class:`~lab.data.shapes.Batch` objects like ShapesWorld does:
uint8 images resized (shorter side) and centre-cropped to ``image_size``, captions,
and factors (``label`` for classification data, ``index`` always).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from lab.data.preprocess import resize_center_crop
from lab.data.shapes import Batch
from lab.errors import LabError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def load_image(path: Path, image_size: int, where: str = "") -> np.ndarray:
    """One image as (S, S, 3) uint8: shorter side resized to S (bicubic), centre crop — torchvision's exact
    arithmetic (:func:`lab.data.preprocess.resize_center_crop`), so the pixels are open_clip's preprocess's."""
    try:
        with Image.open(path) as im:
            return resize_center_crop(im.convert("RGB"), image_size)  # torchvision's, as open_clip's preprocess
    except FileNotFoundError as err:
        raise LabError(f"Image {path}{where} does not exist; fix the path or remove that row.") from err
    except OSError as err:
        raise LabError(f"Image {path}{where} cannot be read ({err}); replace the file or remove that row.") from err


class _ImageFiles(Dataset):
    """Shared loading for datasets that are lists of image paths."""

    paths: list[Path]
    image_size: int

    def __len__(self) -> int:
        return len(self.paths)

    def _where(self, i: int) -> str:
        return ""

    def _images(self, indices) -> np.ndarray:
        return np.stack([load_image(self.paths[i], self.image_size, self._where(i)) for i in indices])

    def __getitem__(self, index: int) -> Batch:
        return self.__getitems__([index])


class CsvPairs(_ImageFiles):
    """Image–caption pairs from a CSV/TSV with an image-path column and a caption column.

    open_clip's format by default: tab-separated, columns ``filepath`` and ``title``;
    relative paths are resolved against the CSV's folder.
    """

    def __init__(self, path: str | Path, image_size: int = 224, image_key: str = "filepath",
                 caption_key: str = "title", separator: str = "\t", limit: int = 0):
        path = Path(path)
        if not path.is_file():
            raise LabError(f"Dataset file {path} does not exist; pass data.source=shapes or a CSV path.")
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f, delimiter=separator)
            columns = reader.fieldnames or []
            missing = [k for k in (image_key, caption_key) if k not in columns]
            if missing:
                raise LabError(f"{path} has no column {missing[0]!r} (columns: {', '.join(columns) or 'none'}); "
                               f"set data.csv_image_key / data.csv_caption_key / data.csv_separator.")
            rows = list(reader)
        if limit:
            rows = rows[:limit]
        if not rows:
            raise LabError(f"{path} holds no image–caption rows; add data or choose another file.")
        self.csv_path, self.image_size = path, image_size
        self.paths = [(path.parent / r[image_key]).resolve() for r in rows]
        self.captions = [r[caption_key] for r in rows]

    def _where(self, i: int) -> str:
        return f" (row {i + 2} of {self.csv_path.name})"

    def __getitems__(self, indices) -> Batch:
        indices = list(indices)
        return Batch(self._images(indices), [self.captions[i] for i in indices],
                     {"index": np.asarray(indices)})


class LabelledImages(_ImageFiles):
    """Images with class labels and class names (class folders or split files)."""

    def __init__(self, paths: list[Path], labels: list[int], classnames: list[str], image_size: int = 224):
        if not paths:
            raise LabError("The dataset holds no images; check the folder or split file.")
        self.paths, self.labels = list(paths), np.asarray(labels, dtype=np.int64)
        self.classnames, self.image_size = list(classnames), image_size

    def __getitems__(self, indices) -> Batch:
        indices = list(indices)
        labels = self.labels[indices]
        captions = [f"a photo of a {self.classnames[c]}." for c in labels]
        return Batch(self._images(indices), captions, {"label": labels, "index": np.asarray(indices)})


def class_folder(root: str | Path, image_size: int = 224, classnames: dict[str, str] | None = None) -> LabelledImages:
    """``root/<class>/<image>`` — one sub-folder per class, sorted; ``classnames`` maps folder -> name."""
    root = Path(root)
    if not root.is_dir():
        raise LabError(f"Dataset folder {root} does not exist; pass a folder with one sub-folder per class.")
    folders = sorted(d for d in root.iterdir() if d.is_dir())
    paths, labels = [], []
    for label, folder in enumerate(folders):
        for p in sorted(folder.iterdir()):
            if p.suffix.lower() in IMAGE_SUFFIXES:
                paths.append(p)
                labels.append(label)
    if not paths:
        raise LabError(f"{root} holds no images in class sub-folders; expected root/<class>/<image>.jpg.")
    names = [(classnames or {}).get(d.name, d.name.replace("_", " ")) for d in folders]
    return LabelledImages(paths, labels, names, image_size)


def read_json_file(path: Path, what: str):
    """A JSON file's content, or one sentence naming the file and what is wrong (missing, not JSON)."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError as err:
        raise LabError(f"{what} {path} does not exist; check the path.") from err
    except json.JSONDecodeError as err:
        raise LabError(f"{what} {path} is not valid JSON ({err.msg} at line {err.lineno}).") from err


def split_file(path: str | Path, image_root: str | Path, split: str = "test",
               image_size: int = 224) -> LabelledImages:
    """A CoOp-style split file: JSON ``{"train"|"val"|"test": [[relative_path, label, classname], ...]}``."""
    path, image_root = Path(path), Path(image_root)
    splits = read_json_file(path, "Split file")
    if split not in splits:
        raise LabError(f"Split file {path} has no '{split}' split; it has: {', '.join(splits)}.")
    items = splits[split]
    names: dict[int, str] = {}
    for _, label, name in items:
        names[int(label)] = name
    # Class names come from every split so that labels index the same list everywhere.
    for other in splits.values():
        for _, label, name in other:
            names.setdefault(int(label), name)
    classnames = [names[i] for i in range(max(names) + 1)] if names else []
    return LabelledImages([image_root / p for p, _, _ in items], [int(l) for _, l, _ in items],
                          classnames, image_size)
