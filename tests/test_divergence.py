"""Where the student departs from the teacher (lab.eval.divergence), on planted cases: a "student" that equals
the teacher (rotated) except for a known change must be caught exactly there."""

import numpy as np
import pytest

from lab.data.shapes import COLOUR_NAMES, SHAPES
from lab.eval import divergence as dv

COLOURS, KINDS, STYLES_USED, PER = 4, 3, 2, 6  # classes = colour × shape, items per class and style


def planted_teacher(seed: int = 0) -> dict:
    """Well-separated classes (colour × shape) in 32-D, a style offset, small item noise; captions beside."""
    rng = np.random.default_rng(seed)
    colour_dir, shape_dir, style_dir = (rng.normal(size=(n, 32)) for n in (COLOURS, KINDS, STYLES_USED))
    colour, shape, style = (a.ravel() for a in np.meshgrid(np.arange(COLOURS), np.arange(KINDS),
                                                           np.arange(STYLES_USED), np.arange(PER),
                                                           indexing="ij")[:3])
    image = 2 * colour_dir[colour] + 2 * shape_dir[shape] + 0.5 * style_dir[style] + 0.3 * rng.normal(size=(len(colour), 32))
    text = image + 0.05 * rng.normal(size=image.shape)
    labels = colour * len(SHAPES) + shape
    classnames = np.array([f"{c} {s}" for c in COLOUR_NAMES for s in SHAPES])
    return {"teacher_image": image, "teacher_text": text, "labels": labels, "classnames": classnames,
            "factor_colour": colour, "factor_shape": shape, "factor_style": style,
            "captions": [f"item {i}" for i in range(len(labels))]}


def student_of(emb: dict, image=None, text=None, seed: int = 1) -> dict:
    """The teacher's embeddings (or the planted ones) under a random rotation: the same geometry."""
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(32, 32)))
    return {**emb, "student_image": (emb["teacher_image"] if image is None else image) @ q,
            "student_text": (emb["teacher_text"] if text is None else text) @ q}


def test_a_student_equal_to_its_teacher_departs_nowhere():
    emb = student_of(planted_teacher())
    assert dv.knn_iou(emb["teacher_image"], emb["student_image"], k=5) == pytest.approx(1.0)
    assert (dv.rank_changes(emb)["rank lost"] == 0).all()
    assert dv.factor_divergence(emb)["change"].abs().max() < 1e-9


def test_a_merged_class_pair_is_ranked_first():
    emb = planted_teacher()
    labels = emb["labels"]
    a, b = labels[0], labels[-1]  # the first colour's first shape and the last colour's last shape
    image = emb["teacher_image"].copy()
    image[labels == b] = image[labels == a] + 0.3 * np.random.default_rng(2).normal(size=((labels == b).sum(), 32))
    table = dv.factor_divergence(student_of(emb, image=image))
    first = table.iloc[0]
    assert first["grouping"] == "class" and {first["a"], first["b"]} == {emb["classnames"][a], emb["classnames"][b]}
    assert first["verdict"] == "student merges" and first["sentence"].startswith("the student merges ")


def test_swapped_items_are_exactly_the_rank_changes_and_the_neighbour_lists():
    emb = planted_teacher()
    labels = emb["labels"]
    p1, p2 = 0, len(labels) - 1  # two items of far-apart classes
    image = emb["teacher_image"].copy()
    image[[p1, p2]] = image[[p2, p1]]
    emb = student_of(emb, image=image)
    changed = dv.rank_changes(emb)
    moved = changed[changed["rank lost"] != 0]
    assert sorted(zip(moved["item"], moved["direction"])) == [(p1, "image→text"), (p1, "text→image"),
                                                              (p2, "image→text"), (p2, "text→image")]
    assert (moved["rank lost"] > 0).all() and (moved["teacher rank"] == 1).all()
    split = dv.neighbour_split(emb["teacher_image"], emb["student_image"], p1, k=5)
    assert split["common"] == []
    assert len(split["teacher_only"]) == 5 and all(labels[j] == labels[p1] for j in split["teacher_only"])
    assert len(split["student_only"]) == 5 and all(labels[j] == labels[p2] for j in split["student_only"])
    iou = dv.knn_iou(emb["teacher_image"], emb["student_image"], k=5)
    assert iou[p1] == 0 and iou[p2] == 0
    middle = labels == labels[len(labels) // 2]  # a class neither swapped item is near keeps its neighbours
    assert (iou[middle] == 1).all()


def test_any_two_runs_compare_as_a_pair():
    """Student A vs student B: A's student plays the reference; a set of other items is refused."""
    from lab.errors import LabError

    base = planted_teacher()
    a, b = student_of(base, seed=1), student_of(base, seed=2)
    pair = dv.pair_of(a, b, "student", "student")
    assert pair["teacher_image"] is a["student_image"] and pair["student_image"] is b["student_image"]
    assert dv.knn_iou(pair["teacher_image"], pair["student_image"], k=5) == pytest.approx(1.0)  # two rotations
    other = {**b, "labels": b["labels"][::-1]}
    with pytest.raises(LabError, match="different test items"):
        dv.pair_of(a, other)
