"""Embedding geometry: teacher and student in aligned 2-D maps, beside the geometry metrics."""

from __future__ import annotations

import streamlit as st

from lab import viz
from lab.app import data

COLOUR_BY = ("shape", "colour", "class", "style", "size", "modality", "split")


def page() -> None:
    st.title("Embedding geometry")
    picked = data.pick_run_with_teacher("geometry_run")
    if picked is None:
        return
    run, emb = picked
    left, middle, right = st.columns(3)
    colour_by = left.selectbox("Colour by", COLOUR_BY)
    n = middle.slider("Items", 200, len(emb["labels"]), min(1000, len(emb["labels"])), step=100)
    with_texts = right.checkbox("Captions too (×)", value=True)
    st.plotly_chart(viz.embedding_maps(emb, colour_by, n, with_texts), width="stretch")
    st.caption("Each panel: the top two principal axes of that model's embeddings; the student's map is "
               "rotated and scaled onto the teacher's (orthogonal Procrustes over the same items).")
    geometry = {k.split("/", 1)[1]: v for k, v in run.summary.items() if k.startswith("geometry/")}
    st.subheader("Geometry metrics (full test set)")
    st.dataframe({"metric": list(geometry), "value": [round(v, 4) for v in geometry.values()]},
                 hide_index=True)
