"""``python -m lab bench --sweep``: where a CPU training step's time goes, and what a grid's runs cost.

Three measurements, each side by side in one process:

* :func:`profile_step` — ``torch.profiler`` over the default student's training step (no-KD, or a
  cached-teacher distillation step) through the real :class:`~lab.train.loop.Trainer`: the top ops by
  self CPU time as a share of the step.
* :func:`optimizer_times` — the same step with each AdamW implementation (fused, foreach, per-tensor),
  interleaved round by round (:func:`lab.bench.step._median_step_times`), as a ratio to the lab's fused one.
* :func:`sweep_times` — every row of a grid trained for a short budget per configuration (a list of
  config overrides, e.g. ``train.compile=true`` against the current settings), interleaved row by row.
  One untimed run of each kind per configuration first (the teacher cache, a compiled graph: once per
  process). Each run's time is **extrapolated** to the full budget: its setup and evaluation as measured plus its
  training time scaled by ``full_steps / steps``; the grid total multiplies by the seeds.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from lab import runs
from lab.bench.step import _median_step_times
from lab.data.pairs import DataConfig, build_pairs, in_order
from lab.data.shapes import label_space
from lab.errors import LabError
from lab.losses.objective import Objective
from lab.models import zoo
from lab.train.cache import teacher_embeddings
from lab.train.distill import DistillStep
from lab.train.loop import Trainer, TrainConfig, param_groups
from lab.train.presets import PRESETS

# AdamW implementations on CPU: the lab's (fused) and the two others torch offers.
ADAMW = {"fused": {"fused": True}, "foreach": {"foreach": True}, "for-loop": {"foreach": False}}
# Configurations of the sweep benchmark: the current settings and the candidate switches.
SWEEP_CONFIGS = {"current": [], "train.compile=true": ["train.compile=true"]}


def _setup(loss: str, batch_size: int, student: str = "shapes-student"):
    """The student, a cached-teacher step of ``loss`` ("" for no KD), its named parameters and two batches."""
    teacher = zoo.load_teacher("shipped", "cpu")
    clip = zoo.load(student, device="cpu")
    clip.model.train()
    dataset = build_pairs(DataConfig(size=batch_size * 2, image_size=clip.image_size))
    cached = teacher_embeddings(teacher, dataset)
    objective = Objective(loss, clip.embed_dim, teacher.embed_dim)
    step = DistillStep(clip, teacher, objective, cached, classnames=label_space("colour_shape").classnames)
    named = list(clip.model.named_parameters()) + [(f"objective.{n}", p) for n, p in objective.named_parameters()]
    return step, named, list(in_order(dataset, batch_size))


def profile_step(loss: str = "", batch_size: int = 128, steps: int = 10, top: int = 15) -> dict:
    """Profile ``steps`` training steps (after 3 warm-up steps) of the default student through the Trainer.

    Returns ``{"ms_per_step", "ops": [(name, self_ms_per_step, percent)], "table"}``; ``loss=""`` is the
    no-KD step, e.g. ``"crd+icl+fd"`` the CLIP-KD recipe with the teacher's embeddings from the cache.
    """
    from torch.profiler import ProfilerActivity, profile

    step, named, batches = _setup(loss, batch_size)
    trainer = Trainer(named, TrainConfig(steps=10**9, log_every=10**9), desc="profile")
    old = os.environ.get("TQDM_DISABLE")
    os.environ["TQDM_DISABLE"] = "1"
    try:
        trainer.fit([batches[i % 2] for i in range(3)], step)
        t0 = time.perf_counter()
        trainer.fit([batches[i % 2] for i in range(steps)], step)
        ms = (time.perf_counter() - t0) / steps * 1e3
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            trainer.fit([batches[i % 2] for i in range(steps)], step)
    finally:
        if old is None:
            os.environ.pop("TQDM_DISABLE", None)
        else:
            os.environ["TQDM_DISABLE"] = old
    averages = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in averages) or 1.0
    ops = [(e.key, e.self_cpu_time_total / 1e3 / steps, 100 * e.self_cpu_time_total / total) for e in averages[:top]]
    return {"ms_per_step": ms, "ops": ops,
            "table": prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=top)}


def optimizer_times(batch_size: int = 128, rounds: int = 5, steps: int = 3, progress=print) -> dict[str, float]:
    """Median seconds per no-KD training step with each AdamW implementation of :data:`ADAMW`, interleaved."""
    step, named, batches = _setup("", batch_size)
    configs = {}
    for name, kwargs in ADAMW.items():
        groups = param_groups(named, 0.1)
        configs[name] = (step, torch.optim.AdamW(groups, lr=1e-5, betas=(0.9, 0.98), eps=1e-6, **kwargs))
    median, _ = _median_step_times(configs, batches, rounds, steps, torch.device("cpu"), "fp32", progress)
    return median


@dataclass
class RunTime:
    """One short run of one grid row under one configuration, and its extrapolation to the full budget."""

    row: str
    config: str
    wall_s: float  # the whole short run: setup, training, evaluation
    train_s: float  # of which training (the Trainer's wall time)
    steps: int
    full_steps: int

    @property
    def extrapolated_s(self) -> float:
        return self.wall_s - self.train_s + self.train_s * self.full_steps / self.steps


@dataclass
class SweepBench:
    grid: str
    steps: int
    full_steps: int
    seeds: int
    runs: list[RunTime] = field(default_factory=list)
    jobs: dict = field(default_factory=dict)  # jobs_times(): sequential vs --jobs N

    def grid_minutes(self, config: str) -> float:
        """Extrapolated minutes of the whole grid (every row × seeds, at the full budget) under ``config``."""
        return self.seeds * sum(r.extrapolated_s for r in self.runs if r.config == config) / 60

    def as_dict(self) -> dict:
        configs = dict.fromkeys(r.config for r in self.runs)
        return {"grid": self.grid, "steps": self.steps, "full_steps": self.full_steps, "seeds": self.seeds,
                "runs": [{**vars(r), "extrapolated_s": r.extrapolated_s} for r in self.runs],
                "grid_minutes_extrapolated": {c: self.grid_minutes(c) for c in configs}, "jobs": self.jobs}


def jobs_times(grid: str = "clipkd", rows: int = 4, steps: int = 20, jobs: int = 2, extra: tuple[str, ...] = (),
               progress=print) -> dict:
    """Wall seconds of the first ``rows`` rows of ``grid`` (one seed, ``steps`` steps each) trained one after
    another and ``jobs`` at a time (``sweep --jobs``), each from an empty folder, the caches built first."""
    from lab.experiments.grids import grid_rows
    from lab.experiments.sweep import sweep_rows

    selected = grid_rows(grid)[:rows]
    scratch = Path(tempfile.mkdtemp(prefix="bench-jobs-"))
    try:
        overrides = [f"train.steps={steps}", *extra]
        sweep_rows(selected[:2], 1, scratch / "warm", "full", overrides)  # the teacher cache, outside the timing
        times = {}
        for n in (1, jobs):
            folder = scratch / f"jobs{n}"
            shutil.copytree(scratch / "warm" / ".cache", folder / ".cache", dirs_exist_ok=True)
            t0 = time.perf_counter()
            sweep_rows(selected, 1, folder, "full", overrides, jobs=n)
            times[n] = time.perf_counter() - t0
            progress(f"{len(selected)} runs with --jobs {n}: {times[n]:.1f} s")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return {"rows": len(selected), "steps": steps, "jobs": jobs, "sequential_s": times[1], "parallel_s": times[jobs],
            "speedup": times[1] / times[jobs]}


def sweep_times(grid: str = "clipkd", steps: int = 20, seeds: int = 3, configs: dict | None = None,
                rows: int = 0, extra: tuple[str, ...] = (), progress=print) -> SweepBench:
    """Train each row of ``grid`` (the first ``rows`` if set) for ``steps`` steps under every configuration,
    interleaved row by row in a scratch directory, and extrapolate each run to the full budget."""
    from lab.experiments.grids import grid_rows
    from lab.experiments.sweep import train_row

    if steps < 1:
        raise LabError(f"bench --sweep needs at least 1 step per run, got {steps}; pass a positive step count.")
    configs = SWEEP_CONFIGS if configs is None else configs
    selected = grid_rows(grid)[:rows] if rows else grid_rows(grid)
    full_steps = int(PRESETS["student"]["train.steps"])
    bench = SweepBench(grid, steps, full_steps, seeds)
    scratch = Path(tempfile.mkdtemp(prefix="bench-sweep-"))
    try:
        # One untimed no-KD and one distillation run per configuration first: the teacher cache and a compiled
        # graph are paid once per process, not per run, so no row's time (nor its extrapolation) should carry them.
        kinds = {bool(getattr(r, "loss", "")): r for r in reversed(selected)}  # the first no-KD and KD rows
        for name, overrides in configs.items():
            for warm in kinds.values():
                shutil.rmtree(train_row(warm, 0, scratch / f"c{list(configs).index(name)}", "full",
                                        [f"train.steps={steps}", *extra, *overrides]))
        for i, row in enumerate(selected):
            for name, overrides in configs.items():
                runs_dir = scratch / f"c{list(configs).index(name)}"
                t0 = time.perf_counter()
                path = train_row(row, 0, runs_dir, "full", [f"train.steps={steps}", *extra, *overrides])
                wall = time.perf_counter() - t0
                train = float(runs.read_run(path).summary.get("wall_time_s", 0.0))
                bench.runs.append(RunTime(row.slug, name, wall, train, steps, full_steps))
                shutil.rmtree(path)  # the next configuration trains this row afresh
            progress(f"row {i + 1}/{len(selected)} ({row.slug}) done")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return bench


def format_profile(profile: dict, adamw: dict[str, float]) -> str:
    """The profile's top ops and AdamW's implementations as ratios to the lab's (fused)."""
    lines = [f"No-KD training step of the default student: {profile['ms_per_step']:.1f} ms; top ops by self CPU time:",
             f"{'op':<40} {'ms/step':>8} {'share':>7}"]
    lines += [f"{name[:40]:<40} {ms:8.2f} {share:6.1f}%" for name, ms, share in profile["ops"]]
    lines.append("Whole no-KD step with each AdamW (median, interleaved): " + ", ".join(
        f"{name} {seconds * 1e3:.1f} ms ({seconds / adamw['fused']:.2f}×)" for name, seconds in adamw.items()))
    return "\n".join(lines)


