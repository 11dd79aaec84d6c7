"""Figures shared by the dashboard and the notebooks, built from run data only (plotly; Altair for the maps).

The embedding maps put teacher and student side by side: each model's points are
projected to 2-D on their own (PCA, t-SNE or UMAP), the student's map is rotated
(orthogonal Procrustes) onto the teacher's so that the same item sits in comparable places,
and each panel is drawn at unit RMS radius — a poorly aligned student is never drawn shrunk;
the Procrustes scale and residual are reported as numbers. Colour-by colour uses
ShapesWorld's own colours, class (colour × shape) is hue × marker. t-SNE and UMAP take
seconds, so their maps can be cached on disk (``cache=`` a file path; the dashboard keeps
them in the run directory). Fonts are at least 14 px (projector-ready).
The maps are Altair charts because their tooltips can show an image: hovering a point shows
the item's picture (re-rendered from its stored ShapesWorld factors) and caption, and
highlights the same item in the other panel.
"""

from __future__ import annotations

import base64
import io
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import altair as alt
import numpy as np
import pandas as pd
import plotly.colors as pcolors
import plotly.graph_objects as go
from PIL import Image
from plotly.subplots import make_subplots

from lab.data.shapes import COLOUR_NAMES, COLOURS, SHAPES, SIZES, STYLES, ShapesWorld
from lab.eval.geometry import knn_overlap_per_item

FACTOR_NAMES = {"shape": SHAPES, "colour": COLOUR_NAMES, "size": SIZES, "style": STYLES}
# The maps carry their points inline; Altair refuses over 5,000 rows by default, and a run's whole
# evaluation set (5,120 items, or 10,240 with captions) is a map the Geometry page offers.
alt.data_transformers.disable_max_rows()


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


def unit_rms(x: np.ndarray) -> np.ndarray:
    """``x`` centred and scaled to unit RMS radius: sqrt(mean_i ‖x_i‖²) = 1."""
    centred = np.asarray(x, dtype=np.float64) - np.mean(x, axis=0)
    return centred / max(np.sqrt((centred ** 2).sum(axis=1).mean()), 1e-12)


@dataclass(frozen=True)
class AlignedMaps:
    """Two 2-D maps of the same items, each centred at unit RMS radius, the student's rotated onto the teacher's.

    ``scale``: the Procrustes scale that would map the student's map onto the teacher's (its size
    ratio, reported instead of drawn); ``residual``: the Procrustes disparity 1 − (Σσ)² of the two maps
    at unit Frobenius norm — 0 when they agree up to rotation and scale, 1 when unrelated.
    """

    teacher: np.ndarray
    student: np.ndarray
    scale: float
    residual: float


def align(teacher_2d: np.ndarray, student_2d: np.ndarray) -> AlignedMaps:
    """:class:`AlignedMaps` of two raw maps: rotation/reflection only, then each panel at unit RMS radius."""
    t = np.asarray(teacher_2d, np.float64) - np.mean(teacher_2d, axis=0)
    s = np.asarray(student_2d, np.float64) - np.mean(student_2d, axis=0)
    u, sigma, vt = np.linalg.svd(s.T @ t)
    norms = max(np.linalg.norm(s) * np.linalg.norm(t), 1e-12)
    scale = sigma.sum() / max((s ** 2).sum(), 1e-12)
    return AlignedMaps(unit_rms(t), unit_rms(s @ (u @ vt)), float(scale), float(1 - (sigma.sum() / norms) ** 2))


PROJECTIONS = ("pca", "tsne", "umap")
TSNE_THREADS = 1  # measured: one thread beats the default (every core) on a busy 2-core machine


def tsne_2d(x: np.ndarray, seed: int = 0) -> np.ndarray:
    """t-SNE coordinates of the rows of ``x`` (cosine distances, PCA initialisation, fixed seed)."""
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    perplexity = float(min(30.0, max(2.0, (len(x) - 1) / 3)))
    with threadpool_limits(TSNE_THREADS):
        return TSNE(2, perplexity=perplexity, metric="cosine", init="pca", random_state=seed).fit_transform(
            np.asarray(x, dtype=np.float64))


