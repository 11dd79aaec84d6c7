"""Runs workbench: every finished run's settings and results in one sortable table, grouped by configuration
(mean ± std over seeds, as the sweep tables compute it), the settings two runs differ in, and the loss
weights against the result as parallel coordinates (one line per run)."""

from __future__ import annotations

import re

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from lab import runs
from lab.app import data, explain, export
from lab.experiments.tables import mean_std
from lab.train.checkpoint import _flat

RESULTS = {"HM": "hm", "top-1": "top1", "R@1 i→t": "retrieval/i2t_r1", "wall time (s)": "wall_time_s"}
TERM = re.compile(r"([0-9.eE+-]+)·([a-z_]+)")


def settings(run: runs.Run) -> dict:
    """A run's settings, flattened (``train.lr``, ``loss``, …), with its kind."""
    return {"kind": run.kind, **_flat(run.config.get("config", {}))}


def configuration(run: runs.Run) -> str:
    """Everything a run was configured with except its seeds: runs that differ only in seed share it."""
    kept = {k: v for k, v in settings(run).items() if k != "seed" and not k.endswith(".seed")}
    return repr(sorted(kept.items()))


def term_weights(run: runs.Run) -> dict[str, float]:
    """The objective's terms and weights as trained (from the summary's formula, e.g. ``1·crd + 7.8·fd``)."""
    return {name: float(w) for w, name in TERM.findall(run.summary.get("formula", ""))}


def runs_frame(found: list[runs.Run]) -> pd.DataFrame:
    rows = []
    for run in found:
        cfg = settings(run)
        weights = term_weights(run)
        rows.append({"run": run.run_id, **{label: run.summary.get(key) for label, key in RESULTS.items()},
                     "method": cfg.get("method") or cfg.get("loss") or "task",
                     "terms and weights": " + ".join(f"{w:g}·{t}" for t, w in weights.items()) or "task",
                     "seed": run.config.get("seed"), "budget": explain.budget_of(run),
                     "steps": cfg.get("train.steps"), "lr": cfg.get("train.lr"), "kind": run.kind,
                     "teacher": cfg.get("teacher", ""), "protocol": cfg.get("protocol", ""),
                     "configuration": configuration(run)})
    return pd.DataFrame(rows)


def grouped(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per configuration: its runs' seeds, and mean ± std of each result over them
    (:func:`lab.experiments.tables.mean_std`, the sweep tables' own)."""
    rows = []
    for _, part in frame.groupby("configuration", sort=False):
        row = {"runs": ", ".join(part["run"]), "n seeds": len(part), "method": part["method"].iloc[0],
               "terms and weights": part["terms and weights"].iloc[0], "budget": part["budget"].iloc[0]}
        for label in RESULTS:
            mean, std = mean_std([None if pd.isna(v) else float(v) for v in part[label]])
            row[f"{label} mean"], row[f"{label} std"] = mean, std
        rows.append(row)
    return pd.DataFrame(rows)


def config_diff(a: runs.Run, b: runs.Run) -> pd.DataFrame:
    """The settings in which two runs differ (a key one of them lacks counts), and each run's value."""
    sa, sb = settings(a), settings(b)
    keys = [k for k in dict.fromkeys([*sa, *sb]) if sa.get(k, "—") != sb.get(k, "—")]
    return pd.DataFrame({"setting": keys, a.run_id: [str(sa.get(k, "—")) for k in keys],
                         b.run_id: [str(sb.get(k, "—")) for k in keys]})


def mixed(frame: pd.DataFrame) -> list[str]:
    """A sentence per way the shown runs are not comparable (budgets, protocols, teachers, kinds)."""
    out = []
    tasks = frame["kind"].map(lambda k: "prompt distillation" if k == "promptkd" else "CLIP training")
    for column, what in (("budget", "training budgets"), ("protocol", "protocols"), ("teacher", "teachers"),
                         ("task", "tasks")):
        values = sorted({str(v) for v in (tasks if column == "task" else frame[column]) if str(v)})
        if len(values) > 1:
            out.append(f"These runs mix {what} ({', '.join(values)}): their results are not comparable across "
                       f"them; filter to one.")
    return out


def parallel(frame: pd.DataFrame, found: list[runs.Run], metric: str = "HM") -> go.Figure:
    """Parallel coordinates: one line per run over each term's weight (0 = not in the objective) → ``metric``."""
    weights = pd.DataFrame([term_weights(r) for r in found]).fillna(0.0)
    dims = [dict(label=f"{t} weight", values=weights[t]) for t in weights.columns]
    dims.append(dict(label=metric, values=frame[metric]))
    fig = go.Figure(go.Parcoords(line=dict(color=frame[metric], colorscale="Viridis", showscale=True),
                                 dimensions=dims))
    fig.update_layout(height=360, margin=dict(t=50, l=40, r=40, b=20))
    return fig


def page() -> None:
    st.title("Runs workbench")
    st.markdown("Every finished run's settings and results: filter, sort (click a column), group the seeds of one "
                "configuration, and see what two runs differ in.")
    found = [r for r in data.finished_runs() if r.kind in ("pretrain", "distill", "promptkd")]
    if not found:
        data.no_runs_message()
        return
    frame = runs_frame(found)
    left, middle, right = st.columns(3)
    budgets = left.multiselect("Budget", sorted(frame["budget"].unique()), key="workbench_budget",
                               placeholder="every budget")
    kinds = middle.multiselect("Kind", sorted(frame["kind"].unique()), key="workbench_kind", placeholder="every kind")
    search = right.text_input("Search runs and methods", key="workbench_search")
    keep = pd.Series(True, index=frame.index)
    if budgets:
        keep &= frame["budget"].isin(budgets)
    if kinds:
        keep &= frame["kind"].isin(kinds)
    if search:
        keep &= (frame["run"] + " " + frame["terms and weights"]).str.contains(search, case=False, regex=False)
    shown = frame[keep].reset_index(drop=True)
    chosen = [r for r in found if r.run_id in set(shown["run"])]
    st.dataframe(shown.drop(columns="configuration"), hide_index=True, width="stretch", height=260)
    for sentence in mixed(shown):  # under the table, which stays on the first screen
        st.warning(sentence)
    export.data_download(shown, {"runs dir": data.runs_dir()}, "runs-workbench", label="CSV of the table")

    st.subheader("Grouped by configuration (mean ± std over seeds)")
    groups = grouped(shown)
    st.dataframe(groups.round(2), hide_index=True, width="stretch")
    st.caption("Runs that differ only in their seeds form one group; mean and sample std as the sweep tables "
               "compute them (std 0 for one seed).")

    st.subheader("Weights → result, one line per run")
    if len(chosen) > 1:
        st.plotly_chart(parallel(shown, chosen), width="stretch")

    st.subheader("What two runs differ in")
    ids = list(shown["run"])
    if len(ids) >= 2:
        a_col, b_col = st.columns(2)
        a = a_col.selectbox("Run A", ids, index=0, key="workbench_a")
        b = b_col.selectbox("Run B", ids, index=1, key="workbench_b")
        by_id = {r.run_id: r for r in chosen}
        diff = config_diff(by_id[a], by_id[b])
        st.dataframe(diff, hide_index=True, width="stretch")
        st.caption(f"{len(diff)} settings differ; every other setting is the same.")
