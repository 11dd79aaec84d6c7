"""The lessons (notebooks/): sources, editions, grader, offline figures and JupyterLab.

Each lesson is executed once with nbclient in the ``fast`` preset (seconds-long runs under one temporary
LAB_RUNS_DIR, so the no-KD student is trained once), offline; the executed copies feed the student-edition,
HTML and browser tests.
"""

import csv
import json
import os
import re
import secrets
import signal
import socket
import subprocess
from pathlib import Path

import nbformat
import pytest

from lab.lessons import editions, grade, sources

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))
TIMEOUT_S = 300  # per cell; a whole fast-preset notebook takes well under a minute on a 2-core CPU
CHECK = re.compile(r'^check\("(\d+\.\d+)", answer((, \w+=[\w.\[\]]+)*)\)$')
HEADLESS = {"LAB_PRESET": "fast", "HF_HUB_OFFLINE": "1", "LAB_HEADLESS": "1", "TQDM_DISABLE": "1"}


def _cells(nb, tag):
    return [c for c in nb.cells if tag in c.metadata.get("tags", [])]


def _checks(nb):
    return [c for c in nb.cells if c.cell_type == "code" and c.source.startswith("check(")]


def _stream(nb) -> str:
    return "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)


@pytest.fixture(scope="module")
def lesson_runs(tmp_path_factory):
    return tmp_path_factory.mktemp("lesson-runs")


def _execute(nb, runs, monkeypatch, allow_errors=False):
    from nbclient import NotebookClient

    for key, value in {**HEADLESS, "LAB_RUNS_DIR": str(runs)}.items():
        monkeypatch.setenv(key, value)
    NotebookClient(nb, timeout=TIMEOUT_S, kernel_name="python3", allow_errors=allow_errors,
                   resources={"metadata": {"path": str(NOTEBOOK_DIR)}}).execute()
    return nb


# ---------------------------------------------------------------------- sources


def test_the_lessons_are_there():
    assert [p.stem[:2] for p in NOTEBOOKS] == ["00", "01", "02", "03", "04", "05", "06", "07", "08"]
    assert [p.stem for p in sources.sources()] == [p.stem for p in NOTEBOOKS]


def test_notebooks_match_their_jupytext_sources():
    assert sources.stale() == [], "run `python -m lab lessons sync` (make notebooks)"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{path.name} cell {i} has outputs"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_built_on_lab(path):
    nb = nbformat.read(path, as_version=4)
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    first = next(c for c in nb.cells if c.cell_type == "code")
    assert "parameters" in first.metadata.get("tags", []) and 'os.environ.get("LAB_PRESET", "cpu")' in first.source
    assert "from lab.lesson import" in code and "lesson = start(PRESET)" in code
    assert re.search(r"^from lab\.(losses|eval)", code, re.M), "a lesson checks its math against lab's functions"
    assert "assert_same(" in code and "check(" in code
    assert "lesson.clip_run(" in code or "lesson.prompt_run(" in code
    assert re.search(r"arxiv\.org/abs/\d{4}\.\d{5}", "\n".join(c.source for c in nb.cells)), "paper references"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_exercise_is_a_question_a_tagged_solution_and_a_check_without_expected_values(path):
    nb = nbformat.read(path, as_version=4)
    checks, solutions = _checks(nb), _cells(nb, "solution")
    assert len(checks) == len(solutions) >= 2
    for check in checks:
        assert CHECK.match(check.source), f"{check.source!r}: a check names its exercise and passes variables only"
        index = nb.cells.index(check)
        assert "solution" in nb.cells[index - 1].metadata.get("tags", [])
        assert editions.QUESTION.match(nb.cells[index - 2].source)


# ---------------------------------------------------------------------- the lessons run (instructor edition)


