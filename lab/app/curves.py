"""Training curves: every logged loss term and metric over steps, several runs overlaid."""

from __future__ import annotations

import streamlit as st

from lab import viz
from lab.app import data


def page() -> None:
    st.title("Training curves")
    found = [r for r in data.finished_runs() if r.kind in ("pretrain", "distill")]
    if not found:
        data.no_runs_message()
        return
    ids = [r.run_id for r in found]
    data.keep_known("curve_runs", ids, default=ids[:2])
    chosen = st.sidebar.multiselect("Runs", ids, key="curve_runs")
    records = {r.run_id: data.metrics(r) for r in found if r.run_id in chosen}
    keys = sorted({k for rs in records.values() for r in rs for k in r if k != "step"})
    if not keys:
        st.info("Pick at least one run in the sidebar.")
        return
    default = [k for k in ("loss", "eval/hm") if k in keys] or keys[:1]
    for key in st.multiselect("Curves", keys, default=default):
        st.plotly_chart(viz.training_curves(records, key), width="stretch")
