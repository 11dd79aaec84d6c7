"""The grader (lab/lessons/grade.py) against students who try to fool it.

One batch of seven submissions of a seconds-long fixture lesson (tests/fixtures/grading/90_mini.py: exercises
0.1, 0.2 and 1.1, no training) is graded once, two at a time, in the fast preset; every test reads its rows.
Three of them (alice correct, carol partially correct with hidden failures, dave tampered) are compared
exactly with hand-computed golden files (tests/golden/grade_*.{csv,json}).
"""

import csv
import io
import json
import os
import re
import shutil
from pathlib import Path

import nbformat
import pytest
import torch
import torch.nn.functional as F

from lab.lessons import editions, grade, solutions, sources

HERE = Path(__file__).resolve().parent
FIXTURE = HERE / "fixtures" / "grading" / "90_mini.py"
GOLDEN = HERE / "golden"
TIMEOUT_S = 30  # per cell: the hung cell costs this much (importing torch on a loaded 2-core machine: ~10 s)

CORRECT = {  # exercise → a correct answer cell
    "0.1": "def answer(v, t, scale):\n    return F.cross_entropy(scale * t @ v.T, torch.arange(len(t)))",
    "0.2": ("def answer(v):\n    logits = 100 * v @ v.T\n    target = torch.arange(len(v))\n"
            "    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))"),
    "1.1": "def answer(base, novel):\n    return 2 * base * novel / (base + novel)",
}
TWICE_02 = ("def answer(v):  # forgot the 1/2\n    logits = 100 * v @ v.T\n    target = torch.arange(len(v))\n"
            "    return F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)")


def _public_value_01() -> float:
    """What exercise 0.1's public check expects on the fixture lesson's tensors in the fast preset (16 pairs)."""
    torch.manual_seed(0)
    v = F.normalize(torch.randn(16, 8) + 3, dim=-1)
    t = F.normalize(torch.randn(16, 8), dim=-1)
    return float(solutions.expected("0.1", v=v, t=t, scale=torch.tensor(10.0)))


def _submission(student, answers, edit=None):
    """The fixture lesson's student edition with ``answers`` (exercise → source) in its answer cells;
    ``edit(cells, ids)`` may then change the cells (ids: exercise → (answer cell id, check cell id))."""
    canon = grade.canonical(_lesson_dir() / "90_mini.ipynb")
    nb = canon.notebook
    ids = {n: (a, c) for n, a, c, _ in canon.exercises}
    nb = editions.with_answers(nb, {ids[n][0]: src for n, src in answers.items()})
    if edit:
        edit(nb.cells, ids)
    return student, nb


_DIR = {}


def _lesson_dir() -> Path:
    return _DIR["lessons"]


def _cell(cells, cid):
    return next(c for c in cells if c.id == cid)


