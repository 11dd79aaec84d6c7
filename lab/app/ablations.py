"""Ablations: the sweep tables with mean ± std, teacher gap closed, and bar charts."""

from __future__ import annotations

import streamlit as st

from lab import viz
from lab.app import data

METRICS = {"HM": "hm", "top-1": "top1", "gap closed %": "gap_closed", "image→text R@1": "retrieval_i2t_r1",
           "CKA (image)": "cka_image", "student (the protocol's metric)": "score", "base": "base", "novel": "novel",
           "student zero-shot": "student_zeroshot"}


def page() -> None:
    st.title("Ablations")
    tables = data.sweep_tables()
    if not tables:
        st.info(f"No sweep tables in `{data.runs_dir()}/_tables` yet. Make one with "
                f"`python -m lab sweep --grid clipkd --seeds 3` (or `make demo` for one seed of every grid at the demo budget).")
        return
    name = st.sidebar.selectbox("Sweep", list(tables), key="sweep_table")
    table = tables[name]
    label = st.selectbox("Metric", [m for m, column in METRICS.items() if f"{column}_mean" in table])
    column = METRICS[label]
    st.plotly_chart(viz.ablation_bars(table["row"], table[f"{column}_mean"], table[f"{column}_std"], label),
                    width="stretch")
    st.dataframe(table, hide_index=True, width="stretch")
    st.caption("Lab numbers on ShapesWorld, mean ± std over the seeds listed, last step. The `paper` column is "
               "the authors' published number for the nearest row (its source in `paper_source`), measured on "
               "real data with real CLIP models: a reference for the ordering, not comparable in absolute terms.")
