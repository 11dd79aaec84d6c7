"""Real datasets on disk: image–caption CSVs (open_clip's format), class folders, CoOp split files.

Each loader returns :class:`~lab.data.shapes.Batch` objects like ShapesWorld does:
uint8 images resized (shorter side) and centre-cropped to ``image_size``, captions,
and factors (``label`` for classification data, ``index`` always).
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps
from torch.utils.data import Dataset

from lab.data.preprocess import resize_center_crop
from lab.data.shapes import Batch
from lab.errors import LabError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def to_rgb(im: Image.Image) -> Image.Image:
    """An opened image as 8-bit RGB as it looks on screen, whatever a camera or an editor wrote.

    The EXIF orientation is applied (a phone's portrait photo stands upright); 16- and 32-bit grey
    (PNG ``I;16``, ``I``) is scaled to 0…255 rather than clipped (``convert("RGB")`` turns it white);
    transparency (RGBA, LA, a palette's transparent index) is laid on white; CMYK, palette and the
    other modes go through Pillow's conversion.
    """
    im = ImageOps.exif_transpose(im)
    if im.mode.startswith("I") or im.mode == "F":
        values = np.asarray(im, dtype=np.float64)
        top = 65535.0 if im.mode.startswith("I;16") or values.max(initial=0) > 255 else 255.0
        if im.mode == "F":
            top = 1.0 if values.max(initial=0) <= 1.0 else 255.0
        grey = np.clip(np.rint(values / top * 255.0), 0, 255).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        im = im.convert("RGBA")
        background = Image.new("RGBA", im.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, im).convert("RGB")
    return im.convert("RGB")


def load_image(path: Path, image_size: int, where: str = "") -> np.ndarray:
    """One image as (S, S, 3) uint8: shorter side resized to S (bicubic), centre crop — torchvision's exact
    arithmetic (:func:`lab.data.preprocess.resize_center_crop`), so the pixels are open_clip's preprocess's."""
    try:
        with Image.open(path) as im:
            return resize_center_crop(to_rgb(im), image_size)  # torchvision's, as open_clip's preprocess
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


CSV_SEPARATORS = ("\t", ",", ";", "|")  # tried, in order, when the given one does not show both columns


def read_csv_rows(path: Path, image_key: str, caption_key: str, separator: str = "\t") -> list[dict]:
    """The rows of an image–caption CSV as a spreadsheet program saves it: a UTF-8 byte-order mark, CRLF line
    ends, quoted fields holding separators or line breaks and trailing empty columns are read; when the given
    separator does not show both columns, tab, comma, semicolon and bar are tried. Anything else is one sentence."""
    if path.is_dir():
        raise LabError(f"Dataset file {path} is a folder, not a CSV file; pass the CSV inside it "
                       f"(data.source={path}/FILE.csv) or shards (data.source={path}/{{00000..00009}}.tar).")
    if not path.is_file():
        raise LabError(f"Dataset file {path} does not exist; pass data.source=shapes or a CSV path.")
    if len(separator) != 1:
        raise LabError(f"data.csv_separator must be one character, got {separator!r}; e.g. data.csv_separator=, "
                       f"(a tab is the default).")
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:  # utf-8-sig: a byte-order mark is dropped
            text = f.read()
    except UnicodeDecodeError as err:
        raise LabError(f"{path} is not UTF-8 text (byte {err.object[err.start]:#04x} at offset {err.start}); save "
                       f"it as UTF-8 (a spreadsheet's 'CSV UTF-8') or convert it, e.g. iconv -f latin1 -t utf-8."
                       ) from None
    for sep in dict.fromkeys((separator, *CSV_SEPARATORS)):
        reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=sep)
        columns = [c.strip() for c in reader.fieldnames or []]
        if image_key in columns and caption_key in columns:
            break
    else:
        reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=separator)
        columns = [c.strip() for c in reader.fieldnames or []]
        missing = [k for k in (image_key, caption_key) if k not in columns]
        raise LabError(f"{path} has no column {missing[0]!r} (columns: {', '.join(map(repr, columns)) or 'none'}); "
                       f"set data.csv_image_key / data.csv_caption_key / data.csv_separator.")
    reader.fieldnames = columns
    try:
        rows = list(reader)
    except csv.Error as err:
        raise LabError(f"{path} is not a readable CSV ({err}); check its quoting or data.csv_separator.") from None
    for number, row in enumerate(rows, start=2):
        for key, what in ((image_key, "image path"), (caption_key, "caption")):
            if not (row.get(key) or "").strip():
                raise LabError(f"Row {number} of {path.name} has no {what} (column {key!r} is empty); fill it in "
                               f"or remove that row.")
    return rows


class CsvPairs(_ImageFiles):
    """Image–caption pairs from a CSV/TSV with an image-path column and a caption column.

    open_clip's format by default: tab-separated, columns ``filepath`` and ``title``;
    relative paths are resolved against the CSV's folder.
    """

    def __init__(self, path: str | Path, image_size: int = 224, image_key: str = "filepath",
                 caption_key: str = "title", separator: str = "\t", limit: int = 0):
        path = Path(path)
        rows = read_csv_rows(path, image_key, caption_key, separator)
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


def check_split_file(splits, path: Path) -> dict:
    """A CoOp split file's layout: an object of splits, each a list of ``[relative_path, label, classname]``."""
    if not isinstance(splits, dict):
        raise LabError(f"Split file {path} must be a JSON object of splits ({{\"train\": [...], \"test\": [...]}}), "
                       f"not a {type(splits).__name__}; see CoOp's split_zhou_*.json.")
    for name, items in splits.items():
        if not isinstance(items, list):
            raise LabError(f"Split '{name}' of {path} is not a list of [path, label, classname] items.")
        for i, item in enumerate(items):
            ok = (isinstance(item, list) and len(item) == 3 and isinstance(item[0], str)
                  and isinstance(item[1], int) and not isinstance(item[1], bool) and item[1] >= 0)
            if not ok:
                raise LabError(f"Item {i} of split '{name}' in {path} is {json.dumps(item)[:80]}, not "
                               f"[path, label, classname] with a label of 0 or more; fix that item.")
    return splits


def split_file(path: str | Path, image_root: str | Path, split: str = "test",
               image_size: int = 224) -> LabelledImages:
    """A CoOp-style split file: JSON ``{"train"|"val"|"test": [[relative_path, label, classname], ...]}``."""
    path, image_root = Path(path), Path(image_root)
    splits = check_split_file(read_json_file(path, "Split file"), path)
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
    gap = next((i for i in range(max(names) + 1) if i not in names), None) if names else None
    if gap is not None:
        raise LabError(f"Split file {path} has no item of label {gap} (its labels run 0…{max(names)}); labels must "
                       f"be 0, 1, 2 … with no gap, so renumber them.")
    classnames = [names[i] for i in range(max(names) + 1)] if names else []
    return LabelledImages([image_root / p for p, _, _ in items], [int(l) for _, l, _ in items],
                          classnames, image_size)