@pytest.fixture(scope="module")
def executed(lesson_runs, tmp_path_factory):
    """Every lesson executed in the fast preset, with one appended cell that prints each exercise's expected
    value (so the student-edition test can look for them)."""
    monkeypatch = pytest.MonkeyPatch()
    out = {}
    try:
        for path in NOTEBOOKS:
            nb = nbformat.read(path, as_version=4)
            calls = [CHECK.match(c.source) for c in _checks(nb)]
            probe = ("import json\nfrom lab.lessons.solutions import expected\n_expected = {}\n"
                     + "".join(f"_expected['{m.group(1)}'] = expected('{m.group(1)}'{m.group(2)})\n" for m in calls)
                     + "print('EXPECTED', json.dumps({k: float(v) for k, v in _expected.items() "
                       "if getattr(v, 'numel', lambda: 1)() == 1}))")
            nb.cells.append(nbformat.v4.new_code_cell(probe))
            out[path.stem] = _execute(nb, lesson_runs, monkeypatch)
    finally:
        monkeypatch.undo()
    return out


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_lesson_runs_in_the_fast_preset_and_every_reference_solution_passes(path, executed):
    nb = executed[path.stem]
    text = _stream(nb)
    assert "✓ equal" in text
    assert text.count("✓ correct") == len(_checks(nb)) and "not attempted" not in text
    assert "0%|" not in text, "no frozen progress bar in a headless run"


