"""A teacher cache that survives augmentation: K crops' teacher embeddings stored beside each shard.

MobileCLIP's *reinforced datasets* (Vasu et al., CVPR 2024, §3) store the teacher's embeddings of
several augmentations of every image next to the data, so distillation never runs the teacher.
``python -m lab cache-teacher --teacher T --data SHARDS --augmentations K`` writes, next to each
shard ``NAME.tar``, a file ``NAME.teacher-<key>.safetensors`` holding, for every sample (row order
= the ``keys`` in its metadata, webdataset's ``__key__``):

* ``image`` (N, K, D) float16 — the teacher's normalised embedding of each of the K crops;
* ``crop`` (N, K, 5) int32 — each crop's (top, left, height, width, flip) in the original image,
  so the student is given exactly the crop the teacher embedded;
* ``text`` (N, D) float16 — the caption's normalised embedding; ``scale`` — the teacher's logit scale.

``key`` digests the content: the teacher's weights, preprocessing and tokenizer
(:func:`lab.train.cache.model_inputs`), the shard's content (its members' names and sizes,
:func:`shard_digest` — not its path, so moved or copied shards find their cache) and the
augmentation settings — a changed teacher, shard or crop setting finds no file and is refused,
never served stale embeddings. Under torchrun rank r caches shards r, r+R, …; DataLoader workers
decode one shard each; a shard is written atomically when it is complete, so a killed run resumes
shard by shard. ``data.augment=none`` stores one embedding of the centre crop per image (K = 1).
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from lab.data.pairs import DataConfig
from lab.data.shards import Augmentation, as_is, decode_sample, decode_sample_crops, read_shard
from lab.errors import LabError
from lab.train import dist

SUFFIX = ".safetensors"
PROGRESS_EVERY_S = 10.0  # cache-teacher reports within a shard (a shard of 10k images is minutes of work)


def crops_per_image(augmentation: Augmentation) -> int:
    if augmentation.kind == "none":
        return 1
    if augmentation.count < 1:
        raise LabError("The augmentation cache needs data.augmentations=K >= 1 crops per image "
                       "(cache-teacher --augmentations K).")
    return augmentation.count


def teacher_side(teacher) -> dict:
    """The teacher's part of the key: weights, preprocessing and tokenizer (the fixed cache's own digest)."""
    from lab.train.cache import model_inputs

    return model_inputs(teacher)


def shard_digest(shard: Path) -> str:
    """The shard's content, cheaply: a digest of its members' names and sizes (the tar headers only, no data read).

    Not its path or modification time, so a moved or copied shard (``cp -a``, ``rsync``, another mount)
    finds its cache; a shard whose members change gets a new digest. A file tarfile cannot list is
    digested by its size and first MiB (it is refused later, when read)."""
    h = hashlib.sha256()
    try:
        with tarfile.open(shard, mode="r:") as tar:
            for member in tar:
                h.update(f"{member.name}\0{member.size}\n".encode())
    except (tarfile.TarError, OSError):
        with open(shard, "rb") as f:
            h.update(str(shard.stat().st_size).encode() + f.read(1 << 20))
    return h.hexdigest()


def shard_key(teacher_inputs: dict, shard: Path, augmentation: Augmentation, image_size: int) -> str:
    """Teacher (weights, preprocessing, tokenizer) + preprocessing size + augmentation + the shard's content."""
    payload = {"teacher": teacher_inputs, "augmentation": augmentation.describe(), "image_size": image_size,
               "shard": shard_digest(shard)}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def other_caches(shard: Path) -> list[str]:
    """The complete caches beside a shard made for other settings, each in words (for a refusal)."""
    found = []
    for path in sorted(shard.parent.glob(f"{shard.stem}.teacher-*{SUFFIX}")):
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
        except Exception:  # damaged: not worth naming
            continue
        if meta.get("complete") != "1":
            continue
        aug = json.loads(meta.get("augmentation", "{}"))
        found.append(f"{path.name} (data.augment={aug.get('kind')} data.augmentations={aug.get('count')} "
                     f"data.image_size={meta.get('image_size')} crop_scale={','.join(map(str, aug.get('scale', [])))} "
                     f"flip={str(aug.get('flip')).lower()}{', teacher ' + meta['teacher'] if meta.get('teacher') else ''})")
    return found


