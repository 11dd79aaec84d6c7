"""The tutorial notebooks (notebooks/): committed without outputs, built on `lab`, and every cell runs.

Each notebook is executed with nbclient in the ``fast`` preset (seconds-long runs written under a
temporary LAB_RUNS_DIR, shared by the notebooks so the no-KD student is trained once), offline.
"""

import os
import re
import sys
from pathlib import Path

import nbformat
import pytest

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))
TIMEOUT_S = 300  # per cell; a whole fast-preset notebook takes well under a minute on a 2-core CPU


def test_the_lessons_are_there():
    assert [p.stem[:2] for p in NOTEBOOKS] == ["00", "01", "02", "03", "04", "05", "06"]


def test_notebooks_are_the_generators_output():
    sys.path.insert(0, str(NOTEBOOK_DIR))
    try:
        import make_notebooks
    finally:
        sys.path.remove(str(NOTEBOOK_DIR))
    for path in NOTEBOOKS:
        stored = nbformat.read(path, as_version=4)
        sources = [c.source for c in make_notebooks.LESSONS[path.stem]()]
        assert [c.source for c in stored.cells] == sources, \
            f"{path.name} differs from notebooks/make_notebooks.py; run `python notebooks/make_notebooks.py`."


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


@pytest.fixture(scope="module")
def lesson_runs(tmp_path_factory):
    return tmp_path_factory.mktemp("lesson-runs")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_in_the_fast_preset(path, lesson_runs, monkeypatch):
    from nbclient import NotebookClient

    monkeypatch.setenv("LAB_PRESET", "fast")
    monkeypatch.setenv("LAB_RUNS_DIR", str(lesson_runs))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("LAB_HEADLESS", "1")  # no slider widgets (nbclient can deadlock on them), see lab.lesson.explore
    monkeypatch.setenv("TQDM_DISABLE", "1")  # no progress-bar widgets either
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=TIMEOUT_S, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOK_DIR)}}).execute()  # raises on the first failing cell
    text = "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "✓ equal" in text and "✓ correct" in text


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


def test_exercise_checks(capsys):
    from lab.lesson import check

    assert check("x", None, 1.0) is False and "not attempted yet" in capsys.readouterr().out
    assert check("x", 1.0, 1.0) is True and "correct" in capsys.readouterr().out
    with pytest.raises(AssertionError, match="expected 1, got 2"):
        check("x", 2.0, 1.0)
