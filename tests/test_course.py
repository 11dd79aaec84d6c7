"""The course around the lessons: the student pack, the quizzes, releases (``lessons update``).

The student pack is built once per module with the lessons' student edition as its HTML source (not
executed here: executing every lesson is tests/test_notebooks.py's cost), installed into a fresh venv
from its own wheelhouse, and searched, file by file and inside its archives, for what only the instructor
sources hold.
"""

import html
import io
import re
import site
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import nbformat
import pytest

from lab.lessons import editions, studentpack

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))


def _tagged(nb, tag):
    return [c for c in nb.cells if tag in c.metadata.get("tags", [])]


@pytest.fixture(scope="module")
def student_pack(tmp_path_factory):
    from lab.cli import main

    tmp = tmp_path_factory.mktemp("pack-src")
    editions.write_edition("student", tmp / "executed")
    runs_pack = tmp / "lessons-cpu.tar.gz"
    with tarfile.open(runs_pack, "w:gz") as tar:  # a stand-in runs pack: one run's summary
        data = b'{"hm": 1.0}'
        info = tarfile.TarInfo("cpu/a-run/summary.json")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    out = tmp_path_factory.mktemp("pack") / "student-pack"
    assert main(["lessons", "student-pack", str(out), "--executed", str(tmp / "executed"),
                 "--runs-pack", str(runs_pack)]) == 0
    return out


def _texts(path: Path):
    """(name, text) of every file of the pack, archive members included, as a reader would see them."""
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        if file.suffix == ".whl":
            with zipfile.ZipFile(file) as archive:
                for name in archive.namelist():
                    yield f"{file.name}:{name}", archive.read(name).decode("utf-8", "ignore")
        elif file.name.endswith(".tar.gz"):
            with tarfile.open(file) as archive:
                for member in archive.getmembers():
                    if member.isfile():
                        yield f"{file.name}:{member.name}", archive.extractfile(member).read().decode("utf-8", "ignore")
        elif file.suffix == ".ipynb":
            nb = nbformat.read(file, as_version=4)
            yield str(file), "\n".join([c.source for c in nb.cells] + [
                o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs])
        elif file.suffix == ".html":
            raw = file.read_text("utf-8", "ignore")  # the code is highlighted: read the page's text, not its tags
            yield str(file), html.unescape(re.sub(r"<[^>]+>", "", raw))
        else:
            yield str(file), file.read_bytes().decode("utf-8", "ignore")


def _secrets() -> list[str]:
    """Every reference-solution line and every instructor-note line of the instructor sources that the
    lesson does not also teach elsewhere (a line the question repeats is no leak)."""
    needles = []
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        public = "\n".join(c.source for c in nb.cells if not ({"solution", "instructor"} & set(c.metadata.get("tags", []))))
        for cell in _tagged(nb, "solution") + _tagged(nb, "instructor"):
            for line in cell.source.splitlines():
                line = line.strip().lstrip("#").strip()
                if len(line) > 12 and line not in public:
                    needles.append(line)
    return needles


