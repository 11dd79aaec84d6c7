"""``python -m lab bench --shards``: the real-scale path's costs, measured side by side in one process.

1. **Augmented training** — one training step on open_clip-style crops from webdataset shards,
   with the teacher's embeddings of each crop read from the augmentation cache
   (:mod:`lab.train.reinforced_cache`) and with a live teacher forward, against the no-KD step
   on the same crops (interleaved rounds, medians; the ratio is what matters).
2. **cache-teacher throughput** — crops per second of the whole ``cache-teacher`` pipeline
   (read shards, decode, K crops, teacher forward, float16 files) against the teacher's bare
   forward on the same number of already-preprocessed crops and captions: the data path is not
   the bottleneck when the ratio is near 1 (target ≥ 0.9). Measured for ``--teacher`` and for the
   ``--cache-teachers`` (default open_clip's ViT-B-32 at 224 px, randomly initialised: a teacher of
   real size, whose forward costs what a trained one's does).

Tiny ShapesWorld shards are written to a temporary folder at the models' input size.
"""

from __future__ import annotations

import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lab.bench.step import StepCost, _median_step_times, budget_of
from lab.data.shards import Augmentation, ShardStream, shapes_shards, shard_paths
from lab.data.shapes import Batch, label_space
from lab.losses.objective import Objective
from lab.models import zoo
from lab.models.zoo import load_teacher
from lab.train.distill import DistillStep
from lab.train.loop import resolve_device, timed
from lab.train.reinforced_cache import ShardTeacher, cache_teacher, embed_chunk

THROUGHPUT_TARGET = 0.9


def _shards(folder: Path, count: int, per_shard: int, image_size: int) -> list[Path]:
    shapes_shards(folder, count, per_shard, image_size=image_size, ext="jpg")
    return shard_paths(str(folder))


def augmented_step_costs(loss: str = "clipkd", batch_size: int = 128, rounds: int = 5, steps: int = 3,
                         device: str = "auto", student: str = "shapes-student", teacher: str = "shipped",
                         crops: int = 4, progress=print) -> StepCost:
    """Step time with crops: cached teacher vs online teacher vs no KD (ratios to the no-KD step)."""
    dev = resolve_device(device)
    teacher_model, student_model = load_teacher(teacher, str(dev)), zoo.load(student, device=str(dev))
    student_model.model.train()
    size = student_model.image_size
    augmentation = Augmentation("crop", count=crops)
    with tempfile.TemporaryDirectory(prefix="lab-bench-shards-") as tmp:
        paths = _shards(Path(tmp), 2 * batch_size, batch_size, round(size * 1.25))
        cache_teacher(teacher_model, paths, augmentation, size)
        stream = ShardStream(paths, size, augmentation, shuffle_buffer=1,
                             teacher=ShardTeacher.open(teacher_model, paths, augmentation, size))
        cached_batches = list(stream.loader(batch_size, 2))
    online_batches = [Batch(b.images, b.captions, {"key": b.factors["key"]}) for b in cached_batches]
    name = f"{loss}, {crops} crops"
    objective = Objective(loss, student_model.embed_dim, teacher_model.embed_dim).to(dev)
    nokd = Objective("", student_model.embed_dim, teacher_model.embed_dim).to(dev)
    classnames = label_space("colour_shape").classnames
    optimizer = torch.optim.AdamW(list(student_model.model.parameters()) + list(objective.parameters()), lr=1e-5)
    steps_of = {mode: DistillStep(student_model, teacher_model, obj, None, classnames=classnames)
                for mode, obj in (("nokd", nokd), ("cache", objective), ("online", objective))}
    batches_of = {"nokd": online_batches, "cache": cached_batches, "online": online_batches}
    configs = {mode: (_with_batches(step, batches_of[mode]), optimizer) for mode, step in steps_of.items()}
    index = list(range(len(cached_batches)))
    median, peak = _median_step_times(configs, index, rounds, steps, dev, "fp32", progress)
    return StepCost(name, median["cache"], median["online"], median["nokd"], budget_of(loss), batch_size,
                    peak["cache"])


def _with_batches(step, batches: list):
    """A step function of a batch index (the bench alternates indices; each mode has its own batches)."""
    return lambda i: step(batches[i])


@dataclass
class Throughput:
    teacher: str
    image_size: int
    crops: int
    pipeline_crops_per_s: float  # steady state: from the first shard read to the last file written
    forward_crops_per_s: float
    setup_s: float  # once per invocation, before any shard is read: the teacher's content key

    @property
    def ratio(self) -> float:
        return self.pipeline_crops_per_s / self.forward_crops_per_s

    def as_dict(self) -> dict:
        return {"teacher": self.teacher, "image_size": self.image_size, "crops": self.crops,
                "pipeline_crops_per_s": self.pipeline_crops_per_s, "forward_crops_per_s": self.forward_crops_per_s,
                "setup_s": self.setup_s, "ratio": self.ratio, "target": THROUGHPUT_TARGET}


