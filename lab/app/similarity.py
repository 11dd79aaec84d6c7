"""Similarity matrices: teacher, student and their difference, sorted by class."""

from __future__ import annotations

import streamlit as st

from lab import viz
from lab.app import data


def page() -> None:
    st.title("Similarity matrices")
    picked = data.pick_run_with_teacher("similarity_run")
    if picked is None:
        return
    _, emb = picked
    left, middle, right = st.columns(3)
    pair = left.selectbox("Pair", tuple(viz.PAIRS), key="similarity_pair")
    use_softmax = middle.checkbox("Softmax over rows", value=False, key="similarity_softmax")
    st.session_state.setdefault("similarity_temperature", 0.07)  # the default, kept where the value is remembered
    temperature = right.slider("Temperature", 0.005, 1.0, step=0.005, disabled=not use_softmax,
                               key="similarity_temperature")
    matrices = viz.similarity_matrices(emb, pair, temperature if use_softmax else None)
    st.plotly_chart(viz.similarity_heatmaps(matrices), width="stretch")
    st.caption(f"One test image (and its caption) per class, {len(matrices['teacher'])} classes in class order; "
               "cosine similarities, or row-wise softmax(cos / temperature).")
