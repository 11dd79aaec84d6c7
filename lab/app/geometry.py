"""Embedding geometry: teacher and student maps at the same size, neighbourhoods, and the student's map over training."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import streamlit as st

from lab import viz
from lab.app import data, explain, export, report

PROJECTIONS = {"pca": "PCA", "tsne": "t-SNE (cosine)", "umap": "UMAP (cosine)"}
COLOURINGS = {"shape": "shape", "colour": "colour (its real colour)", "class": "class (colour × shape = hue × marker)",
              "style": "style", "size": "size", "modality": "image / caption", "split": "base / novel class",
              "neighbourhood": "neighbourhood agreement (kNN overlap)"}
DEFAULT_ITEMS = 500  # items drawn when a map is first shown (with captions: twice as many points)
MAP_SIZE = 260  # px: square plot areas (equal x and y scale); both panels, titles and legends fit at 1024×768
PLAY_SECONDS = 0.6
SVG_POINTS = 2000  # maps of up to this many points are drawn as SVG (readable marks), larger ones on a canvas  # per frame of the training-evolution view


def controls(total: int) -> tuple[str, str, int, bool]:
    method_col, colour_col, items_col, texts_col = st.columns([2, 3, 3, 2])
    data.keep_known("geometry_projection", list(PROJECTIONS))
    data.keep_known("geometry_colour", list(COLOURINGS))
    method = method_col.selectbox("Projection", list(PROJECTIONS), format_func=PROJECTIONS.get,
                                  key="geometry_projection")
    colour_by = colour_col.selectbox("Colour by", list(COLOURINGS), format_func=COLOURINGS.get, key="geometry_colour")
    sizes = [*range(100, total, 100), total]  # the last choice is every item
    # Defaults go through the session state (not value=) because the widgets' values are remembered there.
    if st.session_state.get("geometry_items") not in sizes:  # first visit, or remembered from another run
        st.session_state["geometry_items"] = min(DEFAULT_ITEMS, total)
    st.session_state.setdefault("geometry_texts", True)
    n = items_col.select_slider("Items", sizes, key="geometry_items")
    with_texts = texts_col.checkbox("Captions too (rings)", key="geometry_texts")
    return method, colour_by, n, with_texts


def maps(run, emb, method, colour_by, n, with_texts) -> pd.DataFrame:
    """Both panels side by side (each as wide as half the window), searchable and isolatable; returns the points."""
    message = {"pca": "Projecting", "tsne": "t-SNE of the items (a few seconds the first time; then kept with the run)",
               "umap": "UMAP of the items (a few seconds; the first UMAP of a dashboard process also compiles, "
                        "~20 s on 2 cores)"}[method]
    with st.spinner(message):
        points, aligned = viz.map_points(emb, n, with_texts, method, cache_dir=run.path / "projections")
    extent = float(np.abs(np.concatenate([aligned.teacher, aligned.student])).max() * 1.05)
    shown, search = points, st.session_state.get("geometry_search", "")
    matches = points["caption"].str.contains(search, case=False, regex=False) if search else None
    if search and st.session_state.get("geometry_isolate") and matches.any():
        shown = points[matches]
    images = data.thumbnails(run)
    stills = {}
    titles = (["teacher", run.run_id], [*viz.student_title(aligned), run.run_id])  # an exported panel names its run
    for column, model, title in zip(st.columns(2), ("teacher", "student"), titles):
        # a fixed square plot area over the same ± extent on both axes: the map's shapes do not change with the
        # window; each panel has its legend, so an exported panel is complete
        panel = viz.map_panel(shown, model, colour_by, title, width=MAP_SIZE, height=MAP_SIZE, images=images,
                              extent=extent)
        column.altair_chart(viz.readable(panel, svg=len(shown) <= SVG_POINTS), width="content")
        still = viz.map_panel(shown, model, colour_by, title, width=MAP_SIZE, height=MAP_SIZE, extent=extent)
        stills[f"{model} map ({PROJECTIONS[method]}, {n} items, colour by {colour_by})"] = viz.readable(still)
        export.chart_downloads(viz.readable(still), export.map_table(shown, model, colour_by),
                               {"run": run.run_id, "map": model, "projection": PROJECTIONS[method], "items": n,
                                "captions": with_texts, "colour by": colour_by, "procrustes scale": f"{aligned.scale:.4f}",
                                "residual": f"{aligned.residual:.4f}"},
                               f"{run.run_id}-{model}-{method}-{n}-{colour_by}", where=column)
    search_col, isolate_col = st.columns([3, 1])
    search_col.text_input("Search captions", placeholder="e.g. red star, sketch", key="geometry_search")
    isolate_col.checkbox("Isolate matches", key="geometry_isolate", disabled=not search)
    if search:
        search_col.caption(f"{int(matches.sum())} of {len(points)} points match" +
                           ("; only those are drawn" if len(shown) < len(points) else
                            "; tick *Isolate matches* to draw only them"))
    how = ("PCA (the top two principal axes)" if method == "pca" else
           f"{PROJECTIONS[method].split(' ')[0]} on cosine distances between the items' full embeddings")
    st.caption(f"Each panel: that model's embeddings projected by {how}, centred and drawn at unit "
               f"RMS radius on equal x and y scales; images are solid points, captions rings. The student's map is rotated onto the teacher's (orthogonal Procrustes). Scale "
               f"{aligned.scale:.2f} is how much the student's map had to be stretched to match, residual "
               f"{aligned.residual:.2f} how badly it still differs (0 = same shape, 1 = unrelated). Hover a point for "
               f"its picture and caption.")
    st.download_button("Report of this view (HTML)", lambda: report.view_report(
        f"{run.run_id}: embedding geometry", stills,
        {"Geometry metrics (full test set)": pd.DataFrame(explain.geometry_glossary(run.summary))},
        {run.run_id: run.config}), f"{export.slug(run.run_id)}-geometry-report.html", "text/html",
        on_click="ignore", key="geometry_report",
        help="one self-contained page (figures, numbers, the run's config) that opens offline")
    return points


def metrics_table(run) -> None:
    st.subheader("Geometry metrics (full test set)")
    st.dataframe(pd.DataFrame(explain.geometry_glossary(run.summary)), hide_index=True, width="stretch",
                 column_config={"what it measures": st.column_config.TextColumn(width="large")})


def neighbourhoods(run, emb, points: pd.DataFrame) -> None:
    """The items whose neighbourhoods changed most, and one item's nearest neighbours in both models."""
    st.subheader("Neighbourhoods: teacher vs student")
    images = data.thumbnails(run)
    items = points[points["modality"] == "image"].sort_values("neighbourhood", kind="stable")
    changed = pd.DataFrame({"kNN agreement": items["neighbourhood"].round(2), "item": items["item"],
                            "caption": items["caption"]})  # the value it is sorted by first: on screen at 1024 px
    if images is not None:
        changed.insert(2, "picture", [images[i] for i in changed["item"]])
    left, right = st.columns([2, 3])
    left.caption("Items of the map whose 10 nearest images differ most between the models (lowest agreement "
                 "first; click a column to sort).")
    left.dataframe(changed, hide_index=True, height=360, width="stretch",
                   column_config={"picture": st.column_config.ImageColumn("picture", width="small")})
    options = changed["item"].tolist()
    data.keep_known("geometry_item", options, default=options[0])
    item = right.selectbox("Nearest neighbours of", options, key="geometry_item",
                           format_func=lambda i: f"{emb['captions'][i]} (item {i})")
    columns = right.columns(2)
    teacher_nn, student_nn = (viz.neighbours_of(emb, item, model) for model in ("teacher", "student"))
    for column, model, nn, other in zip(columns, ("teacher", "student"), (teacher_nn, student_nn),
                                        (student_nn, teacher_nn)):
        table = pd.DataFrame({"in both": ["yes" if j in set(other) else "" for j in nn],
                              "caption": [emb["captions"][j] for j in nn]})
        if images is not None:
            table.insert(1, "picture", [images[j] for j in nn])
        column.markdown(f"**{model}**")
        column.dataframe(table, hide_index=True, width="stretch",
                         column_config={"picture": st.column_config.ImageColumn("picture", width="small")})