def _expected_numbers(nb) -> dict[str, float]:
    line = next(line for line in _stream(nb).splitlines() if line.startswith("EXPECTED "))
    return json.loads(line[len("EXPECTED "):])


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_student_edition_holds_no_solution_and_no_expected_value(path, executed):
    instructor = nbformat.read(path, as_version=4)
    student = editions.student_edition(instructor)
    text = "\n".join(c.source for c in student.cells)
    assert not _cells(student, "solution") and not _cells(student, "instructor")
    assert len(_cells(student, "answer")) == len(_cells(instructor, "solution"))
    for cell in _cells(student, "answer"):
        assert cell.source.rstrip().endswith("answer = None") and cell.source.startswith("# Exercise ")
    lesson_text = "\n".join(c.source for c in instructor.cells if "solution" not in c.metadata.get("tags", []))
    for solution in _cells(instructor, "solution"):
        for line in solution.source.splitlines():
            if len(line.strip()) > 12 and line.strip() not in lesson_text:  # not a line the lesson itself teaches
                assert line.strip() not in text, f"solution line {line.strip()!r} left in the student edition"
    for number, value in _expected_numbers(executed[path.stem]).items():
        if abs(value - round(value)) > 1e-6:  # whole numbers (a width, 0, 1) are the concepts asked, not leaks
            for shown in {f"{value:.2f}", f"{value:.3g}", f"{value:.4g}", f"{value:.6g}", repr(value)}:
                if len(shown.lstrip("-")) >= 4:  # "0.5" or "213" would match unrelated text
                    assert shown not in text, f"exercise {number}'s expected value {shown} is in the student edition"
    # the reference solutions pasted back give the instructor edition's code again
    back = editions.with_answers(student, editions.solutions(instructor))
    assert [c.source for c in back.cells if c.cell_type == "code"] == \
        [c.source for c in instructor.cells if c.cell_type == "code"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_student_edition_as_written_says_not_attempted(path, executed, lesson_runs, monkeypatch):
    nb = _execute(editions.student_edition(nbformat.read(path, as_version=4)), lesson_runs, monkeypatch)
    assert _stream(nb).count("not attempted yet") == len(_checks(nb))


def test_exercise_checks(capsys):
    import torch

    from lab.lesson import check

    check("1.1", None, base=80, novel=40)
    assert "Exercise 1.1 (harmonic mean of base and novel accuracy): not attempted yet" in capsys.readouterr().out
    check("1.1", lambda base, novel: 2 * base * novel / (base + novel), base=80, novel=40)
    assert "✓ correct" in capsys.readouterr().out
    check("1.1", lambda base, novel: (base + novel) / 2, base=80, novel=40)  # prints, does not raise
    out = capsys.readouterr().out
    assert "Exercise 1.1 (harmonic mean of base and novel accuracy): ✗ wrong — not the expected value" in out
    assert "53.3" not in out and "6.67" not in out, "no expected value, no gap"
    x = torch.randn(40, 8, dtype=torch.float64)
    check("6.2", lambda x: torch.zeros(8), x=x)
    assert "the shape is wrong: yours is (8,), the question asks for ()" in capsys.readouterr().out
    y = torch.randn(40, 8, dtype=torch.float64)
    check("6.3", lambda x, xt: "0.5", x=x, xt=y)
    assert "not a number or a tensor" in capsys.readouterr().out
    with pytest.raises(Exception, match="Unknown exercise '9.9'"):
        check("9.9", 1.0)
    from lab.lessons.exercises import diagnose

    expected = torch.arange(6.0).view(2, 3)
    bad = expected.clone()
    bad[1, 2] += 0.5
    assert diagnose(bad, expected) == "1 of 6 entries are wrong, in 1 of 2 rows"
    assert diagnose(expected + 1, expected).startswith("every entry is off by the same constant")
    assert diagnose(expected.T, expected).startswith("the shape is transposed")
    assert diagnose(expected, expected) is None


def test_gpu_preset_falls_back_with_an_explanation(tmp_path, monkeypatch, capsys):
    import torch

    from lab import lesson

    monkeypatch.setenv("LAB_RUNS_DIR", str(tmp_path))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    chosen = lesson.start("gpu")
    out = capsys.readouterr().out
    assert chosen.preset.name == "cpu" and chosen.device == "cpu" and chosen.runs_dir == tmp_path / "cpu"
    assert "no CUDA GPU is visible" in out and "Falling back to the cpu preset" in out
    with pytest.raises(Exception, match="Unknown preset 'laptop'; choose one of: fast, cpu, gpu"):
        lesson.start("laptop")


def test_summary_sentences_come_from_the_numbers():
    from lab.lesson import ranking, versus

    hm = {"FD": 39.94, "CRD": 25.31, "no KD": 23.7}
    assert versus(hm, "FD", "CRD") == "FD beat CRD by 14.6 HM (39.9 vs 25.3)"
    assert versus(hm, "CRD", "FD") == "FD beat CRD by 14.6 HM (39.9 vs 25.3)"
    assert versus({"a": 1.01, "b": 1.0}, "a", "b") == "a and b tied (1.0 HM)"
    assert ranking(hm) == "FD 39.9 > CRD 25.3 > no KD 23.7 HM"
    assert ranking({"a": 2.0, "b": 1.01, "c": 1.0}, "CKA") == "a 2.0 > b 1.0 = c 1.0 CKA"


# ---------------------------------------------------------------------- the grader


def test_grader_tabulates_three_submissions(executed, lesson_runs, tmp_path, capsys):
    """The real lesson 01 (its teacher-built inputs too) through the grader; tests/test_grade.py has the rest."""
    from lab.cli import main

    instructor = nbformat.read(NOTEBOOK_DIR / "01_clip_shapes_teacher.ipynb", as_version=4)
    student = editions.student_edition(instructor)
    answers = editions.solutions(instructor)
    wrong = dict(answers)
    first = next(iter(answers))  # exercise 1.1, the harmonic mean
    wrong[first] = "def answer(base, novel):\n    return (base + novel) / 2  # the arithmetic mean"
    for name, nb in {"ada": editions.with_answers(student, answers), "bob": editions.with_answers(student, wrong),
                     "cy": student}.items():
        nbformat.write(nb, tmp_path / f"{name}.ipynb")
    csv_path = tmp_path / "grades.csv"
    os.environ["LAB_RUNS_DIR"] = str(lesson_runs)  # the lesson's runs are already trained
    try:
        assert main(["grade", *(str(tmp_path / f"{n}.ipynb") for n in ("ada", "bob", "cy")), "--csv", str(csv_path),
                     "--jobs", "2"]) == 0
    finally:
        del os.environ["LAB_RUNS_DIR"]
    table = capsys.readouterr().out.splitlines()
    # the lesson's four self-check quiz questions follow its exercises (unanswered here: 0 of 1 point each)
    assert re.match(r"student\s+1\.1\s+1\.2\s+1\.q1\s+1\.q2\s+1\.q3\s+1\.q4\s+total", table[0])
    quiz = r"(\s+not attempted 0/1){4}"
    assert re.match(r"ada\s+correct 2/2\s+correct 2/2" + quiz + r"\s+4/8", table[1])
    assert re.match(r"bob\s+wrong 0/2\s+correct 2/2" + quiz + r"\s+2/8", table[2])
    assert re.match(r"cy\s+not attempted 0/2\s+not attempted 0/2" + quiz + r"\s+0/8", table[3])
    rows = list(csv.reader(csv_path.read_text().splitlines()))
    assert rows[0] == grade.CSV_HEADER
    assert rows[1] == ["ada", "01_clip_shapes_teacher", "1.1", "", "", "correct", "2", "2", ""]
    bob = [r for r in rows if r[0] == "bob" and r[2] == "1.1"]
    assert bob[0][5] == "wrong" and [r[4:6] for r in bob[1:]] == [["public", "failed"], ["hidden", "failed"],
                                                                  ["hidden", "failed"]]


def test_grader_names_a_missing_submission(tmp_path, capsys):
    from lab.cli import main

    assert main(["grade", str(tmp_path / "nobody.ipynb")]) == 2
    assert "No such submission" in capsys.readouterr().err


# ---------------------------------------------------------------------- offline figures in HTML, in Chromium


@pytest.fixture(scope="module")
def tab():
    from lab.app import browser

    if browser.chromium_path() is None:
        if os.environ.get("LAB_REQUIRE_BROWSER") == "1":
            pytest.fail("LAB_REQUIRE_BROWSER=1 but no Chromium installed (Debian: apt-get install chromium).")
        pytest.skip("no Chromium installed (Debian: apt-get install chromium)")
    with browser.browser_page() as page:
        blocked = []

        def offline(route):  # the network is blocked: only the page's own file may load
            if route.request.url.startswith(("file://", "data:", "about:")):
                route.continue_()
            else:
                blocked.append(route.request.url)
                route.abort()

        page.context.route("**/*", offline)
        page.blocked = blocked
        yield page


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_exported_lesson_draws_every_figure_offline_in_chromium(path, executed, tab, tmp_path):
    from lab.lessons import export

    page = tmp_path / f"{path.stem}.html"
    page.write_text(export.notebook_html(executed[path.stem]), encoding="utf-8")
    export.copy_mathjax(tmp_path)
    html = page.read_text()
    external = re.findall(r'<(?:script|link)[^>]*(?:src|href)="(https?://[^"]+)"', html)
    assert not external, external
    assert "require.js" not in html
    plotly, vega = html.count('class="lab-figure lab-plotly"'), html.count('class="lab-figure lab-vega"')
    assert plotly >= 1
    tab.goto(page.as_uri())
    tab.wait_for_function(
        f"document.querySelectorAll('.lab-plotly .main-svg').length >= {plotly} && "
        f"document.querySelectorAll('.lab-vega svg.marks, .lab-vega canvas').length >= {vega}", timeout=60_000)
    drawn = tab.evaluate("[...document.querySelectorAll('.lab-figure')].map(f => "
                         "!!f.querySelector('.main-svg, svg.marks, canvas'))")
    assert drawn == [True] * (plotly + vega)
    body = tab.inner_text("body")
    assert "Error loading script" not in body and "Figure error" not in body
    # the equations are typeset by the local MathJax: no TeX source left in the text, no math error
    markdown = "\n".join(c.source for c in executed[path.stem].cells if c.cell_type == "markdown")
    has_math = re.search(r"\$[^$\n]+\$", markdown) is not None
    tab.wait_for_function("window.MathJax && MathJax.Hub && MathJax.Hub.queue.pending === 0 && "
                          f"document.querySelectorAll('.MathJax, .MathJax_Display').length >= {int(has_math)}",
                          timeout=60_000)
    body = tab.inner_text("body")
    assert "\\frac" not in body and "\\lVert" not in body and "Math Processing Error" not in body
    assert tab.blocked == [], tab.blocked


# ---------------------------------------------------------------------- make lab


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_make_lab_serves_jupyterlab_and_its_kernel_runs_a_lesson(executed, lesson_runs):
    from lab.lessons import server

    port, token = _free_port(), secrets.token_hex(16)
    env = {**os.environ, **HEADLESS, "LAB_RUNS_DIR": str(lesson_runs)}
    process = subprocess.Popen(["make", "-s", "lab", f"LAB_ARGS=--no-browser --port={port} "
                                f"--IdentityProvider.token={token}"], cwd=ROOT, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        url = f"http://localhost:{port}"
        assert server.wait_until_up(url, token) == 200
        cells = server.execute_in_server(url, token, "00_tour.ipynb",
                                         extra_cells=("import sys; print(sys.executable)",))
        assert [c["error"] for c in cells if c["error"]] == []
        text = "".join(o.get("text", "") for c in cells for o in c["outputs"])
        assert "✓ equal" in text and text.count("✓ correct") == 2
        assert Path(text.strip().splitlines()[-1]).parent == ROOT / ".venv" / "bin"
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
