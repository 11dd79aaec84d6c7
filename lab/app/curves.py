"""Training curves: every logged loss term and metric over steps or wall time, several runs overlaid.

A run keeps one colour in every chart (:func:`lab.viz.run_colours` over all the directory's runs);
the chosen curves, smoothing, log-y and x axis are remembered across page switches. Runs still
training (or stopped) are listed too and flagged, so the run in progress can be followed.
"""

from __future__ import annotations

import streamlit as st

from lab import viz
from lab.app import data, explain
from lab.runs import list_runs

REFRESH_S = 5
DEFAULT_KEYS = ("task", "eval/hm")  # the task term is comparable across objectives; the total loss is not


def page() -> None:
    st.title("Training curves")
    explain.intro("curves")
    if data.runs_dir_missing():
        return
    every = [r for r in list_runs(data.runs_dir()) if r.ok and r.kind in ("pretrain", "distill")]
    found = [r for r in every if data.metrics(r)]
    if not found:
        data.no_runs_message()
        return
    ids = [r.run_id for r in found]
    in_progress = [r.run_id for r in found if r.summary is None]
    finished = [i for i in ids if i not in in_progress]
    data.keep_known("curve_runs", ids, default=(in_progress[-1:] or []) + data.featured(finished, 2))
    chosen = st.sidebar.multiselect("Runs", ids, key="curve_runs")
    shown = [r for r in found if r.run_id in chosen]
    explain.budget_banner(shown)
    for run in shown:
        reason = data.incomplete_reason(run)
        if reason:
            st.warning(f"**{run.run_id}** is incomplete: {reason}; its curves stop at the last whole record.")
    records = {r.run_id: data.metrics(r) for r in shown}
    keys = sorted({k for rs in records.values() for r in rs for k in r if k not in ("step", "elapsed_s")})
    if not keys:
        st.info("Pick at least one run in the sidebar.")
        return
    data.keep_known("curve_keys", keys, default=[k for k in DEFAULT_KEYS if k in keys] or keys[:1])
    st.session_state.setdefault("curve_smoothing", 0.0)
    st.session_state.setdefault("curve_log_y", False)
    data.keep_known("curve_x", list(viz.CURVE_X), default="step")
    pick, smooth, log_col, x_col = st.columns([3, 2, 1, 1])
    chosen_keys = pick.multiselect("Curves", keys, key="curve_keys")
    smoothing = smooth.slider("Smoothing (EMA weight)", 0.0, 0.99, step=0.01, key="curve_smoothing")
    log_y = log_col.checkbox("log y", key="curve_log_y")
    x = x_col.radio("x axis", tuple(viz.CURVE_X), key="curve_x")
    colours = viz.run_colours(chosen)  # in the order picked: a run keeps its colour while others are added

    def charts() -> None:
        latest = {r.run_id: data.metrics(r) for r in shown}  # reread: a run in progress grows
        for key in chosen_keys:
            st.plotly_chart(viz.training_curves(latest, key, smoothing, log_y, x, colours), width="stretch",
                            key=f"curve_{key}")

    if any(r.run_id in in_progress for r in shown):  # follow the run in progress
        st.caption(f"Following the run in progress: the charts refresh every {REFRESH_S} s.")
        st.fragment(charts, run_every=REFRESH_S)()
    else:
        charts()
    if any(k.startswith("eval/") and not k.startswith("eval/geometry") for k in chosen_keys):
        st.caption("The probe's `eval/*` scores are measured during training on a fixed test subset "
                   "(`eval.probe_per_style` items per style), so its last `eval/hm` differs from the HM the Overview "
                   "shows, which is measured once at the end on the full test set (`eval.per_style` per style).")
    if x == "wall time":
        st.caption("Wall time is the seconds since training (re)started, logged with each record; runs logged "
                   "before the lab recorded it have no wall-time points.")
