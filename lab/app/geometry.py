"""Embedding geometry: teacher and student in aligned 2-D maps, beside the geometry metrics."""

from __future__ import annotations

import streamlit as st

from lab import viz
from lab.app import data

COLOUR_BY = ("shape", "colour", "class", "style", "size", "modality", "split")
PROJECTIONS = {"pca": "PCA (top two principal axes)", "tsne": "t-SNE (cosine)", "umap": "UMAP (cosine)"}


def page() -> None:
    st.title("Embedding geometry")
    picked = data.pick_run_with_teacher("geometry_run")
    if picked is None:
        return
    run, emb = picked
    method_col, left, middle, right = st.columns(4)
    method = method_col.selectbox("Projection", list(PROJECTIONS), format_func=PROJECTIONS.get,
                                  key="geometry_projection")
    colour_by = left.selectbox("Colour by", COLOUR_BY, key="geometry_colour")
    total = len(emb["labels"])
    sizes = [*range(100, total, 100), total]  # the last choice is every item
    # Defaults go through the session state (not value=) because the widgets' values are remembered there.
    if st.session_state.get("geometry_items") not in sizes:  # first visit, or remembered from another run
        st.session_state["geometry_items"] = min(1000, total)
    st.session_state.setdefault("geometry_texts", True)
    n = middle.select_slider("Items", sizes, key="geometry_items")
    with_texts = right.checkbox("Captions too (×)", key="geometry_texts")
    with st.spinner("Projecting (t-SNE and UMAP take seconds the first time, UMAP ~20 s more to compile; "
                    "the map is then kept with the run)"):
        figure = viz.embedding_maps(emb, colour_by, n, with_texts, method, cache_dir=run.path / "projections",
                                    images=data.thumbnails(run))
    st.altair_chart(figure)
    st.caption(f"Each panel: that model's embeddings projected by {PROJECTIONS[method]}; the student's map "
               "is rotated and scaled onto the teacher's (orthogonal Procrustes over the same items). "
               "Hover a point for its picture and caption; the same item lights up in the other panel.")
    geometry = {k.split("/", 1)[1]: v for k, v in run.summary.items() if k.startswith("geometry/")}
    st.subheader("Geometry metrics (full test set)")
    st.dataframe({"metric": list(geometry), "value": [round(v, 4) for v in geometry.values()]},
                 hide_index=True)
