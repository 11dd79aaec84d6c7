"""INSTRUCTOR-ONLY: every exercise's points and its hidden checks (the student pack and the grading kernel
leave this module out).

Each exercise has a **public** check — the one its check cell runs on the lesson's tensors — and, where the
answer is a function (:attr:`lab.lessons.exercises.Exercise.params`), **hidden** checks that only
``python -m lab grade`` runs, in its own process, on inputs the student never saw: another seed, another batch
size, edge cases. An answer hard-coded from the lesson's printed output passes the public check and fails the
hidden ones. A hidden check's ``inputs(g, names)`` returns the arguments that replace the public ones (seeded by
``g``, a :class:`torch.Generator`); arguments it does not name (e.g. 1.2's ``teacher``) are the public ones.

Points are per check (partial credit): an exercise's points are the sum of the points of the checks it passes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lab.lessons.exercises import EXERCISES

HIDDEN_SEED = 20261208  # the grader's inputs; a student's copy never holds them


@dataclass(frozen=True)
class Check:
    name: str
    points: float
    hidden: bool = False
    inputs: Callable[[torch.Generator], dict] | None = None  # hidden checks: the arguments they call answer() with

    @property
    def visibility(self) -> str:
        return "hidden" if self.hidden else "public"


def _unit(g: torch.Generator, n: int, d: int) -> torch.Tensor:
    return F.normalize(torch.randn(n, d, generator=g), dim=-1)


def _names(space: str, reverse: bool = False) -> tuple[str, ...]:
    from lab.data.shapes import label_space

    names = label_space(space).classnames
    return tuple(reversed(names)) if reverse else tuple(names)


PUBLIC = "public: the lesson's own tensors"

CHECKS: dict[str, tuple[Check, ...]] = {
    "0.1": (Check(PUBLIC, 1.0),
            Check("hidden: another batch (12 pairs, scale 14.3)", 1.0, True,
                  lambda g: {"v": _unit(g, 12, 24), "t": _unit(g, 12, 24), "scale": torch.tensor(14.3)}),
            Check("hidden: a batch of 2 at scale 1", 0.5, True,
                  lambda g: {"v": _unit(g, 2, 8), "t": _unit(g, 2, 8), "scale": torch.tensor(1.0)})),
    "0.2": (Check(PUBLIC, 1.0),
            Check("hidden: another batch (10 similar pairs)", 1.0, True,
                  lambda g: {"v": F.normalize(torch.ones(10, 16) + 0.25 * torch.randn(10, 16, generator=g), dim=-1)}),
            Check("hidden: a batch of 3 near-duplicates", 0.5, True,
                  lambda g: {"v": F.normalize(torch.ones(3, 8) + 0.01 * torch.randn(3, 8, generator=g), dim=-1)})),
    "1.1": (Check(PUBLIC, 1.0),
            Check("hidden: base 60, novel 30", 0.5, True, lambda g: {"base": 60.0, "novel": 30.0}),
            Check("hidden: base 91.5, novel 12.25", 0.5, True, lambda g: {"base": 91.5, "novel": 12.25})),
    "1.2": (Check(PUBLIC, 1.0),
            Check("hidden: the shape label space's classes", 0.5, True, lambda g: {"names": _names("shape")}),
            Check("hidden: the colour classes in reverse order", 0.5, True,
                  lambda g: {"names": _names("colour", reverse=True)})),
    "2.1": (Check(PUBLIC, 1.0),
            Check("hidden: another teacher batch (9 pairs)", 1.0, True,
                  lambda g: {"v_t": _unit(g, 9, 16), "t_t": _unit(g, 9, 16)}),
            Check("hidden: more captions than images", 0.5, True,
                  lambda g: {"v_t": _unit(g, 4, 16), "t_t": _unit(g, 11, 16)})),
    "2.2": (Check(PUBLIC, 1.0),
            Check("hidden: another batch (7 pairs)", 1.0, True,
                  lambda g: {"pv": _unit(g, 7, 16), "v_t": _unit(g, 7, 16)}),
            Check("hidden: opposite vectors", 0.5, True,
                  lambda g: (lambda a: {"pv": a, "v_t": -a})(_unit(g, 3, 8)))),
    "6.2": (Check(PUBLIC, 1.0),
            Check("hidden: other features (50 × 12)", 1.0, True,
                  lambda g: {"x": torch.randn(50, 12, generator=g, dtype=torch.float64)}),
            Check("hidden: unnormalised features of 5", 0.5, True,
                  lambda g: {"x": 7 * torch.randn(5, 3, generator=g, dtype=torch.float64)})),
    "6.3": (Check(PUBLIC, 1.0),
            Check("hidden: other pairs (40 × 12)", 1.0, True,
                  lambda g: {"x": torch.randn(40, 12, generator=g, dtype=torch.float64),
                             "xt": torch.randn(40, 12, generator=g, dtype=torch.float64)}),
            Check("hidden: identical pairs", 0.5, True,
                  lambda g: (lambda a: {"x": a, "xt": 3 * a})(torch.randn(6, 4, generator=g, dtype=torch.float64)))),
}
DEFAULT = (Check(PUBLIC, 1.0),)  # an exercise whose answer is still a value: its public check only

GRADER_OBJECTS: dict[str, Callable[[], object]] = {  # public inputs that are objects, not tensors: the grader builds its own
    "teacher": lambda: _teacher(),
}


def _teacher():
    from lab.models.zoo import load_teacher

    return load_teacher("shipped", "cpu")


def checks(number: str) -> tuple[Check, ...]:
    """Exercise ``number``'s checks: the public one first, then the hidden ones."""
    return CHECKS.get(number, DEFAULT)


def max_points(number: str) -> float:
    return sum(c.points for c in checks(number))


def hidden_inputs(number: str) -> list[dict]:
    """The inputs of ``number``'s hidden checks (the same on every call: one generator seeded per exercise)."""
    g = torch.Generator().manual_seed(HIDDEN_SEED + sum(map(ord, number)))
    return [c.inputs(g) for c in checks(number) if c.hidden]


def expected(number: str, **inputs):
    """Exercise ``number``'s reference value for ``inputs`` (instructor and tests only)."""
    return EXERCISES[number].reference(**inputs)


def _check_registry() -> None:
    for number, cs in CHECKS.items():
        assert number in EXERCISES and not cs[0].hidden, number
        assert all(c.hidden for c in cs[1:]), number
        assert EXERCISES[number].params or len(cs) == 1, f"{number}: hidden checks need a function answer"


_check_registry()