def umap_2d(x: np.ndarray, seed: int = 0) -> np.ndarray:
    """UMAP coordinates of the rows of ``x`` (cosine metric, 15 neighbours, fixed seed).

    umap-learn compiles its kernels with numba on first use: ~20 s in every new process (most of
    its kernels are not marked for numba's on-disk cache).
    """
    from umap import UMAP

    with warnings.catch_warnings():  # "n_jobs overridden by setting random_state": wanted, for reproducible maps
        warnings.simplefilter("ignore", UserWarning)
        return UMAP(n_components=2, n_neighbors=min(15, len(x) - 1), metric="cosine", random_state=seed,
                    init="pca" if len(x) > 3 else "random").fit_transform(np.asarray(x, dtype=np.float32))


def aligned_maps(teacher: np.ndarray, student: np.ndarray, method: str = "pca",
                 cache: str | Path | None = None) -> AlignedMaps:
    """2-D maps of the same items in both spaces (:class:`AlignedMaps`), each projected on its own.

    With ``cache`` (an ``.npz`` path) the raw projections are read from it when present and written
    to it otherwise; an unwritable place only skips the writing.
    """
    if method not in PROJECTIONS:
        raise ValueError(f"Unknown projection '{method}'; choose one of: {', '.join(PROJECTIONS)}.")
    if cache is not None and Path(cache).is_file():
        with np.load(cache, allow_pickle=False) as stored:
            if {"teacher_raw", "student_raw"} <= set(stored.files):
                return align(stored["teacher_raw"], stored["student_raw"])
    project = {"pca": pca_2d, "tsne": tsne_2d, "umap": umap_2d}[method]
    t2, s2 = project(teacher), project(student)
    if cache is not None:
        try:
            Path(cache).parent.mkdir(parents=True, exist_ok=True)
            np.savez(cache, teacher_raw=t2, student_raw=s2)
        except OSError:
            pass
    return align(t2, s2)


def _hex(rgb: tuple[float, float, float]) -> str:
    return "#" + "".join(f"{round(255 * c):02x}" for c in rgb)


# ShapesWorld's own colours and one marker per shape, so that "red" is drawn red and a class
# (colour × shape) is hue × marker instead of 64 entries of a 20-colour palette.
COLOUR_HEX = {name: _hex(rgb) for name, rgb in COLOURS.items()}
SHAPE_MARKERS = {"circle": "circle", "square": "square", "triangle": "triangle-up",
                 "star": "M0,-1L0.24,-0.33L0.95,-0.31L0.38,0.12L0.59,0.81L0,0.4L-0.59,0.81L-0.38,0.12L-0.95,-0.31L-0.24,-0.33Z",
                 "cross": "cross", "heart": "diamond", "ring": "triangle-down", "moon": "wedge"}
MAP_COLOURINGS = ("shape", "colour", "class", "style", "size", "modality", "split", "neighbourhood")
FONT = 14  # px: axis, legend and tick labels (readable when projected)


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


def neighbourhood_agreement(emb: dict, k: int = 10, modality: str = "image") -> np.ndarray:
    """Per item: the share of its k nearest neighbours (cosine) that teacher and student agree on (0–1)."""
    return knn_overlap_per_item(emb[f"teacher_{modality}"].astype(np.float64),
                                emb[f"student_{modality}"].astype(np.float64), k).numpy()


def neighbours_of(emb: dict, item: int, model: str, k: int = 8, modality: str = "image") -> np.ndarray:
    """The ``k`` items nearest to ``item`` (cosine, itself excluded) in ``model``'s space, nearest first."""
    x = emb[f"{model}_{modality}"].astype(np.float64)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    sim = x @ x[item]
    sim[item] = -np.inf
    return np.argsort(-sim, kind="stable")[:k]


