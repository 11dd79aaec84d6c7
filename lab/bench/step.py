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
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lab.data.pairs import DataConfig, build_pairs, in_order
from lab.data.shapes import label_space
from lab.losses.objective import RECIPES, TERMS, Objective
from lab.models import zoo
from lab.train.cache import teacher_embeddings
from lab.models.zoo import load_teacher
from lab.train.distill import DistillStep
from lab.train.loop import autocast as _autocast, resolve_device, timed

# MFD with the other terms on full images and a second, masked forward (distill's mfd_input=both).
MFD_BOTH = "mfd(both)"
# Issue budgets for the cached step relative to no-KD: GD's closed-form gradients cost more.
BUDGET = {"gd": 1.5}
DEFAULT_BUDGET = 1.15


def budget_of(name: str) -> float:
    """The issue budget of a term or recipe: the largest of its terms'."""
    terms = RECIPES.get(name, name.removesuffix("(both)")).split("+")
    return max(BUDGET.get(t, DEFAULT_BUDGET) for t in terms)


@dataclass
class StepCost:
    name: str
    cached_s: float
    online_s: float
    nokd_s: float
    budget: float
    batch_size: int = 0
    peak_mb: float | None = None  # peak GPU memory of the cached step (CUDA only)

    @property
    def cached_ratio(self) -> float:
        return self.cached_s / self.nokd_s

    @property
    def online_ratio(self) -> float:
        return self.online_s / self.nokd_s

    @property
    def images_per_s(self) -> float:
        return self.batch_size / self.cached_s

    def as_dict(self) -> dict:
        return {"name": self.name, "cached_s": self.cached_s, "online_s": self.online_s, "nokd_s": self.nokd_s,
                "cached_ratio": self.cached_ratio, "online_ratio": self.online_ratio, "budget": self.budget,
                "images_per_s": self.images_per_s, "peak_mb": self.peak_mb}


def _train_step(step_fn, optimizer, batch, precision: str = "fp32") -> None:
    with _autocast(optimizer.param_groups[0]["params"][0].device, precision):
        loss = sum(step_fn(batch).values())
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def _median_step_times(configs: dict, batches: list, rounds: int, steps: int, dev: torch.device, precision: str,
                       progress) -> tuple[dict, dict]:
    """Median seconds per training step of each (step function, optimizer), interleaved round by round,
    and each one's peak GPU memory in MiB (None off CUDA)."""
    for step, optimizer in configs.values():  # warm-up: one-off allocations and kernel choices
        _train_step(step, optimizer, batches[0], precision)
    times: dict = {key: [] for key in configs}
    peak: dict = {key: None for key in configs}
    for r in range(rounds):
        for key, (step, optimizer) in configs.items():
            if dev.type == "cuda":
                torch.cuda.reset_peak_memory_stats(dev)
            seconds = timed(lambda: [_train_step(step, optimizer, batches[i % len(batches)], precision)
                                     for i in range(steps)], dev)
            if dev.type == "cuda":
                peak[key] = max(peak[key] or 0.0, torch.cuda.max_memory_allocated(dev) / 2**20)
            times[key].append(seconds / steps)
        progress(f"round {r + 1}/{rounds} done")
    return {key: statistics.median(v) for key, v in times.items()}, peak


def step_costs(names: list[str] | None = None, batch_size: int = 128, rounds: int = 5, steps: int = 3,
               device: str = "auto", progress=print, student: str = "shapes-student", teacher: str = "shipped",
               precision: str = "fp32") -> list[StepCost]:
    """Median seconds per training step of each configuration, interleaved over ``rounds``.

    ``student`` and ``teacher`` are model specs (random weights do for timing); ShapesWorld
    images are rendered at the student's input size. ``precision="bf16"`` runs each step
    under bfloat16 autocast.
    """
    names = names or [*TERMS, MFD_BOTH, *RECIPES]
    dev = resolve_device(device)
    _autocast(dev, precision)  # an unknown precision fails before any model is built
    teacher = load_teacher(teacher, str(dev))
    student = zoo.load(student, device=str(dev))
    student.model.train()
    dataset = build_pairs(DataConfig(size=batch_size * 2, image_size=student.image_size))
    cached = {k: v.to(dev) for k, v in teacher_embeddings(teacher, dataset).items()}
    batches = list(in_order(dataset, batch_size))  # two batches, alternated
    classnames = label_space("colour_shape").classnames

    configs = {}  # (name, mode) -> (step function, optimizer)
    for name in ["task", *names]:
        loss = {"task": "", MFD_BOTH: "mfd"}.get(name, name)
        objective = Objective(loss, student.embed_dim, teacher.embed_dim).to(dev)
        params = list(student.model.parameters()) + list(objective.parameters())
        optimizer = torch.optim.AdamW(params, lr=1e-5)
        for mode in (("cache",) if name == "task" else ("cache", "online")):
            step = DistillStep(student, teacher, objective, cached if mode == "cache" else None,
                               classnames=classnames, mfd_input="both" if name == MFD_BOTH else "masked")
            configs[name, mode] = (step, optimizer)
    median, peak = _median_step_times(configs, batches, rounds, steps, dev, precision, progress)
    nokd = median["task", "cache"]
    return [StepCost(n, median[n, "cache"], median[n, "online"], nokd, budget_of(n), batch_size, peak[n, "cache"])
            for n in names]


