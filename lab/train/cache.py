"""The teacher cache: a frozen teacher's embeddings of a fixed dataset, computed once.

The teacher never changes during distillation, so for a fixed dataset and fixed
preprocessing its image and caption embeddings are the same every epoch and in
every run. They are stored once per *content* — teacher weights, the dataset's items,
preprocessing and tokenizer (:func:`content_key`) — as a safetensors file and read back
by item index, so a distillation step costs little more than a no-KD step. A CSV edited
in place (new captions, more rows, a replaced image) gets a new key and a new entry; it is
never served the embeddings of its old contents. When teacher and student must see the
same random augmentation, or the data is an endless stream, run the teacher online instead.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save
from tqdm.auto import tqdm

from lab.data.pairs import in_order
from lab.runs import atomic_write_bytes, remove_stale_tmp_files
from lab.train.loop import bars_disabled

# A fixed caption whose token ids stand for the tokenizer in the key (vocabulary, merges, padding).
TOKENIZER_PROBE = "a small red circle at the top left, sketched; A PHOTO of 2 dogs!"


def weights_digest(model: torch.nn.Module) -> str:
    """sha256 over the model's state dict (names, shapes, dtypes and bytes)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def dataset_fingerprint(dataset) -> dict:
    """What a dataset's items are made of, cheaply: changes whenever the items could have.

    * an image-file dataset (a CSV, class folders, a split file): sha256 of the CSV's bytes
      when there is one, and a sha256 over every image's path, byte size and mtime (ns), in
      item order, plus the captions;
    * an in-memory dataset (a fixed ShapesWorld set): sha256 of the rendered images and captions.
    """
    fingerprint: dict = {"type": type(dataset).__name__, "items": len(dataset)}
    csv_path = getattr(dataset, "csv_path", None)
    if csv_path is not None:
        fingerprint["csv"] = {"path": str(Path(csv_path).resolve()), "sha256": _file_digest(Path(csv_path))}
    paths = getattr(dataset, "paths", None)
    if paths is not None:
        digest = hashlib.sha256()
        for p in paths:
            try:
                st = os.stat(p)
                digest.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
            except OSError:  # a missing image fails later with its own sentence; here it only changes the key
                digest.update(f"{p}\0missing\n".encode())
        fingerprint["images"] = digest.hexdigest()
    items = getattr(dataset, "_items", None)
    if items is not None:
        digest = hashlib.sha256(np.ascontiguousarray(items.images).tobytes())
        fingerprint["images"] = digest.hexdigest()
    captions = getattr(dataset, "captions", None) or getattr(items, "captions", None)
    if captions is not None:
        fingerprint["captions"] = hashlib.sha256("\n".join(captions).encode()).hexdigest()
    if getattr(dataset, "classnames", None) is not None:  # class-folder / split-file data: captions from labels
        labels = np.ascontiguousarray(getattr(dataset, "labels", np.zeros(0, dtype=np.int64)))
        fingerprint["labels"] = hashlib.sha256(labels.tobytes() + "\n".join(dataset.classnames).encode()).hexdigest()
    if "images" not in fingerprint:
        raise TypeError(f"dataset_fingerprint does not know how to fingerprint a {type(dataset).__name__}")
    return fingerprint


def model_inputs(clip) -> dict:
    """The teacher side of the key: weights digest, preprocessing (input size, mean, std) and tokenizer."""
    cfg = clip.model.visual.preprocess_cfg
    probe = clip.tokenizer([TOKENIZER_PROBE])
    return {
        "teacher": weights_digest(clip.model),
        "preprocess": {"image_size": clip.image_size, "mean": list(cfg["mean"]), "std": list(cfg["std"]),
                       "resize": "bilinear-antialias"},
        "context_length": int(clip.tokenizer.context_length),
        "tokenizer": {"type": type(clip.tokenizer).__name__,
                      "probe": hashlib.sha256(probe.numpy().tobytes()).hexdigest()[:16]},
    }


def _key(payload: dict) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]


def cache_key(teacher, description: dict) -> str:
    """Key of one cache entry of ``teacher`` for settings ``description`` (which must name the content)."""
    cfg = teacher.model.visual.preprocess_cfg
    return _key({"teacher": weights_digest(teacher.model), "dataset": description,
                 "preprocess": {"image_size": teacher.image_size, "mean": list(cfg["mean"]), "std": list(cfg["std"])},
                 "context_length": int(teacher.tokenizer.context_length)})


