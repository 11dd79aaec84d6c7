"""Overview page: every run in the chosen directory, its key metrics, and broken runs with their problems."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from lab import runs
from lab.app import data

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


def page() -> None:
    st.title("Runs")
    found = runs.list_runs(data.runs_dir())
    if not found:
        data.no_runs_message()
        return
    table = runs_table(found)
    if not table.empty:
        st.dataframe(table, hide_index=True, width="stretch")
    unfinished = [r for r in found if r.ok and not r.complete]
    if unfinished:
        st.caption("Unfinished (no summary yet): " + ", ".join(r.run_id for r in unfinished))
    for run in found:
        if not run.ok:
            st.warning(f"**{run.run_id}** cannot be shown: {'; '.join(run.problems)}.")
