"""Self-check quizzes: a few questions per lesson, every option explained, kept as data beside the lesson.

``notebooks/quizzes/NN.json`` holds lesson NN's questions. A question is multiple choice (``options``:
text, ``correct``, ``why``) or numeric (``kind: "number"``: ``answer``, ``tolerance``, ``why``, and
``wrong``: the common wrong values, each with its ``why``; ``why_other`` for any other value).

In a lesson, the student fills one dict and runs the cell::

    quiz_answers = {"0.q1": "A", "0.q2": None, "0.q3": 50}
    show_quiz("00", quiz_answers)

:func:`show_quiz` displays plain HTML (no JavaScript: it survives JupyterLab upgrades, the HTML export and
a browser with no network): each question, the student's verdict with the explanation of the option they
chose, and every option's explanation behind a ``<details>`` toggle. The grader reads the answers back
from the submission's ``quiz_answers`` cell (:func:`answers_from_notebook`) and scores them with
:func:`grade`. The answers are in the data by design — a self-check quiz explains itself — so its points
are formative.
"""

from __future__ import annotations

import ast
import functools
import html
import json
from dataclasses import dataclass
from pathlib import Path

from lab.errors import LabError
from lab.lessons.sources import NOTEBOOK_DIR

QUIZ_DIR = "quizzes"
LETTERS = "ABCDEFGH"
ANSWERS_TAG = "quiz-answers"


@dataclass(frozen=True)
class Row:
    """One question's grade: ``verdict`` is ``correct``, ``wrong`` or ``not attempted``."""

    question: str
    chosen: object
    verdict: str
    points: float
    max_points: float
    why: str


def quiz_path(lesson: str, folder: Path | None = None) -> Path:
    """``quizzes/NN.json`` beside the lesson: in ``folder``, else the working directory (a student pack's
    lessons/), else the repository's notebooks/."""
    number = str(lesson)[:2]
    for base in [folder] if folder is not None else [Path.cwd(), NOTEBOOK_DIR]:
        path = Path(base) / QUIZ_DIR / f"{number}.json"
        if path.is_file():
            return path
    raise LabError(f"No quiz for lesson {number}: expected {QUIZ_DIR}/{number}.json beside the lesson.")


@functools.cache
def _load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def questions(lesson: str, folder: Path | None = None) -> list[dict]:
    return _load(quiz_path(lesson, folder))["questions"]


def blank(lesson: str) -> dict:
    """The ``quiz_answers`` dict a lesson starts with: every question unanswered."""
    return {q["id"]: None for q in questions(lesson)}


def _mark(question: dict, chosen) -> tuple[str, str]:
    """(verdict, the explanation of what was chosen)."""
    if chosen is None or chosen == "":
        return "not attempted", ""
    if question.get("kind") == "number":
        try:
            value = float(chosen)
        except (TypeError, ValueError):
            return "wrong", f"{chosen!r} is not a number."
        if abs(value - question["answer"]) <= question.get("tolerance", 0) + 1e-9:
            return "correct", question["why"]
        near = [w for w in question.get("wrong", []) if abs(value - w["value"]) <= max(0.05 * abs(w["value"]), 0.01)]
        return "wrong", near[0]["why"] if near else question.get("why_other", "")
    options = question["options"]
    letter = str(chosen).strip().upper()[:1]
    if letter not in LETTERS[:len(options)]:
        return "wrong", f"{chosen!r} is not one of the options {', '.join(LETTERS[:len(options)])}."
    option = options[LETTERS.index(letter)]
    return ("correct" if option["correct"] else "wrong"), option["why"]


def _lesson_of(question_id: str) -> str:
    return f"{int(question_id.split('.')[0]):02d}"


