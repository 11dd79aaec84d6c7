"""Published numbers from the papers the lab reproduces (CLIP-KD, CLIP-RD, ComKD-CLIP, PromptKD).

These are the authors' figures, copied from their tables into ``data/papers/*.csv``; where each
one comes from, and what to watch out for, is in ``data/papers/SOURCES.md``. They were measured
on real datasets with real CLIP models, never on ShapesWorld, so anything that shows them must
label them "paper" and keep them apart from the lab's own measurements: no shared column, no
shared average, no "gap" computed across the two.

``load(name)`` gives the rows of one table as dicts (numbers as floats, empty cells as None);
``value(name, **match)`` gives the one number whose row matches every column=value pair.
"""

from __future__ import annotations

import csv
from pathlib import Path

from lab.errors import LabError
from lab.paths import DATA_DIR

PAPERS_DIR = DATA_DIR / "papers"
TABLES = {path.stem: path for path in sorted(PAPERS_DIR.glob("*.csv"))}


def _cell(text: str):
    if text == "":
        return None
    try:
        return float(text)
    except ValueError:
        return text


def load(name: str) -> list[dict]:
    """The rows of table ``name``, in file order."""
    if name not in TABLES:
        raise LabError(f"There is no paper table {name!r}; choose one of: {', '.join(TABLES)}.")
    with open(TABLES[name], newline="", encoding="utf-8") as f:
        return [{key: _cell(text) for key, text in row.items()} for row in csv.DictReader(f)]


def value(name: str, **match) -> float | None:
    """The ``value`` of the single row of ``name`` whose columns equal ``match`` (None for an empty cell)."""
    rows = load(name)
    unknown = [key for key in match if rows and key not in rows[0]]
    if unknown:
        raise LabError(f"Table {name!r} has no column {unknown[0]!r}; its columns are {', '.join(rows[0])}.")
    hits = [row for row in rows if all(row[key] == want for key, want in match.items())]
    if len(hits) != 1:
        found = "No row" if not hits else f"{len(hits)} rows"
        raise LabError(f"{found} of table {name!r} match {match}; give columns that pick exactly one row.")
    return hits[0]["value"]