def format_sweep(bench: SweepBench, machine: str = "") -> str:
    configs = list(dict.fromkeys(r.config for r in bench.runs))
    lines = [f"Grid {bench.grid}: each row trained {bench.steps} steps per configuration (interleaved), "
             f"EXTRAPOLATED to {bench.full_steps} steps × {bench.seeds} seeds{'; ' + machine if machine else ''}",
             f"{'row':<16}" + "".join(f"{c[:22]:>24}" for c in configs)]
    for slug in dict.fromkeys(r.row for r in bench.runs):
        cells = {r.config: r for r in bench.runs if r.row == slug}
        lines.append(f"{slug:<16}" + "".join(f"{cells[c].extrapolated_s:>22.1f} s" for c in configs))
    base = bench.grid_minutes(configs[0])
    lines.append(f"{'grid (min)':<16}" + "".join(
        f"{bench.grid_minutes(c):>14.1f} ({bench.grid_minutes(c) / base:4.2f}×)" for c in configs))
    if bench.jobs:
        j = bench.jobs
        lines.append(f"{j['rows']} rows × {j['steps']} steps, one after another vs --jobs {j['jobs']}: "
                     f"{j['sequential_s']:.1f} s vs {j['parallel_s']:.1f} s ({j['speedup']:.2f}× faster)")
    return "\n".join(lines)