def map_points(emb: dict, n: int = 1000, with_texts: bool = True, method: str = "pca",
               cache_dir: str | Path | None = None, k: int = 10) -> tuple[pd.DataFrame, AlignedMaps]:
    """One row per drawn point (item, modality, factors, class, caption, kNN agreement, both maps' x/y)
    of ``n`` items of ``emb`` evenly drawn, and the maps' alignment; ``item`` indexes ``emb``."""
    idx = sample_indices(len(emb["labels"]), n)
    sub, n = subsample(emb, n), len(idx)
    keys = ("image", "text") if with_texts else ("image",)
    teacher = np.concatenate([sub[f"teacher_{m}"].astype(np.float64) for m in keys])
    student = np.concatenate([sub[f"student_{m}"].astype(np.float64) for m in keys])
    cache = None if cache_dir is None else Path(cache_dir) / f"{method}-{n}-{'both' if with_texts else 'images'}.npz"
    maps = aligned_maps(teacher, student, method, cache)
    rows = np.tile(np.arange(n), len(keys))
    points = pd.DataFrame({"item": idx[rows], "modality": np.repeat(keys, n),
                           "caption": np.asarray(sub["captions"])[rows],
                           "neighbourhood": np.concatenate([neighbourhood_agreement(sub, k, m) for m in keys]),
                           "teacher_x": maps.teacher[:, 0], "teacher_y": maps.teacher[:, 1],
                           "student_x": maps.student[:, 0], "student_y": maps.student[:, 1]})
    for name in ("shape", "colour", "style", "size", "class", "split"):
        if name in ("class", "split") or f"factor_{name}" in sub:
            points[name] = colour_labels(sub, name, n, n if with_texts else 0)
    return points, maps


def _colour_parts(colour_by: str) -> tuple[str, alt.Scale, str | list[str]]:
    """The field, scale and title a colouring encodes (shared by a map's fill and its rings)."""
    if colour_by in ("colour", "class"):  # class = colour × shape: the hue is the item's own colour
        return "colour:N", alt.Scale(domain=list(COLOUR_HEX), range=list(COLOUR_HEX.values())), "colour"
    if colour_by == "neighbourhood":
        return ("neighbourhood:Q", alt.Scale(scheme="redyellowblue", domain=[0, 1]),
                ["kNN agreement", "(1 = same neighbours)"])
    return f"{colour_by}:N", alt.Scale(scheme="category10"), colour_by


def _colour(colour_by: str) -> alt.Color:
    field, scale, title = _colour_parts(colour_by)
    legend = alt.Legend(columns=2, symbolLimit=0) if colour_by in ("colour", "class") else alt.Legend(symbolLimit=0)
    return alt.Color(field, title=title, scale=scale, legend=legend)


def map_panel(points: pd.DataFrame, model: str, colour_by: str = "shape", title: str | list[str] = "",
              width: int | str = 430, height: int = 430, images: Sequence[str] | None = None,
              extent: float | None = None, hover=None, legend: bool = True) -> alt.Chart:
    """One model's map: ``points`` from :func:`map_points`, coloured by ``colour_by`` (ShapesWorld's real
    colours for colour and class, a marker per shape for class), at a fixed ``extent`` (±) shared by panels."""
    extent = extent or float(np.abs(points[[f"{model}_x", f"{model}_y"]].to_numpy()).max() * 1.05 or 1.0)
    chart = alt.Chart(points)
    tooltip = ["caption:N", "class:N" if "class" in points else "modality:N", "modality:N",
               alt.Tooltip("neighbourhood:Q", title="kNN agreement", format=".2f")]
    if images is not None:
        shown = np.unique(points["item"].to_numpy())  # only the drawn items' pictures travel to the browser
        pictures = pd.DataFrame({"item": shown, "image": np.asarray(images)[shown]})
        chart = chart.transform_lookup(lookup="item", from_=alt.LookupData(pictures, "item", ["image"]))
        tooltip = ["image:N", *tooltip]  # vega-tooltip draws the field named "image" as a picture
    if colour_by == "class":
        shape = alt.Shape("shape:N", scale=alt.Scale(domain=list(SHAPE_MARKERS), range=list(SHAPE_MARKERS.values())),
                          legend=alt.Legend(columns=2, symbolLimit=0))
    else:
        shape = alt.value("circle")  # images and captions differ by fill (below), not by a marker a shape could have
    scale = alt.Scale(domain=[-extent, extent], nice=False)
    colour = _colour(colour_by)
    # images solid, captions a faint fill inside a ring of their colour: told apart without borrowing a shape
    point = alt.FillOpacity("modality:N", scale=alt.Scale(domain=["image", "text"], range=[0.9, 0.12]),
                            legend=alt.Legend(title="point", labelExpr="datum.label == 'text' ? "
                                              "'caption (ring)' : 'image (solid)'"))
    field, colour_scale, _ = _colour_parts(colour_by)
    outline = alt.Stroke(field, scale=colour_scale, legend=None)
    if not legend:
        colour, point = colour.legend(None), point.legend(None)
        if colour_by == "class":
            shape = shape.legend(None)
    encoding = dict(color=colour, shape=shape, tooltip=tooltip, fillOpacity=point,
                    x=alt.X(f"{model}_x:Q", scale=scale, title=None, axis=alt.Axis(labels=False, ticks=False)),
                    y=alt.Y(f"{model}_y:Q", scale=scale, title=None, axis=alt.Axis(labels=False, ticks=False)))
    if hover is not None:
        encoding.update(size=alt.condition(hover, alt.value(220), alt.value(30)),
                        stroke=alt.condition(hover, alt.value("black"), outline))
    else:
        encoding.update(size=alt.value(36), stroke=outline)
    encoding["opacity"] = alt.condition(hover, alt.value(1.0), alt.value(0.85)) if hover is not None else alt.value(0.85)
    return chart.mark_point(filled=True, strokeWidth=1).encode(**encoding).properties(title=title, width=width,
                                                                                     height=height)


