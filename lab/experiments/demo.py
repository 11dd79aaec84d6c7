"""``python -m lab demo``: produce the embedded-default runs the dashboard shows; ``make demo``: watch them arrive.

One seed of every grid (``clipkd``, ``cliprd``, ``comkd``) at the ``demo`` budget of
:mod:`lab.experiments.grids` — minutes on a laptop CPU, rougher numbers than the README's three-seed
tables at the full budget. ``--fast`` runs the same grids at the seconds-long ``fast``
budget (for tests). Finished runs are skipped, so running it again costs nothing; an
interrupted run is redone from scratch.

``python -m lab demo --serve`` (what ``make demo`` runs) starts the dashboard first and
trains behind it: the no-KD student and the CLIP-KD recipe first (so a finished run is
there within minutes), then the rest. Progress (runs done / total, the run training now,
an ETA) is written atomically to ``<runs>/_demo/progress.json``, which the Overview shows;
each run appears in the dashboard when its ``summary.json`` is written (atomically, last).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from lab import runs
from lab.experiments.grids import grid_rows, run_id
from lab.experiments.sweep import train_row
from lab.experiments.tables import write_tables

DEMO_GRIDS = ("clipkd", "cliprd", "comkd")
PROGRESS = Path("_demo") / "progress.json"
FIRST = ("no KD (task only)", "FD+ICL+CRD (CLIP-KD)")  # trained first: the pair every page compares


def demo_jobs() -> list[tuple[str, object]]:
    """Every (grid, row) of the demo grids once, the rows of :data:`FIRST` first, each run once."""
    everything = [(grid, row) for grid in DEMO_GRIDS for row in grid_rows(grid)]
    ordered = [job for job in everything if job[1].label in FIRST] + [j for j in everything if j[1].label not in FIRST]
    jobs, seen = [], set()
    for grid, row in ordered:  # a row shared by two grids (the no-KD student) is one run
        if run_id(row, 0) not in seen:
            jobs.append((grid, row))
            seen.add(run_id(row, 0))
    return jobs


def write_progress(runs_dir: Path, **state) -> None:
    runs.atomic_write_json(runs_dir / PROGRESS, {**state, "updated": time.time()})


def read_progress(runs_dir: str | Path) -> dict | None:
    """The demo's progress record, or None when no demo is training (or the file cannot be read)."""
    try:
        return json.loads((Path(runs_dir) / PROGRESS).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def make_demo_runs(runs_dir: str | Path = "runs", scale: str = "demo") -> list[Path]:
    """Train what is missing (recording progress) and return the paths of the grids' results tables."""
    runs_dir = Path(runs_dir)
    jobs = demo_jobs()
    ids = [run_id(row, 0, scale) for _, row in jobs]
    started, trained = time.time(), []  # seconds of each run trained in this session, for the ETA
    done_before = sum(runs.read_run(runs_dir / r).complete for r in ids)
    if done_before:
        print(f"{done_before} of {len(ids)} runs finished earlier and are skipped", flush=True)
    for (grid, row), rid in zip(jobs, ids):
        done = sum(runs.read_run(runs_dir / r).complete for r in ids)
        left = len(ids) - done
        eta = left * sum(trained) / len(trained) if trained else None
        write_progress(runs_dir, total=len(ids), done=done, current=rid, scale=scale, started=started,
                       eta_s=eta, finished=False)
        t0 = time.time()
        was_done = runs.read_run(runs_dir / rid).complete
        train_row(row, 0, runs_dir, scale)
        if not was_done:
            trained.append(time.time() - t0)
    tables = [write_tables(grid, 1, runs_dir, scale) for grid in DEMO_GRIDS]
    write_progress(runs_dir, total=len(ids), done=len(ids), current=None, scale=scale, started=started,
                   eta_s=0, finished=True)
    return tables


def serve_and_train(runs_dir: Path, scale: str, port: int) -> int:
    """Start the dashboard, train the demo runs behind it, then keep serving until interrupted."""
    command = [sys.executable, "-m", "streamlit", "run", str(Path(__file__).resolve().parents[2] / "app.py"),
               "--server.address", "localhost", "--server.port", str(port), "--server.headless", "true",
               "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"]
    runs_dir.mkdir(parents=True, exist_ok=True)
    ids = [run_id(row, 0, scale) for _, row in demo_jobs()]  # progress first: the Overview then refreshes itself
    write_progress(runs_dir, total=len(ids), done=sum(runs.read_run(runs_dir / r).complete for r in ids),
                   current="(starting)", scale=scale, started=time.time(), eta_s=None, finished=False)
    server = subprocess.Popen(command, env={**os.environ, "LAB_RUNS_DIR": str(runs_dir)})
    print(f"Dashboard: http://localhost:{port} — the demo runs appear there as they finish.", flush=True)
    try:
        make_demo_runs(runs_dir, scale)
        print(f"All demo runs finished; the dashboard stays at http://localhost:{port} (Ctrl-C to stop).", flush=True)
        return server.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        if server.poll() is None:
            server.terminate()
            server.wait(timeout=10)
