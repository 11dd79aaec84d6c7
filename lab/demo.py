"""``python -m lab demo``: produce the embedded-default runs the dashboard shows.

It is the ``demo`` grid of :mod:`lab.sweep` at seed 0 — the no-KD student and the
CLIP-KD recipe, both under the default student budget. Finished runs are skipped, so
running it again costs nothing; an interrupted run is redone from scratch.
"""

from __future__ import annotations

from pathlib import Path

from lab.sweep import sweep


def make_demo_runs(runs_dir: str | Path = "runs") -> Path:
    """Train what is missing and return the path of the demo's results table."""
    return sweep("demo", seeds=1, runs_dir=runs_dir)
