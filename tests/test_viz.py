"""The shared figures' numerics: projections, alignment, similarity matrices."""

import numpy as np
import pandas as pd
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
    maps = viz.aligned_maps(teacher, student, "tsne", cache)
    t2, s2 = maps.teacher, maps.student
    assert t2.shape == s2.shape == (60, 2) and cache.is_file()
    within = np.mean([np.linalg.norm(t2[labels == c] - t2[labels == c].mean(0), axis=1).mean() for c in range(3)])
    between = np.linalg.norm(t2[labels == 0].mean(0) - t2[labels == 1].mean(0))
    assert between > 3 * within  # the three clusters stay apart
    again = viz.aligned_maps(np.zeros((60, 16)), np.zeros((60, 16)), "tsne", cache)
    assert np.array_equal(again.teacher, t2) and np.array_equal(again.student, s2)  # read back, not recomputed
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


def test_a_poorly_aligned_student_is_drawn_at_the_teachers_size_with_its_scale_reported():
    rng = np.random.default_rng(0)
    teacher = rng.normal(size=(200, 2)) * [3.0, 1.0]
    student = 0.02 * teacher @ np.array([[0.0, 1.0], [-1.0, 0.0]]) + 0.01 * rng.normal(size=(200, 2))
    maps = viz.align(teacher, student)
    rms = [np.sqrt((m ** 2).sum(axis=1).mean()) for m in (maps.teacher, maps.student)]
    assert rms == pytest.approx([1.0, 1.0])  # unit RMS radius, not shrunk by the scale
    assert 40 < maps.scale < 60 and 0 < maps.residual < 0.5  # the student map is 1/50 of the teacher's size
    assert viz.align(teacher, rng.normal(size=(200, 2))).residual > 0.8  # unrelated maps


def test_map_colours_are_shapesworlds_own():
    def hue(hex_colour):
        import colorsys

        r, g, b = (int(hex_colour[i:i + 2], 16) / 255 for i in (1, 3, 5))
        return 360 * colorsys.rgb_to_hsv(r, g, b)[0]

    assert hue(viz.COLOUR_HEX["red"]) < 15 or hue(viz.COLOUR_HEX["red"]) > 345
    assert 260 < hue(viz.COLOUR_HEX["purple"]) < 300 and 90 < hue(viz.COLOUR_HEX["green"]) < 150
    assert len(set(viz.SHAPE_MARKERS.values())) == len(viz.SHAPE_MARKERS)  # one marker per shape


def test_curve_smoothing_run_colours_and_rank_agreement():
    assert viz.ema([1.0, 1.0, 1.0], 0.9).tolist() == pytest.approx([1.0, 1.0, 1.0])  # debiased: no pull to 0
    assert viz.ema([0.0, 10.0], 0.5).tolist() == pytest.approx([0.0, 10 * 0.5 / 0.75])
    colours = viz.run_colours([f"run{i}" for i in range(30)])
    assert len(set(colours.values())) == 30
    assert viz.run_colours(["run3", "run1"]) == {"run3": viz.RUN_PALETTE[0], "run1": viz.RUN_PALETTE[1]}  # as picked
    import colorsys

    hue = lambda c: colorsys.rgb_to_hsv(*(int(c[i:i + 2], 16) / 255 for i in (1, 3, 5)))[0]  # noqa: E731
    gap = abs(hue(viz.RUN_PALETTE[0]) - hue(viz.RUN_PALETTE[1]))
    assert min(gap, 1 - gap) > 0.2  # the two runs a page shows first differ in hue (blue, orange)
    assert viz.spearman([1, 2, 3, 4], [10, 20, None, 40]) == pytest.approx(1.0)
    assert viz.spearman([1, 2], [2, 1]) is None


def test_neighbourhood_agreement_per_item():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 8))
    emb = {"teacher_image": x, "student_image": x.copy()}
    assert viz.neighbourhood_agreement(emb, k=5).tolist() == [1.0] * 40
    emb["student_image"] = rng.normal(size=(40, 8))
    assert viz.neighbourhood_agreement(emb, k=5).mean() < 0.5
    assert 3 not in viz.neighbours_of(emb, 3, "teacher", k=5)


