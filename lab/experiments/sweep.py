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
from lab.experiments.tables import write_tables


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
    if row.loss:
        distill(default_config([f"loss={row.loss}", *row.settings, *settings]), rid, runs_dir,
                overwrite=path.exists())
    else:
        pretrain(preset_config("student", settings), rid, runs_dir, overwrite=path.exists())
    return path


def sweep(grid: str, seeds: int = 1, runs_dir: str | Path = "runs", scale: str = "full",
          overrides: Sequence[str] = ()) -> Path:
    """Train every (row, seed) of ``grid`` that has not finished, then write its tables; returns the .md path."""
    check_scale(scale)
    rows, runs_dir = grid_rows(grid), Path(runs_dir)
    jobs = [(row, seed) for seed in range(seeds) for row in rows]
    done = sum(runs.read_run(runs_dir / run_id(r, s, scale)).complete for r, s in jobs)
    bar = tqdm(jobs, desc=f"sweep {grid}", unit="run", initial=0)
    if done:
        tqdm.write(f"{done} of {len(jobs)} runs finished earlier and are skipped")
    for row, seed in bar:
        bar.set_postfix_str(run_id(row, seed, scale))
        train_row(row, seed, runs_dir, scale, overrides)
    return write_tables(grid, seeds, runs_dir, scale)
