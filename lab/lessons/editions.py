"""The two editions of the lessons.

* **instructor** — the committed notebooks as they are: reference solutions (cells tagged ``solution``) and
  instructor notes (markdown cells tagged ``instructor``);
* **student** — every solution cell replaced by an ``answer = None`` stub that repeats the question (tagged
  ``answer``, same cell id), every instructor note removed. The check cells stay: they compute the expected
  value from ``lab`` at run time (:mod:`lab.lessons.exercises`), so no expected value is in the notebook.
"""

from __future__ import annotations

import copy
import re
import textwrap
from pathlib import Path

import nbformat

from lab.errors import LabError
from lab.lessons.sources import NOTEBOOK_DIR

EDITIONS = ("student", "instructor")
QUESTION = re.compile(r"^\*\*Exercise (\d+\.\d+)\.\*\*\s*(.*)", re.S)


def lesson_notebooks(folder: Path = NOTEBOOK_DIR) -> list[Path]:
    return sorted(folder.glob("[0-9][0-9]_*.ipynb"))


def _stub(question_cell) -> str:
    match = QUESTION.match(question_cell.source.strip()) if question_cell is not None else None
    if match is None:
        return "answer = None  # your answer"
    number, question = match.groups()
    wrapped = textwrap.wrap(" ".join(question.split()), 100)
    return "\n".join([f"# Exercise {number}: {wrapped[0]}", *(f"# {line}" for line in wrapped[1:]),
                      "# Replace None with your answer, then run the check cell below.", "answer = None"])


def student_edition(notebook):
    """A copy of ``notebook`` with its solutions replaced by stubs and its instructor notes removed."""
    student = copy.deepcopy(notebook)
    cells, question = [], None
    for cell in student.cells:
        tags = cell.metadata.get("tags", [])
        if "instructor" in tags:
            continue
        if cell.cell_type == "markdown" and QUESTION.match(cell.source.strip()):
            question = cell
        if "solution" in tags:
            cell.source = _stub(question)
            cell.metadata["tags"] = [t for t in tags if t != "solution"] + ["answer"]
            cell.outputs, cell.execution_count = [], None
        cells.append(cell)
    student.cells = cells
    student.metadata.pop("jupytext", None)  # a student's saves need no paired .py
    student.metadata["lab_edition"] = "student"
    return student


def with_answers(student, answers: dict[str, str]):
    """A copy of a student edition whose answer cells (by cell id) hold ``answers[cell_id]``."""
    filled = copy.deepcopy(student)
    for cell in filled.cells:
        if cell.id in answers and "answer" in cell.metadata.get("tags", []):
            cell.source = answers[cell.id]
    return filled


def solutions(instructor) -> dict[str, str]:
    """The instructor edition's reference solutions, by cell id."""
    return {c.id: c.source for c in instructor.cells if "solution" in c.metadata.get("tags", [])}


def write_edition(edition: str, out: Path, folder: Path = NOTEBOOK_DIR) -> list[Path]:
    """Write every lesson's ``edition`` into ``out``; returns the files written."""
    if edition not in EDITIONS:
        raise LabError(f"Unknown edition '{edition}'; choose one of: {', '.join(EDITIONS)}.")
    out = Path(out)
    if out.resolve() == Path(folder).resolve():
        raise LabError(f"Write the {edition} edition to another folder than {folder} (it would overwrite the "
                       f"lessons' notebooks).")
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for path in lesson_notebooks(folder):
        notebook = nbformat.read(path, as_version=4)
        if edition == "student":
            notebook = student_edition(notebook)
        nbformat.write(notebook, out / path.name)
        written.append(out / path.name)
    return written