def evolution(run, colour_by: str) -> None:
    """The student's map at each stored evaluation step (a slider and a play button), metrics over steps beside."""
    st.subheader("The student's geometry over training")
    snaps, images = data.snapshots(run)
    if snaps is None and (run.path / "snapshots.npz").exists():
        st.warning(f"{run.run_id}'s `snapshots.npz` is damaged (it cannot be read); retrain the run to store its "
                   f"snapshots again. Its other files are shown above.")
        return
    if snaps is None or len(snaps["steps"]) < 2:
        st.info(f"{run.run_id} stored no snapshots over training. Runs trained with `train.eval_every=N` store the "
                f"student's embeddings of {data.snapshot_items(run)} fixed test items every N steps "
                f"(`eval.snapshot_items`, capped by `eval.probe_per_style` and `eval.per_style`).")
        return
    frames, teacher = viz.evolution_frames(snaps)
    steps = snaps["steps"].tolist()
    extent = float(np.abs(frames).max() * 1.05)
    labels = {name: viz.colour_labels(snaps, name, len(snaps["labels"]))
              for name in ("shape", "colour", "class", "style", "size", "split")
              if name in ("class",) or f"factor_{name}" in snaps}
    colour_by = colour_by if colour_by in labels else "colour"
    data.keep_known("geometry_step", steps, default=steps[-1])
    slider_col, play_col = st.columns([5, 1])
    step = slider_col.select_slider("Training step", steps, key="geometry_step")
    play = play_col.button("▶ Play", help="Show every stored step in turn")
    left, right = st.columns(2)
    frame_slot, curve_slot = left.empty(), right.empty()
    records = data.metrics(run)

    def draw(i: int) -> None:
        with frame_slot.container():
            st.markdown(f"**Step {steps[i]}** of {steps[-1]} ({i + 1}/{len(steps)})")
            panel = viz.evolution_panel(frames[i], labels, colour_by, [f"student at step {steps[i]}", run.run_id],
                                        extent, width=MAP_SIZE, captions=snaps["captions"])
            st.altair_chart(viz.readable(panel, svg=True), width="content")
        curve_slot.plotly_chart(viz.geometry_over_steps(records, steps[i]), width="stretch",
                                key=f"geometry_over_steps_{i}")

    if play:
        for i in range(len(steps)):
            draw(i)
            time.sleep(PLAY_SECONDS)
    else:
        draw(steps.index(step))
    st.caption(f"{len(snaps['labels'])} fixed test items (plain style) at each of {len(steps)} evaluation steps; "
               "each frame is PCA-projected, rotated onto the final frame (itself rotated onto the teacher's map) and "
               "drawn at unit RMS radius. Right: the probe's geometry metrics against the teacher at each step.")


def page() -> None:
    st.title("Embedding geometry")
    explain.intro("geometry")
    picked = data.pick_run_with_teacher("geometry_run")
    if picked is None:
        return
    run, emb = picked
    explain.budget_banner([run])
    method, colour_by, n, with_texts = controls(len(emb["labels"]))
    points = maps(run, emb, method, colour_by, n, with_texts)
    metrics_table(run)
    neighbourhoods(run, emb, points)
    evolution(run, colour_by)
