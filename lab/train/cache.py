"""The teacher cache: a frozen teacher's embeddings of a fixed dataset, computed once.

The teacher never changes during distillation, so for a fixed dataset and fixed
preprocessing its image and caption embeddings are the same every epoch and in
every run. They are stored once per (teacher weights, dataset, preprocessing) as a
safetensors file and read back by item index — a distillation step then costs
little more than a no-KD step. When teacher and student must see the same random
augmentation, or the data is an endless stream, run the teacher online instead.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from lab.data.pairs import in_order


def weights_digest(model: torch.nn.Module) -> str:
    """sha256 over the model's state dict (names, shapes, dtypes and bytes)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def cache_key(teacher, dataset_description: dict) -> str:
    """Key of one cache entry: teacher weights + dataset + preprocessing + tokenizer."""
    cfg = teacher.model.visual.preprocess_cfg
    payload = {
        "teacher": weights_digest(teacher.model),
        "dataset": dataset_description,
        "preprocess": {"image_size": teacher.image_size, "mean": list(cfg["mean"]), "std": list(cfg["std"])},
        "context_length": int(teacher.tokenizer.context_length),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]


@torch.no_grad()
def teacher_embeddings(teacher, dataset, batch_size: int = 256) -> dict[str, torch.Tensor]:
    """Normalised teacher embeddings of every item of a finite dataset, in index order."""
    teacher.model.eval()
    images, texts = [], []
    batches = in_order(dataset, batch_size)
    for batch in tqdm(batches, total=-(-len(dataset) // batch_size), desc="teacher cache", unit="batch",
                      mininterval=1.0):
        images.append(teacher.model.encode_image(teacher.image_tensor(batch.images), normalize=True).float().cpu())
        texts.append(teacher.model.encode_text(teacher.tokenize(batch.captions), normalize=True).float().cpu())
    return {"image": torch.cat(images), "text": torch.cat(texts),
            "scale": teacher.model.logit_scale.exp().detach().float().cpu().reshape(1)}


class TeacherCache:
    """Teacher embeddings on disk, one file per key under ``root``."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def path(self, key: str) -> Path:
        return self.root / f"{key}.safetensors"

    def load_or_build(self, teacher, dataset, dataset_description: dict) -> tuple[dict[str, torch.Tensor], bool]:
        """The cached embeddings (building them on a miss); also says whether it was a hit."""
        path = self.path(cache_key(teacher, dataset_description))
        if path.is_file():
            try:
                return load_file(str(path)), True
            except Exception:  # a damaged entry is rebuilt, not trusted
                path.unlink(missing_ok=True)
        entry = teacher_embeddings(teacher, dataset)
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        save_file(entry, str(tmp), metadata={"description": json.dumps(dataset_description)})
        os.replace(tmp, path)  # atomic: readers see the whole entry or none
        return entry, False
