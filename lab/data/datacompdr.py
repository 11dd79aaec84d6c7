"""Reinforced webdataset shards in DataCompDR's own layout (MobileCLIP, Vasu et al., CVPR 2024, §3).

Each sample of a DataCompDR shard, joined to its image, holds beside ``KEY.jpg``/``KEY.txt`` the members that
apple/ml-mobileclip's loader (``preprocess_dr`` in ``training/open_clip_v2.patch``) reads:

* ``KEY.paug.json`` — ``{"param_aug": [p_0, …, p_{K-1}]}``: each stored augmentation's parameters, compressed
  as ``training/dr/transforms.py``'s ``Compose.compress`` writes them — one entry per transform that has random
  parameters, in ``TRANSFORMATION_TO_NAME`` order. The lab's crops are ``random_resized_crop`` ``(i, j, h, w)``
  then ``random_horizontal_flip`` (a bool): ``p_k = [[top, left, height, width], flip]``;
* ``KEY.npz`` — ``image_emb`` (K, ΣD_m): the ensemble's normalised image embedding of each augmentation, the
  members' blocks concatenated (``--distill-teacher-dimension``); ``text_emb`` (1, ΣD_m) of the ground-truth
  caption; ``syn_text_emb`` (S, ΣD_m) of the synthetic captions (float16);
* ``KEY.syn.json`` — ``{"syn_text": [S synthetic captions]}``;
* ``KEY.json`` — ``{"uid": KEY}`` plus, written by the lab and ignored by ml-mobileclip, ``teacher_dims`` and
  ``logit_scales`` (DataCompDR itself leaves them to the command line: ``--distill-teacher-dimension 768 768``,
  ``--distill-logit-scale 100``; the lab then needs ``data.dr_teacher_dims``).

Beside the shards, ``reinforcement.json`` follows ``training/configs/datacompdr12m.json``: ``model_name``,
``pretrained``, ``num_samples`` (K) and ``reinforce.image_augmentation``. A stored RandAugment (DataCompDR-12M's
own augmentations) is refused in one sentence: the lab re-applies crops and flips only.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import webdataset as wds

from lab.errors import LabError

CONFIG_NAME = "reinforcement.json"
MEMBERS = ("paug.json", "npz", "syn.json")


def is_reinforced(shard: Path) -> bool:
    """Whether the first sample of ``shard`` carries DataCompDR's reinforcement members."""
    for sample in wds.tariterators.tarfile_samples([{"url": str(shard)}]):
        return all(m in sample for m in MEMBERS)
    return False


def augmentation_config(scale, flip: bool, image_size: int) -> dict:
    """``reinforce.image_augmentation`` for the lab's crops, in ml-mobileclip's config spelling."""
    return {"random_resized_crop": {"interpolation": "bicubic", "size": image_size, "scale": list(scale)},
            "random_horizontal_flip": {"enable": bool(flip), "p": 0.5},
            "normalize": {"enable": False}, "to_tensor": {"enable": True}}


def write_config(folder: Path, teachers: list[str], k: int, augmentation: dict) -> Path:
    path = folder / CONFIG_NAME
    path.write_text(json.dumps({"model_name": ",".join(teachers), "pretrained": ",".join(["lab"] * len(teachers)),
                                "num_samples": k, "reinforce": {"image_augmentation": augmentation}}, indent=1))
    return path


def param_transforms(config: dict) -> list[str]:
    """The transforms whose compressed parameters ``param_aug`` holds, in order (crop and flip only)."""
    aug = config.get("reinforce", {}).get("image_augmentation", {})
    enabled = [name for name, spec in aug.items() if spec.get("enable", True)]
    if "rand_augment" in enabled:
        raise LabError("These reinforced shards store RandAugment parameters, which the lab cannot re-apply yet "
                       "(it re-applies crops and flips only); use shards reinforced with crops only "
                       "(python -m lab cache-teacher --layout datacompdr).")
    order = ("random_crop", "random_resized_crop", "random_horizontal_flip")
    return [name for name in order if name in enabled]


def compress(crop: np.ndarray, flip_enabled: bool) -> list:
    """The lab's crop (top, left, height, width, flip) as one ``param_aug`` entry."""
    top, left, height, width, flip = (int(v) for v in crop)
    return [[top, left, height, width], bool(flip)] if flip_enabled else [[top, left, height, width]]


def decompress(entry: list, transforms: list[str]) -> np.ndarray:
    """One ``param_aug`` entry -> the lab's crop (top, left, height, width, flip)."""
    params = dict(zip(transforms, entry))
    box = params.get("random_resized_crop") or params.get("random_crop")
    if box is None:
        raise LabError("The reinforcement config has no random_resized_crop; the lab needs the stored crop boxes.")
    flip = params.get("random_horizontal_flip")
    return np.asarray([*box[:4], int(bool(flip))], dtype=np.int32)