def cache_teacher_throughput(teacher: str = "shipped", images: int = 0, per_shard: int = 0, crops: int = 4,
                             batch_size: int = 0, workers: int | None = None, rounds: int = 3, device: str = "auto",
                             image_size: int = 0, progress=print) -> Throughput:
    """Crops/s of the whole cache-teacher pipeline vs the teacher's bare forward, interleaved rounds, medians.

    The pipeline's rate is its steady state (reading, decoding, cropping, the forward, writing); the
    one-time setup of an invocation — digesting the teacher's weights for the cache key, about 0.5 s for
    ViT-B-32 — is reported beside it, as it is paid once per dataset, not per shard.

    ``images``, ``per_shard`` and ``batch_size`` (crops per forward) default to 512, 128 and 256 for a
    ShapesWorld-size teacher and to 32, 16 and 64 for one of real size (≥ 128 px), whose forward is slow.
    ``workers`` (DataLoader workers decoding the shards) defaults to 2 on a GPU and to 0 on a CPU, where
    the decoding shares the cores with the forward and worker processes only add their overhead
    (the shipped teacher on 2 cores, 2026-12-03: 3,663 crops/s with 0 workers, 2,244 with 2).
    """
    dev = resolve_device(device)
    workers = (0 if dev.type == "cpu" else 2) if workers is None else workers
    model = load_teacher(teacher, str(dev))
    size = image_size or model.image_size
    small = size < 128
    images, per_shard = images or (512 if small else 32), per_shard or (128 if small else 16)
    batch_size = batch_size or (256 if small else 64)
    augmentation = Augmentation("crop", count=crops)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(prefix="lab-bench-cache-") as tmp:
        paths = _shards(Path(tmp), images, per_shard, round(size * 1.25))
        pixels = rng.integers(0, 256, (images * crops, size, size, 3), dtype=np.uint8)
        captions = [f"a photo of item {i}" for i in range(images)]
        pipeline, forward, setup = [], [], []
        for r in range(rounds + 1):  # round 0 warms both up
            for p in paths:
                for f in p.parent.glob(f"{p.stem}.teacher-*"):
                    f.unlink()
            stats = {}
            t = timed(lambda: stats.update(cache_teacher(model, paths, augmentation, size, batch_size, workers)), dev)
            chunk = batch_size // crops
            f = timed(lambda: [embed_chunk(model, pixels[i * crops:(i + chunk) * crops], captions[i:i + chunk],
                                           batch_size) for i in range(0, images, chunk)], dev)
            if r:
                pipeline.append(images * crops / stats["seconds"])
                setup.append(t - stats["seconds"])
                forward.append(images * crops / f)
                progress(f"round {r}/{rounds}: pipeline {pipeline[-1]:.0f} crops/s, bare forward {forward[-1]:.0f}")
    return Throughput(teacher, size, images * crops, statistics.median(pipeline), statistics.median(forward),
                      statistics.median(setup))


def cache_teacher_throughputs(teachers: list[str], rounds: int = 3, device: str = "auto",
                              progress=print) -> list[Throughput]:
    """:func:`cache_teacher_throughput` of each teacher (its default number of images), in turn."""
    out = []
    for teacher in teachers:
        progress(f"cache-teacher throughput of {teacher}")
        out.append(cache_teacher_throughput(teacher, rounds=rounds, device=device, progress=progress))
    return out


def format_shard_bench(step: StepCost, throughputs: list[Throughput], device: str) -> str:
    lines = [
        f"Augmented training on shards ({step.name}), batch {step.batch_size}, {device} "
        f"(medians of interleaved rounds; ratio = step / no-KD step on the same crops)",
        f"{'teacher':<22}{'step ms':>10}{'ratio':>8}",
        f"{'no KD':<22}{step.nokd_s * 1e3:>10.1f}{1.0:>8.2f}",
        f"{'cached (K crops)':<22}{step.cached_s * 1e3:>10.1f}{step.cached_ratio:>8.2f}",
        f"{'online':<22}{step.online_s * 1e3:>10.1f}{step.online_ratio:>8.2f}",
        "",
        f"cache-teacher: crops/s of the whole pipeline (read, decode, K crops, forward, write; steady state) vs the "
        f"teacher's bare forward on as many preprocessed crops (target ratio >= {THROUGHPUT_TARGET}); setup: once "
        f"per invocation (the teacher's content key)",
        f"{'teacher':<22}{'px':>5}{'crops':>7}{'pipeline':>10}{'forward':>10}{'ratio':>7}{'setup s':>9}",
    ]
    for t in throughputs:
        verdict = "ok" if t.ratio >= THROUGHPUT_TARGET else "BELOW"
        lines.append(f"{t.teacher:<22}{t.image_size:>5}{t.crops:>7}{t.pipeline_crops_per_s:>10.1f}"
                     f"{t.forward_crops_per_s:>10.1f}{t.ratio:>7.2f}{t.setup_s:>9.2f}  {verdict}")
    return "\n".join(lines)