def _students(protected: Path):
    hard_coded = f"def answer(v, t, scale):  # copied from the printed output\n    return torch.tensor({_public_value_01()!r})"
    gap_loop = ("import contextlib, io, re\nanswer = 0.0\nfor _ in range(5):  # add the gap the check reports, check again\n"
                "    out = io.StringIO()\n    with contextlib.redirect_stdout(out):\n"
                "        check('0.2', answer, v=v)\n"
                "    gap = re.search(r'too (large|small) by ([0-9.e+-]+)', out.getvalue())\n"
                "    if gap is None:\n        break\n"
                "    answer += float(gap.group(2)) * (1 if gap.group(1) == 'small' else -1)")
    writer = ("import os\nfrom pathlib import Path\nimport lab\n"
              f"target = Path({str(protected / 'lessons' / 'exercises.py')!r})\n"
              "target.write_text('EXERCISES = {}  # every answer is right\\n')\n"
              "mine = Path(lab.__file__).parent / 'lesson.py'\nos.chmod(mine.parent, 0o755)\nos.chmod(mine, 0o644)\n"
              "mine.write_text(mine.read_text() + '\\n# patched')\n" + CORRECT["1.1"])

    def dave(cells, ids):  # a cell of his own before 0.2 that redefines check and prints the success text
        at = cells.index(_cell(cells, ids["0.2"][0]))
        cells.insert(at, nbformat.v4.new_code_cell('def check(number, *args, **kwargs):\n'
                                                   '    print(f"Exercise {number}: ✓ correct — well done.")'))

    def frank(cells, ids):  # 0.1's check cell rewritten to print the success line; 0.2's check cell deleted
        _cell(cells, ids["0.1"][1]).source = ('check("0.1", None) or print("Exercise 0.1: ✓ correct — well done.")')
        cells.remove(_cell(cells, ids["0.2"][1]))

    def bob(cells, ids):  # another preset; 0.1's answer retyped as markdown; 0.2 hangs; 1.1's answer cell duplicated
        params = next(c for c in cells if "parameters" in c.metadata.get("tags", []))
        params.source = 'PRESET = "cpu"  # my laptop'
        answer = _cell(cells, ids["0.1"][0])
        cells[cells.index(answer)] = nbformat.v4.new_markdown_cell(answer.source, id=answer.id)
        third = _cell(cells, ids["1.1"][0])
        cells.insert(cells.index(third), nbformat.v4.new_code_cell(third.source, id=third.id))

    return [
        _submission("hank", {**CORRECT, "0.2": TWICE_02, "1.1": writer}),  # graded first, alone: all others after him
        _submission("alice", CORRECT),
        _submission("carol", {"0.1": hard_coded, "0.2": TWICE_02, "1.1": CORRECT["1.1"]}),
        _submission("dave", CORRECT, dave),
        _submission("frank", CORRECT, frank),
        _submission("gina", {"0.1": CORRECT["0.1"], "0.2": gap_loop,
                             "1.1": "import lab.lesson\nlab.lesson.difference = lambda *a, **k: None\n"
                                    "from lab.lessons.solutions import expected\n\n"
                                    "def answer(base, novel):\n    return expected('1.1', base=base, novel=novel)"}),
        _submission("bob", {"0.2": "import time\ntime.sleep(3600)  # hangs\n" + CORRECT["0.2"], "1.1": CORRECT["1.1"]},
                    bob),
    ]


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """The batch, graded once: (rows by (student, exercise), all rows, the protected folder, kept notebooks)."""
    root = tmp_path_factory.mktemp("grading")
    lessons = root / "lessons"
    lessons.mkdir()
    nbformat.write(sources.notebook_from_source(FIXTURE), lessons / "90_mini.ipynb")
    _DIR["lessons"] = lessons
    protected = root / "instructor-lab"  # stands for the instructor's lab/: no submission may change it
    shutil.copytree(grade.LAB_DIR, protected, ignore=shutil.ignore_patterns("__pycache__"))
    before = grade._hash_tree(protected)
    subs = root / "submissions"
    paths = []
    for student, nb in _students(protected):
        path = subs / student / "90_mini.ipynb"
        path.parent.mkdir(parents=True)
        nbformat.write(nb, path)
        paths.append(path)
    keep = root / "executed"
    rows = grade.grade(paths, timeout=TIMEOUT_S, runs_dir=root / "runs", jobs=2, protect=[protected],
                       lessons_dir=lessons, keep=keep, progress=False)
    return {(g.student, g.exercise): g for g in rows}, rows, (before, grade._hash_tree(protected)), keep


def _verdicts(graded, student):
    return {n: graded[0][(f"{student}/90_mini", n)].verdict for n in ("0.1", "0.2", "1.1")}


def test_a_correct_submission_is_correct_and_two_same_named_files_are_two_rows(graded):
    assert _verdicts(graded, "alice") == {"0.1": "correct", "0.2": "correct", "1.1": "correct"}
    students = list(dict.fromkeys(g.student for g in graded[1]))  # every file is called 90_mini.ipynb
    assert students == [f"{s}/90_mini" for s in ("hank", "alice", "carol", "dave", "frank", "gina", "bob")]
    assert _verdicts(graded, "bob")["0.1"] == "not attempted"


def test_hard_coded_answer_passes_the_public_check_and_fails_the_hidden_ones(graded):
    g = graded[0][("carol/90_mini", "0.1")]
    assert g.verdict == "partial" and g.points == 1.0 and g.max_points == 2.5
    assert [(c.visibility, c.passed) for c in g.checks] == [("public", True), ("hidden", False), ("hidden", False)]


def test_redefined_check_and_printed_success_are_tampered_from_that_cell_on(graded):
    assert _verdicts(graded, "dave") == {"0.1": "correct", "0.2": "tampered", "1.1": "tampered"}
    detail = graded[0][("dave/90_mini", "0.2")].detail
    assert "redefines check" in detail and "prints the success text" in detail


