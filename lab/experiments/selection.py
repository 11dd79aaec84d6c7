"""Choosing one loss weight on validation scores, the same way for every term and every grid.

A term's weight runs over its default × :data:`FACTORS` (log-spaced); when the best is at an end of
that grid, the search goes one step further that way, up to :data:`EXTEND` times
(:func:`search_with_extension`); the best mean validation score over the seeds wins, ties going to the
weight nearer the default (:func:`pick`). ``lab.experiments.tune`` (CLIP grids) and
``lab.experiments.tune_prompts`` (prompt grids) search with it.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from lab import runs
from lab.errors import LabError
from lab.experiments.grids import scale_prefix
from lab.experiments.tables import TABLES_DIR

FACTORS = (0.25, 0.5, 1.0, 2.0, 4.0)
EXTEND = 2  # a best weight at an end of the grid: the grid grows one step that way, at most this many times
SELECT_BY = "val/hm"  # the key a CLIP grid's choice reads (a prompt row reads val/<its protocol's metric>)


@dataclass
class Candidate:
    term: str
    weights: dict[str, float]
    val: float | None  # mean validation score over the seeds that finished
    val_std: float | None = None  # its standard deviation over those seeds (None under two)

    def record(self) -> dict:
        """As a tuning record's ``.json`` keeps it (the dashboard draws ``val_hm`` ± ``val_std``)."""
        return {"weight": self.weights[self.term], "val_hm": self.val, "val_std": self.val_std}


def _validation_values(runs_dir: Path, ids: Sequence[str], key: str) -> list[float]:
    found = [runs.read_run(runs_dir / i) for i in ids]
    return [v for v in (r.summary.get(key) for r in found if r.complete) if v is not None]


def validation_score(runs_dir: Path, ids: Sequence[str], key: str = SELECT_BY) -> float | None:
    """The mean of ``key`` (a ``val/...`` summary key) over the finished runs ``ids``; None if none has it."""
    values = _validation_values(runs_dir, ids, key)
    return statistics.fmean(values) if values else None


def scored(term: str, weights: dict[str, float], runs_dir: Path, ids: Sequence[str], key: str = SELECT_BY) -> Candidate:
    """The candidate ``weights`` scored by its runs ``ids``: the mean of ``key`` and its spread over the seeds."""
    values = _validation_values(runs_dir, ids, key)
    return Candidate(term, weights, statistics.fmean(values) if values else None,
                     statistics.stdev(values) if len(values) > 1 else None)


def pick(candidates: Sequence[Candidate], default: float) -> Candidate:
    """The best validation score; among equals, the weight nearest the default (on a log scale)."""
    scored = [c for c in candidates if c.val is not None]
    if not scored:
        raise LabError(f"No tuning run of {candidates[0].term} finished with a validation score; "
                       f"rerun `python -m lab tune` (finished runs are kept).")
    return max(scored, key=lambda c: (c.val, -abs(math.log(c.weights[c.term] / default))))


def search_with_extension(search: Callable[[Sequence[float]], list[Candidate] | None], factors: list[float],
                          default: float, extend: int) -> list[Candidate] | None:
    """``search(factors)``, then, while the best candidate is the smallest or the largest weight, one more
    factor beyond it (the grid's own step: ×2 for :data:`FACTORS`), at most ``extend`` times — so that a
    weight the grid's ends cut off is found the same way for every term. Sorted by weight."""
    candidates = search(factors)
    for _ in range(extend):
        if candidates is None or len(factors) < 2:
            break
        best = pick(candidates, default)
        if best is candidates[-1]:
            step = factors[-1] ** 2 / factors[-2]
            factors = factors + [step]
        elif best is candidates[0]:
            step = factors[0] ** 2 / factors[1]
            factors = [step] + factors
        else:
            break
        more = search([step])
        candidates = None if more is None else sorted(candidates + more, key=lambda c: c.weights[c.term])
    return candidates


def write_record(runs_dir: Path, grid: str, scale: str, record: dict, lines: Sequence[str]) -> Path:
    """A tuning's record, ``runs/_tables/<scale->tune-<grid>.json`` (every candidate's score, for the dashboard),
    and its table, the ``.md`` beside it (also printed); returns the ``.md``."""
    folder = runs_dir / TABLES_DIR
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"{scale_prefix(scale)}tune-{grid}"
    runs.atomic_write_json(folder / f"{stem}.json", {"grid": grid, "scale": scale, **record})
    md = folder / f"{stem}.md"
    runs.atomic_write_bytes(md, ("\n".join(lines) + "\n").encode())
    print("\n".join(lines))
    return md
