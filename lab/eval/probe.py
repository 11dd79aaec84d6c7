"""The cheap evaluation a trainer runs every ``train.eval_every`` steps, and the student's geometry over training.

At each evaluation point the probe

* scores zero-shot top-1 / base / novel / HM on a small fixed test subset
  (``eval.probe_per_style`` items of each style, default 256) and logs them to
  ``metrics.jsonl`` as ``eval/top1``, ``eval/base``, ``eval/novel``, ``eval/hm``;
* stores the student's normalised image and caption embeddings of the first
  ``eval.snapshot_items`` plain-style items of that subset (default 256, float16) as one
  more frame of ``snapshots.npz`` in the run directory (rewritten atomically each time,
  so a reader never sees half a file); ``eval.snapshot_items=0`` stores none;
* given a reference teacher, logs the geometry metrics of those items against the teacher's
  embeddings of the same items (computed once) as ``eval/geometry/<metric>``.

Settings: ``train.eval_every=N`` turns it on (0 = off); ``eval.probe_per_style`` and
``eval.snapshot_items`` size it. The snapshot items are a prefix of the plain style of
the full evaluation set (same seed), so they are also the first items of ``embeddings.npz``.

``snapshots.npz`` holds ``steps`` (S,), ``student_image`` / ``student_text`` (S, N, D),
``teacher_image`` / ``teacher_text`` (N, D_t) when there is a teacher, ``labels``,
``captions``, ``classnames`` and ``factor_*`` of the N items.
"""

from __future__ import annotations

import io
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from lab import runs
from lab.runs import SNAPSHOTS
from lab.data.shapes import STYLES, label_space
from lab.eval.geometry import geometry_report
from lab.eval.suite import HEADLINE_STYLE, Embedded, EvalConfig, evaluation_set, score

HEADLINES = ("top1", "base", "novel", "hm")


class Probe:
    """Callable ``probe(step) -> {metric: value}`` for :meth:`lab.train.loop.Trainer.fit`'s ``every``."""

    def __init__(self, clip, cfg: EvalConfig, run_dir: str | Path | None = None, teacher=None):
        self.clip, self.cfg = clip, cfg
        self.path = Path(run_dir) / SNAPSHOTS if run_dir is not None and cfg.snapshot_items else None
        self.space = label_space(cfg.label_space)
        self.batch = evaluation_set(replace(cfg, per_style=min(cfg.probe_per_style, cfg.per_style)), clip.image_size)
        plain = np.flatnonzero(self.batch.factors["style"] == STYLES.index(HEADLINE_STYLE))
        self.items = plain[:cfg.snapshot_items]
        self.teacher = None
        if teacher is not None and len(self.items) > 1:
            t = Embedded.of(teacher, self.batch.subset(self.items), self.space.classnames, cfg.batch_size)
            self.teacher = {"image": t.image, "text": t.text}
        self.steps: list[int] = []
        self.frames: dict[str, list[np.ndarray]] = {"student_image": [], "student_text": []}

    def resume(self, step: int) -> None:
        """Keep the frames stored up to ``step`` (a run resumed from its checkpoint at ``step``)."""
        snaps = read_snapshots(self.path.parent) if self.path is not None else None
        if snaps is None:
            return
        keep = snaps["steps"] <= step
        self.steps = [int(s) for s in snaps["steps"][keep]]
        self.frames = {k: list(snaps[k][keep]) for k in self.frames}

    @torch.no_grad()
    def __call__(self, step: int) -> dict[str, float]:
        was_training = self.clip.model.training
        emb = Embedded.of(self.clip, self.batch, self.space.classnames, self.cfg.batch_size)
        self.clip.model.train(was_training)
        metrics = score(emb, self.batch, self.cfg.label_space)
        out = {f"eval/{k}": metrics[k] for k in HEADLINES}
        if len(self.items) > 1:
            image, text = emb.image[self.items], emb.text[self.items]
            if self.teacher is not None:
                geometry = geometry_report({"image": image, "text": text}, self.teacher, self.cfg.geometry_k)
                out.update({f"eval/geometry/{k}": v for k, v in geometry.items() if not k.startswith("teacher_")})
            if self.path is not None:
                self._store(step, image, text)
        return out

    def _store(self, step: int, image: torch.Tensor, text: torch.Tensor) -> None:
        if self.steps and self.steps[-1] == step:  # the same step evaluated twice (final step) keeps one frame
            self.steps.pop()
            for frames in self.frames.values():
                frames.pop()
        self.steps.append(step)
        self.frames["student_image"].append(image.half().numpy())
        self.frames["student_text"].append(text.half().numpy())
        items = self.batch.subset(self.items)
        arrays = {"steps": np.array(self.steps, dtype=np.int64),
                  **{k: np.stack(v) for k, v in self.frames.items()},
                  "labels": items.labels(self.space), "captions": np.array(items.descriptions()),
                  "classnames": np.array(self.space.classnames),
                  **{f"factor_{k}": v for k, v in items.factors.items()}}
        if self.teacher is not None:
            arrays.update({f"teacher_{k}": v.half().numpy() for k, v in self.teacher.items()})
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        runs.atomic_write_bytes(self.path, buffer.getvalue())


def read_snapshots(run_dir: str | Path) -> dict[str, np.ndarray] | None:
    """The run's stored frames (see the module docstring), or None when it stored none or the file is unreadable."""
    path = Path(run_dir) / SNAPSHOTS
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except Exception:  # a damaged file reads as "no snapshots"; the run's other files still show
        return None
    if "steps" not in arrays or "student_image" not in arrays or len(arrays["steps"]) != len(arrays["student_image"]):
        return None
    return arrays


def steps_to_reach(points: list[tuple[int, float]], target: float) -> int | None:
    """The first logged step whose probe value is at least ``target`` (None if the curve never gets there).

    TinyCLIP's speed-up read off two probe curves: a student that reaches the no-KD student's final HM at
    step ``a`` where another needs ``b`` trains ``b / a`` times faster to that accuracy (issue 33).
    """
    return next((step for step, value in sorted(points) if value >= target), None)
