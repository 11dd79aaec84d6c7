"""``python -m lab bench``: what each distillation term costs, measured side by side in one process.

For every loss term (and the CLIP-KD / CLIP-RD recipes) one full training step —
student forward, teacher embeddings, objective, backward, AdamW — is timed with the
teacher's embeddings read from the cache and with a live teacher forward, against
the no-KD student's step. Configurations are interleaved round by round and the
median per configuration is kept, so slow drifts of the machine hit all of them
alike; the result is a ratio to the no-KD step, not an absolute time.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import torch

from lab.data.pairs import DataConfig, build_pairs, in_order
from lab.data.shapes import label_space
from lab.losses.objective import RECIPES, TERMS, Objective
from lab.models import zoo
from lab.train.cache import teacher_embeddings
from lab.train.distill import DistillStep
from lab.train.loop import resolve_device

# Issue budgets for the cached step relative to no-KD: GD's closed-form gradients cost more.
BUDGET = {"gd": 1.5}
DEFAULT_BUDGET = 1.15


@dataclass
class StepCost:
    name: str
    cached_s: float
    online_s: float
    nokd_s: float

    @property
    def cached_ratio(self) -> float:
        return self.cached_s / self.nokd_s

    @property
    def online_ratio(self) -> float:
        return self.online_s / self.nokd_s

    @property
    def budget(self) -> float:
        terms = RECIPES.get(self.name, self.name).split("+")
        return max(BUDGET.get(t, DEFAULT_BUDGET) for t in terms)

    def as_dict(self) -> dict:
        return {"name": self.name, "cached_s": self.cached_s, "online_s": self.online_s, "nokd_s": self.nokd_s,
                "cached_ratio": self.cached_ratio, "online_ratio": self.online_ratio, "budget": self.budget}


def _train_step(step_fn, optimizer, batch) -> None:
    loss = sum(step_fn(batch).values())
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def step_costs(names: list[str] | None = None, batch_size: int = 128, rounds: int = 5, steps: int = 3,
               device: str = "auto", progress=print) -> list[StepCost]:
    """Median seconds per training step of each configuration, interleaved over ``rounds``."""
    names = names or [*TERMS, *RECIPES]
    dev = resolve_device(device)
    teacher = zoo.shipped_teacher(str(dev))
    teacher.model.eval().requires_grad_(False)
    student = zoo.load("shapes-student", device=str(dev))
    student.model.train()
    dataset = build_pairs(DataConfig(size=batch_size * 2))
    cached = {k: v.to(dev) for k, v in teacher_embeddings(teacher, dataset).items()}
    batches = list(in_order(dataset, batch_size))  # two batches, alternated
    classnames = label_space("colour_shape").classnames

    configs = {}  # (name, mode) -> (step function, optimizer)
    for name in ["task", *names]:
        objective = Objective("" if name == "task" else name, student.embed_dim, teacher.embed_dim).to(dev)
        params = list(student.model.parameters()) + list(objective.parameters())
        optimizer = torch.optim.AdamW(params, lr=1e-5)
        for mode in (("cache",) if name == "task" else ("cache", "online")):
            step = DistillStep(student, teacher, objective, cached if mode == "cache" else None,
                               classnames=classnames)
            configs[name, mode] = (step, optimizer)
    for (step, optimizer) in configs.values():  # warm-up: one-off allocations and kernel choices
        _train_step(step, optimizer, batches[0])
    times: dict[tuple, list[float]] = {key: [] for key in configs}
    for r in range(rounds):
        for key, (step, optimizer) in configs.items():
            if dev.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            for i in range(steps):
                _train_step(step, optimizer, batches[i % 2])
            if dev.type == "cuda":
                torch.cuda.synchronize()
            times[key].append((time.perf_counter() - t0) / steps)
        progress(f"round {r + 1}/{rounds} done")
    median = {key: statistics.median(v) for key, v in times.items()}
    nokd = median["task", "cache"]
    return [StepCost(n, median[n, "cache"], median[n, "online"], nokd) for n in names]


def format_costs(costs: list[StepCost], batch_size: int, device: str) -> str:
    lines = [f"Step time per term, batch {batch_size}, {device}; no-KD step {costs[0].nokd_s * 1e3:.1f} ms "
             f"(medians of interleaved rounds; ratio = step / no-KD step)",
             f"{'term':<10}{'cached ms':>11}{'ratio':>8}{'budget':>8}{'':>6}{'online ms':>11}{'ratio':>8}"]
    for c in costs:
        verdict = "ok" if c.cached_ratio <= c.budget else "OVER"
        lines.append(f"{c.name:<10}{c.cached_s * 1e3:>11.1f}{c.cached_ratio:>8.2f}{c.budget:>8.2f}{verdict:>6}"
                     f"{c.online_s * 1e3:>11.1f}{c.online_ratio:>8.2f}")
    return "\n".join(lines)