def test_edited_and_deleted_check_cells_are_tampered_by_exercise(graded):
    assert _verdicts(graded, "frank") == {"0.1": "tampered", "0.2": "tampered", "1.1": "correct"}
    assert "check cell edited" in graded[0][("frank/90_mini", "0.1")].detail
    assert "check cell deleted" in graded[0][("frank/90_mini", "0.2")].detail


def test_the_feedback_gap_loop_and_the_expected_oracle_get_nothing(graded):
    loop, oracle = graded[0][("gina/90_mini", "0.2")], graded[0][("gina/90_mini", "1.1")]
    assert loop.verdict == "wrong" and loop.points == 0
    assert oracle.verdict == "tampered" and oracle.points == 0
    assert "uses the grader's checking code" in oracle.detail and "patches lab.lesson" in oracle.detail


def test_a_write_into_lab_is_tampered_undone_and_later_students_are_untouched(graded):
    assert _verdicts(graded, "hank") == {"0.1": "correct", "0.2": "wrong", "1.1": "tampered"}
    assert "wrote into lab/" in graded[0][("hank/90_mini", "1.1")].detail
    before, after = graded[2]
    assert before == after, "the instructor's lab/ was restored"
    assert _verdicts(graded, "alice")["1.1"] == "correct"  # graded after hank


def test_a_hung_cell_costs_only_its_exercise(graded):
    assert _verdicts(graded, "bob") == {"0.1": "not attempted", "0.2": "timeout", "1.1": "correct"}


def test_another_preset_is_graded_in_the_grading_preset_and_cell_changes_are_reported(graded):
    executed = nbformat.read(graded[3] / "bob" / "90_mini.ipynb", as_version=4)
    printed = "".join(o.get("text", "") for c in executed.cells if c.cell_type == "code" for o in c.outputs)
    assert "preset fast batch 16" in printed
    assert "answer cell retyped as markdown" in graded[0][("bob/90_mini", "0.1")].detail
    assert "answer cell duplicated" in graded[0][("bob/90_mini", "1.1")].detail


def _golden_rows(graded):
    keep = ("alice/90_mini", "carol/90_mini", "dave/90_mini")
    return [g for g in graded[1] if g.student in keep]


def test_points_and_csv_match_the_golden_file(graded, tmp_path):
    grade.write_csv(_golden_rows(graded), tmp_path / "grades.csv")
    assert (tmp_path / "grades.csv").read_text() == (GOLDEN / "grade_grades.csv").read_text()


def test_gradescope_results_match_the_golden_file(graded, tmp_path):
    rows = _golden_rows(graded)
    written = grade.write_gradescope(rows, tmp_path)
    got = {p.parent.relative_to(tmp_path).as_posix(): json.loads(p.read_text()) for p in written}
    assert got == json.loads((GOLDEN / "grade_gradescope.json").read_text())
    for results in got.values():
        assert results["score"] == sum(t["score"] for t in results["tests"])
        assert {t["visibility"] for t in results["tests"]} <= {"visible", "hidden"}


def test_report_lists_the_planted_common_wrong_value(graded):
    text = grade.report(graded[1])
    block = text.split("Exercise 0.2:")[1].split("Exercise")[0]
    common = re.search(r"common wrong answer: (\S+)\s+\(2×\)", block)
    assert common, block  # carol and hank both forgot the ½
    torch.manual_seed(0)
    v = F.normalize(torch.randn(16, 8) + 3, dim=-1)
    assert float(common.group(1)) == pytest.approx(2 * float(solutions.expected("0.2", v=v)), rel=1e-3)
    assert "Exercise 0.1: 4/7 correct" in text


def test_the_table_shows_points_and_totals(graded):
    table = grade.table(_golden_rows(graded)).splitlines()
    assert re.match(r"student\s+0\.1\s+0\.2\s+1\.1\s+total", table[0])
    assert re.match(r"alice/90_mini\s+correct 2\.5/2\.5\s+correct 2\.5/2\.5\s+correct 2/2\s+7/7", table[1])


# ---------------------------------------------------------------------- in process: no kernel


