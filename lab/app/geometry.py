"""Embedding geometry: teacher and student in aligned 2-D maps, beside the geometry metrics."""

from __future__ import annotations

import streamlit as st

from lab import viz
from lab.app import data

COLOUR_BY = ("shape", "colour", "class", "style", "size", "modality", "split")
PROJECTIONS = {"pca": "PCA (top two principal axes)", "tsne": "t-SNE (cosine)"}


def page() -> None:
    st.title("Embedding geometry")
    picked = data.pick_run_with_teacher("geometry_run")
    if picked is None:
        return
    run, emb = picked
    method_col, left, middle, right = st.columns(4)
    method = method_col.selectbox("Projection", list(PROJECTIONS), format_func=PROJECTIONS.get)
    colour_by = left.selectbox("Colour by", COLOUR_BY)
    n = middle.slider("Items", 200, len(emb["labels"]), min(1000, len(emb["labels"])), step=100)
    with_texts = right.checkbox("Captions too (×)", value=True)
    with st.spinner("Projecting (t-SNE takes a few seconds the first time; the map is then kept with the run)"):
        figure = viz.embedding_maps(emb, colour_by, n, with_texts, method, cache_dir=run.path / "projections")
    st.plotly_chart(figure, width="stretch")
    st.caption(f"Each panel: that model's embeddings projected by {PROJECTIONS[method]}; the student's map "
               "is rotated and scaled onto the teacher's (orthogonal Procrustes over the same items). "
               "Hover a point for its caption.")
    geometry = {k.split("/", 1)[1]: v for k, v in run.summary.items() if k.startswith("geometry/")}
    st.subheader("Geometry metrics (full test set)")
    st.dataframe({"metric": list(geometry), "value": [round(v, 4) for v in geometry.values()]},
                 hide_index=True)
