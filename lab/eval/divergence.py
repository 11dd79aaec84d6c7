"""Where the student departs from the teacher: per item, per class and factor pair, per retrieval query.

Everything is computed in the full embedding spaces (cosine), never on a 2-D map. ``emb`` is a run's
``embeddings.npz`` as a dict (:meth:`lab.runs.Run.embeddings`): ``teacher_image``/``student_image``,
``teacher_text``/``student_text`` (rows = the same test items), ``labels``, ``classnames`` and
``factor_<name>`` index arrays. Teacher and student widths may differ.

* :func:`knn_iou` — per item, the Jaccard overlap |N_T(i) ∩ N_S(i)| / |N_T(i) ∪ N_S(i)| of its k nearest
  neighbours in each space (1 = the same neighbourhood, 0 = none shared);
* :func:`neighbour_split` — for one item, the neighbours both models agree on, the teacher's only (lost by
  the student) and the student's only (neighbours the student invented);
* :func:`pair_divergence` / :func:`factor_divergence` — groups (classes, or the values of a factor such as
  colour, optionally within one style) ranked by how much the similarity of their centroids changed:
  Δ = z_S(a, b) − z_T(a, b), each model's centroid cosines standardised over its own off-diagonal pairs (so
  a student that is uniformly tighter is not "merging" everything); Δ > 0: the student merges a with b;
* :func:`rank_changes` — per query, the rank of the correct match (image → its caption, caption → its image)
  under the teacher and under the student, and how many places it lost (+) or gained (−).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from lab.data.shapes import COLOUR_NAMES, SHAPES, SIZES, STYLES

FACTORS = ("colour", "shape", "size", "style")
FACTOR_NAMES = {"colour": COLOUR_NAMES, "shape": SHAPES, "size": SIZES, "style": STYLES}


def pair_of(first: dict, second: dict, first_side: str = "teacher", second_side: str = "student") -> dict:
    """Any two embedding sets of the same test items as one ``emb`` whose ``teacher_*`` is ``first``'s
    ``first_side`` and ``student_*`` is ``second``'s ``second_side`` — teacher vs student, student A vs
    student B (two runs), or one run at two training steps (two snapshot frames) — so every analysis here,
    and :mod:`lab.viz`'s maps and matrices, compare any pair. Refuses sets of different items."""
    from lab.errors import LabError

    if len(first["labels"]) != len(second["labels"]) or not np.array_equal(first["labels"], second["labels"]):
        raise LabError("The two runs embedded different test items (another evaluation set or size); compare runs "
                       "evaluated with the same eval.per_style and eval.seed.")
    pair = dict(first)
    for modality in ("image", "text"):
        pair[f"teacher_{modality}"] = first[f"{first_side}_{modality}"]
        pair[f"student_{modality}"] = second[f"{second_side}_{modality}"]
    return pair


def _unit(x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True).clip(min=1e-12)


def nearest(x, k: int) -> np.ndarray:
    """(N, k) indices of each row's k nearest other rows by cosine, nearest first (ties by index)."""
    u = _unit(x)
    sim = u @ u.T
    np.fill_diagonal(sim, -np.inf)
    k = min(k, len(u) - 1)
    return np.argsort(-sim, axis=1, kind="stable")[:, :k]


def knn_iou(teacher, student, k: int = 10) -> np.ndarray:
    """Per item: |N_T ∩ N_S| / |N_T ∪ N_S| of its ``k`` nearest neighbours (cosine, itself excluded)."""
    nt, ns = nearest(teacher, k), nearest(student, k)
    shared = (nt[:, :, None] == ns[:, None, :]).any(axis=2).sum(axis=1)
    return shared / (2 * nt.shape[1] - shared)


def neighbour_split(teacher, student, item: int, k: int = 10) -> dict[str, list[int]]:
    """``item``'s k nearest neighbours: ``common`` (in both, teacher's order), ``teacher_only`` (the student
    lost them) and ``student_only`` (the student invented them), each nearest first."""
    def knn(x):
        u = _unit(x)
        sim = u @ u[item]
        sim[item] = -np.inf
        return [int(j) for j in np.argsort(-sim, kind="stable")[:min(k, len(u) - 1)]]

    t, s = knn(teacher), knn(student)
    return {"common": [j for j in t if j in s], "teacher_only": [j for j in t if j not in s],
            "student_only": [j for j in s if j not in t]}


def _centroid_z(x: np.ndarray, groups: np.ndarray, names: Sequence) -> np.ndarray:
    """Cosine similarities between the groups' mean unit vectors, standardised over the off-diagonal pairs."""
    u = _unit(x)
    centroids = _unit(np.stack([u[groups == g].mean(axis=0) for g in names]))
    sim = centroids @ centroids.T
    off = sim[~np.eye(len(names), dtype=bool)]
    return (sim - off.mean()) / (off.std() or 1.0)