def test_check_prints_a_kind_of_wrong_never_a_value_and_never_raises(capsys):
    from lab.lesson import check

    torch.manual_seed(3)
    v = F.normalize(torch.ones(6, 4) + 0.1 * torch.randn(6, 4), dim=-1)  # similar pairs: a loss far from 0
    right = float(solutions.expected("0.2", v=v))
    check("0.2", lambda v: 2 * solutions.expected("0.2", v=v), v=v)  # a factor of 2
    check("0.2", lambda v: torch.zeros(3), v=v)  # a shape
    check("0.2", lambda v: -solutions.expected("0.2", v=v), v=v)  # a sign
    check("0.2", 1.0, v=v)  # a value where a function is asked for
    check("0.2", lambda v: 1 / 0, v=v)  # the student's function raises: said, not raised
    out = capsys.readouterr().out
    assert "twice what it should be" in out and "the shape is wrong" in out and "wrong sign" in out
    assert "not a function" in out and "ZeroDivisionError" in out
    for shown in (f"{right:.3g}", f"{right:.4g}", f"{2 * right:.3g}", f"{right:.2f}"):
        assert shown not in out
    check("0.2", lambda v: solutions.expected("0.2", v=v), v=v)
    assert "✓ correct" in capsys.readouterr().out


def test_the_feedback_gap_loop_finds_no_gap(capsys):
    from lab.lesson import check

    torch.manual_seed(4)
    v = F.normalize(torch.ones(5, 4) + 0.1 * torch.randn(5, 4), dim=-1)
    answer = 0.0
    for _ in range(3):
        out = io.StringIO()
        import contextlib

        with contextlib.redirect_stdout(out):
            check("1.1", lambda base, novel: answer, base=80, novel=40)
        feedback = out.getvalue().split("✗ wrong —")[1]
        assert not re.search(r"\d", feedback), feedback  # no number to add


def test_no_expected_value_oracle_in_what_a_student_receives():
    from lab.lessons import exercises

    assert not hasattr(exercises, "expected")
    assert set(grade.HIDDEN_FROM_KERNEL) == {"lessons/exercises.py", "lessons/solutions.py"}


def test_start_in_grading_mode_uses_the_grading_preset(tmp_path, monkeypatch, capsys):
    from lab.lesson import start

    monkeypatch.setenv("LAB_RUNS_DIR", str(tmp_path))
    monkeypatch.setenv("LAB_GRADING", "1")
    monkeypatch.setenv("LAB_PRESET", "fast")
    assert start("cpu").preset.name == "fast"


def test_scan_names_each_kind_of_tampering():
    assert grade.scan("def check(*a):\n    pass") == ["redefines check"]
    assert grade.scan("import lab.lesson\nlab.lesson.difference = None") == ["patches lab.lesson / lab.lessons"]
    assert "patches lab.lesson / lab.lessons" in grade.scan("L.check = print")
    assert grade.scan("lesson.seed = 1\nanswer = lesson.compare(x)") == []  # the lesson's own object is the student's
    assert grade.scan("print('Exercise 0.1: ✓ correct')") == ["prints the success text"]
    assert grade.scan("from lab.lessons import solutions") == ["uses the grader's checking code"]


def test_grade_names_bad_input_before_running_anything(tmp_path):
    from lab.errors import LabError

    with pytest.raises(LabError, match="No such submission"):
        grade.grade([tmp_path / "nobody.ipynb"])
    (tmp_path / "a.ipynb").write_text("{}")
    with pytest.raises(LabError, match="--jobs must be at least 1"):
        grade.grade([tmp_path / "a.ipynb"], jobs=0)


def test_every_reference_solution_passes_its_hidden_checks():
    """The instructor notebooks' solution cells, run on the hidden inputs, in process (1.2 needs the teacher:
    tests/test_notebooks.py grades it through the real lesson)."""
    from lab.lessons import exercises

    checked = []
    for path in editions.lesson_notebooks():
        canon = grade.canonical(path)
        instructor = {c.id: c.source for c in nbformat.read(path, as_version=4).cells}
        for number, answer_id, _, _ in canon.exercises:
            if not exercises.EXERCISES[number].params or number == "1.2":
                continue
            namespace = {"torch": torch, "F": F}
            exec(instructor[answer_id], namespace)
            for inputs in solutions.hidden_inputs(number):
                got = namespace["answer"](**{k: v.clone() if torch.is_tensor(v) else v for k, v in inputs.items()})
                assert exercises.diagnose(got, solutions.expected(number, **inputs)) is None, number
            checked.append(number)
    assert checked == ["0.1", "0.2", "1.1", "2.1", "2.2", "6.2", "6.3"]
    assert all(solutions.hidden_inputs(n) for n in checked)