def content_key(teacher, dataset, settings: dict) -> tuple[str, dict]:
    """The teacher cache's key for ``teacher`` on ``dataset``, and the payload it digests.

    Keyed on everything that determines the embeddings: the teacher's weights, preprocessing
    and tokenizer (:func:`model_inputs`), the dataset's contents (:func:`dataset_fingerprint`)
    and the data settings that shape each item (``settings``, e.g. the ``DataConfig`` as a
    dict; ``workers``, which only changes how fast items load, is left out).
    """
    payload = {**model_inputs(teacher), "dataset": dataset_fingerprint(dataset),
               "settings": {k: v for k, v in settings.items() if k != "workers"}}
    return _key(payload), payload


SAFETENSORS_DTYPES = {"F16": np.float16, "F32": np.float32, "BF16": None}


def mapped_entry(path: Path) -> dict[str, torch.Tensor]:
    """A safetensors file's tensors as memory-mapped CPU tensors: pages are read as rows are indexed, so a
    cache of millions of embeddings is never held whole in memory or on the device (copy-on-write, read-only
    on disk). The format is an 8-byte header length, a JSON header of dtypes, shapes and offsets, the data."""
    with open(path, "rb") as f:
        length = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(length))
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype = SAFETENSORS_DTYPES.get(info["dtype"])
        if dtype is None:
            raise ValueError(f"unsupported dtype {info['dtype']}")
        start, end = info["data_offsets"]
        count = (end - start) // np.dtype(dtype).itemsize
        array = np.memmap(path, dtype=dtype, mode="c", offset=8 + length + start, shape=(count,)) if count else \
            np.zeros(0, dtype=dtype)
        out[name] = torch.from_numpy(array).view(*info["shape"])
    return out


def storage_dtype(dataset) -> torch.dtype:
    """float16 for real data (half the disk and memory: CC3M's ViT-L/14 cache is ~6 GB, not 12); a ShapesWorld set
    keeps float32 so every ShapesWorld table in docs/results.md is reproduced to the digit."""
    return torch.float32 if getattr(dataset, "_items", None) is not None else torch.float16


@torch.no_grad()
def teacher_embeddings(teacher, dataset, batch_size: int = 256) -> dict[str, torch.Tensor]:
    """Normalised teacher embeddings of every item of a finite dataset, in index order."""
    teacher.model.eval()
    images, texts = [], []
    batches = in_order(dataset, batch_size)
    for batch in tqdm(batches, total=-(-len(dataset) // batch_size), desc="teacher cache", unit="batch",
                      mininterval=1.0, disable=bars_disabled()):
        images.append(teacher.model.encode_image(teacher.image_tensor(batch.images), normalize=True).float().cpu())
        texts.append(teacher.model.encode_text(teacher.tokenize(batch.captions), normalize=True).float().cpu())
    return {"image": torch.cat(images), "text": torch.cat(texts),
            "scale": teacher.model.logit_scale.exp().detach().float().cpu().reshape(1)}


class TeacherCache:
    """Teacher embeddings on disk, one file per content key under ``root``."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.last_path: Path | None = None  # the entry the last load_or_build used

    def path(self, key: str) -> Path:
        return self.root / f"{key}.safetensors"

    def load_or_build(self, teacher, dataset, settings: dict) -> tuple[dict[str, torch.Tensor], bool]:
        """The cached embeddings (building them on a miss); also says whether it was a hit.

        The entry used is ``self.last_path``. An entry whose length is not the dataset's, or
        that cannot be read, is rebuilt, never trusted.
        """
        key, payload = content_key(teacher, dataset, settings)
        path = self.last_path = self.path(key)
        if path.is_file():
            try:
                entry = mapped_entry(path)
                if len(entry["image"]) == len(entry["text"]) == len(dataset):
                    return entry, True
            except Exception:  # a damaged entry is rebuilt
                pass
            path.unlink(missing_ok=True)
        dtype = storage_dtype(dataset)
        entry = {k: v.to(dtype) if k != "scale" else v for k, v in teacher_embeddings(teacher, dataset).items()}
        remove_stale_tmp_files(self.root)
        # atomic (readers see the whole entry or none); a full disk is one sentence and leaves no tmp file
        atomic_write_bytes(path, save(entry, metadata={"content": json.dumps(payload, sort_keys=True)}))
        return mapped_entry(path), False
