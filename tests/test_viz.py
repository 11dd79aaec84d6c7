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


def test_tsne_maps_keep_clusters_and_are_cached(tmp_path):
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 16)) * 5
    labels = np.repeat(np.arange(3), 20)
    teacher = centres[labels] + rng.normal(size=(60, 16))
    student = teacher @ np.linalg.qr(rng.normal(size=(16, 16)))[0]  # the same geometry, rotated
    cache = tmp_path / "maps" / "tsne.npz"
    t2, s2 = viz.aligned_maps(teacher, student, "tsne", cache)
    assert t2.shape == s2.shape == (60, 2) and cache.is_file()
    within = np.mean([np.linalg.norm(t2[labels == c] - t2[labels == c].mean(0), axis=1).mean() for c in range(3)])
    between = np.linalg.norm(t2[labels == 0].mean(0) - t2[labels == 1].mean(0))
    assert between > 3 * within  # the three clusters stay apart
    again = viz.aligned_maps(np.zeros((60, 16)), np.zeros((60, 16)), "tsne", cache)
    assert np.array_equal(again[0], t2) and np.array_equal(again[1], s2)  # read back, not recomputed
    with pytest.raises(ValueError, match="Unknown projection 'mds'"):
        viz.aligned_maps(teacher, student, "mds")


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