def readable(chart, svg: bool = False):
    """Fonts of at least :data:`FONT` px on axes, legends and titles (top-level charts only); ``svg`` asks
    vega-embed for SVG instead of canvas (marks become DOM elements a browser test can read)."""
    chart = (chart.configure_axis(labelFontSize=FONT, titleFontSize=FONT)
             .configure_legend(labelFontSize=FONT, titleFontSize=FONT, symbolSize=120)
             .configure_title(fontSize=FONT + 2).configure_view(stroke="#ddd"))
    return chart.properties(usermeta={"embedOptions": {"renderer": "svg"}}) if svg else chart


def student_title(maps: AlignedMaps) -> list[str]:
    return ["student (rotated onto the teacher)",
            f"Procrustes scale {maps.scale:.2f}, residual {maps.residual:.2f}"]


def embedding_maps(emb: dict, colour_by: str = "shape", n: int = 1000, with_texts: bool = True,
                   method: str = "pca", cache_dir: str | Path | None = None,
                   images: Sequence[str] | None = None, width: int = 430) -> alt.HConcatChart:
    """Teacher and student image (and caption) embeddings side by side in aligned 2-D maps.

    Each panel is drawn at unit RMS radius on the same axes, so a poorly aligned student is not shrunk:
    how far its map is from the teacher's is the Procrustes scale and residual in its title.
    ``method`` pca, tsne or umap; ``cache_dir`` keeps the maps, one file per method, size and
    modality set. Hovering a point shows its caption and, given ``images`` (one data URL per
    item of ``emb``, e.g. :func:`thumbnails`), its picture; the same item is highlighted in
    both panels.
    """
    points, maps = map_points(emb, n, with_texts, method, cache_dir)
    extent = float(np.abs(np.concatenate([maps.teacher, maps.student])).max() * 1.05)
    hover = alt.selection_point(on="pointerover", fields=["item"], nearest=True, empty=False, clear="pointerout")
    panels = [map_panel(points, model, colour_by, title, width, width, images, extent, hover)
              for model, title in (("teacher", "teacher"), ("student", student_title(maps)))]
    with warnings.catch_warnings():  # one hover selection shared by both panels is the point, not a clash
        warnings.filterwarnings("ignore", "Automatically deduplicated selection parameter", UserWarning)
        maps_chart = alt.hconcat(*panels).add_params(hover)
    return readable(maps_chart)


def evolution_frames(snapshots: dict) -> tuple[np.ndarray, np.ndarray | None]:
    """The student's image-embedding map at every stored step (S, N, 2), each frame PCA-projected and rotated
    onto the final frame (itself rotated onto the teacher's map when there is one), all at unit RMS radius;
    and the teacher's map (N, 2) or None."""
    frames = [pca_2d(f.astype(np.float64)) for f in snapshots["student_image"]]
    teacher = unit_rms(pca_2d(snapshots["teacher_image"].astype(np.float64))) if "teacher_image" in snapshots else None
    final = align(teacher, frames[-1]).student if teacher is not None else unit_rms(frames[-1])
    return np.stack([align(final, f).student for f in frames]), teacher


