"""Training a named grid (:mod:`lab.experiments.grids`) over seeds, then writing its tables (:mod:`lab.experiments.tables`).

``python -m lab sweep --grid clipkd --seeds 3`` trains every row of the grid for
seeds 0 … K−1 (skipping runs that finished earlier, so an interrupted sweep resumes),
then writes ``runs/_tables/<grid>.md`` and ``.csv``: mean ± std over seeds of the
headline numbers, the teacher–HM gap each row closes relative to the no-KD row of the
same seed, geometry and wall time.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from tqdm.auto import tqdm

from lab import runs
from lab.experiments.grids import NO_KD, SCALES, PromptRow, Row, check_scale, grid_rows, run_id
from lab.experiments.parallel import check_executor, check_submitit, run_jobs, run_submitit
from lab.experiments.tables import write_tables

SUBMITIT_DIR = "_submitit"  # sweep --executor slurm: each job's logs and pickles, under the runs dir


def train_row(row: Row, seed: int, runs_dir: Path, scale: str = "full", overrides: Sequence[str] = ()) -> Path:
    """Train one (row, seed) run unless it finished earlier; returns its directory."""
    from lab.train.distill import default_config, distill
    from lab.train.pretrain import preset_config, pretrain

    rid = run_id(row, seed, scale)
    clip_budget, prompt_budget = SCALES[scale]
    path = runs_dir / rid
    if runs.read_run(path).complete:
        return path
    if isinstance(row, PromptRow):
        from lab.train.prompt_distill import default_config as prompt_config, prompt_distill

        settings = [*row.settings, f"train.seed={seed}", *prompt_budget, *overrides]
        if not any(s.startswith("student=") for s in settings):  # the no-KD run of the same seed and scale
            settings.append(f"student={train_row(NO_KD, seed, runs_dir, scale)}")
        prompt_distill(prompt_config(settings), rid, runs_dir, overwrite=path.exists())
        return path
    settings = [f"train.seed={seed}", *clip_budget, *overrides]
    if row.loss or row.settings:  # a distillation run (ACID alone has no KD term but reads the teacher)
        distill(default_config([f"loss={row.loss}", *row.settings, *settings]), rid, runs_dir,
                overwrite=path.exists())
    else:
        pretrain(preset_config("student", settings), rid, runs_dir, overwrite=path.exists())
    return path


def _train_job(job: tuple) -> Path:
    """:func:`train_row` of one ``(row, seed, runs dir, scale, overrides)`` (a picklable job for worker processes)."""
    return train_row(*job)


def sweep_rows(rows: Sequence[Row | PromptRow], seeds: int, runs_dir: Path, scale: str = "full",
               overrides: Sequence[str] = (), jobs: int = 1, executor: str = "local",
               slurm: dict | None = None) -> None:
    """Train every (row, seed) that has not finished; with ``jobs`` > 1 that many at a time (or, with
    ``executor="slurm"``, each a Slurm job through submitit), the no-KD students (which the prompt rows
    start from) first."""
    check_executor(executor)
    todo = [(row, seed) for seed in range(seeds) for row in rows]
    done = sum(runs.read_run(runs_dir / run_id(r, s, scale)).complete for r, s in todo)
    if done:
        tqdm.write(f"{done} of {len(todo)} runs finished earlier and are skipped")
    if jobs > 1 or executor == "slurm":
        needs_nokd = any(r == NO_KD or isinstance(r, PromptRow) for r in rows)
        stages = [[(NO_KD, s) for s in range(seeds)] if needs_nokd else [], [j for j in todo if j[0] != NO_KD]]
        for stage in stages:
            stage = [(r, s) for r, s in stage if not runs.read_run(runs_dir / run_id(r, s, scale)).complete]
            work = [(r, s, runs_dir, scale, tuple(overrides)) for r, s in stage]
            if executor == "slurm":
                run_submitit(_train_job, work, runs_dir / SUBMITIT_DIR, slurm, desc=f"sweep ({len(stage)} runs)")
            else:
                run_jobs(_train_job, work, jobs, desc=f"sweep ({len(stage)} runs)")
        return
    bar = tqdm(todo, desc="sweep", unit="run")
    for row, seed in bar:
        bar.set_postfix_str(run_id(row, seed, scale))
        train_row(row, seed, runs_dir, scale, overrides)


def sweep(grid: str, seeds: int = 1, runs_dir: str | Path = "runs", scale: str = "full",
          overrides: Sequence[str] = (), jobs: int = 1, executor: str = "local", slurm: dict | None = None) -> Path:
    """Train every (row, seed) of ``grid`` that has not finished (``jobs`` at a time, or as Slurm jobs with
    ``executor="slurm"``), then write its tables here; returns the .md path."""
    check_scale(scale)
    check_executor(executor)
    if executor == "slurm":
        check_submitit()
    sweep_rows(grid_rows(grid), seeds, Path(runs_dir), scale, overrides, jobs, executor, slurm)
    return write_tables(grid, seeds, runs_dir, scale)