def test_student_pack_holds_no_solution_no_instructor_note_and_no_instructor_module(student_pack):
    assert {p.name for p in student_pack.iterdir()} == {"README.md", "how-to-submit.md", "requirements.txt",
                                                       "wheelhouse", "lessons", "html", "runs"}
    assert sorted(p.name for p in (student_pack / "lessons").glob("*.ipynb")) == [p.name for p in NOTEBOOKS]
    assert sorted(p.stem for p in (student_pack / "html").glob("*.html")) == [p.stem for p in NOTEBOOKS]
    needles = _secrets()
    assert len(needles) > 20
    for name, text in _texts(student_pack):
        assert "Instructor note" not in text or name.endswith(".py"), f"an instructor note in {name}"
        for needle in needles:
            assert needle not in text, f"{needle!r} (instructor source) is in {name}"
    wheel = next((student_pack / "wheelhouse").glob("*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "lab/lesson.py" in names and "lab/_data/teacher/shapes-teacher.safetensors" in names
    assert not [n for n in names if studentpack.instructor_only(n)]
    assert not [n for n in names if n.startswith(("tests/", "notebooks/"))]


def test_instructor_only_is_a_list_of_patterns():
    assert studentpack.instructor_only("lab/lessons/solutions.py")
    assert studentpack.instructor_only("lab/lessons/solutions/00.py")
    assert not studentpack.instructor_only("lab/lesson.py")


def test_student_pack_installs_in_a_fresh_venv_and_a_lesson_starts(student_pack, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    venv_site = Path(subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                    capture_output=True, text=True, check=True).stdout.strip())
    # the dependencies: the shared environment's (nothing is downloaded); not lab, which lives in the repository
    (venv_site / "shared-deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    wheel = next((student_pack / "wheelhouse").glob("*.whl"))
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-index",
                    "--no-deps", "--no-compile", str(wheel)], check=True)
    nb = nbformat.read(student_pack / "lessons" / "00_tour.ipynb", as_version=4)
    code = [c.source for c in nb.cells if c.cell_type == "code"]
    first = code[:next(i for i, c in enumerate(code) if "one_batch()" in c) + 1]
    script = "\n\n".join(first) + "\nimport lab; print('LAB FROM', lab.__file__); print('BATCH', tuple(e.image_raw.shape))\n"
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "LAB_PRESET": "fast", "HF_HUB_OFFLINE": "1",
           "LAB_RUNS_DIR": str(tmp_path / "runs"), "LAB_HEADLESS": "1", "TQDM_DISABLE": "1"}
    done = subprocess.run([python, "-c", script], cwd=student_pack / "lessons", env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"LAB FROM {venv_site}" in done.stdout, done.stdout[-500:]
    assert "BATCH (16, " in done.stdout
    assert f"runs in {tmp_path / 'runs'}" in done.stdout  # LAB_RUNS_DIR, as the pack's README says


def test_a_modified_answer_cell_survives_an_update(tmp_path, capsys):
    from lab.cli import main

    editions.write_edition("student", tmp_path)
    path = tmp_path / NOTEBOOKS[0].name
    nb = nbformat.read(path, as_version=4)
    answer = _tagged(nb, "answer")[0]
    answer.source = "answer = 42  # mine"
    nb.metadata["lab"]["version"] = "0.0.1"
    changed = next(c for c in nb.cells if c.cell_type == "markdown" and "answer" not in c.metadata.get("tags", []))
    changed.source = "an older wording"
    dropped = nb.cells.pop(-1)  # a cell the new release adds
    nb.cells.insert(3, nbformat.v4.new_code_cell("print('my own cell')", id="mine"))
    nbformat.write(nb, path)
    assert main(["lessons", "update", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    updated = nbformat.read(path, as_version=4)
    assert next(c for c in updated.cells if c.id == answer.id).source == "answer = 42  # mine"
    assert next(c for c in updated.cells if c.id == changed.id).source != "an older wording"
    assert any(c.id == dropped.id for c in updated.cells) and any(c.id == "mine" for c in updated.cells)
    assert updated.metadata["lab"]["version"] != "0.0.1"
    assert f"changed cell {changed.id}" in out and f"new cell {dropped.id}" in out
    backup = tmp_path / "backup-0.0.1" / path.name
    assert backup.is_file() and "answer = 42" in backup.read_text()


# ---------------------------------------------------------------------- self-check quizzes


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_lesson_has_a_quiz_of_three_questions_or_more_with_every_option_explained(path):
    from lab.lessons import quiz

    questions = quiz.questions(path.stem, NOTEBOOK_DIR)
    number = int(path.stem[:2])
    assert len(questions) >= 3
    for q in questions:
        assert q["id"].startswith(f"{number}.q") and q["question"].strip()
        if q.get("kind") == "number":
            assert q["why"] and q["wrong"] and all(w["why"] for w in q["wrong"]) and q["why_other"]
        else:
            assert len(q["options"]) >= 3 and all(o["why"].strip() for o in q["options"])
            assert sum(o["correct"] for o in q["options"]) == 1
    nb = nbformat.read(path, as_version=4)
    cell = _tagged(nb, quiz.ANSWERS_TAG)
    assert len(cell) == 1 and f'show_quiz("{path.stem[:2]}", quiz_answers)' in cell[0].source
    assert quiz.answers_from_notebook(nb) == quiz.blank(path.stem)
    student = editions.student_edition(nb)
    assert quiz.answers_from_notebook(student) == quiz.blank(path.stem)


def test_quiz_grades_the_answers_read_from_a_notebook():
    from lab.lessons import quiz

    nb = nbformat.read(NOTEBOOKS[0], as_version=4)
    cell = _tagged(nb, quiz.ANSWERS_TAG)[0]
    cell.source = cell.source.replace('"0.q1": None', '"0.q1": "a"').replace('"0.q2": None', '"0.q2": "B"') \
        .replace('"0.q3": None', '"0.q3": 66.7')
    rows = quiz.grade(quiz.answers_from_notebook(nb))
    assert [(r.question, r.verdict, r.points, r.max_points) for r in rows] == [
        ("0.q1", "correct", 1, 1), ("0.q2", "wrong", 0, 1), ("0.q3", "wrong", 0, 1)]
    assert rows[1].why.startswith("No: every objective") and "40 / 60" in rows[2].why
    assert quiz.grade({"0.q3": 50.2})[2].verdict == "correct"
    with pytest.raises(Exception, match="names no question 0.q9"):
        quiz.show_quiz("00", {"0.q9": "A"})


def test_a_quiz_renders_in_the_exported_html_offline_in_chromium(tmp_path):
    """The quiz's output (plain HTML, no JavaScript) in an exported page; MathJax typesets in STIX-Web."""
    from lab.app import browser
    from lab.lessons import export, quiz

    if browser.chromium_path() is None:
        if __import__("os").environ.get("LAB_REQUIRE_BROWSER") == "1":
            pytest.fail("LAB_REQUIRE_BROWSER=1 but no Chromium installed (Debian: apt-get install chromium).")
        pytest.skip("no Chromium installed (Debian: apt-get install chromium)")
    cell = nbformat.v4.new_code_cell("show_quiz('04', quiz_answers)", outputs=[nbformat.v4.new_output(
        "execute_result", {"text/html": quiz.render_html("04", {"4.q1": "A", "4.q2": "C"}), "text/plain": "quiz"},
        execution_count=1)])
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("## Quiz\n\n$L = \\tfrac12 x^2$"), cell])
    page = tmp_path / "quiz.html"
    page.write_text(export.notebook_html(nb), encoding="utf-8")
    export.copy_mathjax(tmp_path)
    assert "<script" not in quiz.render_html("04")
    with browser.browser_page() as tab:
        missing = []
        tab.on("requestfailed", lambda request: None if request.url.startswith("about:") else missing.append(request.url))
        tab.context.route("**/*", lambda route: route.continue_() if route.request.url.startswith(("file:", "data:", "about:"))
                          else (missing.append(route.request.url), route.abort()))
        tab.goto(page.as_uri())
        tab.wait_for_function("window.MathJax && MathJax.Hub && MathJax.Hub.queue.pending === 0 && "
                              "document.querySelectorAll('.MathJax').length >= 1", timeout=60_000)
        assert tab.locator(".lab-quiz-question").count() == 3
        assert "Your answer A: correct" in tab.inner_text(".lab-quiz")
        assert "Your answer C: wrong" in tab.inner_text(".lab-quiz")
        assert not tab.locator(".lab-quiz details ul").first.is_visible()  # the explanations wait behind a toggle
        tab.locator(".lab-quiz summary").first.click()
        assert tab.locator(".lab-quiz details ul").first.is_visible()
        assert "both orders" in tab.locator(".lab-quiz details").first.inner_text()
        assert tab.evaluate("MathJax.OutputJax['HTML-CSS'].fontInUse") == "STIX-Web"
        assert missing == [], missing


# ---------------------------------------------------------------------- one offline site


@pytest.fixture(scope="module")
def built_site(tmp_path_factory):
    from lab.cli import main

    out = tmp_path_factory.mktemp("site") / "site"
    assert main(["lessons", "site", str(out)]) == 0  # strict: any warning fails the build
    return out


def _site_pages(site_dir: Path) -> list[Path]:
    return sorted(p for p in site_dir.rglob("*.html") if "assets" not in p.relative_to(site_dir).parts)


def test_site_has_a_page_per_lesson_and_every_internal_link_resolves(built_site):
    pages = _site_pages(built_site)
    for path in NOTEBOOKS:
        assert (built_site / "notebooks" / f"{path.stem}.html").is_file(), path.stem
    for page in ("index.html", "docs/methods.html", "docs/results.html", "notebooks/INSTRUCTORS.html",
                 "benchmarks/index.html"):
        assert (built_site / page).is_file(), page
    broken = []
    for page in pages:
        if page.name == "404.html":  # served for any missing path, so its links are root-absolute
            continue
        text = page.read_text("utf-8", "ignore")
        for target in re.findall(r'(?:href|src)="([^"#?]+)(?:[#?][^"]*)?"', text):
            if re.match(r"^[a-z]+:", target) or target.startswith("//"):
                continue
            if not (page.parent / target).resolve().exists():
                broken.append(f"{page.relative_to(built_site)} → {target}")
    assert broken == []
    external = [(p.name, u) for p in pages for u in re.findall(r'<(?:script|link|img)[^>]*(?:src|href)="(https?://[^"]+)"',
                                                               p.read_text("utf-8", "ignore"))]
    assert external == []  # nothing loaded from the network at view time


def test_student_site_holds_no_solution_and_no_instructor_note(built_site):
    needles = _secrets()
    for page in _site_pages(built_site):
        text = html.unescape(re.sub(r"<[^>]+>", "", page.read_text("utf-8", "ignore")))
        for needle in needles:
            if needle in text and page.name != "INSTRUCTORS.html":
                raise AssertionError(f"{needle!r} (instructor source) is in {page.relative_to(built_site)}")


def test_site_offline_in_chromium_lessons_equations_plot_and_search(built_site):
    import functools
    import http.server
    import threading

    from lab.app import browser

    if browser.chromium_path() is None:
        if __import__("os").environ.get("LAB_REQUIRE_BROWSER") == "1":
            pytest.fail("LAB_REQUIRE_BROWSER=1 but no Chromium installed (Debian: apt-get install chromium).")
        pytest.skip("no Chromium installed (Debian: apt-get install chromium)")
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=str(built_site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        with browser.browser_page() as tab:
            blocked = []
            tab.context.route("**/*", lambda route: route.continue_() if route.request.url.startswith((base, "data:", "blob:"))
                              else (blocked.append(route.request.url), route.abort()))
            tab.goto(f"{base}/index.html")
            links = tab.evaluate("[...document.querySelectorAll('nav a')].map(a => a.href)")
            for path in NOTEBOOKS:
                link = next((u for u in links if u.endswith(f"notebooks/{path.stem}.html")), None)
                assert link, f"no lesson page {path.stem} in the site's navigation"
                response = tab.request.get(link)
                assert response.ok and "Exercise" in response.text()
            tab.goto(f"{base}/docs/methods.html")
            tab.wait_for_function("window.MathJax && MathJax.Hub && MathJax.Hub.queue.pending === 0 && "
                                  "document.querySelectorAll('.MathJax, .MathJax_Display').length >= 10", timeout=60_000)
            body = tab.inner_text("article")
            assert "\\frac" not in body and "\\lVert" not in body and "Math Processing Error" not in body
            assert tab.evaluate("MathJax.OutputJax['HTML-CSS'].fontInUse") == "STIX-Web"
            tab.wait_for_function("document.querySelectorAll('.lab-plotly .main-svg').length >= 1", timeout=60_000)
            tab.keyboard.press("/")  # Material's search: its index is built into the site, lunr runs in the page
            tab.keyboard.type("distillation")
            tab.wait_for_function("document.querySelectorAll('.md-search-result__item').length >= 1", timeout=60_000)
            assert "matching document" in tab.inner_text(".md-search-result__meta")
            assert blocked == [], blocked
    finally:
        server.shutdown()
