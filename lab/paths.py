"""Where the lab's shipped files are: ``data/`` of the repository, or its copy inside an installed wheel.

In a checkout, ``data/`` (the shipped teacher, the papers' tables) sits beside ``lab/``. The student pack
installs ``lab`` from a wheel (:mod:`lab.lessons.studentpack`), which carries ``data/`` as ``lab/_data``.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
REPO_DATA = PACKAGE.parent / "data"
WHEEL_DATA = PACKAGE / "_data"
DATA_DIR = REPO_DATA if REPO_DATA.is_dir() else WHEEL_DATA
