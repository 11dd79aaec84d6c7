"""The evaluation suite run at the end of every ShapesWorld run (and by ``python -m lab eval``).

On a fixed held-out test set (``per_style`` images of each style domain, test split):
zero-shot top-1 / base / novel / HM per style with the prompt ensemble; retrieval
R@1/5/10 both ways on the plain style (a hit is any item with the identical
canonical caption); and, given a reference teacher, the geometry metrics. It also
returns the embeddings that ``embeddings.npz`` stores for the dashboard.

With ``eval.val_per_style`` > 0 the student is also scored on a validation set of that many
images per style — the ShapesWorld "val" split, a seed stream disjoint from the test split's but
drawn from the same distribution — into ``val/...`` keys of ``summary.json``. Selections (the
weights ``python -m lab tune`` picks) read only ``val/...``; the test keys are only reported.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F

from lab.data.shapes import PROMPT_TEMPLATES, STYLES, Batch, ShapesWorld, StreamSpec, label_space
from lab.eval.geometry import geometry_report
from lab.eval.retrieval import retrieval_recall
from lab.eval.zeroshot import class_embeddings, zeroshot_scores

HEADLINE_STYLE = "plain"


@dataclass
class EvalConfig:
    """The held-out evaluation: ``per_style`` test images of each style, drawn with ``seed``."""

    seed: int = 1234
    per_style: int = 1280
    label_space: str = "colour_shape"
    batch_size: int = 512
    geometry_k: int = 10
    probe_per_style: int = 256  # every train.eval_every steps: a small subset scored (lab.eval.probe)
    snapshot_items: int = 256  # ... and this many plain items' embeddings stored in snapshots.npz
    benchmarks: str = ""  # real data, after training: specs joined by ';' (lab.eval.benchmarks), into summary.json
    classnames: str = ""  # real data: a file of class names, one a line (Hinton KD's classes; classify:FOLDER's names)
    val_per_style: int = 0  # > 0: also score this many validation-split images per style, into val/... keys


def evaluation_set(cfg: EvalConfig, image_size: int = 32, split: str = "test") -> Batch:
    """The fixed test set (or, with ``split="val"``, validation set): the same images for every run with the same config."""
    world = ShapesWorld(image_size)
    return Batch.concat([world.sample(StreamSpec(seed=cfg.seed, split=split, styles=(style,)), 0, cfg.per_style)
                         for style in STYLES])


def validation_set(cfg: EvalConfig, image_size: int = 32) -> Batch:
    """``val_per_style`` images of each style from the "val" split: disjoint from the test set, same distribution."""
    return evaluation_set(replace(cfg, per_style=cfg.val_per_style), image_size, split="val")


@torch.no_grad()
def encode_images(clip, images: np.ndarray, batch_size: int = 512, normalize: bool = True) -> torch.Tensor:
    clip.model.eval()
    feats = torch.cat([clip.model.encode_image(clip.image_tensor(images[i:i + batch_size])).float().cpu()
                       for i in range(0, len(images), batch_size)])
    return F.normalize(feats, dim=-1) if normalize else feats


@torch.no_grad()
def encode_texts(clip, texts: list[str], batch_size: int = 512, normalize: bool = True) -> torch.Tensor:
    clip.model.eval()
    feats = torch.cat([clip.model.encode_text(clip.tokenize(texts[i:i + batch_size])).float().cpu()
                       for i in range(0, len(texts), batch_size)])
    return F.normalize(feats, dim=-1) if normalize else feats


@dataclass
class Embedded:
    """A model's embeddings of the evaluation set: raw, and normalised via the properties."""

    image_raw: torch.Tensor
    text_raw: torch.Tensor  # of the canonical captions
    classes: torch.Tensor  # zero-shot class weights, normalised

    @property
    def image(self) -> torch.Tensor:
        return F.normalize(self.image_raw, dim=-1)

    @property
    def text(self) -> torch.Tensor:
        return F.normalize(self.text_raw, dim=-1)

    @classmethod
    def of(cls, clip, batch: Batch, classnames, batch_size: int = 512) -> "Embedded":
        return cls(encode_images(clip, batch.images, batch_size, normalize=False),
                   encode_texts(clip, batch.descriptions(), batch_size, normalize=False),
                   class_embeddings(lambda t: encode_texts(clip, t, batch_size), classnames, PROMPT_TEMPLATES))


