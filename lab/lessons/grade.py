"""Grade submitted lesson notebooks: the grader decides every verdict itself, never the student's notebook.

``python -m lab grade SUBMISSIONS… [--jobs N] [--csv grades.csv] [--format gradescope --out DIR] [--report]``

How one submission is graded (nbgrader's "restore the test cells", with the verdicts taken out of the kernel):

1. **Canonical cells.** The lesson is found by its cell ids; the graded notebook is the student edition of the
   instructor source (:mod:`lab.lessons.editions`) with the student's *answer* cells (and any cells they added)
   put in. Every other cell — the parameters cell, the lesson's code, the check cells — is the canonical one
   again, so an edited cell counts for nothing; each check cell becomes a grader cell.
2. **Its own copy, in the grading preset.** The notebook runs in a temporary folder beside a read-only copy of
   ``lab/`` that has neither the references (:mod:`lab.lessons.exercises`) nor the hidden checks
   (:mod:`lab.lessons.solutions`), with the grading preset forced (``PRESET = "fast"`` after the parameters
   cell, ``LAB_PRESET``), offline, one cell at a time with a per-cell timeout (a hung cell is interrupted and
   costs the exercises it belongs to: ``timeout``). The lab's own files are hashed after every cell: a write
   into them marks the exercise ``tampered`` and is undone before the next cell.
3. **Verdicts out of the kernel.** A grader cell calls the student's ``answer`` on the lesson's inputs and,
   where the answer is a function, on the hidden checks' inputs (written just before, deleted just after), and
   saves the results as plain tensors; the grader reads them back (``torch.load(weights_only=True)``) and
   compares them with references it computes in its own process, with modules it imported before any
   submission ran. Nothing the student's code prints or redefines reaches a verdict.
4. **Tampering named.** Student code that redefines ``check``, patches ``lab.lesson``/``lab.lessons``, uses the
   checking code, prints the success text, writes into ``lab/``, or edits, deletes or retypes a check cell makes
   the exercises it precedes ``tampered`` (0 points) with the reason; duplicated, deleted and retyped exercise
   cells are reported by exercise id.

A student is the submission's path relative to the submissions' common folder (``alice/00_tour``), so two
students' files of the same name are two rows. Verdicts: ``correct``, ``partial`` (some checks passed),
``wrong``, ``not attempted``, ``error``, ``timeout``, ``tampered``.
"""

from __future__ import annotations

import copy
import csv
import hashlib
import json
import os
import re
import shutil
import stat
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
import torch

from lab.errors import LabError
from lab.lessons import editions, exercises, solutions
from lab.lessons.sources import NOTEBOOK_DIR

LAB_DIR = Path(__file__).resolve().parents[1]
GRADING_PRESET = "fast"
VERDICTS = ("correct", "partial", "wrong", "not attempted", "error", "timeout", "tampered")
CHECK_CALL = re.compile(r'^check\("(\d+\.\d+)", answer((?:, \w+=[^,]+?)*)\)\s*$')
KWARG = re.compile(r"(\w+)=([^,]+)")
HIDDEN_FROM_KERNEL = ("lessons/exercises.py", "lessons/solutions.py")  # absent from the kernel's lab copy


@dataclass(frozen=True)
class CheckResult:
    """One check of one exercise: its name, visibility (public/hidden), points and the feedback it gave."""

    name: str
    visibility: str
    points: float
    max_points: float
    passed: bool
    feedback: str = ""


@dataclass(frozen=True)
class Grade:
    """One row of the gradebook: a student's verdict and points on one exercise (or quiz question).

    Rows come from the exercises here; :data:`ROW_SOURCES` may add more per submission (e.g. quizzes)."""

    student: str
    lesson: str
    exercise: str
    verdict: str
    points: float
    max_points: float
    detail: str = ""
    checks: tuple[CheckResult, ...] = ()
    value: str = ""  # the student's public answer, summarised (for --report)


# Hook: more rows per submission, e.g. self-check quizzes. Each is called as f(student, lesson, notebook) with the
# student's submitted notebook (as submitted, not executed) and returns Grade rows; their points add to the total.
ROW_SOURCES: list[Callable[[str, str, nbformat.NotebookNode], list[Grade]]] = []


