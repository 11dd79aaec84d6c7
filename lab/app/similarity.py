"""Similarity matrices: teacher, student and their difference, sorted by class."""

from __future__ import annotations

import streamlit as st

from lab import viz
from lab.app import data, explain, export

TEMPERATURES = [0.005, 0.01, 0.02, 0.03, 0.05, 0.07, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0]


def page() -> None:
    st.title("Similarity matrices")
    explain.intro("similarity")
    picked = data.pick_run_with_teacher("similarity_run")
    if picked is None:
        return
    run, emb = picked
    explain.budget_banner([run])
    left, middle, right = st.columns(3)
    data.keep_known("similarity_pair", list(viz.PAIRS))
    pair = left.selectbox("Pair", tuple(viz.PAIRS), key="similarity_pair")
    use_softmax = middle.checkbox("Softmax over rows", value=False, key="similarity_softmax")
    if st.session_state.get("similarity_temperature") not in TEMPERATURES:  # the default, or an old slider's value
        st.session_state["similarity_temperature"] = 0.07
    temperature = right.select_slider("Temperature", TEMPERATURES, disabled=not use_softmax,
                                      format_func=lambda t: f"{t:g}", key="similarity_temperature")
    matrices = viz.similarity_matrices(emb, pair, temperature if use_softmax else None)
    value = f"softmax(cos / {temperature:g})" if use_softmax else "cosine"
    names = viz.similarity_class_names(emb)
    st.plotly_chart(viz.similarity_heatmaps(matrices, names, value, pair), width="stretch")
    export.data_download(export.matrices_table(matrices, names),
                         {"run": run.run_id, "pair": pair, "value": value, "items": "one test item per class"},
                         f"{run.run_id}-similarity-{pair}-{'softmax-' + format(temperature, 'g') if use_softmax else 'cosine'}")
    st.caption(f"{run.run_id}: one test image (and its caption) per class, {len(matrices['teacher'])} classes in "
               f"class order (hover a cell for the two class names); {value}. Teacher and student share one colour "
               f"scale; in the difference, red = the student's similarity is higher, blue = the teacher's is.")