def evolution_panel(frame: np.ndarray, labels: dict[str, Sequence[str]], colour_by: str, title: str | list[str],
                    extent: float, width: int | str = 430, captions: Sequence[str] | None = None) -> alt.Chart:
    """One frame of :func:`evolution_frames` as a map panel (fixed ``extent`` so that frames are comparable)."""
    points = pd.DataFrame({"item": np.arange(len(frame)), "modality": "image", "neighbourhood": 0.0,
                           "caption": list(captions) if captions is not None else "",
                           "frame_x": frame[:, 0], "frame_y": frame[:, 1], **{k: list(v) for k, v in labels.items()}})
    return map_panel(points, "frame", colour_by, title, width, width if isinstance(width, int) else 380,
                     extent=extent)


CLOSENESS_METRICS = ("cka", "knn_overlap", "simmat_corr", "cosine")  # 1 = the teacher's geometry


def geometry_over_steps(records: list[dict], step: int | None = None) -> go.Figure:
    """The probe's geometry metrics (``eval/geometry/*`` in ``metrics.jsonl``) over steps; a line at ``step``."""
    fig = go.Figure()
    names = sorted({k for r in records for k in r
                    if k.startswith(tuple(f"eval/geometry/{m}" for m in CLOSENESS_METRICS))})
    for key in names:
        points = [(r["step"], r[key]) for r in records if key in r]
        steps, values = zip(*points)
        fig.add_trace(go.Scatter(x=steps, y=values, mode="lines+markers", name=key.split("/")[-1]))
    if step is not None:
        fig.add_vline(x=step, line_dash="dot", line_color="#555")
    fig.update_layout(xaxis_title="step", yaxis_title="student vs teacher (1 = same)",
                      height=380, hovermode="x unified", font=dict(size=FONT), margin=dict(t=30, l=10, r=10, b=10))
    return fig


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


def similarity_class_names(emb: dict, per_class: int = 1) -> list[str]:
    """The class name of each row/column of :func:`similarity_matrices` (for the axes and the hover)."""
    idx = class_sorted_subset(emb["labels"], per_class)
    return [str(name) for name in np.asarray(emb["classnames"])[np.asarray(emb["labels"])[idx]]]


def similarity_heatmaps(matrices: dict[str, np.ndarray], tick_labels: Sequence[str] | None = None,
                        value: str = "cosine", pair: str = "image-text") -> go.Figure:
    """Teacher, student and student − teacher, each with its own titled colourbar beside it.

    Teacher and student share one colour range (so equal colours are equal values); the difference is
    diverging around 0: red where the student's similarity is higher, blue where the teacher's is.
    ``tick_labels`` (class names) label the axes and the hover.
    """
    names = list(matrices)
    spacing = 0.04
    fig = make_subplots(rows=1, cols=3, subplot_titles=tuple(names), horizontal_spacing=spacing)
    lo = min(matrices["teacher"].min(), matrices["student"].min())
    hi = max(matrices["teacher"].max(), matrices["student"].max())
    diff = np.abs(matrices["student − teacher"]).max() or 1.0
    rows_name, cols_name = PAIRS.get(pair, ("row", "column"))
    labels = list(tick_labels) if tick_labels is not None else None
    panel = (1 - 2 * spacing) / 3
    for col, (name, m) in enumerate(matrices.items(), start=1):
        is_diff = name.startswith("student −")
        # each colourbar lies flat under its own panel: the panels keep the width (readable at 1024 px) and the
        # colourbars' titles cannot overlap
        title = "red: student higher, blue: teacher higher" if is_diff else (
            "softmax" if value.startswith("softmax") else value)
        fig.add_trace(go.Heatmap(
            z=m, x=labels, y=labels, zmin=-diff if is_diff else lo, zmax=diff if is_diff else hi,
            colorscale="RdBu_r" if is_diff else "Viridis",
            colorbar=dict(orientation="h", x=(col - 1) * (panel + spacing) + panel / 2, xanchor="center",
                          y=-0.04, yanchor="top", len=panel, thickness=10,
                          title=dict(text=title, side="bottom", font=dict(size=FONT - 2))),
            hovertemplate=f"{rows_name}: %{{y}}<br>{cols_name}: %{{x}}<br>{name}: %{{z:.3f}}<extra></extra>"),
            row=1, col=col)
        fig.update_yaxes(autorange="reversed", row=1, col=col, showticklabels=False,
                         scaleanchor="x" if col == 1 else f"x{col}")  # square cells
        fig.update_xaxes(showticklabels=False, row=1, col=col, constrain="domain")
    fig.update_yaxes(title_text=f"{rows_name}s, by class", row=1, col=1)
    fig.update_xaxes(title_text=f"{cols_name}s, by class", row=1, col=2)
    fig.update_layout(height=400, font=dict(size=FONT), margin=dict(t=40, l=10, r=10, b=90))
    return fig


