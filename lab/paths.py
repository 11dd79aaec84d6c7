"""Where the lab's shipped files are: ``data/`` of the repository, or its copy inside an installed wheel.

In a checkout, ``data/`` (the shipped teacher, the papers' tables) sits beside ``lab/``. The student pack
installs ``lab`` from a wheel (:mod:`lab.lessons.studentpack`), which carries ``data/`` as ``lab/_data``.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
REPO_DATA = PACKAGE.parent / "data"
WHEEL_DATA = PACKAGE / "_data"
CHECKOUT = REPO_DATA.is_dir()
DATA_DIR = REPO_DATA if CHECKOUT else WHEEL_DATA
# the lessons' runs when LAB_RUNS_DIR is unset: runs/lessons of the checkout; from the wheel, ~/lab-runs (where
# the student pack's README unpacks the runs pack), never inside site-packages
LESSON_RUNS = PACKAGE.parent / "runs" / "lessons" if CHECKOUT else Path.home() / "lab-runs"
