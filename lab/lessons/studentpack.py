"""What a student receives: ``python -m lab lessons student-pack OUT`` (``make student-pack``).

The pack is one folder, with nothing in it that holds a reference solution, an instructor note or an
expected value::

    OUT/README.md            how to install and start, offline
    OUT/how-to-submit.md     what to hand in, and how it is graded
    OUT/requirements.txt     the pinned dependencies (installed from the classroom wheelhouse)
    OUT/wheelhouse/          the lab itself as a wheel, built from lab/ less INSTRUCTOR_ONLY (data/ inside it)
    OUT/lessons/             the student edition of every lesson (quizzes included)
    OUT/html/                the executed student edition as offline HTML pages (with their mathjax/ folder)
    OUT/runs/                the runs pack (python -m lab lessons pack), when one is given or can be made

``python -m lab lessons solutions-edition OUT`` writes the other, explicit edition, for self-learners:
the lessons with their reference solutions and instructor notes.
"""

from __future__ import annotations

import fnmatch
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import nbformat

from lab.errors import LabError
from lab.lessons import editions, export
from lab.lessons.sources import NOTEBOOK_DIR

ROOT = Path(__file__).resolve().parents[2]

# Files of lab/ a student must not receive (reference solutions, hidden checks, the expected values): glob
# patterns relative to the repository root. Add a line for every new instructor-only module.
INSTRUCTOR_ONLY = (
    "lab/lessons/solutions.py",
    "lab/lessons/solutions/*",
    "lab/lessons/hidden*.py",
    "lab/lessons/instructor*.py",
)
SKIP = ("__pycache__", "*.pyc")

README = """# The CLIP distillation lab: your lessons

Install once (offline: the classroom's wheelhouse holds the dependencies, `wheelhouse/` the lab):

```bash
python3 -m venv .venv
.venv/bin/pip install --no-index --find-links CLASSROOM_WHEELHOUSE -r requirements.txt
.venv/bin/pip install --no-index --no-deps wheelhouse/*.whl
```

Unpack the pre-trained runs, then open the lessons:

```bash
.venv/bin/python -m lab lessons unpack runs/lessons-cpu.tar.gz ~/lab-runs
export LAB_RUNS_DIR=~/lab-runs HF_HUB_OFFLINE=1
.venv/bin/python -m jupyterlab --ServerApp.root_dir=lessons
```

`html/` holds every lesson executed, as pages to read before (or without) running them: open
`html/00_tour.html` in a browser (keep the folder whole; the pages load their maths from `html/mathjax/`).

Each lesson ends with graded exercises (replace `answer = None` and run the check cell under it) and a
self-check quiz (pick your answers in `quiz_answers`, run the cell: every option is explained).
See `how-to-submit.md` for handing them in.
"""

HOW_TO_SUBMIT = """# How to submit

1. Work in the notebooks of `lessons/`. Put each exercise's answer in its answer cell (the cell that says
   `answer = None`) and leave the check cells as they are: the grader replaces them with its own.
2. Fill in each lesson's `quiz_answers` (the letter or the number you chose for every question).
3. Run the whole notebook (Kernel → Restart Kernel and Run All Cells) and save it.
4. Hand in the `.ipynb` files of `lessons/`, unrenamed, in a folder named after you (for example
   `ada-lovelace/00_tour.ipynb`) — the folder is how the grader tells students apart.

The grader runs each notebook again on its own machine, in the `fast` preset, with checks you do not see
(other inputs than the lesson's): an answer copied from a printed value, or typed in by hand, fails them.
"""


def instructor_only(relative: str) -> bool:
    """Whether a repository path (``lab/lessons/solutions.py``) is left out of the student pack."""
    return any(fnmatch.fnmatch(relative, pattern) for pattern in INSTRUCTOR_ONLY)


def _stage_package(stage: Path) -> None:
    """A copy of the repository's ``lab/`` (less instructor-only files), ``data/`` inside it, and pyproject."""
    for path in sorted((ROOT / "lab").rglob("*")):
        relative = path.relative_to(ROOT).as_posix()
        if path.is_dir() or instructor_only(relative) or any(fnmatch.fnmatch(part, pat) for part in
                                                             path.relative_to(ROOT).parts for pat in SKIP):
            continue
        target = stage / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
    shutil.copytree(ROOT / "data", stage / "lab" / "_data")
    shutil.copy2(ROOT / "pyproject.toml", stage / "pyproject.toml")


