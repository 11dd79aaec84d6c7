"""``python -m lab cache-teacher --layout datacompdr``: plain shards -> reinforced shards in DataCompDR's layout.

For every input shard ``NAME.tar`` it writes ``OUT/NAME.tar`` with each sample's image and caption plus the
reinforcement members of :mod:`lab.data.datacompdr`: K crops' parameters, the M-teacher ensemble's embeddings of
each crop (members' blocks concatenated), of the caption and of S synthetic captions (the ShapesWorld
captioner, :func:`lab.data.captioner.caption_from_caption`, standing in for CoCa), and ``OUT/reinforcement.json``.
Training from ``OUT`` (``distill --loss mobileclip data.source=OUT``) reads every teacher output from the shards.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import webdataset as wds

from lab.data import datacompdr as dr
from lab.data.captioner import caption_from_caption
from lab.data.shards import Augmentation, decode_crops, read_shard
from lab.errors import LabError
from lab.train.reinforced_cache import crops_per_image


@torch.no_grad()
def _embed(teachers, images: np.ndarray | None, texts: list[str] | None) -> np.ndarray:
    """The ensemble's normalised embeddings, members concatenated (float32 numpy)."""
    parts = []
    for t in teachers:
        if images is not None:
            parts.append(t.model.encode_image(t.image_tensor(images), normalize=True).float().cpu())
        else:
            parts.append(t.model.encode_text(t.tokenize(texts), normalize=True).float().cpu())
    return torch.cat(parts, dim=1).numpy()


def reinforce_shards(teachers, names: list[str], shards: list[Path], augmentation: Augmentation, image_size: int,
                     out: Path, synthetic: int = 1, drop: float = 0.2, wrong: float = 0.1, corrupt: str = "skip",
                     batch_size: int = 256, progress=lambda message: None) -> dict:
    """Write the reinforced copy of every shard into ``out``; returns counts."""
    k = crops_per_image(augmentation)
    if augmentation.kind != "crop":
        raise LabError("DataCompDR's layout stores augmentations: pass --augmentations K >= 1.")
    if synthetic < 1:
        raise LabError("DataCompDR's layout stores synthetic captions: pass --synthetic S >= 1.")
    out = Path(out)
    if any(s.resolve().parent == out.resolve() for s in shards):
        raise LabError(f"--out {out} holds the input shards; write the reinforced shards to another folder.")
    out.mkdir(parents=True, exist_ok=True)
    for t in teachers:
        t.model.eval()
    dims = [t.embed_dim for t in teachers]
    scales = [float(t.model.logit_scale.exp()) for t in teachers]
    stats = {"shards": 0, "samples": 0, "crops": 0, "problems": []}
    for shard in shards:
        target = out / shard.name
        tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
        samples = []  # one shard at a time: every crop and caption embedded in batches of ``batch_size``
        for raw in read_shard(shard, corrupt, stats["problems"]):
            boxes, crops = decode_crops(raw["image"], image_size, lambda w, h, key=raw["key"]: np.stack(
                [augmentation.params(key, i, w, h) for i in range(k)]))
            syn = [caption_from_caption(raw["caption"], f"{raw['key']}/{j}", augmentation.seed, drop, wrong)
                   for j in range(synthetic)]
            samples.append((raw, boxes, crops, syn))
        images = np.stack([c for _, _, crops, _ in samples for c in crops]) if samples else None
        texts = [t for raw, _, _, syn in samples for t in (raw["caption"], *syn)]
        image_emb = np.concatenate([_embed(teachers, images[i:i + batch_size], None)
                                    for i in range(0, len(samples) * k, batch_size)]) if samples else None
        text_emb = np.concatenate([_embed(teachers, None, texts[i:i + batch_size])
                                   for i in range(0, len(texts), batch_size)]) if samples else None
        writer = wds.TarWriter(str(tmp))
        for n, (raw, boxes, _, syn) in enumerate(samples):
            ext = raw["member"].rsplit(".", 1)[1]
            t = text_emb[n * (1 + synthetic):(n + 1) * (1 + synthetic)]
            writer.write({"__key__": raw["key"], ext: raw["image"], "txt": raw["caption"],
                          **dr.members(raw["key"], boxes, augmentation.flip, image_emb[n * k:(n + 1) * k], t[0], syn,
                                       t[1:], dims, scales)})
            stats["samples"] += 1
            stats["crops"] += k
        writer.close()
        os.replace(tmp, target)  # a killed run leaves no half-written shard
        stats["shards"] += 1
        progress(f"reinforced {shard} -> {target}")
    dr.write_config(out, names, k, dr.augmentation_config(augmentation.scale, augmentation.flip, image_size))
    return stats


def run(cfg, out: str, synthetic: int = 1, progress=print) -> dict:
    """The CLI's entry: ``cfg`` is a :class:`lab.train.reinforced_cache.CacheTeacherConfig` whose ``teacher``
    may name an ensemble (``shipped,runs/OTHER``)."""
    from lab.data.shards import CORRUPT_POLICIES, shard_paths
    from lab.models.zoo import load_teacher
    from lab.train.loop import resolve_device

    if not out:
        raise LabError("--layout datacompdr writes new shards: pass --out FOLDER.")
    if cfg.data.corrupt not in CORRUPT_POLICIES:
        raise LabError(f"Unknown data.corrupt '{cfg.data.corrupt}'; choose one of: {', '.join(CORRUPT_POLICIES)}.")
    shards = shard_paths(cfg.data.source)
    augmentation = Augmentation.from_config(cfg.data)
    crops_per_image(augmentation)
    names = [t.strip() for t in cfg.teacher.split(",") if t.strip()]
    device = str(resolve_device(cfg.device))
    teachers = [load_teacher(name, device) for name in names]
    return reinforce_shards(teachers, names, shards, augmentation, cfg.data.image_size, Path(out), synthetic,
                            corrupt=cfg.data.corrupt, batch_size=cfg.batch_size, progress=progress)