def grade(answers: dict) -> list[Row]:
    """One row per question of every lesson ``answers`` names (ids ``N.qK``), unanswered ones included."""
    lessons = sorted({_lesson_of(key) for key in answers})
    rows = []
    for lesson in lessons:
        for question in questions(lesson):
            chosen = answers.get(question["id"])
            verdict, why = _mark(question, chosen)
            points = question.get("points", 1)
            rows.append(Row(question["id"], chosen, verdict, points if verdict == "correct" else 0, points, why))
    return rows


def answers_from_notebook(notebook) -> dict:
    """The ``quiz_answers`` dict of a (submitted) notebook, read from its source without running it."""
    for cell in notebook.cells:
        if ANSWERS_TAG in cell.metadata.get("tags", []):
            for node in ast.walk(ast.parse(cell.source)):
                if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "quiz_answers" for t in node.targets):
                    try:
                        return ast.literal_eval(node.value)
                    except ValueError:
                        return {}
    return {}


def _option_html(letter: str, option: dict) -> str:
    mark = "✓" if option["correct"] else "✗"
    return (f"<li><b>{letter}.</b> {html.escape(option['text'])}<br><span class='lab-quiz-why'>{mark} "
            f"{html.escape(option['why'])}</span></li>")


def render_html(lesson: str, answers: dict | None = None) -> str:
    """The quiz as plain HTML: questions, the student's verdicts, every explanation behind a toggle."""
    answers = answers or {}
    parts = [f"<div class='lab-quiz' data-lesson='{lesson}'><h3>Self-check quiz</h3>"]
    for question in questions(lesson):
        verdict, why = _mark(question, answers.get(question["id"]))
        parts.append(f"<div class='lab-quiz-question' data-id='{question['id']}'>"
                     f"<p><b>{question['id']}</b> {html.escape(question['question'])}</p>")
        if question.get("kind") == "number":
            parts.append("<p><i>Answer with a number.</i></p>")
            everything = [f"<li>{question['answer']}: {html.escape(question['why'])}</li>"] + [
                f"<li>{w['value']}: {html.escape(w['why'])}</li>" for w in question.get("wrong", [])]
        else:
            parts.append("<ol type='A'>" + "".join(f"<li>{html.escape(o['text'])}</li>" for o in question["options"])
                         + "</ol>")
            everything = [_option_html(LETTERS[i], o) for i, o in enumerate(question["options"])]
        chosen = answers.get(question["id"])
        if verdict != "not attempted":
            parts.append(f"<p class='lab-quiz-verdict lab-quiz-{verdict}'>Your answer {html.escape(str(chosen))}: "
                         f"<b>{verdict}</b>. {html.escape(why)}</p>")
        parts.append(f"<details><summary>Explanation of every option</summary><ul>{''.join(everything)}</ul>"
                     "</details></div>")
    parts.append("</div>")
    return "".join(parts)


def render_text(lesson: str, answers: dict | None = None) -> str:
    answers = answers or {}
    lines = []
    for question in questions(lesson):
        verdict, why = _mark(question, answers.get(question["id"]))
        lines.append(f"{question['id']} {question['question']}")
        for i, option in enumerate(question.get("options", [])):
            lines.append(f"  {LETTERS[i]}. {option['text']}")
        lines.append(f"  → {verdict}{': ' + why if why else ''}")
    return "\n".join(lines)


class Quiz:
    """What :func:`show_quiz` displays: HTML in a notebook or page, text in a terminal."""

    def __init__(self, lesson: str, answers: dict | None):
        self.lesson, self.answers = lesson, answers

    def _repr_html_(self) -> str:
        return render_html(self.lesson, self.answers)

    def __repr__(self) -> str:
        return render_text(self.lesson, self.answers)


def show_quiz(lesson: str, answers: dict | None = None) -> Quiz:
    """Display lesson ``lesson``'s quiz with the verdicts of ``answers`` (the ``quiz_answers`` dict)."""
    unknown = sorted(set(answers or {}) - {q["id"] for q in questions(lesson)})
    if unknown:
        raise LabError(f"quiz_answers names no question {', '.join(unknown)}; keep the ids the cell was given.")
    return Quiz(lesson, answers)
