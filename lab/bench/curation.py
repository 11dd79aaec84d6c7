"""``python -m lab bench --curation``: what ACID's scoring forwards cost beside a plain step (paper-level ACID).

ACID (lab.data.curation) scores a super-batch of ⌈B / (1 − f)⌉ pairs (5× at f = 0.8) with the student and the
teacher, without gradients, before the training step on the B it chooses. This times, side by side and
interleaved round by round (median per configuration), one training step of: the no-KD student, KD alone
(``crd``), ACID alone (task loss on the chosen sub-batch) and ACED (ACID + ``crd``), with the teacher's
embeddings cached and live. Every configuration is handed the same super-batch; those without curation
train on its first B pairs. What the extra cost buys is the ``curation`` grid's rows (docs/methods-modern2.md).
"""

from __future__ import annotations

import numpy as np
import torch

from lab.data.curation import super_batch_size
from lab.data.pairs import DataConfig, build_pairs, in_order
from lab.losses.objective import Objective
from lab.models import zoo
from lab.train.cache import teacher_embeddings
from lab.train.distill import Curator, DistillStep
from lab.train.loop import resolve_device

CONFIGS = (("no KD", "", False), ("KD alone (crd)", "crd", False), ("ACID alone", "", True),
           ("ACED (ACID + crd)", "crd", True))


class _First:
    """A step on the first ``n`` pairs of the super-batch (the configurations without curation)."""

    def __init__(self, step, n):
        self.step, self.n = step, n

    def __call__(self, batch):
        return self.step(batch.subset(np.arange(self.n)))


def curation_costs(batch_size: int = 64, filter_ratio: float = 0.8, chunks: int = 16, rounds: int = 5,
                   steps: int = 3, device: str = "auto", progress=print) -> dict[tuple[str, str], float]:
    """Median seconds per training step of each (configuration, teacher mode)."""
    from lab.bench.step import _median_step_times

    dev = resolve_device(device)
    n = super_batch_size(batch_size, filter_ratio)
    teacher, student = zoo.load_teacher("shipped", str(dev)), zoo.load("shapes-student", device=str(dev))
    student.model.train()
    dataset = build_pairs(DataConfig(size=n * 2, image_size=student.image_size))
    cached = {k: v.to(dev) for k, v in teacher_embeddings(teacher, dataset).items()}
    batches = list(in_order(dataset, n))
    configs = {}
    for label, loss, curate in CONFIGS:
        objective = Objective(loss, student.embed_dim, teacher.embed_dim).to(dev)
        optimizer = torch.optim.AdamW(list(student.model.parameters()) + list(objective.parameters()), lr=1e-5)
        for mode in ("cache", "online"):
            if not (loss or curate) and mode == "online":
                continue  # the no-KD step never reads the teacher
            step = DistillStep(student, teacher, objective, cached if mode == "cache" else None)
            if curate:
                step.curator = Curator(step, batch_size, chunks, seed=0)
                configs[label, mode] = (step, optimizer)
            else:
                configs[label, mode] = (_First(step, batch_size), optimizer)
    median, _ = _median_step_times(configs, batches, rounds, steps, dev, "fp32", progress)
    return median


def format_curation(median: dict, batch_size: int, filter_ratio: float, device: str) -> str:
    nokd = median["no KD", "cache"]
    n = super_batch_size(batch_size, filter_ratio)
    lines = [f"ACID's scoring cost (paper-level ACID): batch {batch_size}, super-batch {n} (filter {filter_ratio}), "
             f"{device}; ratio to the no-KD step (median of interleaved rounds)",
             f"{'configuration':<22} {'cached teacher':>15} {'live teacher':>13}"]
    for label, loss, curate in CONFIGS:
        cached = median.get((label, "cache"))
        online = median.get((label, "online"))
        live = f"{online / nokd:>12.2f}×" if online else f"{'—':>13}"  # no KD never reads the teacher
        lines.append(f"{label:<22} {cached / nokd:>14.2f}× {live}")
    lines.append("What it buys: the `curation` grid (python -m lab sweep --grid curation --seeds 3) — ACID/ACED "
                 "against KD alone at the same student steps.")
    return "\n".join(lines)
