"""Overview page: every run in the chosen directory, filterable, its key metrics, links into the other
pages, and broken runs with their problems."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from lab import runs
from lab.app import data, pages
from lab.app.protocols import protocol_of

KEY_METRICS = ("top1", "base", "novel", "hm", "retrieval/i2t_r1", "retrieval/t2i_r1", "teacher/hm",
               "params", "wall_time_s")


def runs_table(found: list[runs.Run]) -> pd.DataFrame:
    rows = []
    for run in found:
        if not run.complete:
            continue
        cfg = run.config.get("config", {})
        objective = run.summary.get("formula", "L = task")
        if run.kind == "promptkd":
            objective = f"{cfg.get('method')}, {cfg.get('protocol', 'base2novel')} protocol"
        row = {"run": run.run_id, "kind": run.kind, "model": cfg.get("model") or cfg.get("student", ""),
               "objective": objective, "seed": run.config.get("seed")}
        row.update({k: run.summary.get(k) for k in KEY_METRICS})
        rows.append(row)
    return pd.DataFrame(rows)


def filtered(table: pd.DataFrame) -> pd.DataFrame:
    """The table restricted by the page's filters: run kinds and a search over run ids and objectives."""
    left, right = st.columns([1, 2])
    kinds = left.multiselect("Kinds", sorted(table["kind"].unique()), placeholder="all kinds")
    search = right.text_input("Search runs and objectives", placeholder="e.g. crd, s1, comkd")
    keep = table["kind"].isin(kinds) if kinds else pd.Series(True, index=table.index)
    if search:
        text = table["run"] + " " + table["objective"].astype(str)
        keep &= text.str.contains(search, case=False, regex=False)
    return table[keep].reset_index(drop=True)


def links(run: runs.Run) -> None:
    """Buttons that open the pages showing ``run``, with the run already picked."""
    targets = []
    if data.has_teacher_embeddings(run):
        targets += [("geometry", {"geometry_run": run.run_id}), ("similarity", {"similarity_run": run.run_id})]
    if run.kind in ("pretrain", "distill"):
        targets.append(("curves", {"curve_runs": [run.run_id]}))
    if run.kind == "promptkd":
        targets.append(("protocols", {"protocol": protocol_of(run), "protocol_run": run.run_id}))
    if not targets:
        st.caption(f"{run.run_id} has no embeddings or curves to show.")
        return
    for column, (url_path, state) in zip(st.columns(len(targets) + 1), targets):
        if column.button(f"{pages.TITLES[url_path]} →", key=f"open_{url_path}"):
            pages.open_with(url_path, **state)


def page() -> None:
    st.title("Runs")
    found = runs.list_runs(data.runs_dir())
    if not found:
        data.no_runs_message()
        return
    table = runs_table(found)
    if not table.empty:
        shown = filtered(table)
        st.dataframe(shown, hide_index=True, width="stretch")
        st.caption(f"{len(shown)} of {len(table)} finished runs.")
        run_id = st.selectbox("Open a run in the other pages", list(shown["run"]), index=None,
                              placeholder="pick a run", key="overview_open")
        if run_id is not None:
            links(next(r for r in found if r.run_id == run_id))
    unfinished = [r for r in found if r.ok and not r.complete]
    if unfinished:
        st.caption("Unfinished (no summary yet): " + ", ".join(r.run_id for r in unfinished))
    for run in found:
        if not run.ok:
            st.warning(f"**{run.run_id}** cannot be shown: {'; '.join(run.problems)}.")
