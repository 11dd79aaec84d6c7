"""What the dashboard's downloads hold: exactly the numbers lab draws, with the run and settings in the header."""

import numpy as np
import pandas as pd
import pytest

from lab import viz
from lab.app import export
from lab.data.shapes import COLOUR_NAMES, SHAPES


@pytest.fixture(scope="module")
def emb():
    """A run's embeddings.npz in miniature: 48 items of the 64 colour × shape classes, teacher 16-D, student 12-D."""
    rng, n = np.random.default_rng(0), 48
    labels = rng.permutation(64)[:n]
    arrays = {f"{m}_{k}": rng.normal(size=(n, d)).astype(np.float16) for m, d in (("teacher", 16), ("student", 12))
              for k in ("image", "text")}
    return {**arrays, "labels": labels, "classnames": np.array([f"{c} {s}" for c in COLOUR_NAMES for s in SHAPES]),
            "factor_colour": labels // len(SHAPES), "factor_shape": labels % len(SHAPES),
            "factor_style": rng.integers(0, 4, n), "base_ids": np.arange(32),
            "captions": np.array([f"caption {i}" for i in range(n)])}


def test_a_maps_csv_holds_the_points_drawn(emb):
    points, aligned = viz.map_points(emb, 60, True, "pca")
    text = export.with_header(export.map_table(points, "student", "class"), {"run": "smoke", "projection": "PCA"})
    header, table = export.read_with_header(text)
    assert header == {"run": "smoke", "projection": "PCA"}
    assert np.allclose(table[["x", "y"]].to_numpy(), aligned.student, rtol=0, atol=1e-8)
    assert table["item"].tolist() == points["item"].tolist() and set(table["modality"]) == {"image", "text"}
    chart = viz.readable(viz.map_panel(points, "student", "class", ["student", "smoke"], 200, 200))
    assert export.vega_svg(chart).lstrip().startswith("<svg") and export.vega_png(chart)[:4] == b"\x89PNG"


def test_a_similarity_csv_holds_the_matrices(emb):
    matrices = viz.similarity_matrices(emb, "image-text")
    names = viz.similarity_class_names(emb)
    _, table = export.read_with_header(export.with_header(export.matrices_table(matrices, names), {"run": "smoke"}))
    n = len(names)
    for name, m in matrices.items():
        assert np.allclose(table[name].to_numpy().reshape(n, n), m, rtol=0, atol=1e-8), name
    assert table.loc[table["row"] == 1, "row class"].iloc[0] == names[1]


def test_a_view_report_is_one_offline_page(emb):
    """Figures inline (an SVG map, a plotly heatmap with plotly.js inside), numbers and configs: nothing fetched."""
    import re

    from lab.app.report import view_report

    points, _ = viz.map_points(emb, 40, False, "pca")
    page = view_report("smoke view", {"student map": viz.readable(viz.map_panel(points, "student", "colour")),
                                      "similarity": viz.similarity_heatmaps(viz.similarity_matrices(emb))},
                       {"points": export.map_table(points, "student", "colour")}, {"smoke": {"train": {"lr": 0.002}}})
    assert page.count("<svg") >= 1 and "Plotly.newPlot" in page and "&quot;lr&quot;: 0.002" in page
    markup = re.sub(r"<script[^>]*>.*?</script>", "<script></script>", page, flags=re.S)  # the page, not JS text
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", markup)  # no script, style or image from the network
    assert not re.search(r"<script[^>]+src=", page)