def test_a_map_of_a_whole_evaluation_set_is_drawn():
    """The Geometry page offers every item of a run (5,120 of them, 10,240 points with captions); Altair's
    default 5,000-row limit made that view an error."""
    from lab.data.shapes import COLOUR_NAMES, SHAPES

    n, rng = 10_240, np.random.default_rng(0)
    points = pd.DataFrame({"item": np.arange(n) % 5_120, "modality": np.repeat(["image", "text"], n // 2),
                           "caption": "a red star", "neighbourhood": rng.random(n),
                           "teacher_x": rng.normal(size=n), "teacher_y": rng.normal(size=n),
                           "shape": rng.choice(SHAPES, n), "colour": rng.choice(COLOUR_NAMES, n),
                           "class": "red star", "style": "plain", "size": "small", "split": "base"})
    spec = viz.map_panel(points, "teacher", "class").to_dict()
    assert len(next(iter(spec["datasets"].values()))) == n


def test_weight_search_draws_every_tried_weight_at_its_multiple_of_the_default():
    """x is weight ÷ default (log, ×-ticks), y the validation score; the chosen point is ringed; a row that
    searched two terms gets a line per term; an unscored candidate is left out, not drawn at 0."""
    rows = [{"row": "FD", "default_weights": {"fd": 7.8125}, "searched": [{"term": "fd", "chosen": 31.25, "candidates": [
                {"weight": 7.8125 * f, "val_hm": v, "val_std": 1.5} for f, v in ((0.25, 50.0), (1, 60.0), (4, 67.4), (8, None))]}]},
            {"row": "FD+ICL", "default_weights": {"fd": 7.8125, "icl": 1.0}, "searched": [
                {"term": "fd", "chosen": 7.8125, "candidates": [{"weight": 7.8125, "val_hm": 61.0}]},
                {"term": "icl", "chosen": 0.5, "candidates": [{"weight": 0.5, "val_hm": 67.3},
                                                              {"weight": 1.0, "val_hm": 66.0}]}]}]
    fig = viz.weight_search(rows)
    lines = {t.name: t for t in fig.data if t.showlegend is not False}
    assert set(lines) == {"FD", "FD+ICL: fd", "FD+ICL: icl"}
    assert list(lines["FD"].x) == [0.25, 1.0, 4.0] and list(lines["FD"].y) == [50.0, 60.0, 67.4]
    assert list(lines["FD"].error_y.array) == [1.5] * 3 and lines["FD"].error_y.visible
    assert not lines["FD+ICL: icl"].error_y.visible  # a record without the seeds' spread: no bars, not zero-height ones
    rings = [t for t in fig.data if t.showlegend is False]
    assert [(t.x[0], t.y[0]) for t in rings] == [(4.0, 67.4), (1.0, 61.0), (0.5, 67.3)]
    assert lines["FD+ICL: fd"].line.color == lines["FD+ICL: icl"].line.color != lines["FD"].line.color
    assert [t.marker.color for t in rings] == [lines[n].line.color for n in ("FD", "FD+ICL: fd", "FD+ICL: icl")]
    assert fig.layout.xaxis.type == "log" and list(fig.layout.xaxis.ticktext) == ["×1/4", "×1/2", "×1 (default)", "×4"]
    assert fig.layout.yaxis.title.text == "validation HM (%)"
    mixed = viz.weight_search([{**rows[0], "metric": "top1"}, {**rows[1], "metric": "hm"}])
    assert mixed.layout.yaxis.title.text == "validation score (%, each row's own metric)"


def test_rank_agreement_says_why_there_is_no_rho():
    assert viz.rank_agreement([1, 2, 3], [5, 5, 5]) == "no ρ: the paper values of the 3 rows all tie"
    assert viz.rank_agreement([1, 2], [5, 6]).startswith("too few rows with both (2")
    assert viz.rank_agreement([1, 2, 3], [3, 2, 1]) == "Spearman ρ = -1.00 over 3 rows"
    fig = viz.ablation_bars(["a", "b", "c"], [40.0, 41.0, 42.0], [0.1, 0.2, 0.3], n_seeds=[1, 2, 2],
                            paper=[30.1, None, 35.2], paper_metric="CLIP-KD T1")
    assert fig.layout.yaxis.range[0] > 35 and 25 < fig.layout.yaxis2.range[0] < 30.1  # each axis spans its data
    assert fig.data[0].customdata[0] == "1 seed" and fig.layout.yaxis2.title.text == "paper: CLIP-KD T1"