def quiz_rows(student: str, lesson: str, notebook: nbformat.NotebookNode) -> list[Grade]:
    """The lesson's self-check quiz as gradebook rows, one per question (:mod:`lab.lessons.quiz`): the answers
    are read from the submission's ``quiz_answers`` cell without running it; a question it does not answer is
    ``not attempted``. A lesson without a quiz adds no row."""
    from lab.lessons import quiz

    try:
        answers = quiz.blank(lesson)
    except LabError:
        return []
    answers.update({k: v for k, v in quiz.answers_from_notebook(notebook).items() if k in answers})
    return [Grade(student, lesson, row.question, row.verdict, row.points, row.max_points, row.why,
                  (CheckResult("self-check quiz", "public", row.points, row.max_points, row.verdict == "correct",
                               row.why),), value="" if row.chosen is None else str(row.chosen))
            for row in quiz.grade(answers)]


ROW_SOURCES.append(quiz_rows)


# ---------------------------------------------------------------------- the canonical notebook of a lesson


@dataclass
class Canonical:
    lesson: str
    notebook: nbformat.NotebookNode  # the student edition
    exercises: list[tuple[str, str, str, dict[str, str]]] = field(default_factory=list)  # number, answer id, check id, kwargs
    ids: set[str] = field(default_factory=set)


def canonical(path: Path) -> Canonical:
    """The student edition of the instructor notebook ``path``, with each exercise's answer and check cell ids."""
    nb = editions.student_edition(nbformat.read(path, as_version=4))
    canon = Canonical(path.stem, nb, ids={c.id for c in nb.cells})
    previous = None
    for cell in nb.cells:
        match = CHECK_CALL.match(cell.source.strip()) if cell.cell_type == "code" else None
        if match:
            kwargs = {k: v.strip() for k, v in KWARG.findall(match.group(2))}
            canon.exercises.append((match.group(1), previous.id, cell.id, kwargs))
        if "answer" in cell.metadata.get("tags", []):
            previous = cell
    return canon


def lessons(folder: Path = NOTEBOOK_DIR) -> dict[str, Canonical]:
    return {p.stem: canonical(p) for p in editions.lesson_notebooks(folder)}


def which_lesson(nb, canon: dict[str, Canonical]) -> Canonical | None:
    """The lesson sharing the most cell ids with ``nb`` (the editions keep the instructor source's ids)."""
    ids = {c.get("id") for c in nb.cells}
    best = max(canon.values(), key=lambda c: len(c.ids & ids), default=None)
    return best if best is not None and len(best.ids & ids) >= len(best.ids) // 2 else None


# ---------------------------------------------------------------------- tampering, read from the student's code


def _lab_names() -> set[str]:
    from lab import lesson

    names = {n for n, v in vars(lesson).items() if callable(v) and not n.startswith("_")}
    return names | {"EXERCISES", "diagnose", "reference", "expected", "CHECKS"}


PATTERNS = [
    (re.compile(r"^\s*def\s+check\b|\bcheck\s*=(?!=)|\bas\s+check\b|globals\(\)\s*\[\s*['\"]check", re.M), "redefines check"),
    (re.compile(r"lab\.lessons?\.(exercises|solutions)|from\s+lab\.lessons\s+import\s+[\w, ]*(exercises|solutions)"
                r"|\bexpected\s*\(|\bEXERCISES\b", re.M), "uses the grader's checking code"),
    (re.compile(r"✓\s*correct|well done", re.I), "prints the success text"),
    (re.compile(r"sys\.modules\s*\[\s*['\"]lab|setattr\(\s*(lab|L)\b"), "patches the lab's modules"),
]


def scan(source: str) -> list[str]:
    """Why the student code ``source`` counts as tampering (empty when it does not)."""
    reasons = [why for pattern, why in PATTERNS if pattern.search(source)]
    patched = re.findall(r"\b(?:lab\.lessons?(?:\.\w+)*|\w+)\.(\w+)\s*=(?!=)", source)
    if any(name in _LAB_NAMES for name in patched) or re.search(r"\blab\.lessons?(\.\w+)*\.\w+\s*=(?!=)", source):
        reasons.append("patches lab.lesson / lab.lessons")
    return list(dict.fromkeys(reasons))


_LAB_NAMES = _lab_names()


# ---------------------------------------------------------------------- the graded notebook