def cache_path(shard: Path, key: str) -> Path:
    return shard.with_name(f"{shard.stem}.teacher-{key}{SUFFIX}")


def is_complete(path: Path) -> bool:
    try:
        with safe_open(str(path), framework="pt") as f:
            return (f.metadata() or {}).get("complete") == "1"
    except Exception:  # missing or damaged: rebuilt
        return False


class ShardTeacher:
    """Reads the cached teacher embeddings of each shard's samples (one shard's file held at a time)."""

    OPEN = 4  # shards held at once: a shuffle buffer mixes the end of one shard with the start of the next

    def __init__(self, files: dict[str, Path]):
        self.files, self._open = files, {}

    @classmethod
    def open(cls, teacher, shards: list[Path], augmentation: Augmentation, image_size: int) -> "ShardTeacher":
        """The cache of every shard for this teacher and these settings; a missing one is one sentence."""
        crops_per_image(augmentation)
        inputs = teacher_side(teacher)
        files = {}
        for shard in shards:
            path = cache_path(shard, shard_key(inputs, shard, augmentation, image_size))
            if not is_complete(path):
                others = other_caches(shard)
                there = f"; it has one for other settings: {'; '.join(others)} — pass those settings or" if others else ""
                raise LabError(f"Shard {shard} has no teacher cache for this teacher and these settings "
                               f"(looked for {path.name}){there}; run `python -m lab cache-teacher --teacher ... --data ... "
                               f"--augmentations {augmentation.count}` with the same data.* settings first, "
                               f"or use teacher_mode=online.")
            files[str(shard)] = path
        return cls(files)

    @classmethod
    def open_or_none(cls, teacher, shards: list[Path], augmentation: Augmentation,
                     image_size: int) -> "ShardTeacher | None":
        """:meth:`open`, or None when no shard has a teacher cache of any teacher or settings beside it (plain
        shards, as open_clip users bring them: the caller runs the teacher online); caches for other settings,
        or beside some shards only, are still the sentence of :meth:`open` (cache-teacher was likely forgotten)."""
        if not any(any(s.parent.glob(f"{glob.escape(s.stem)}.teacher-*{SUFFIX}")) for s in shards):
            return None
        return cls.open(teacher, shards, augmentation, image_size)

    def _entry(self, shard: str) -> tuple[dict, dict]:
        if shard not in self._open:
            if len(self._open) >= self.OPEN:
                self._open.pop(next(iter(self._open)))
            entry = load_file(str(self.files[shard]))
            with safe_open(str(self.files[shard]), framework="pt") as f:
                keys = json.loads(f.metadata()["keys"])
            self._open[shard] = ({k: i for i, k in enumerate(keys)},
                                 {"image": entry["image"].float().numpy(), "text": entry["text"].float().numpy(),
                                  "crop": entry["crop"].numpy(), "scale": float(entry["scale"][0])})
        return self._open[shard]

    def lookup(self, shard: str, key: str, k: int) -> dict:
        """Sample ``key``'s crop ``k``: its box, the teacher's image embedding of it, the caption's, the scale."""
        rows, t = self._entry(shard)
        row = rows.get(key)
        if row is None:
            raise LabError(f"The teacher cache of shard {shard} has no sample {key}; the shard changed after "
                           f"cache-teacher ran — run it again.")
        return {"crop": t["crop"][row, k], "image": t["image"][row, k], "text": t["text"][row],
                "scale": np.float32(t["scale"])}


