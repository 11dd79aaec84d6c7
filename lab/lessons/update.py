"""``python -m lab lessons update OLD_DIR``: bring a student's lesson folder to this release, answers kept.

Every lesson notebook carries the lab's version (``metadata.lab.version``, :mod:`lab.lessons.sources`).
For each lesson of this release, the student's notebook of the same name in ``OLD_DIR`` is merged into
the new student edition by cell id:

* an **answer cell** (tagged ``answer``) keeps the student's source — whatever the release changed;
* the quiz's ``quiz_answers`` cell (tagged ``quiz-answers``) keeps the student's choices the same way;
* every **other cell** takes the release's source; each one whose source changes is listed;
* a cell only the student's notebook has (one they added) is kept, after the cell it followed;
* a cell only the release has is added.

Before a notebook is rewritten, the student's copy goes to ``OLD_DIR/backup-<old version>/`` whenever a
cell of theirs is replaced by a different one (their edit and the release's change cannot be told apart
without the old release: the backup keeps both). A lesson the folder lacks is written whole.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import nbformat

from lab import __version__
from lab.errors import LabError
from lab.lessons import editions
from lab.lessons.sources import NOTEBOOK_DIR

KEEP_TAGS = ("answer", "quiz-answers")


def _kept(cell) -> bool:
    return any(tag in cell.metadata.get("tags", []) for tag in KEEP_TAGS)


def merge(old, new) -> tuple[object, list[str]]:
    """``new`` (a student edition of this release) with ``old``'s answers and added cells; the changes made."""
    old_by_id = {cell.id: cell for cell in old.cells}
    new_ids = {cell.id for cell in new.cells}
    merged, changes = [], []
    for cell in new.cells:
        mine = old_by_id.get(cell.id)
        if mine is None:
            changes.append(f"new cell {cell.id}: {cell.source.strip().splitlines()[0][:70] if cell.source.strip() else ''}")
        elif _kept(cell):
            cell.source = mine.source
            cell.outputs = mine.get("outputs", []) if cell.cell_type == "code" else cell.get("outputs")
        elif mine.source != cell.source:
            changes.append(f"changed cell {cell.id}: {cell.source.strip().splitlines()[0][:70] if cell.source.strip() else ''}")
        merged.append(cell)
    # the student's own cells, each after the cell it followed in their notebook
    previous = None
    for cell in old.cells:
        if cell.id not in new_ids:
            at = next((i for i, c in enumerate(merged) if c.id == previous), -1) + 1
            merged.insert(at, cell)
            changes.append(f"kept your cell {cell.id}")
        previous = cell.id
    new.cells = merged
    return new, changes


def update(old_dir: Path, folder: Path = NOTEBOOK_DIR) -> list[str]:
    """Update every lesson in ``old_dir`` to this release; returns what was done, one line each."""
    old_dir = Path(old_dir)
    if not old_dir.is_dir():
        raise LabError(f"No lesson folder at {old_dir}; give the folder that holds your NN_*.ipynb notebooks.")
    lines = []
    shutil.copytree(Path(folder) / "quizzes", old_dir / "quizzes", dirs_exist_ok=True)  # the quizzes' data: no answers
    for path in editions.lesson_notebooks(folder):
        new = editions.student_edition(nbformat.read(path, as_version=4))
        target = old_dir / path.name
        if not target.is_file():
            nbformat.write(new, target)
            lines.append(f"{path.name}: added (new in {__version__})")
            continue
        old = nbformat.read(target, as_version=4)
        version = old.metadata.get("lab", {}).get("version", "unversioned")
        merged, changes = merge(old, new)
        replaced = [c for c in changes if c.startswith("changed")]
        if replaced:
            backup = old_dir / f"backup-{version}"
            backup.mkdir(exist_ok=True)
            shutil.copy2(target, backup / path.name)
            lines.append(f"{path.name}: your copy is kept in {backup / path.name}")
        nbformat.write(merged, target)
        lines.append(f"{path.name}: {version} → {__version__}, answers kept"
                     + "".join(f"\n  {change}" for change in changes))
    return lines