# One colour per run in every chart of a page (its place among the runs picked), from a palette of
# distinct colours: ten well-separated colours first (Tableau 10), so the runs shown together are told apart at a glance.
RUN_PALETTE = tuple(dict.fromkeys(pcolors.qualitative.T10 + pcolors.qualitative.Dark24 + pcolors.qualitative.Light24))


def run_colours(run_ids: Sequence[str]) -> dict[str, str]:
    """A colour per run id, in the given order (the runs picked, first picked first): the same run has the
    same colour in every chart built from the same list, and the first ten are the most distinct."""
    return {run_id: RUN_PALETTE[i % len(RUN_PALETTE)] for i, run_id in enumerate(dict.fromkeys(run_ids))}


def ema(values: Sequence[float], smoothing: float) -> np.ndarray:
    """TensorBoard's smoothing: an exponential moving average with weight ``smoothing`` (0 = none),
    debiased so that the first points are not pulled towards zero."""
    values = np.asarray(values, dtype=np.float64)
    if smoothing <= 0 or len(values) == 0:
        return values
    out, running, weight = np.empty_like(values), 0.0, 0.0
    for i, v in enumerate(values):
        running = smoothing * running + (1 - smoothing) * v
        weight = smoothing * weight + (1 - smoothing)
        out[i] = running / weight
    return out


CURVE_X = {"step": "step", "wall time": "elapsed_s"}


def curve_axis_title(key: str) -> str:
    """A curve's y-axis title in words with its unit: a loss term, the learning rate, a probe score."""
    from lab.losses.objective import TERMS

    if key == "task":
        return "task loss: CLIP InfoNCE (nats)"
    if key == "loss":
        return "total loss (weighted sum of the terms)"
    if key == "lr":
        return "learning rate"
    if key == "images_per_s":
        return "throughput (images / s)"
    if key.startswith("eval/geometry/"):
        return f"probe: {key.rsplit('/', 1)[1]} vs teacher (1 = same)"
    if key.startswith("eval/"):
        return f"probe {key.split('/', 1)[1].replace('top1', 'top-1').replace('hm', 'HM')} (%, test subset)"
    if key in TERMS:
        return f"{key.upper()} loss term"
    return key


def training_curves(records_by_run: dict[str, list[dict]], key: str, smoothing: float = 0.0, log_y: bool = False,
                    x: str = "step", colours: dict[str, str] | None = None) -> go.Figure:
    """One metric (a loss term, lr, a probe metric) over steps or wall-clock seconds, one line per run.

    ``smoothing`` draws the EMA (:func:`ema`) over the raw points (kept faint); ``colours`` (e.g.
    :func:`run_colours`) keeps each run's colour across charts. Records without ``elapsed_s`` (older
    runs) are skipped on the wall-time axis.
    """
    field = CURVE_X[x]
    colours = colours or run_colours(list(records_by_run))
    fig = go.Figure()
    for run_id, records in records_by_run.items():
        points = [(r[field], r[key]) for r in records if key in r and field in r]
        if not points:
            continue
        xs, values = zip(*points)
        colour = colours.get(run_id)
        mode = "lines+markers" if len(points) < 30 else "lines"
        if smoothing > 0:
            fig.add_trace(go.Scatter(x=xs, y=values, mode="lines", line=dict(color=colour, width=1), opacity=0.3,
                                     name=f"{run_id} (raw)", legendgroup=run_id, showlegend=False, hoverinfo="skip"))
            values = ema(values, smoothing)
        fig.add_trace(go.Scatter(x=xs, y=values, mode=mode, name=run_id, legendgroup=run_id, line=dict(color=colour)))
    fig.update_layout(xaxis_title="step" if x == "step" else "wall time (s)", yaxis_title=curve_axis_title(key),
                      title=dict(text=key, font=dict(size=FONT)), height=320,
                      hovermode="x unified", font=dict(size=FONT), margin=dict(t=30, l=10, r=10, b=10),
                      legend=dict(orientation="h", y=-0.25))
    if log_y:
        fig.update_yaxes(type="log")
    return fig