class ShardCrops(IterableDataset):
    """The K crops of every sample of the shards to cache, in chunks; worker w decodes shards w, w+W, …"""

    def __init__(self, shards: list[Path], augmentation: Augmentation, image_size: int, corrupt: str, chunk: int):
        self.shards, self.augmentation, self.image_size = shards, augmentation, image_size
        self.corrupt, self.chunk, self.k = corrupt, chunk, crops_per_image(augmentation)

    def __iter__(self):
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        for shard in self.shards[worker::workers]:
            problems: list[str] = []
            keys, captions, crops, images = [], [], [], []
            for raw in read_shard(shard, self.corrupt, problems):
                sample_crops, sample_images = self._crops(raw, problems)
                if sample_images is None:
                    continue
                keys.append(raw["key"])
                captions.append(raw["caption"])
                crops.append(sample_crops)
                images += sample_images
                if len(keys) == self.chunk:
                    yield self._item(shard, keys, captions, crops, images, problems, last=False)
                    keys, captions, crops, images, problems = [], [], [], [], []
            yield self._item(shard, keys, captions, crops, images, problems, last=True)

    def _crops(self, raw: dict, problems: list[str]):
        if self.augmentation.kind == "none":
            image = decode_sample(raw, self.image_size, None, self.corrupt, problems)
            return (np.zeros((1, 5), np.int32), None if image is None else [image])
        def boxes(width: int, height: int) -> np.ndarray:
            return np.stack([self.augmentation.params(raw["key"], k, width, height) for k in range(self.k)])

        decoded = decode_sample_crops(raw, self.image_size, boxes, self.corrupt, problems)  # one decode, K crops
        return (None, None) if decoded is None else decoded

    def _item(self, shard, keys, captions, crops, images, problems, last):
        n = len(keys)
        return {"shard": str(shard), "keys": keys, "captions": captions, "last": last, "problems": problems,
                "crops": np.stack(crops) if n else np.zeros((0, self.k, 5), np.int32),
                "images": np.stack(images) if n else np.zeros((0, self.image_size, self.image_size, 3), np.uint8)}


