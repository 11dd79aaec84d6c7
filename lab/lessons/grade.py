"""Grade submitted lesson notebooks: execute each one and read every exercise check's verdict.

``python -m lab grade SUBMISSION.ipynb … [--csv grades.csv]`` runs each submission with nbclient (fast
preset, a timeout per cell, ``HF_HUB_OFFLINE=1``, errors allowed so one broken cell does not hide the
rest) and prints a student × exercise table. A check cell's verdict:

* ``correct`` — it printed "✓ correct";
* ``not attempted`` — the answer was still ``None``;
* ``wrong`` — it raised the check's ``AssertionError`` (the message says where the answer differs);
* ``error`` — the answer cell or the check raised anything else, or the cell never ran (timeout).

The student is the submission's file name without its extension.
"""

from __future__ import annotations

import csv
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import nbformat

from lab.errors import LabError
from lab.lessons.sources import NOTEBOOK_DIR

CHECK_CALL = re.compile(r'^check\("(\d+\.\d+)"', re.M)
VERDICTS = ("correct", "wrong", "not attempted", "error")


@dataclass(frozen=True)
class Grade:
    student: str
    exercise: str
    verdict: str
    detail: str = ""


def _errors(cell) -> list[dict]:
    return [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]


def _text(cell) -> str:
    return "".join(o.get("text", "") for o in cell.get("outputs", []) if o.get("output_type") == "stream")


def verdicts(notebook, student: str) -> list[Grade]:
    """The verdict of every exercise check in an executed ``notebook``."""
    grades, previous = [], None
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        match = CHECK_CALL.search(cell.source)
        if match is None:
            previous = cell
            continue
        number, errors, text = match.group(1), _errors(cell), _text(cell)
        answer_errors = _errors(previous) if previous is not None else []
        if answer_errors:
            err = answer_errors[0]
            grades.append(Grade(student, number, "error", f"answer cell: {err['ename']}: {err['evalue']}"))
        elif errors and errors[0]["ename"] == "AssertionError" and f"Exercise {number}" in errors[0]["evalue"]:
            grades.append(Grade(student, number, "wrong", errors[0]["evalue"]))
        elif errors:
            grades.append(Grade(student, number, "error", f"{errors[0]['ename']}: {errors[0]['evalue']}"))
        elif "✓ correct" in text:
            grades.append(Grade(student, number, "correct"))
        elif "not attempted" in text:
            grades.append(Grade(student, number, "not attempted"))
        else:
            grades.append(Grade(student, number, "error", "the check cell did not run"))
        previous = cell
    return grades


def execute(path: Path, timeout: int = 300, runs_dir: str | None = None):
    """Run a submission in the fast preset, offline, headless; returns the executed notebook."""
    from nbclient import NotebookClient

    notebook = nbformat.read(path, as_version=4)
    env = {"LAB_PRESET": "fast", "LAB_HEADLESS": "1", "TQDM_DISABLE": "1", "HF_HUB_OFFLINE": "1",
           "LAB_RUNS_DIR": runs_dir or os.environ.get("LAB_RUNS_DIR") or tempfile.mkdtemp(prefix="grade-runs-")}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # the kernel inherits them
    try:
        NotebookClient(notebook, timeout=timeout, kernel_name="python3", allow_errors=True,
                       resources={"metadata": {"path": str(NOTEBOOK_DIR)}}).execute()
    except Exception as err:  # a cell past its timeout, or a dead kernel: the cells not run grade as "error"
        notebook.metadata["lab_grade_failure"] = f"{type(err).__name__}: {err}"
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return notebook


def grade(paths: list[Path], timeout: int = 300, runs_dir: str | None = None) -> list[Grade]:
    """Execute and grade every submission (one shared runs folder, so the lesson's runs train once)."""
    missing = [str(p) for p in paths if not Path(p).is_file()]
    if missing:
        raise LabError(f"No such submission: {', '.join(missing)}.")
    if not paths:
        raise LabError("Name at least one submitted notebook (SUBMISSION.ipynb).")
    runs_dir = runs_dir or tempfile.mkdtemp(prefix="grade-runs-")
    out = []
    for path in paths:
        out += verdicts(execute(Path(path), timeout, runs_dir), Path(path).stem)
    return out


def table(grades: list[Grade]) -> str:
    """Students as rows, exercises as columns, plus each student's count of correct answers."""
    students = list(dict.fromkeys(g.student for g in grades))
    exercises = sorted({g.exercise for g in grades}, key=lambda n: tuple(int(x) for x in n.split(".")))
    cell = {(g.student, g.exercise): g.verdict for g in grades}
    width = max([len("student"), *map(len, students)])
    lines = [f"{'student':<{width}}  " + "  ".join(f"{e:>13}" for e in exercises) + "  correct"]
    for s in students:
        correct = sum(cell.get((s, e)) == "correct" for e in exercises)
        lines.append(f"{s:<{width}}  " + "  ".join(f"{cell.get((s, e), '—'):>13}" for e in exercises)
                     + f"  {correct}/{len(exercises)}")
    return "\n".join(lines)


def write_csv(grades: list[Grade], path: Path) -> None:
    """One row per student and exercise: student, exercise, verdict, detail."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["student", "exercise", "verdict", "detail"])
        for g in grades:
            writer.writerow([g.student, g.exercise, g.verdict, g.detail])