def members(key: str, crops: np.ndarray, flip_enabled: bool, image_emb: np.ndarray, text_emb: np.ndarray,
            syn_texts: list[str], syn_emb: np.ndarray, dims: list[int], scales: list[float]) -> dict:
    """The reinforcement members of one sample (bytes, as webdataset's TarWriter writes them)."""
    buffer = io.BytesIO()
    np.savez(buffer, image_emb=image_emb.astype(np.float16), text_emb=text_emb.astype(np.float16).reshape(1, -1),
             syn_text_emb=syn_emb.astype(np.float16))
    return {"paug.json": json.dumps({"param_aug": [compress(c, flip_enabled) for c in crops]}).encode(),
            "npz": buffer.getvalue(), "syn.json": json.dumps({"syn_text": list(syn_texts)}).encode(),
            "json": json.dumps({"uid": key, "teacher_dims": list(dims), "logit_scales": list(scales)}).encode()}


class DRTeacher:
    """The stored ensemble of reinforced shards, read sample by sample (:class:`ShardTeacher`'s interface).

    ``lookup(shard, key, k)`` gives augmentation ``k``'s crop box and the ensemble's embeddings, the
    ground-truth caption's, one synthetic caption (drawn per step) and its embeddings, the members' widths and
    scales. No teacher runs.
    """

    OPEN = 4

    def __init__(self, config: dict, dims: list[int] | None = None, seed: int = 0):
        self.transforms, self.dims, self._open = param_transforms(config), dims, {}
        self.k = int(config.get("num_samples", 0))
        self.rng = np.random.default_rng([seed, 97])

    @classmethod
    def open(cls, shards: list[Path], dims: str = "", seed: int = 0) -> "DRTeacher":
        config_path = shards[0].parent / CONFIG_NAME
        if not config_path.is_file():
            raise LabError(f"Reinforced shards need {CONFIG_NAME} beside them (looked for {config_path}); copy the "
                           f"reinforcement config used to make them there (ml-mobileclip: training/configs/*.json).")
        parsed = [int(d) for d in dims.split(",") if d.strip()] if dims else None
        return cls(json.loads(config_path.read_text()), parsed, seed)

    def _entry(self, shard: str) -> dict:
        if shard not in self._open:
            if len(self._open) >= self.OPEN:
                self._open.pop(next(iter(self._open)))
            table = {}
            for s in wds.tariterators.tarfile_samples([{"url": shard}]):
                if not all(m in s for m in MEMBERS):
                    raise LabError(f"Shard {shard} sample {s['__key__']} lacks DataCompDR's reinforcement members "
                                   f"({', '.join(MEMBERS)}); reinforce it with python -m lab cache-teacher --layout datacompdr.")
                arrays = np.load(io.BytesIO(s["npz"]))
                meta = json.loads(s["json"]) if "json" in s else {}
                table[s["__key__"]] = {"paug": json.loads(s["paug.json"])["param_aug"],
                                       "syn": json.loads(s["syn.json"]), "meta": meta,
                                       **{name: arrays[name] for name in arrays.files}}
            self._open[shard] = table
        return self._open[shard]

    def widths(self, meta: dict) -> list[int]:
        dims = self.dims or meta.get("teacher_dims")
        if not dims:
            raise LabError("The reinforced shards do not say the ensemble's widths; pass data.dr_teacher_dims "
                           "(DataCompDR-12M: 768,768).")
        return list(dims)

    def lookup(self, shard: str, key: str, k: int) -> dict:
        entry = self._entry(shard).get(key)
        if entry is None:
            raise LabError(f"Shard {shard} has no reinforcement for sample {key}; reinforce the shard again.")
        syn_keys = [name for name in entry["syn"] if name.startswith("syn_text")]
        syn_key = syn_keys[int(self.rng.integers(len(syn_keys)))]
        j = int(self.rng.integers(len(entry["syn"][syn_key])))
        syn_emb = entry.get(f"{syn_key}_emb")
        if syn_emb is None:  # older DataCompDR: text_emb holds the ground truth, then the synthetic captions
            syn_emb = entry["text_emb"][1:]
        dims = self.widths(entry["meta"])
        scales = entry["meta"].get("logit_scales") or [100.0] * len(dims)  # DataCompDR: --distill-logit-scale
        return {"crop": decompress(entry["paug"][k], self.transforms), "image": entry["image_emb"][k].astype(np.float32),
                "text": entry["text_emb"][0].astype(np.float32), "syn_text": syn_emb[j].astype(np.float32),
                "syn_caption": entry["syn"][syn_key][j], "dims": np.asarray(dims),
                "scale": np.float32(scales[0]), "scales": np.asarray(scales, dtype=np.float32)}


def split_blocks(x, dims) -> list:
    """Split concatenated ensemble embeddings (N, ΣD_m) into the members' blocks."""
    out, start = [], 0
    for d in dims:
        out.append(x[:, start:start + int(d)])
        start += int(d)
    if start != x.shape[1]:
        raise LabError(f"The stored embeddings are {x.shape[1]} wide but the teacher widths {list(dims)} add up to "
                       f"{start}; fix data.dr_teacher_dims.")
    return out