@torch.no_grad()
def embed_chunk(teacher, images: np.ndarray, captions: list[str], batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The teacher's normalised float16 embeddings of crops and captions, ``batch_size`` crops per forward."""
    image_parts = [teacher.model.encode_image(teacher.image_tensor(images[i:i + batch_size]), normalize=True)
                   for i in range(0, len(images), batch_size)]
    text_parts = [teacher.model.encode_text(teacher.tokenize(captions[i:i + batch_size]), normalize=True)
                  for i in range(0, len(captions), batch_size)]
    cat = lambda parts: torch.cat(parts).half().cpu() if parts else torch.zeros(0, teacher.embed_dim).half()  # noqa: E731
    return cat(image_parts), cat(text_parts)


def cache_teacher(teacher, shards: list[Path], augmentation: Augmentation, image_size: int, batch_size: int = 256,
                  workers: int = 0, corrupt: str = "skip", ctx: dist.Context = dist.SINGLE,
                  progress=lambda message: None) -> dict:
    """Write the missing cache files of this rank's shards; returns counts and throughput (crops/s)."""
    teacher.model.eval()
    k = crops_per_image(augmentation)
    inputs = teacher_side(teacher)
    mine = shards[ctx.rank::ctx.world_size]
    targets = {str(s): cache_path(s, shard_key(inputs, s, augmentation, image_size)) for s in mine}
    todo = [s for s in mine if not is_complete(targets[str(s)])]
    progress(f"cache-teacher: {len(mine) - len(todo)} of {len(mine)} shards already cached, {len(todo)} to do")
    stats = {"shards": len(todo), "cached_before": len(mine) - len(todo), "samples": 0, "crops": 0,
             "problems": [], "seconds": 0.0, "forward_seconds": 0.0}
    if not todo:
        return stats
    chunk = max(1, batch_size // k)
    loader = DataLoader(ShardCrops(todo, augmentation, image_size, corrupt, chunk), batch_size=None,
                        num_workers=min(workers, len(todo)), collate_fn=as_is)
    pending: dict[str, dict[str, list]] = {}
    scale = teacher.model.logit_scale.exp().detach().float().cpu().reshape(1)
    started = said = time.perf_counter()
    for item in loader:
        t0 = time.perf_counter()
        image, text = embed_chunk(teacher, item["images"], item["captions"], batch_size)
        stats["forward_seconds"] += time.perf_counter() - t0
        part = pending.setdefault(item["shard"], {"keys": [], "image": [], "text": [], "crop": []})
        part["keys"] += item["keys"]
        part["image"].append(image.reshape(len(item["keys"]), k, teacher.embed_dim))
        part["text"].append(text)
        part["crop"].append(torch.from_numpy(item["crops"]))
        stats["problems"] += item["problems"]
        stats["samples"] += len(item["keys"])
        stats["crops"] += len(item["images"])
        if item["last"]:
            _write(targets[item["shard"]], pending.pop(item["shard"]), scale, augmentation, image_size, item["shard"])
            progress(f"cached {item['shard']}")
        elif time.perf_counter() - said >= PROGRESS_EVERY_S:  # per batch, at most one line every few seconds
            said = time.perf_counter()
            progress(f"caching {item['shard']}: {stats['samples']} samples, {stats['crops']} crops so far "
                     f"({stats['crops'] / max(time.perf_counter() - started, 1e-9):.1f} crops/s)")
    stats["seconds"] = time.perf_counter() - started
    stats["crops_per_s"] = stats["crops"] / max(stats["seconds"], 1e-9)
    return stats


def _write(path: Path, part: dict, scale: torch.Tensor, augmentation: Augmentation, image_size: int, shard: str):
    tensors = {"image": torch.cat(part["image"]).contiguous(), "text": torch.cat(part["text"]).contiguous(),
               "crop": torch.cat(part["crop"]).to(torch.int32).contiguous(), "scale": scale}
    metadata = {"keys": json.dumps(part["keys"]), "shard": Path(shard).name, "image_size": str(image_size),
                "augmentation": json.dumps(augmentation.describe()), "complete": "1"}
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    os.replace(tmp, path)  # atomic: a killed run leaves the shard uncached, never half-cached


@dataclass
class CacheTeacherConfig:
    """``python -m lab cache-teacher``: which teacher, which shards and crops, how many crops per forward."""

    teacher: str = "shipped"
    data: DataConfig = field(default_factory=DataConfig)
    batch_size: int = 256  # crops per teacher forward
    device: str = "auto"
    threads: int = 0


def run(cfg: CacheTeacherConfig, progress=print) -> dict:
    """Cache every shard's teacher embeddings (this rank's shards under torchrun); returns the counts."""
    from lab.data.shards import CORRUPT_POLICIES, shard_paths
    from lab.models.zoo import load_teacher
    from lab.train.loop import resolve_device

    if cfg.data.corrupt not in CORRUPT_POLICIES:
        raise LabError(f"Unknown data.corrupt '{cfg.data.corrupt}'; choose one of: {', '.join(CORRUPT_POLICIES)}.")
    if cfg.batch_size < 1:
        raise LabError("batch_size must be at least 1 crop per forward.")
    shards = shard_paths(cfg.data.source)
    augmentation = Augmentation.from_config(cfg.data)
    crops_per_image(augmentation)  # K >= 1, before the teacher is loaded
    device = resolve_device(cfg.device, key="device")
    ctx = dist.init(device)
    device = dist.local_device(device, ctx)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    teacher = load_teacher(cfg.teacher, str(device))
    say = progress if ctx.is_main else (lambda message: None)
    stats = cache_teacher(teacher, shards, augmentation, cfg.data.image_size, cfg.batch_size, cfg.data.workers,
                          cfg.data.corrupt, ctx, say)
    if ctx.enabled:  # every rank's counts, over the slowest rank's time
        parts = [None] * ctx.world_size
        torch.distributed.all_gather_object(parts, stats)
        for key in ("shards", "cached_before", "samples", "crops", "problems"):
            stats[key] = sum((part[key] for part in parts), [] if key == "problems" else 0)
        stats["seconds"] = max(part["seconds"] for part in parts)
        stats["crops_per_s"] = stats["crops"] / max(stats["seconds"], 1e-9)
    return stats
