"""Figures shared by the dashboard and the notebooks, built from run data only (plotly; Altair for the maps).

The embedding maps put teacher and student in one frame: the teacher's points are
projected to 2-D (PCA, t-SNE or UMAP), the student's on its own, and the student map is
then rotated (orthogonal Procrustes, with a scale) onto the teacher's so that the same item
sits in comparable places in both panels. t-SNE and UMAP take seconds, so their maps can be
cached on disk (``cache=`` a file path; the dashboard keeps them in the run directory).
The maps are Altair charts because their tooltips can show an image: hovering a point shows
the item's picture (re-rendered from its stored ShapesWorld factors) and caption, and
highlights the same item in the other panel.
"""

from __future__ import annotations

import base64
import io
import warnings
from collections.abc import Sequence
from pathlib import Path

import altair as alt
import numpy as np
import pandas as pd
import plotly.graph_objects as go
from PIL import Image
from plotly.subplots import make_subplots

from lab.data.shapes import COLOUR_NAMES, SHAPES, SIZES, STYLES, ShapesWorld

FACTOR_NAMES = {"shape": SHAPES, "colour": COLOUR_NAMES, "size": SIZES, "style": STYLES}


def pca_2d(x: np.ndarray) -> np.ndarray:
    """Coordinates of the rows of ``x`` on their top two principal axes (signs fixed by the largest loading)."""
    x = np.asarray(x, dtype=np.float64)
    centred = x - x.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    axes = vt[:2]
    axes *= np.sign(axes[np.arange(2), np.abs(axes).argmax(axis=1)])[:, None]
    return centred @ axes.T