def pair_divergence(teacher, student, groups: Sequence, names: Sequence | None = None,
                    min_items: int = 3) -> pd.DataFrame:
    """Every pair of groups ranked by |Δ| (largest first): columns ``a``, ``b``, ``teacher`` and ``student``
    (standardised centroid cosine), ``change`` = student − teacher, ``verdict`` ("student merges" for Δ > 0,
    "student separates" otherwise). ``groups``: one label per row; ``names``: the groups to compare (default:
    every label present, in order); a group of fewer than ``min_items`` rows is left out (its centroid is noise)."""
    groups = np.asarray(groups)
    names = list(dict.fromkeys(groups.tolist())) if names is None else list(names)
    names = [g for g in names if (groups == g).sum() >= min_items]
    if len(names) < 2:
        return pd.DataFrame(columns=["a", "b", "teacher", "student", "change", "verdict"])
    zt, zs = _centroid_z(teacher, groups, names), _centroid_z(student, groups, names)
    i, j = np.triu_indices(len(names), k=1)
    table = pd.DataFrame({"a": np.asarray(names, dtype=object)[i], "b": np.asarray(names, dtype=object)[j],
                          "teacher": zt[i, j], "student": zs[i, j], "change": zs[i, j] - zt[i, j]})
    table["verdict"] = np.where(table["change"] > 0, "student merges", "student separates")
    order = table["change"].abs().sort_values(ascending=False, kind="stable").index
    return table.loc[order].reset_index(drop=True)


def factor_divergence(emb: dict, modality: str = "image", factors: Sequence[str] = FACTORS,
                      per_style: bool = True, top: int | None = None, min_items: int = 3) -> pd.DataFrame:
    """Classes and each factor's values ranked by how much the student's structure departs from the
    teacher's (:func:`pair_divergence`), over all items and, with ``per_style``, within each style: rows
    ``grouping`` (class, colour, …), ``within`` (all styles, or one), ``a``, ``b``, ``teacher``, ``student``,
    ``change``, ``verdict``, and ``sentence`` (e.g. "the student merges red with orange in the sketch
    style"), largest |change| first."""
    teacher, student = emb[f"teacher_{modality}"], emb[f"student_{modality}"]
    classnames = np.asarray(emb["classnames"])
    groupings = {"class": classnames[np.asarray(emb["labels"])]}
    for name in factors:
        if f"factor_{name}" in emb:
            groupings[name] = np.asarray(FACTOR_NAMES[name])[np.asarray(emb[f"factor_{name}"])]
    scopes = {"all styles": np.ones(len(teacher), dtype=bool)}
    if per_style and "factor_style" in emb:
        styles = np.asarray(emb["factor_style"])
        scopes.update({STYLES[s]: styles == s for s in np.unique(styles)})
    parts = []
    for grouping, labels in groupings.items():
        for scope, keep in scopes.items():
            if grouping == "style" and scope != "all styles":
                continue
            part = pair_divergence(np.asarray(teacher)[keep], np.asarray(student)[keep], labels[keep],
                                   min_items=min_items)
            if len(part):
                parts.append(part.assign(grouping=grouping, within=scope))
    if not parts:
        return pd.DataFrame(columns=["grouping", "within", "a", "b", "teacher", "student", "change", "verdict",
                                     "sentence"])
    table = pd.concat(parts, ignore_index=True)
    where = np.where(table["within"] == "all styles", "", " in the " + table["within"] + " style")
    verb = np.where(table["change"] > 0, "merges", "separates")
    table["sentence"] = "the student " + verb + " " + table["a"].astype(str) + " " + \
        np.where(table["change"] > 0, "with", "from") + " " + table["b"].astype(str) + where
    order = table["change"].abs().sort_values(ascending=False, kind="stable").index
    table = table.loc[order].reset_index(drop=True)[["grouping", "within", "a", "b", "teacher", "student", "change",
                                                     "verdict", "sentence"]]
    return table if top is None else table.head(top)


def correct_rank(queries, gallery) -> np.ndarray:
    """Per query i: 1 + the number of gallery items more similar to it (cosine) than gallery item i, its match."""
    sim = _unit(queries) @ _unit(gallery).T
    return 1 + (sim > np.diag(sim)[:, None]).sum(axis=1)


def rank_changes(emb: dict, captions: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per query and direction (image→text: an image finding its own caption; text→image: a caption
    finding its image): ``item``, ``direction``, ``caption``, ``teacher rank``, ``student rank`` and ``rank
    lost`` = student − teacher (> 0: the student ranks the match lower; < 0: higher), most lost first."""
    captions = list(emb["captions"] if captions is None else captions)
    parts = []
    for direction, (q, g) in {"image→text": ("image", "text"), "text→image": ("text", "image")}.items():
        t = correct_rank(emb[f"teacher_{q}"], emb[f"teacher_{g}"])
        s = correct_rank(emb[f"student_{q}"], emb[f"student_{g}"])
        parts.append(pd.DataFrame({"item": np.arange(len(t)), "direction": direction, "caption": captions,
                                   "teacher rank": t, "student rank": s, "rank lost": s - t}))
    table = pd.concat(parts, ignore_index=True)
    return table.sort_values("rank lost", ascending=False, kind="stable").reset_index(drop=True)