def score(emb: Embedded, batch: Batch, space_name: str = "colour_shape") -> dict[str, float]:
    """Zero-shot per style and retrieval on the headline style, as a flat dict of metrics."""
    space = label_space(space_name)
    labels = torch.as_tensor(batch.labels(space))
    styles = batch.factors["style"]
    out = {}
    for s, style in enumerate(STYLES):
        keep = torch.as_tensor(styles == s)
        if not keep.any():
            continue
        scores = zeroshot_scores(emb.image[keep], emb.classes, labels[keep], space.base_ids, space.novel_ids)
        out.update({f"zeroshot/{style}/{k}": v for k, v in scores.items()})
    keep = np.flatnonzero(styles == STYLES.index(HEADLINE_STYLE))
    captions = np.array(batch.descriptions(), dtype=object)[keep]
    rec = retrieval_recall(emb.image[keep], emb.text[keep], captions, captions)
    out.update({f"retrieval/{k}": v for k, v in rec.items()})
    # Headline numbers: the plain style, all colour-shape classes.
    for k in ("top1", "base", "novel", "hm"):
        out[k] = out[f"zeroshot/{HEADLINE_STYLE}/{k}"]
    return out


def evaluate(clip, cfg: EvalConfig | None = None, teacher=None, batch: Batch | None = None,
             teacher_embedded: Embedded | None = None, projection=None):
    """Score ``clip`` (and geometry against ``teacher`` if given).

    Returns ``(metrics, arrays)``: a flat dict for ``summary.json`` and the arrays
    for ``embeddings.npz``. ``projection`` (a distillation objective's heads) maps the
    student to the teacher's width for the teacher–student cosine.
    """
    cfg = cfg or EvalConfig()
    batch = batch if batch is not None else evaluation_set(cfg, clip.image_size)
    space = label_space(cfg.label_space)
    student = Embedded.of(clip, batch, space.classnames, cfg.batch_size)
    metrics = score(student, batch, cfg.label_space)
    if cfg.val_per_style > 0:  # the validation split, for selection only (lab.experiments.tune)
        val = validation_set(cfg, clip.image_size)
        val_scores = score(Embedded.of(clip, val, space.classnames, cfg.batch_size), val, cfg.label_space)
        metrics.update({f"val/{k}": v for k, v in val_scores.items()})
    arrays = {
        "student_image": student.image.half().numpy(), "student_text": student.text.half().numpy(),
        "student_classes": student.classes.half().numpy(),
        "labels": batch.labels(space), "captions": np.array(batch.descriptions()),
        "classnames": np.array(space.classnames), "base_ids": np.array(space.base_ids),
        **{f"factor_{k}": v for k, v in batch.factors.items()},
    }
    if teacher is not None or teacher_embedded is not None:
        t = teacher_embedded or Embedded.of(teacher, batch, space.classnames, cfg.batch_size)
        projected = None
        if projection is not None:
            with torch.no_grad():
                device = next(projection.parameters(), torch.empty(0)).device
                pv, pt = projection(student.image_raw.to(device), student.text_raw.to(device))
            projected = {"image": pv.cpu(), "text": pt.cpu()}
        geometry = geometry_report({"image": student.image, "text": student.text},
                                   {"image": t.image, "text": t.text}, cfg.geometry_k, projected)
        metrics.update({f"geometry/{k}": v for k, v in geometry.items()})
        teacher_scores = score(t, batch, cfg.label_space)
        metrics.update({f"teacher/{k}": teacher_scores[k] for k in ("top1", "base", "novel", "hm")})
        arrays.update({"teacher_image": t.image.half().numpy(), "teacher_text": t.text.half().numpy(),
                       "teacher_classes": t.classes.half().numpy()})
    return metrics, arrays
