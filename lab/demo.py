"""``python -m lab demo``: produce the embedded-default runs the dashboard shows.

One seed of every grid (``clipkd``, ``cliprd``, ``comkd``) at the ``demo`` budget of
:mod:`lab.grids` — minutes on a laptop CPU, rougher numbers than the README's three-seed
tables at the full budget. ``--fast`` runs the same grids at the seconds-long ``fast``
budget (for tests). Finished runs are skipped, so running it again costs nothing; an
interrupted run is redone from scratch.
"""

from __future__ import annotations

from pathlib import Path

from lab.sweep import sweep

DEMO_GRIDS = ("clipkd", "cliprd", "comkd")


def make_demo_runs(runs_dir: str | Path = "runs", scale: str = "demo") -> list[Path]:
    """Train what is missing and return the paths of the grids' results tables."""
    return [sweep(grid, seeds=1, runs_dir=runs_dir, scale=scale) for grid in DEMO_GRIDS]