PROMPT_BUDGET = 1.2
PROMPT_METHODS = {"promptkd": ["method=promptkd"], "comkd": ["method=comkd"],
                  "comkd(text_query)": ["method=comkd", "edu_variant=text_query"], "am": ["method=am"]}


def prompt_step_costs(batch_size: int = 64, rounds: int = 5, steps: int = 3, device: str = "auto",
                      progress=print) -> list[StepCost]:
    """Stage-2 steps of PromptKD / ComKD-CLIP / affinity mimicking, with the tuned teacher's features cached
    and computed live, against the same prompted student trained without KD (cross-entropy on labels)."""
    from lab.train.prompt_distill import Student, default_config, stage_two_terms
    from lab.train.prompt_stage1 import PromptedTeacher, StageOneConfig

    dev = resolve_device(device)
    teacher_clip, student_clip = load_teacher("shipped", str(dev)), zoo.load("shapes-student", device=str(dev))
    teacher = PromptedTeacher(teacher_clip, StageOneConfig()).to(dev).requires_grad_(False)
    space = label_space("colour_shape")
    with torch.no_grad():
        classes = teacher.class_features(space.classnames)
    dataset = build_pairs(DataConfig(size=batch_size * 2))
    batches = list(in_order(dataset, batch_size))
    with torch.no_grad():
        u_t_all = torch.cat([teacher.image_features(teacher_clip.image_tensor(b.images)) for b in batches])

    def make_step(cfg, student, mode):
        def step(batch):
            z = student.features(student_clip.image_tensor(batch.images))
            if mode == "nokd":
                labels = torch.as_tensor(batch.labels(space), device=dev)
                return {"ce": F.cross_entropy(student.logits(z, classes), labels)}
            if mode == "cache":
                u_t = u_t_all[torch.as_tensor(batch.factors["index"], device=dev)]
            else:
                with torch.no_grad():
                    u_t = teacher.image_features(teacher_clip.image_tensor(batch.images))
            return stage_two_terms(cfg, student, z, u_t, classes)
        return step

    configs = {}
    for name, settings in {"nokd": ["method=promptkd"], **PROMPT_METHODS}.items():
        cfg = default_config(settings)
        student = Student(student_clip, teacher_clip.embed_dim, cfg).to(dev).train()
        student.clip.model.eval()
        optimizer = torch.optim.SGD(student.parameters(), lr=1e-5, momentum=0.9)
        for mode in (("nokd",) if name == "nokd" else ("cache", "online")):
            configs[name, mode] = (make_step(cfg, student, mode), optimizer)
    median, peak = _median_step_times(configs, batches, rounds, steps, dev, "fp32", progress)
    nokd = median["nokd", "nokd"]
    return [StepCost(n, median[n, "cache"], median[n, "online"], nokd, PROMPT_BUDGET, batch_size, peak[n, "cache"])
            for n in PROMPT_METHODS]


def format_costs(costs: list[StepCost], batch_size: int, device: str, setting: str = "") -> str:
    lines = [f"Step time per term, batch {batch_size}, {setting + ', ' if setting else ''}{device}; "
             f"no-KD step {costs[0].nokd_s * 1e3:.1f} ms "
             f"(medians of interleaved rounds; ratio = step / no-KD step)",
             f"{'term':<18}{'cached ms':>11}{'ratio':>8}{'budget':>8}{'':>6}{'online ms':>11}{'ratio':>8}"
             f"{'images/s':>10}{'peak MiB':>10}"]
    for c in costs:
        verdict = "ok" if c.cached_ratio <= c.budget else "OVER"
        peak = "–" if c.peak_mb is None else f"{c.peak_mb:.0f}"
        lines.append(f"{c.name:<18}{c.cached_s * 1e3:>11.1f}{c.cached_ratio:>8.2f}{c.budget:>8.2f}{verdict:>6}"
                     f"{c.online_s * 1e3:>11.1f}{c.online_ratio:>8.2f}{c.images_per_s:>10.0f}{peak:>10}")
    return "\n".join(lines)