CAPTURE = '''\
# Exercise {number}: checked by `python -m lab grade` (the grader put this cell in place of the check cell)
def _lab_grade_capture():
    import torch as _torch
    def plain(x):
        if x is None:
            return {{"kind": "none"}}
        if isinstance(x, (str, bytes)):
            return {{"kind": "type", "text": type(x).__name__}}
        try:
            return {{"kind": "value", "value": _torch.as_tensor(x.detach() if _torch.is_tensor(x) else x,
                                                           dtype=_torch.float64).cpu().clone()}}
        except Exception:
            return {{"kind": "type", "text": type(x).__name__}}
    def run(fn, inputs):
        try:
            return plain(fn(**inputs))
        except Exception as err:
            return {{"kind": "error", "text": f"{{type(err).__name__}}: {{err}}"[:300]}}
    def keep(x):
        if _torch.is_tensor(x):
            return x.detach().cpu().clone()
        if isinstance(x, (int, float, str)) or (isinstance(x, (tuple, list)) and all(isinstance(i, str) for i in x)):
            return x
        return None
    out = {{"public_inputs": {{}}, "results": []}}
    g = globals()
    if "answer" not in g:
        out["missing"] = "no answer defined"
        _torch.save(out, {out!r})
        return
    fn = g["answer"]
    try:
        inputs = {{{inputs}}}
    except Exception as err:
        out["missing"] = f"the lesson's inputs are not there ({{type(err).__name__}}: {{err}})"[:300]
        _torch.save(out, {out!r})
        return
    out["public_inputs"] = {{k: keep(v) for k, v in inputs.items() if keep(v) is not None}}
    if callable(fn):
        out["results"].append(run(fn, inputs))
        for hidden in _torch.load({hidden!r}, weights_only=False):
            out["results"].append(run(fn, {{**inputs, **hidden}}))
    else:
        out["results"].append(plain(fn))
        out["value_form"] = True
    _torch.save(out, {out!r})
_lab_grade_capture()
del _lab_grade_capture
globals().pop("answer", None)  # the next exercise cannot reuse this answer
'''

FORCE_PRESET = f'PRESET = "{GRADING_PRESET}"  # forced by `python -m lab grade`: every submission is graded in one preset'


@dataclass
class Plan:
    """The graded notebook and what the grader knows about each of its cells."""

    notebook: nbformat.NotebookNode
    capture: dict[int, str] = field(default_factory=dict)  # cell index → exercise number
    student: set[int] = field(default_factory=set)  # indices of cells that hold the student's code
    notes: dict[str, list[str]] = field(default_factory=dict)  # exercise → structural notes
    tampered: dict[str, list[str]] = field(default_factory=dict)  # exercise → reasons found before running


def assemble(sub, canon: Canonical, workdir: Path) -> Plan:
    """The canonical notebook with ``sub``'s answer cells and added cells, each check cell a grader cell."""
    by_id: dict[str, list] = {}
    for cell in sub.cells:
        by_id.setdefault(cell.get("id"), []).append(cell)
    answer_ids = {a: n for n, a, _, _ in canon.exercises}
    check_ids = {c: n for n, _, c, _ in canon.exercises}
    notes: dict[str, list[str]] = {n: [] for n, *_ in canon.exercises}
    tampered: dict[str, list[str]] = {n: [] for n, *_ in canon.exercises}
    for cid, number in answer_ids.items():
        cells = by_id.get(cid, [])
        if not cells:
            notes[number].append("answer cell deleted")
        elif len(cells) > 1:
            notes[number].append(f"answer cell duplicated ({len(cells)} copies; the last one is graded)")
        if cells and cells[-1].cell_type != "code":
            notes[number].append(f"answer cell retyped as {cells[-1].cell_type}")
    canonical_checks = {c.id: c for c in canon.notebook.cells if c.id in check_ids}
    for cid, number in check_ids.items():
        cells = by_id.get(cid, [])
        if not cells:
            tampered[number].append("check cell deleted")
        elif cells[-1].cell_type != "code":
            tampered[number].append(f"check cell retyped as {cells[-1].cell_type}")
        elif cells[-1].source.strip() != canonical_checks[cid].source.strip():
            tampered[number].append("check cell edited")
        if len(cells) > 1:
            notes[number].append(f"check cell duplicated ({len(cells)} copies)")
    # the student's added cells go before the canonical cell that followed them in the submission
    added: dict[str | None, list] = {}
    pending = []
    for cell in sub.cells:
        if cell.get("id") in canon.ids:
            added.setdefault(cell.get("id"), []).extend(pending)
            pending = []
        else:
            pending.append(cell)
    added.setdefault(None, []).extend(pending)
    answers = {cells[-1].source.strip(): answer_ids[cid] for cid, cells in by_id.items()
               if cid in answer_ids and cells[-1].source.strip()}
    for cell in [c for cs in added.values() for c in cs if c.cell_type == "code"]:
        for number in re.findall(r'check\("(\d+\.\d+)"', cell.source):
            if number in notes:
                notes[number].append("check cell duplicated (a copy in another cell)")
        if cell.source.strip() in answers:
            notes[answers[cell.source.strip()]].append("answer cell duplicated (a copy in another cell)")
    cells, student, capture = [], set(), {}
    grader_dir = workdir / "grader"
    for cell in canon.notebook.cells:
        for extra in added.get(cell.id, []):
            if extra.cell_type == "code":
                student.add(len(cells))
                cells.append(nbformat.v4.new_code_cell(extra.source))
        if cell.id in answer_ids:
            mine = by_id.get(cell.id, [])
            if mine and mine[-1].cell_type == "code":
                student.add(len(cells))
                cells.append(nbformat.v4.new_code_cell(mine[-1].source))
        elif cell.id in check_ids:
            number = check_ids[cell.id]
            kwargs = next(k for n, _, c, k in canon.exercises if c == cell.id)
            inputs = ", ".join(f"{k!r}: {v}" for k, v in kwargs.items())
            capture[len(cells)] = number
            cells.append(nbformat.v4.new_code_cell(CAPTURE.format(
                number=number, inputs=inputs, out=str(grader_dir / f"{number}.out.pt"),
                hidden=str(grader_dir / f"{number}.in.pt"))))
        elif cell.cell_type == "code":
            cells.append(nbformat.v4.new_code_cell(cell.source))
            if "parameters" in cell.metadata.get("tags", []):
                cells.append(nbformat.v4.new_code_cell(FORCE_PRESET))
    for extra in added.get(None, []):
        if extra.cell_type == "code":
            student.add(len(cells))
            cells.append(nbformat.v4.new_code_cell(extra.source))
    graded = nbformat.v4.new_notebook(cells=cells, metadata=copy.deepcopy(canon.notebook.metadata))
    return Plan(graded, capture, student, notes, tampered)


