"""Evaluation metrics against values computed by hand on tiny inputs."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lab.eval.geometry import (
    alignment, geometry_report, knn_overlap, linear_cka, mean_cosine, similarity_correlation, uniformity,
)
from lab.eval.retrieval import retrieval_recall
from lab.eval.zeroshot import class_embeddings, harmonic_mean, top1, zeroshot_scores


def test_top1_and_base_novel_restriction():
    classes = torch.eye(4)
    # Image 0 (label 0) is closest to class 2 overall, but to class 0 among {0, 1}.
    # Image 3 (label 3) is closest to class 0 overall and to class 2 among {2, 3}.
    images = torch.tensor([[0.6, 0.0, 0.8, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0.9, 0.0, 0.1, 0.0]])
    labels = torch.tensor([0, 1, 2, 3])
    assert top1(images, classes, labels) == 50.0  # images 1 and 2 right
    assert top1(images, classes, labels, [0, 1]) == 100.0  # among base only, image 0 is right
    assert top1(images, classes, labels, [2, 3]) == 50.0  # image 2 right, image 3 wrong
    scores = zeroshot_scores(images, classes, labels, [0, 1], [2, 3])
    assert scores["hm"] == pytest.approx(2 * 100 * 50 / 150)


def test_top1_with_class_subset_maps_back_to_ids():
    classes = torch.eye(3)
    images = torch.tensor([[0.0, 0.2, 1.0]])
    assert top1(images, classes, torch.tensor([2]), [1, 2]) == 100.0
    assert math.isnan(top1(images, classes, torch.tensor([0]), [1, 2]))


def test_harmonic_mean():
    assert harmonic_mean(80, 60) == pytest.approx(68.5714, abs=1e-4)
    assert harmonic_mean(0, 0) == 0.0


def test_prompt_ensemble_averages_normalised_prompts():
    table = {"a x.": [3.0, 0.0], "the x.": [0.0, 1.0], "a y.": [0.0, 2.0], "the y.": [0.0, 5.0]}
    out = class_embeddings(lambda texts: torch.tensor([table[t] for t in texts]), ["x", "y"], ["a {}.", "the {}."])
    assert torch.allclose(out[0], torch.tensor([1.0, 1.0]) / math.sqrt(2))
    assert torch.allclose(out[1], torch.tensor([0.0, 1.0]))


def test_retrieval_recall_by_hand():
    images = torch.eye(3)
    # text 0 matches image 0; text 1 is closest to image 2; text 2 to image 1.
    texts = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.3, 0.9], [0.0, 0.9, 0.3]])
    r = retrieval_recall(images, texts, ks=(1, 2))
    assert r["i2t_r1"] == pytest.approx(100 / 3) and r["i2t_r2"] == 100.0
    assert r["t2i_r1"] == pytest.approx(100 / 3) and r["t2i_r2"] == 100.0
    # With caption keys, texts 1 and 2 are the same caption: every query is now a hit at 1.
    keys = ["a", "b", "b"]
    assert retrieval_recall(images, texts, keys, keys, ks=(1,))["i2t_r1"] == 100.0


def test_mean_cosine_and_shape_check():
    a = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    b = torch.tensor([[1.0, 1.0], [0.0, 1.0]])
    assert mean_cosine(a, b) == pytest.approx((1 / math.sqrt(2) + 1) / 2)
    with pytest.raises(ValueError, match="project the student"):
        mean_cosine(a, torch.ones(2, 3))


def test_linear_cka_by_hand_and_invariances():
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]])
    y = torch.tensor([[1.0], [2.0], [3.0]])
    xc, yc = x - x.mean(0), y - y.mean(0)
    expected = (yc.T @ xc).norm() ** 2 / ((xc.T @ xc).norm() * (yc.T @ yc).norm())
    assert linear_cka(x, y) == pytest.approx(expected.item())
    rng = np.random.default_rng(0)
    z = rng.normal(size=(50, 8))
    q, _ = np.linalg.qr(rng.normal(size=(8, 8)))
    assert linear_cka(z, z @ q * 3.0) == pytest.approx(1.0)  # rotation and scale invariant
    assert linear_cka(z, rng.normal(size=(50, 5))) < 0.5


def test_similarity_correlation_and_knn_overlap():
    s = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    assert similarity_correlation(s, 2 * s + 1) == pytest.approx(1.0)
    assert similarity_correlation(s, -s) == pytest.approx(-1.0)
    a = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    assert knn_overlap(a, a, k=1) == 1.0
    b = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.9, 0.1], [0.1, 0.9]])  # pairs swapped
    assert knn_overlap(a, b, k=1) == 0.0


def test_alignment_and_uniformity_by_hand():
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    y = torch.tensor([[0.0, 1.0], [0.0, 1.0]])
    assert alignment(x, y) == pytest.approx((2.0 + 0.0) / 2)
    # Two orthogonal unit vectors: squared distance 2, uniformity = log exp(-2*2) = -4.
    assert uniformity(x) == pytest.approx(-4.0)


def test_geometry_report_keys():
    torch.manual_seed(0)
    t = {"image": F.normalize(torch.randn(20, 8), dim=1), "text": F.normalize(torch.randn(20, 8), dim=1)}
    same = geometry_report(t, t, k=3)
    assert same["cosine_image"] == pytest.approx(1.0) and same["cka_text"] == pytest.approx(1.0)
    assert same["simmat_corr"] == pytest.approx(1.0) and same["knn_overlap_image"] == 1.0
    narrow = {"image": torch.randn(20, 4), "text": torch.randn(20, 4)}
    report = geometry_report(narrow, t, k=3)
    assert "cosine_image" not in report and report["cka_image"] < 1.0
