"""``python -m lab bench --scaling``: how the loss terms' cost grows with batch size and width, and data speed.

The relational terms build N×N similarity matrices (GD several), so their cost grows with
the square of the batch while the student's forward grows linearly. This times each term's
forward and backward alone, on random unit embeddings of batch N and width D (student and
teacher of the same width), against the task (CLIP) loss of the same shapes, so the ratio
says what the term adds at that scale. The data-generation rate is ShapesWorld's renderer.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lab.data.shapes import ShapesWorld, StreamSpec
from lab.losses.objective import Embeddings, Objective
from lab.train.loop import resolve_device, timed

SCALING_TERMS = ("crd", "fd", "gd", "icl", "vrd", "xrd")
BATCH_SIZES = (128, 512, 2048)
WIDTHS = (128, 512)


@dataclass
class LossCost:
    name: str
    batch_size: int
    width: int
    seconds: float
    task_seconds: float

    @property
    def ratio(self) -> float:
        return self.seconds / self.task_seconds


def _time_objective(objective: Objective, n: int, d: int, dev: torch.device, repeats: int) -> float:
    """Median seconds of one forward + backward of ``objective`` on fresh random embeddings."""
    g = torch.Generator(device="cpu").manual_seed(0)
    student = [torch.randn(n, d, generator=g).to(dev).requires_grad_() for _ in range(2)]
    teacher = [F.normalize(torch.randn(n, d, generator=g), dim=-1).to(dev) for _ in range(2)]
    scale = torch.tensor(50.0, device=dev, requires_grad=True)
    def step():
        sum(objective(Embeddings(*student, scale, *teacher, 50.0)).values()).backward()

    times = [timed(step, dev) for _ in range(repeats + 1)]
    return statistics.median(times[1:])  # the first call warms up


def loss_scaling(names=SCALING_TERMS, batch_sizes=BATCH_SIZES, widths=WIDTHS, device: str = "auto",
                 repeats: int = 5) -> list[LossCost]:
    """Each term's forward + backward (task included) at every (batch, width), against the task loss alone."""
    dev = resolve_device(device)
    out = []
    for d in widths:
        objectives = {n: Objective(n, d, d).to(dev) for n in ("", *names)}
        for n in batch_sizes:
            task = _time_objective(objectives[""], n, d, dev, repeats)
            out += [LossCost(name, n, d, _time_objective(objectives[name], n, d, dev, repeats), task)
                    for name in names]
    return out


def data_throughput(items: int = 4096, image_size: int = 32) -> float:
    """ShapesWorld items (image + caption + factors) rendered per second, one process."""
    world = ShapesWorld(image_size)
    t0 = time.perf_counter()
    world.sample(StreamSpec(seed=0, split="train"), 0, items)
    return items / (time.perf_counter() - t0)


def format_scaling(costs: list[LossCost], items_per_s: float, device: str) -> str:
    lines = [f"Loss terms alone (forward + backward on random embeddings), {device}; "
             f"ratio = (task + term) / task of the same batch N and width D",
             f"{'term':<8}{'N':>6}{'D':>6}{'ms':>10}{'task ms':>10}{'ratio':>8}"]
    lines += [f"{c.name:<8}{c.batch_size:>6}{c.width:>6}{c.seconds * 1e3:>10.2f}{c.task_seconds * 1e3:>10.2f}"
              f"{c.ratio:>8.2f}" for c in costs]
    lines.append(f"ShapesWorld data generation: {items_per_s:,.0f} items/s (32-px images, one process)")
    return "\n".join(lines)