def build_wheel(wheelhouse: Path) -> Path:
    """The lab as a wheel in ``wheelhouse`` (``pip wheel --no-deps`` on a staged copy; nothing downloaded)."""
    wheelhouse.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="lab-wheel-") as tmp:
        stage = Path(tmp) / "src"
        _stage_package(stage)
        done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-index",
                               "--no-build-isolation", "--wheel-dir", str(wheelhouse), str(stage)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise LabError(f"Building the lab's wheel failed ({done.stderr.strip().splitlines()[-1:]}); "
                           f"install setuptools in this environment (pip install setuptools).")
    return next(iter(sorted(wheelhouse.glob("*.whl"))))


def execute(notebooks: list, preset: str, runs_dir: Path, timeout: int = 3600) -> list:
    """Execute student-edition notebooks in ``preset`` over ``runs_dir`` (finished runs are reused)."""
    from nbclient import NotebookClient

    env = {"LAB_PRESET": preset, "LAB_RUNS_DIR": str(runs_dir), "LAB_HEADLESS": "1", "TQDM_DISABLE": "1",
           "HF_HUB_OFFLINE": "1"}
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        for notebook in notebooks:
            NotebookClient(notebook, timeout=timeout, kernel_name="python3", allow_errors=True,
                           resources={"metadata": {"path": str(NOTEBOOK_DIR)}}).execute()
    finally:
        for key, value in saved.items():
            os.environ.pop(key, None) if value is None else os.environ.__setitem__(key, value)
    return notebooks


def _executed_student(executed: Path | None, preset: str, runs_dir: Path) -> dict[str, object]:
    """Every lesson's student edition, executed: read from ``executed`` (which must hold student editions),
    else executed now."""
    names = [p.name for p in editions.lesson_notebooks()]
    if executed is None:
        notebooks = [editions.student_edition(nbformat.read(NOTEBOOK_DIR / n, as_version=4)) for n in names]
        return dict(zip(names, execute(notebooks, preset, runs_dir)))
    out = {}
    for name in names:
        path = Path(executed) / name
        if not path.is_file():
            raise LabError(f"No executed student edition {path}; leave out --executed to execute them now.")
        notebook = nbformat.read(path, as_version=4)
        if notebook.metadata.get("lab_edition") != "student":
            raise LabError(f"{path} is not a student edition (it may hold solutions); execute "
                           f"`python -m lab lessons edition student DIR` notebooks, or leave out --executed.")
        out[name] = notebook
    return out


def write_pack(out: Path, preset: str = "cpu", runs_dir: Path | None = None, executed: Path | None = None,
               runs_pack: Path | None = None) -> list[Path]:
    """Write the student pack into ``out`` (see the module's docstring); returns the files written."""
    from lab.lesson import DEFAULT_RUNS_DIR
    from lab.lessons import pack

    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise LabError(f"{out} is not empty; give the student pack a new folder.")
    runs_dir = Path(runs_dir or DEFAULT_RUNS_DIR)
    if runs_pack is not None and not Path(runs_pack).is_file():
        raise LabError(f"No runs pack at {runs_pack}; make one with `make lessons-pack`.")
    out.mkdir(parents=True, exist_ok=True)
    build_wheel(out / "wheelhouse")
    editions.write_edition("student", out / "lessons")
    shutil.copytree(NOTEBOOK_DIR / "quizzes", out / "lessons" / "quizzes")
    htmls = _executed_student(executed, preset, runs_dir)
    export.copy_mathjax(out / "html")
    for name, notebook in htmls.items():
        (out / "html" / f"{Path(name).stem}.html").write_text(export.notebook_html(notebook), encoding="utf-8")
    (out / "runs").mkdir()
    archive = out / "runs" / f"lessons-{preset}.tar.gz"
    if runs_pack is not None:
        shutil.copy2(runs_pack, archive)
    else:
        pack.pack(preset, archive, runs_dir)
    (out / "README.md").write_text(README, encoding="utf-8")
    (out / "how-to-submit.md").write_text(HOW_TO_SUBMIT, encoding="utf-8")
    shutil.copy2(ROOT / "requirements.txt", out / "requirements.txt")
    return sorted(p for p in out.rglob("*") if p.is_file())


def write_solutions_edition(out: Path) -> list[Path]:
    """The lessons with their reference solutions and instructor notes, for self-learners (explicit)."""
    written = editions.write_edition("instructor", Path(out))
    shutil.copytree(NOTEBOOK_DIR / "quizzes", Path(out) / "quizzes", dirs_exist_ok=True)
    for path in written:
        notebook = nbformat.read(path, as_version=4)
        notebook.metadata["lab_edition"] = "solutions"
        nbformat.write(notebook, path)
    return written
