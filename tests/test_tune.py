"""Issue 18: the validation split, and ``python -m lab tune`` selecting weights on it alone."""

from __future__ import annotations

import numpy as np

from lab.eval.suite import EvalConfig, evaluation_set, validation_set


def _items(batch) -> set[tuple]:
    """Every item as the tuple of all its drawn factors plus its rendered pixels."""
    f = batch.factors
    return {tuple(np.asarray(f[k][i]).tobytes() for k in sorted(f)) + (batch.images[i].tobytes(),)
            for i in range(len(batch))}


def _pixels(batch) -> set[bytes]:
    return {image.tobytes() for image in batch.images}


def test_validation_and_test_sets_share_no_item():
    cfg = EvalConfig(per_style=64, val_per_style=64)
    test, val = evaluation_set(cfg), validation_set(cfg)
    assert len(val) == len(test) == 64 * 4
    assert not _items(test) & _items(val)
    assert not _pixels(test) & _pixels(val)  # not even one identical rendered image
    # Same distribution: every style, and the same label space, in both.
    assert set(val.factors["style"]) == set(test.factors["style"])
    assert len(set(val.labels())) > 20 and len(set(test.labels())) > 20