def procrustes(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """``source`` rotated/reflected and scaled to best match ``target`` (rows correspond), both centred."""
    s, t = source - source.mean(axis=0), target - target.mean(axis=0)
    u, sigma, vt = np.linalg.svd(s.T @ t)
    rotation = u @ vt
    scale = sigma.sum() / max((s ** 2).sum(), 1e-12)
    return scale * s @ rotation


PROJECTIONS = ("pca", "tsne", "umap")


def tsne_2d(x: np.ndarray, seed: int = 0) -> np.ndarray:
    """t-SNE coordinates of the rows of ``x`` (cosine distances, PCA initialisation, fixed seed)."""
    from sklearn.manifold import TSNE

    perplexity = float(min(30.0, max(2.0, (len(x) - 1) / 3)))
    return TSNE(2, perplexity=perplexity, metric="cosine", init="pca", random_state=seed).fit_transform(
        np.asarray(x, dtype=np.float64))


def umap_2d(x: np.ndarray, seed: int = 0) -> np.ndarray:
    """UMAP coordinates of the rows of ``x`` (cosine metric, 15 neighbours, fixed seed).

    umap-learn compiles its kernels with numba on first use: ~20 s in a fresh process.
    """
    from umap import UMAP

    with warnings.catch_warnings():  # "n_jobs overridden by setting random_state": wanted, for reproducible maps
        warnings.simplefilter("ignore", UserWarning)
        return UMAP(n_components=2, n_neighbors=min(15, len(x) - 1), metric="cosine", random_state=seed,
                    init="pca" if len(x) > 3 else "random").fit_transform(np.asarray(x, dtype=np.float32))


def aligned_maps(teacher: np.ndarray, student: np.ndarray, method: str = "pca",
                 cache: str | Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """2-D maps of the same items in both spaces, the student's aligned onto the teacher's.

    With ``cache`` (an ``.npz`` path) the maps are read from it when present and written to it
    otherwise; an unwritable place only skips the writing.
    """
    if method not in PROJECTIONS:
        raise ValueError(f"Unknown projection '{method}'; choose one of: {', '.join(PROJECTIONS)}.")
    if cache is not None and Path(cache).is_file():
        with np.load(cache) as stored:
            return stored["teacher"], stored["student"]
    project = {"pca": pca_2d, "tsne": tsne_2d, "umap": umap_2d}[method]
    t2 = project(teacher)
    maps = t2, procrustes(project(student), t2)
    if cache is not None:
        try:
            Path(cache).parent.mkdir(parents=True, exist_ok=True)
            np.savez(cache, teacher=maps[0], student=maps[1])
        except OSError:
            pass
    return maps


def colour_labels(emb: dict, colour_by: str, n_images: int, n_texts: int = 0) -> list[str]:
    """Point labels for ``colour_by``: a factor, "class", "modality" or "split" (base/novel)."""
    if colour_by == "modality":
        return ["image"] * n_images + ["text"] * n_texts
    if colour_by == "class":
        names = emb["classnames"][emb["labels"]]
    elif colour_by == "split":
        base = set(np.asarray(emb["base_ids"]).tolist())
        names = np.array(["base" if int(c) in base else "novel" for c in emb["labels"]])
    else:
        names = np.asarray(FACTOR_NAMES[colour_by])[emb[f"factor_{colour_by}"]]
    names = [str(name) for name in names[:n_images]]
    return names + names[:n_texts]


PER_ITEM = ("student_image", "student_text", "teacher_image", "teacher_text", "labels", "captions")


def sample_indices(total: int, n: int, seed: int = 0) -> np.ndarray:
    """At most ``n`` of ``total`` item indices, in order, drawn evenly from every style
    (the test set is stored style by style)."""
    if n >= total:
        return np.arange(total)
    return np.sort(np.random.default_rng(seed).permutation(total)[:n])


def subsample(emb: dict, n: int, seed: int = 0) -> dict:
    """The per-item arrays of ``emb`` restricted to :func:`sample_indices`."""
    idx = sample_indices(len(emb["labels"]), n, seed)
    return {k: (v[idx] if (k in PER_ITEM or k.startswith("factor_")) else v) for k, v in emb.items()}


THUMBNAIL_FACTORS = ("shape", "colour", "size", "style", "rotation", "cx", "cy", "radius", "colour_jitter",
                     "background", "noise_seed")


def thumbnails(emb: dict, size: int = 48) -> list[str] | None:
    """Each item's picture as a WebP data URL (≈ 0.9 kB at 48 px), re-rendered from its stored
    ShapesWorld factors; ``None`` when the run did not store them (embeddings of another dataset)."""
    if any(f"factor_{k}" not in emb for k in THUMBNAIL_FACTORS):
        return None
    images = ShapesWorld(image_size=size).render({k: emb[f"factor_{k}"] for k in THUMBNAIL_FACTORS})
    urls = []
    for image in images:
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="WEBP", quality=80)
        urls.append("data:image/webp;base64," + base64.b64encode(buffer.getvalue()).decode())
    return urls


def embedding_maps(emb: dict, colour_by: str = "shape", n: int = 1000, with_texts: bool = True,
                   method: str = "pca", cache_dir: str | Path | None = None,
                   images: Sequence[str] | None = None) -> alt.HConcatChart:
    """Teacher and student image (and caption) embeddings side by side in aligned 2-D maps.

    ``method`` pca, tsne or umap; ``cache_dir`` keeps the maps, one file per method, size and
    modality set. Hovering a point shows its caption and, given ``images`` (one data URL per
    item of ``emb``, e.g. :func:`thumbnails`), its picture; the same item is highlighted in
    both panels.
    """
    idx = sample_indices(len(emb["labels"]), n)
    emb, n = subsample(emb, n), len(idx)
    keys = ("image", "text") if with_texts else ("image",)
    teacher = np.concatenate([emb[f"teacher_{k}"].astype(np.float64) for k in keys])
    student = np.concatenate([emb[f"student_{k}"].astype(np.float64) for k in keys])
    cache = None if cache_dir is None else Path(cache_dir) / f"{method}-{n}-{'both' if with_texts else 'images'}.npz"
    t2, s2 = aligned_maps(teacher, student, method, cache)
    items = np.tile(np.arange(n), len(keys))
    points = pd.DataFrame({
        "item": items, "modality": np.repeat(keys, n), colour_by: colour_labels(emb, colour_by, n, n if with_texts else 0),
        "caption": np.asarray(emb["captions"])[items],
        "teacher_x": t2[:, 0], "teacher_y": t2[:, 1], "student_x": s2[:, 0], "student_y": s2[:, 1]})
    tooltip = ["caption:N", f"{colour_by}:N", "modality:N"]
    chart = alt.Chart(points)
    if images is not None:
        pictures = pd.DataFrame({"item": np.arange(n), "image": np.asarray(images)[idx]})
        chart = chart.transform_lookup(lookup="item", from_=alt.LookupData(pictures, "item", ["image"]))
        tooltip = ["image:N", *tooltip]  # vega-tooltip draws the field named "image" as a picture
    hover = alt.selection_point(on="pointerover", fields=["item"], nearest=True, empty=False, clear="pointerout")
    base = chart.mark_point(filled=True).encode(
        color=alt.Color(f"{colour_by}:N", scale=alt.Scale(scheme="category20")),
        shape=alt.Shape("modality:N", scale=alt.Scale(domain=["image", "text"], range=["circle", "cross"])),
        size=alt.condition(hover, alt.value(220), alt.value(22)),
        opacity=alt.condition(hover, alt.value(1.0), alt.value(0.7)),
        stroke=alt.condition(hover, alt.value("black"), alt.value(None)),
        tooltip=tooltip)
    panels = [base.encode(x=alt.X(f"{model}_x:Q", axis=None, scale=alt.Scale(zero=False)),
                          y=alt.Y(f"{model}_y:Q", axis=None, scale=alt.Scale(zero=False)))
              .properties(title=title, width=430, height=430)
              for model, title in (("teacher", "teacher"), ("student", "student (aligned to the teacher)"))]
    with warnings.catch_warnings():  # one hover selection shared by both panels is the point, not a clash
        warnings.filterwarnings("ignore", "Automatically deduplicated selection parameter", UserWarning)
        maps = alt.hconcat(*panels).add_params(hover)
    return maps.resolve_scale(x="shared", y="shared").configure_view(stroke="#ddd")


def class_sorted_subset(labels: np.ndarray, per_class: int = 1) -> np.ndarray:
    """Indices of the first ``per_class`` items of every class, ordered by class."""
    labels = np.asarray(labels)
    return np.concatenate([np.flatnonzero(labels == c)[:per_class] for c in np.unique(labels)])


def softmax_rows(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


PAIRS = {"image-text": ("image", "text"), "image-image": ("image", "image"), "text-text": ("text", "text")}


def similarity_matrices(emb: dict, pair: str = "image-text", temperature: float | None = None,
                        per_class: int = 1) -> dict[str, np.ndarray]:
    """Teacher, student and difference matrices over a class-sorted subset.

    Cosine similarities, or row-wise softmax(cos / temperature) when a temperature is given.
    """
    rows_key, cols_key = PAIRS[pair]
    idx = class_sorted_subset(emb["labels"], per_class)
    out = {}
    for model in ("teacher", "student"):
        a, b = emb[f"{model}_{rows_key}"][idx].astype(np.float64), emb[f"{model}_{cols_key}"][idx].astype(np.float64)
        a /= np.linalg.norm(a, axis=1, keepdims=True)
        b /= np.linalg.norm(b, axis=1, keepdims=True)
        sim = a @ b.T
        out[model] = softmax_rows(sim / temperature) if temperature else sim
    out["student − teacher"] = out["student"] - out["teacher"]
    return out


def similarity_heatmaps(matrices: dict[str, np.ndarray], tick_labels: Sequence[str] | None = None) -> go.Figure:
    fig = make_subplots(rows=1, cols=3, subplot_titles=tuple(matrices), horizontal_spacing=0.06)
    lo = min(matrices["teacher"].min(), matrices["student"].min())
    hi = max(matrices["teacher"].max(), matrices["student"].max())
    diff = np.abs(matrices["student − teacher"]).max() or 1.0
    for col, (name, m) in enumerate(matrices.items(), start=1):
        is_diff = name.startswith("student −")
        fig.add_trace(go.Heatmap(z=m, zmin=-diff if is_diff else lo, zmax=diff if is_diff else hi,
                                 colorscale="RdBu" if is_diff else "Viridis", showscale=is_diff or col == 1,
                                 colorbar=dict(x=1.0 if is_diff else 0.3, len=0.8),
                                 x=tick_labels, y=tick_labels), row=1, col=col)
        fig.update_yaxes(autorange="reversed", row=1, col=col, showticklabels=False)
        fig.update_xaxes(showticklabels=False, row=1, col=col)
    fig.update_layout(height=420, margin=dict(t=40, l=10, r=10, b=10))
    return fig


def training_curves(records_by_run: dict[str, list[dict]], key: str) -> go.Figure:
    """One metric (a loss term, lr, a probe metric) over steps, one line per run."""
    fig = go.Figure()
    for run_id, records in records_by_run.items():
        points = [(r["step"], r[key]) for r in records if key in r]
        if points:
            steps, values = zip(*points)
            fig.add_trace(go.Scatter(x=steps, y=values, mode="lines+markers" if len(points) < 30 else "lines",
                                     name=run_id))
    fig.update_layout(xaxis_title="step", yaxis_title=key, height=380, margin=dict(t=30, l=10, r=10, b=10))
    return fig


def ablation_bars(rows: Sequence[str], means: Sequence[float], stds: Sequence[float], metric: str = "HM",
                  reference: float | None = None, reference_name: str = "teacher") -> go.Figure:
    """Mean ± std per row of a sweep table; an optional reference line (e.g. the teacher)."""
    fig = go.Figure(go.Bar(x=list(rows), y=list(means), error_y=dict(type="data", array=list(stds)),
                           marker_color="#4C78A8"))
    if reference is not None:
        fig.add_hline(y=reference, line_dash="dash", annotation_text=f"{reference_name} {reference:.1f}")
    fig.update_layout(yaxis_title=metric, height=420, margin=dict(t=30, l=10, r=10, b=10))
    return fig


def grouped_bars(values: dict[str, dict[str, float]], yaxis: str = "%") -> go.Figure:
    """One bar group per inner key (e.g. base, novel, HM, or a style), one colour per outer key (e.g. a model)."""
    fig = go.Figure([go.Bar(name=name, x=list(bars), y=list(bars.values())) for name, bars in values.items()])
    fig.update_layout(barmode="group", yaxis_title=yaxis, height=420, margin=dict(t=30, l=10, r=10, b=10))
    return fig


def image_grid(images: np.ndarray, titles: Sequence[str] | None = None, columns: int = 8) -> go.Figure:
    """uint8 images (N, H, W, 3) in a grid, each titled (e.g. with its caption) when ``titles`` is given."""
    images = np.asarray(images)
    rows = -(-len(images) // columns)
    titles = list(titles) if titles is not None else None
    fig = make_subplots(rows=rows, cols=columns, subplot_titles=titles, horizontal_spacing=0.01,
                        vertical_spacing=0.08)
    for i, image in enumerate(images):
        fig.add_trace(go.Image(z=image), row=i // columns + 1, col=i % columns + 1)
    fig.update_xaxes(showticklabels=False)
    fig.update_yaxes(showticklabels=False)
    fig.update_annotations(font_size=9)
    fig.update_layout(height=40 + 150 * rows, margin=dict(t=30, l=10, r=10, b=10))
    return fig
