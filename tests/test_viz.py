"""The shared figures' numerics: projections, alignment, similarity matrices."""

import numpy as np
import pytest

from lab import viz


def test_procrustes_undoes_a_rotation_and_scale():
    rng = np.random.default_rng(0)
    target = rng.normal(size=(50, 2))
    angle = 0.7
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    source = 3.0 * target @ rotation + 5.0
    assert np.allclose(viz.procrustes(source, target), target - target.mean(axis=0), atol=1e-9)


def test_pca_2d_keeps_the_largest_directions():
    t = np.linspace(0, 2 * np.pi, 200, endpoint=False)
    x = np.zeros((200, 5))
    x[:, 3] = 10 * np.cos(t)  # uncorrelated, zero-mean columns: the principal axes are these two
    x[:, 1] = 3 * np.sin(t)
    coords = viz.pca_2d(x)
    assert np.allclose(np.abs(coords[:, 0]), np.abs(x[:, 3] - x[:, 3].mean()))
    assert np.allclose(np.abs(coords[:, 1]), np.abs(x[:, 1] - x[:, 1].mean()))


def test_similarity_matrices_by_hand():
    emb = {"labels": np.array([1, 0, 1, 0]),
           "teacher_image": np.eye(4)[:, :3] + 0.0, "teacher_text": np.eye(4)[:, :3] + 0.0,
           "student_image": np.ones((4, 2)), "student_text": np.ones((4, 2))}
    emb["teacher_image"][3] = [0, 0, 1]
    emb["teacher_text"][3] = [0, 0, 1]
    m = viz.similarity_matrices(emb, "image-text")
    assert viz.class_sorted_subset(emb["labels"]).tolist() == [1, 0]
    assert np.allclose(m["teacher"], np.eye(2))
    assert np.allclose(m["student"], np.ones((2, 2)))
    assert np.allclose(m["student − teacher"], 1 - np.eye(2))
    soft = viz.similarity_matrices(emb, "image-text", temperature=1.0)["teacher"]
    assert soft[0, 0] == pytest.approx(np.e / (np.e + 1))