def owner(plan: Plan, index: int) -> list[str]:
    """The exercises a student cell at ``index`` can affect: every one checked after it."""
    return [n for i, n in sorted(plan.capture.items()) if i > index]


# ---------------------------------------------------------------------- running one submission


def _hash_tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and "__pycache__" not in p.parts}


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts}


def _restore(root: Path, snapshot: dict[str, bytes]) -> list[str]:
    """Put ``root`` back as ``snapshot`` had it; returns the files that had changed."""
    changed = []
    for p in list(root.rglob("*")):
        rel = str(p.relative_to(root))
        if p.is_file() and "__pycache__" not in p.parts and rel not in snapshot:
            p.unlink()
            changed.append(rel)
    for rel, data in snapshot.items():
        p = root / rel
        if not p.is_file() or p.read_bytes() != data:
            p.parent.mkdir(parents=True, exist_ok=True)
            if p.exists():
                p.chmod(stat.S_IRUSR | stat.S_IWUSR | stat.S_IRGRP | stat.S_IROTH)
            p.write_bytes(data)
            changed.append(rel)
    return changed


def _readonly_copy(src: Path, dst: Path) -> None:
    """A copy of ``src`` nobody may write to (the grader's own modules left out of a lab/ copy)."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
    for rel in HIDDEN_FROM_KERNEL if src == LAB_DIR else ():
        (dst / rel).unlink(missing_ok=True)
    for p in sorted(dst.rglob("*"), reverse=True):
        p.chmod(stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH | (stat.S_IXUSR if p.is_dir() else 0))
    dst.chmod(stat.S_IRUSR | stat.S_IXUSR)


def _make_writable(root: Path) -> None:
    for p in [root, *root.rglob("*")]:
        if not p.is_symlink():
            p.chmod(p.stat().st_mode | stat.S_IWUSR)


@dataclass
class Run:
    timed_out: set[int] = field(default_factory=set)
    errors: dict[int, str] = field(default_factory=dict)
    wrote: dict[int, list[str]] = field(default_factory=dict)  # cell → files of lab/ it changed
    forged: dict[int, list[str]] = field(default_factory=dict)  # cell → grader files it wrote
    captures: dict[str, dict] = field(default_factory=dict)
    failure: str = ""


def _cell_error(cell) -> str:
    errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
    return f"{errors[0]['ename']}: {errors[0]['evalue']}"[:300] if errors else ""


def execute(plan: Plan, workdir: Path, timeout: int, runs_dir: Path, protect: list[Path]) -> Run:
    """Run ``plan``'s notebook cell by cell in ``workdir`` (see the module's docstring)."""
    from nbclient import NotebookClient
    from nbclient.exceptions import DeadKernelError

    grader_dir = workdir / "grader"
    grader_dir.mkdir(parents=True, exist_ok=True)
    kernel_lab = workdir / "lab"
    watched = [*protect, kernel_lab]
    hashes = {root: _hash_tree(root) for root in watched}
    snapshots = {root: _snapshot(root) for root in protect}
    env = {**os.environ, "LAB_PRESET": GRADING_PRESET, "LAB_HEADLESS": "1", "TQDM_DISABLE": "1",
           "HF_HUB_OFFLINE": "1", "LAB_RUNS_DIR": str(runs_dir), "LAB_GRADING": "1",
           "PYTHONDONTWRITEBYTECODE": "1", "PYTHONPATH": str(workdir)}
    nb, run = plan.notebook, Run()
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", allow_errors=True,
                            interrupt_on_timeout=True, resources={"metadata": {"path": str(workdir / "notebooks")}})
    try:
        with client.setup_kernel(env=env, cwd=str(workdir / "notebooks")):
            for index, cell in enumerate(nb.cells):
                number = plan.capture.get(index)
                if number is not None:
                    torch.save(solutions.hidden_inputs(number), grader_dir / f"{number}.in.pt")
                before = {p.name for p in grader_dir.iterdir()}
                start = time.monotonic()
                client.execute_cell(cell, index)
                if time.monotonic() - start >= timeout:
                    run.timed_out.add(index)
                if _cell_error(cell):
                    run.errors[index] = _cell_error(cell)
                if number is not None:
                    (grader_dir / f"{number}.in.pt").unlink(missing_ok=True)
                    out = grader_dir / f"{number}.out.pt"
                    if out.is_file():
                        try:
                            run.captures[number] = torch.load(out, weights_only=True)
                        except Exception as err:  # anything but plain tensors and numbers: not the grader's file
                            run.forged.setdefault(index, []).append(f"{out.name} ({type(err).__name__})")
                        out.unlink()
                else:
                    new = sorted({p.name for p in grader_dir.iterdir()} - before)
                    if new:
                        run.forged[index] = new
                        for name in new:
                            (grader_dir / name).unlink(missing_ok=True)
                for root in watched:
                    now = _hash_tree(root)
                    if now != hashes[root]:
                        changed = sorted(k for k in now.keys() | hashes[root].keys() if now.get(k) != hashes[root].get(k))
                        run.wrote.setdefault(index, []).extend(changed)
                        if root in snapshots:
                            _restore(root, snapshots[root])
                        hashes[root] = _hash_tree(root)
    except DeadKernelError as err:
        run.failure = f"the kernel died ({err})"[:300]
    except Exception as err:  # a kernel that would not start, or nbclient itself: every exercise left gets a row
        run.failure = f"{type(err).__name__}: {err}"[:300]
    return run


# ---------------------------------------------------------------------- verdicts


def summary(value: torch.Tensor) -> str:
    """A short, comparable summary of an answer (for --report's most common wrong values)."""
    if value.numel() == 1:
        return f"{value.item():.4g}"
    return f"shape {tuple(value.shape)}, mean {value.mean().item():.4g}"


_GRADER_OBJECTS: dict[str, object] = {}


def _grader_input(name: str):
    if name not in _GRADER_OBJECTS:
        _GRADER_OBJECTS[name] = solutions.GRADER_OBJECTS[name]()
    return _GRADER_OBJECTS[name]


def _reference(number: str, public: dict, override: dict | None = None):
    ex = exercises.EXERCISES[number]
    names = ex.params or tuple(public)
    inputs = {**public, **(override or {})}
    for name in names:
        if name not in inputs and name in solutions.GRADER_OBJECTS:
            inputs[name] = _grader_input(name)
    return ex.reference(**{k: inputs[k] for k in inputs if not ex.params or k in ex.params})


def judge(number: str, capture: dict) -> tuple[str, list[CheckResult], str, str]:
    """(verdict, check results, detail, public value summary) of one exercise from the kernel's capture."""
    ex, checks = exercises.EXERCISES[number], solutions.checks(number)
    zero = [CheckResult(c.name, c.visibility, 0.0, c.points, False, "") for c in checks]
    if "missing" in capture:
        verdict = "not attempted" if capture["missing"] == "no answer defined" else "error"
        return verdict, zero, capture["missing"], ""
    results = capture["results"]
    public = results[0]
    if public["kind"] == "none":
        return "not attempted", zero, "", ""
    if public["kind"] == "error":
        return "error", zero, f"answer raised {public['text']}", ""
    hidden_inputs = solutions.hidden_inputs(number)
    out, value = [], ""
    for i, check in enumerate(checks):
        if i >= len(results):
            feedback = ("the answer is a value, not the function answer(" + ", ".join(ex.params) + ")"
                        if capture.get("value_form") else "not run")
            out.append(CheckResult(check.name, check.visibility, 0.0, check.points, False, feedback))
            continue
        result = results[i]
        if result["kind"] == "error":
            feedback = f"answer raised {result['text']}"
        elif result["kind"] in ("none", "type"):
            feedback = f"the answer is a {result.get('text', 'None')}, not a number or a tensor"
        else:
            try:
                reference = _reference(number, capture["public_inputs"], hidden_inputs[i - 1] if i else None)
                feedback = exercises.diagnose(result["value"], reference, ex.atol) or ""
            except Exception as err:  # the public inputs the kernel handed back do not fit the reference
                feedback = f"could not be checked ({type(err).__name__}: {err})"[:300]
            if i == 0:
                value = summary(result["value"])
        passed = result["kind"] == "value" and feedback == ""
        out.append(CheckResult(check.name, check.visibility, check.points if passed else 0.0, check.points, passed,
                               feedback))
    n_passed = sum(r.passed for r in out)
    verdict = "correct" if n_passed == len(out) else "partial" if n_passed else "wrong"
    detail = "; ".join(dict.fromkeys(f"{r.name.split(':')[0]}: {r.feedback}" for r in out if not r.passed))
    return verdict, out, detail, value


def verdicts(plan: Plan, run: Run, student: str, lesson: str) -> list[Grade]:
    """Every exercise's row, from what the grader captured and what it saw the student's cells do."""
    tampered = {n: list(r) for n, r in plan.tampered.items()}
    for index in sorted(plan.student):
        source = plan.notebook.cells[index].source
        for reason in scan(source):
            for number in owner(plan, index):
                tampered[number].append(reason)
    for index, files in run.wrote.items():
        for number in owner(plan, index) or list(tampered)[-1:]:
            tampered[number].append(f"wrote into lab/ ({', '.join(files[:3])})")
    for index, files in run.forged.items():
        for number in owner(plan, index) or list(tampered)[-1:]:
            tampered[number].append(f"wrote the grader's files ({', '.join(files[:3])})")
    rows, previous = [], -1
    for index, number in sorted(plan.capture.items()):
        checks = solutions.checks(number)
        total = solutions.max_points(number)
        zero = tuple(CheckResult(c.name, c.visibility, 0.0, c.points, False, "") for c in checks)
        notes = "; ".join(plan.notes.get(number, []))
        span = range(previous + 1, index + 1)
        previous = index
        reasons = list(dict.fromkeys(tampered.get(number, [])))
        if reasons:
            rows.append(Grade(student, lesson, number, "tampered", 0.0, total, "; ".join(reasons + plan.notes[number]), zero))
            continue
        if any(i in run.timed_out and (i in plan.student or i == index) for i in span):
            rows.append(Grade(student, lesson, number, "timeout", 0.0, total,
                              "; ".join(["a cell ran past the per-cell timeout"] + plan.notes[number]), zero))
            continue
        capture = run.captures.get(number)
        if capture is None:
            why = run.errors.get(index) or run.failure or "the grader's check did not run"
            if any(i in run.timed_out for i in range(index)):
                why = f"an earlier cell timed out; {why}"
            rows.append(Grade(student, lesson, number, "error", 0.0, total, "; ".join([why] + plan.notes[number]), zero))
            continue
        verdict, results, detail, value = judge(number, capture)
        if verdict == "error" and run.errors.get(index - 1):
            detail = f"{detail}; answer cell: {run.errors[index - 1]}"
        detail = "; ".join(x for x in (detail, notes) if x)
        rows.append(Grade(student, lesson, number, verdict, sum(r.points for r in results), total, detail,
                          tuple(results), value))
    return rows


# ---------------------------------------------------------------------- a batch of submissions


def student_ids(paths: list[Path], root: Path | None = None) -> dict[Path, str]:
    """Each submission's student: its path relative to ``root`` (default: the submissions' common folder),
    without ``.ipynb`` — ``alice/00_tour`` and ``bob/00_tour`` are two students."""
    resolved = [Path(p).resolve() for p in paths]
    if root is None:
        root = Path(os.path.commonpath([p.parent for p in resolved])) if resolved else Path.cwd()
    out = {}
    for path, r in zip(paths, resolved):
        try:
            out[path] = r.relative_to(Path(root).resolve()).with_suffix("").as_posix()
        except ValueError:
            out[path] = r.with_suffix("").as_posix()
    if len(set(out.values())) != len(out):
        raise LabError("Two submissions resolve to the same student; name each file once.")
    return out


def grade_one(path: Path, student: str, canon: dict[str, Canonical], timeout: int, runs_dir: Path,
              protect: list[Path], keep: Path | None = None) -> list[Grade]:
    """Grade one submission in its own temporary folder (removed afterwards)."""
    try:
        sub = nbformat.read(path, as_version=4)
    except Exception as err:
        return [Grade(student, "?", "—", "error", 0.0, 0.0, f"not a readable notebook ({type(err).__name__}: {err})")]
    lesson = which_lesson(sub, canon)
    if lesson is None:
        return [Grade(student, "?", "—", "error", 0.0, 0.0, "not one of the lessons' notebooks (its cell ids match none)")]
    workdir = Path(tempfile.mkdtemp(prefix="lab-grade-"))
    try:
        (workdir / "notebooks").mkdir()
        _readonly_copy(LAB_DIR, workdir / "lab")
        if (LAB_DIR.parent / "data").is_dir():  # the shipped teacher and the papers' tables, read-only too
            _readonly_copy(LAB_DIR.parent / "data", workdir / "data")
        plan = assemble(sub, lesson, workdir)
        run = execute(plan, workdir, timeout, runs_dir, protect)
        if keep is not None:  # what actually ran, with its outputs, for the instructor to read
            (keep / f"{student}.ipynb").parent.mkdir(parents=True, exist_ok=True)
            nbformat.write(plan.notebook, keep / f"{student}.ipynb")
        rows = verdicts(plan, run, student, lesson.lesson)
    finally:
        _make_writable(workdir)
        shutil.rmtree(workdir, ignore_errors=True)
    for source in ROW_SOURCES:
        rows += source(student, lesson.lesson, sub)
    return rows


def grade(paths: list[Path], timeout: int = 300, runs_dir: str | Path | None = None, jobs: int = 1,
          root: Path | None = None, protect: list[Path] | None = None, progress: bool = True,
          lessons_dir: Path = NOTEBOOK_DIR, keep: Path | None = None) -> list[Grade]:
    """Grade every submission (``jobs`` at a time); rows in the submissions' order.

    One runs folder is shared, so each lesson's fast runs train once: the first submission of each lesson
    runs alone, the rest ``jobs`` at a time. ``protect`` are the folders no submission may change (default:
    this lab's ``lab/``); ``lessons_dir`` holds the instructor notebooks; ``keep`` a folder for each executed
    graded notebook (``<student>.ipynb``)."""
    if not paths:
        raise LabError("Name at least one submitted notebook (SUBMISSION.ipynb).")
    paths = [Path(p) for p in paths]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise LabError(f"No such submission: {', '.join(missing)}.")
    if timeout < 1:
        raise LabError(f"--timeout must be at least 1 second (got {timeout}).")
    if jobs < 1:
        raise LabError(f"--jobs must be at least 1 (got {jobs}).")
    students = student_ids(paths, root)
    canon = lessons(lessons_dir)
    runs_dir = Path(runs_dir or os.environ.get("LAB_RUNS_DIR") or tempfile.mkdtemp(prefix="grade-runs-"))
    protect = [LAB_DIR] if protect is None else protect
    from tqdm.auto import tqdm

    bar = tqdm(total=len(paths), desc="grading", unit="notebook", disable=not progress)
    results: dict[Path, list[Grade]] = {}

    def one(path):
        return grade_one(path, students[path], canon, timeout, runs_dir, protect, keep)

    first, rest, seen = [], [], set()
    for path in paths:  # one submission per lesson first, alone: it trains the lesson's shared runs
        key = path.name[:2]
        (rest if key in seen else first).append(path)
        seen.add(key)
    for path in first:
        results[path] = one(path)
        bar.update()
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = {pool.submit(one, p): p for p in rest}
        for future in as_completed(futures):
            results[futures[future]] = future.result()
            bar.update()
    bar.close()
    return [g for p in paths for g in results[p]]


# ---------------------------------------------------------------------- tables, CSV, Gradescope, report


def _order(number: str) -> tuple:
    """Exercises in numeric order (2.10 after 2.9), a lesson's quiz questions (``2.q1``) after its exercises."""
    return tuple((0, int(x), "") if x.isdigit() else (1, 0, x) for x in re.split(r"[.]", number))


def _points(x: float) -> str:
    return f"{x:g}"


def table(grades: list[Grade]) -> str:
    """Students as rows, exercises as columns (verdict and points), then each student's total."""
    students = list(dict.fromkeys(g.student for g in grades))
    columns = sorted({g.exercise for g in grades}, key=_order)
    cell = {(g.student, g.exercise): g for g in grades}
    width = max([len("student"), *map(len, students)])
    lines = [f"{'student':<{width}}  " + "  ".join(f"{e:>20}" for e in columns) + "  total"]
    for s in students:
        got = [g for g in grades if g.student == s]
        shown = []
        for e in columns:
            g = cell.get((s, e))
            shown.append(f"{'—':>20}" if g is None else f"{g.verdict + ' ' + _points(g.points) + '/' + _points(g.max_points):>20}")
        lines.append(f"{s:<{width}}  " + "  ".join(shown)
                     + f"  {_points(sum(g.points for g in got))}/{_points(sum(g.max_points for g in got))}")
    return "\n".join(lines)


CSV_HEADER = ["student", "lesson", "exercise", "check", "visibility", "verdict", "points", "max_points", "detail"]


def csv_rows(grades: list[Grade]) -> list[list[str]]:
    """One row per student, exercise and check (``check`` empty on the exercise's own row), then the total."""
    rows = []
    for student in dict.fromkeys(g.student for g in grades):
        mine = [g for g in grades if g.student == student]
        for g in mine:
            rows.append([g.student, g.lesson, g.exercise, "", "", g.verdict, _points(g.points), _points(g.max_points),
                         g.detail])
            for c in g.checks:
                rows.append([g.student, g.lesson, g.exercise, c.name, c.visibility, "passed" if c.passed else "failed",
                             _points(c.points), _points(c.max_points), c.feedback])
        rows.append([student, mine[0].lesson, "total", "", "", "", _points(sum(g.points for g in mine)),
                     _points(sum(g.max_points for g in mine)), ""])
    return rows


def write_csv(grades: list[Grade], path: Path) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(CSV_HEADER)
        writer.writerows(csv_rows(grades))


def gradescope(grades: list[Grade], student: str) -> dict:
    """Gradescope's ``results.json`` for one student: the score and one test per check (public tests
    ``visible``, hidden ones ``hidden``); a tampered, timed-out or failed exercise is one test at 0."""
    tests = []
    for g in (g for g in grades if g.student == student):
        if g.checks and g.verdict not in ("tampered", "timeout", "error", "not attempted"):
            for c in g.checks:
                tests.append({"name": f"Exercise {g.exercise} — {c.name}", "score": c.points, "max_score": c.max_points,
                              "visibility": "visible" if c.visibility == "public" else "hidden",
                              "output": "passed" if c.passed else c.feedback})
        else:
            tests.append({"name": f"Exercise {g.exercise}", "score": g.points, "max_score": g.max_points,
                          "visibility": "visible", "output": f"{g.verdict}: {g.detail}" if g.detail else g.verdict})
    return {"score": sum(t["score"] for t in tests), "tests": tests}


def write_gradescope(grades: list[Grade], out: Path) -> list[Path]:
    """``out/<student>/results.json`` for every student."""
    written = []
    for student in dict.fromkeys(g.student for g in grades):
        path = Path(out) / student / "results.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(gradescope(grades, student), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        written.append(path)
    return written


def report(grades: list[Grade], top: int = 3) -> str:
    """Per exercise: the pass rate, the most common wrong public answers and the errors, from the submissions."""
    lines = []
    for number in sorted({g.exercise for g in grades}, key=_order):
        rows = [g for g in grades if g.exercise == number]
        counts = Counter(g.verdict for g in rows)
        wrong = Counter(g.value for g in rows if g.verdict in ("wrong", "partial") and g.value)
        errors = Counter(g.detail.split(";")[0] for g in rows if g.verdict in ("error", "timeout", "tampered"))
        lines.append(f"Exercise {number}: {counts['correct']}/{len(rows)} correct "
                     f"({100 * counts['correct'] / len(rows):.0f} %); "
                     + ", ".join(f"{v} {n}" for v, n in counts.most_common() if v != "correct"))
        for value, n in wrong.most_common(top):
            lines.append(f"  common wrong answer: {value}  ({n}×)")
        for text, n in errors.most_common(top):
            lines.append(f"  {text}  ({n}×)")
    return "\n".join(lines)