def spearman(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Spearman's rank correlation over the pairs where both are numbers (None under three pairs, NaN when one
    side's values all tie: :func:`rank_agreement` says which)."""
    from scipy.stats import spearmanr

    pairs = [(x, y) for x, y in zip(a, b) if x is not None and y is not None and np.isfinite(x) and np.isfinite(y)]
    if len(pairs) < 3:
        return None
    xs, ys = zip(*pairs)
    if len(set(xs)) < 2 or len(set(ys)) < 2:
        return float("nan")
    return float(spearmanr(xs, ys).statistic)


def rank_agreement(lab: Sequence[float], paper: Sequence[float | None]) -> str:
    """Spearman's ρ between the lab's and a paper's numbers in words, saying why when there is none."""
    pairs = [(x, y) for x, y in zip(lab, paper) if x is not None and y is not None and np.isfinite(x)
             and np.isfinite(y)]
    rho = spearman(lab, paper)
    if rho is None:
        return f"too few rows with both ({len(pairs)}; ρ needs 3)"
    if not np.isfinite(rho):
        side = "lab" if len({x for x, _ in pairs}) < 2 else "paper"
        return f"no ρ: the {side} values of the {len(pairs)} rows all tie"
    return f"Spearman ρ = {rho:.2f} over {len(pairs)} rows"


def _span(values: Sequence[float | None], errors: Sequence[float] = ()) -> list[float] | None:
    """An axis range around ``values`` (± ``errors``), padded by a tenth of their spread: an axis scaled to its
    data, so two axes side by side do not put one series on the floor."""
    errors = list(errors) or [0.0] * len(values)
    finite = [(v, e) for v, e in zip(values, errors) if v is not None and np.isfinite(v)]
    if not finite:
        return None
    low, high = min(v - e for v, e in finite), max(v + e for v, e in finite)
    pad = max((high - low) * 0.1, 0.5)
    return [low - pad, high + pad]


def ablation_bars(rows: Sequence[str], means: Sequence[float], stds: Sequence[float], metric: str = "HM",
                  reference: float | None = None, reference_name: str = "teacher",
                  n_seeds: Sequence[int] | None = None, paper: Sequence[float | None] | None = None,
                  paper_metric: str = "paper") -> go.Figure:
    """Mean ± std per row of a sweep table (dots; error bars only where a row has two seeds or more); an optional
    reference line (e.g. the teacher); one paper table's numbers (``paper_metric`` names it: pass only the rows
    from that one table, None elsewhere) as diamonds on their own right-hand axis, with Spearman's rank agreement
    in the title. Each axis spans its own data and is labelled: the values are not comparable, the order is."""
    n_seeds = list(n_seeds) if n_seeds is not None else [2] * len(rows)
    means = [float(m) for m in means]
    errors = [float(s) if n > 1 and np.isfinite(s) else 0.0 for s, n in zip(stds, n_seeds)]
    fig = make_subplots(specs=[[{"secondary_y": paper is not None}]])
    fig.add_trace(go.Scatter(x=list(rows), y=means, mode="markers", name=f"lab ({metric})",
                             marker=dict(symbol="circle", size=13, color="#4C78A8"),
                             error_y=dict(type="data", array=errors, visible=any(n > 1 for n in n_seeds)),
                             customdata=[f"{n} seed{'' if n == 1 else 's'}" for n in n_seeds],
                             hovertemplate="%{x}: %{y:.1f} (%{customdata})<extra></extra>"))
    title = None
    if paper is not None:
        values = [float(v) if v is not None and np.isfinite(float(v)) else None for v in paper]
        fig.add_trace(go.Scatter(x=list(rows), y=values, mode="markers", name=f"paper ({paper_metric})",
                                 marker=dict(symbol="diamond", size=14, color="#E45756")), secondary_y=True)
        fig.update_yaxes(title_text=f"paper: {paper_metric}", secondary_y=True, showgrid=False,
                         range=_span(values))
        title = f"lab vs {paper_metric}: {rank_agreement(means, values)}"
    lab_values = means + ([reference] if reference is not None else [])
    if reference is not None:
        fig.add_hline(y=reference, line_dash="dash", annotation_text=f"{reference_name} {reference:.1f}")
    fig.update_yaxes(title_text=f"lab: {metric} (ShapesWorld)", secondary_y=False,
                     range=_span(lab_values, errors + ([0.0] if reference is not None else [])))
    fig.update_layout(title=title, height=380, font=dict(size=FONT), margin=dict(t=50, l=10, r=10, b=10),
                      legend=dict(orientation="h", y=1.12, x=1, xanchor="right"))
    return fig


def _times(factor: float) -> str:
    """A multiple of a default weight as tick text: 0.25 -> "×1/4", 8 -> "×8"."""
    return f"×{factor:g}" if factor >= 1 else f"×1/{1 / factor:g}"


def weight_search(rows: Sequence[dict]) -> go.Figure:
    """What ``python -m lab tune`` tried: per tuned row, the validation score (the score that chose; ± its
    std over the seeds, where the record has it) against the searched term's weight as a multiple of its
    default, on a log axis; the chosen weight ringed, the default (×1) dotted; a row of several terms is
    named with the term searched. ``rows``: a tuning record's ``rows`` (each with ``row``,
    ``default_weights``, ``searched`` and optionally ``metric``). A line that peaks inside the searched
    range found an optimum; one still rising at an end hit the search's limit."""
    fig = go.Figure()
    colours = run_colours([r["row"] for r in rows])
    factors = set()
    for r in rows:
        for search in r["searched"]:
            default = r["default_weights"][search["term"]]
            points = [(c["weight"] / default, c["val_hm"], c["weight"], c.get("val_std") or 0.0)
                      for c in search["candidates"] if c["val_hm"] is not None]
            if not points:
                continue
            factors.update(f for f, *_ in points)
            name = r["row"] if len(r["default_weights"]) == 1 else f"{r['row']}: {search['term']}"  # which term
            xs, ys, weights, stds = zip(*points)
            colour = colours[r["row"]]
            fig.add_trace(go.Scatter(
                x=xs, y=ys, mode="lines+markers", name=name, legendgroup=name, line=dict(color=colour),
                error_y=dict(type="data", array=stds, visible=any(stds), thickness=1, width=3),
                customdata=list(zip(weights, stds)),
                hovertemplate=f"{name}: {search['term']} = %{{customdata[0]:g}} (×%{{x:g}} the default): "
                              f"%{{y:.1f}} ± %{{customdata[1]:.1f}}<extra></extra>"))
            chosen = [(f, y) for f, y, w, _ in points if w == search["chosen"]]
            if chosen:
                fig.add_trace(go.Scatter(x=[chosen[0][0]], y=[chosen[0][1]], mode="markers", legendgroup=name,
                                         showlegend=False, hoverinfo="skip",
                                         marker=dict(symbol="circle-open", size=18, color=colour, line=dict(width=3))))
    metrics = {r.get("metric", "hm") for r in rows}
    names = {"hm": "HM", "top1": "top-1"}
    score = (f"validation {names.get(next(iter(metrics)), next(iter(metrics)))} (%)" if len(metrics) == 1
             else "validation score (%, each row's own metric)")
    ticks = sorted(factors) or [1.0]
    fig.add_vline(x=1, line_dash="dot", line_color="grey")  # its label is the tick's: plotly misplaces one on a log axis
    fig.update_xaxes(type="log", tickvals=ticks, ticktext=[_times(f) + (" (default)" if f == 1 else "") for f in ticks],
                     title_text="the term's weight, as a multiple of its default")
    fig.update_yaxes(title_text=score)
    fig.update_layout(title="What the search tried (mean ± std over seeds); ○ = the weight chosen", height=420,
                      font=dict(size=FONT), margin=dict(t=60, l=10, r=10, b=10), legend=dict(orientation="h", y=-0.3))
    return fig


def grouped_bars(values: dict[str, dict[str, float]], yaxis: str = "%", title: str | None = None) -> go.Figure:
    """One bar group per inner key (e.g. base, novel, HM, or a style), one colour per outer key (e.g. a model)."""
    fig = go.Figure([go.Bar(name=name, x=list(bars), y=list(bars.values())) for name, bars in values.items()])
    fig.update_layout(barmode="group", yaxis_title=yaxis, height=360, title=title, font=dict(size=FONT),
                      margin=dict(t=50 if title else 30, l=10, r=10, b=10))
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
