"""Overview page: every run in the chosen directory, filterable, its key metrics, links into the other
pages, broken runs with their problems, and the progress of a ``make demo`` training behind the dashboard."""

from __future__ import annotations

import time

import pandas as pd
import streamlit as st

from lab import runs
from lab.app import data, explain, pages
from lab.app.protocols import protocol_of
from lab.experiments.demo import read_progress

# Shown first, so that at 1500 px the headline numbers are on screen without scrolling.
KEY_METRICS = ("hm", "teacher/hm", "top1", "base", "novel", "retrieval/i2t_r1", "retrieval/t2i_r1",
               "wall_time_s", "params")
LABELS = {"hm": "HM", "teacher/hm": "teacher HM", "top1": "top-1", "base": "base", "novel": "novel",
          "retrieval/i2t_r1": "image→text R@1", "retrieval/t2i_r1": "text→image R@1", "wall_time_s": "wall time",
          "params": "parameters"}
FORMATS = {"wall_time_s": "%.0f s", "params": "compact"}
REFRESH_S = 5  # while a demo trains, the Overview rereads the runs this often


def runs_table(found: list[runs.Run]) -> pd.DataFrame:
    rows = []
    for run in found:
        if not run.complete:
            continue
        cfg = run.config.get("config", {})
        objective = run.summary.get("formula", "L = task")
        if run.kind == "promptkd":
            objective = f"{cfg.get('method')}, {cfg.get('protocol', 'base2novel')} protocol"
        row = {"run": run.run_id, **{k: run.summary.get(k) for k in KEY_METRICS}, "objective": objective,
               "kind": run.kind, "budget": explain.budget_of(run),
               "model": cfg.get("model") or cfg.get("student", ""), "seed": run.config.get("seed")}
        rows.append(row)
    return pd.DataFrame(rows)


def column_config() -> dict:
    return {k: st.column_config.NumberColumn(LABELS[k], format=FORMATS.get(k, "%.1f")) for k in KEY_METRICS}


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
        targets.append(("protocols", {"protocol": protocol_of(run), "protocol_open": run.run_id}))
    if not targets:
        st.caption(f"{run.run_id} has no embeddings or curves to show.")
        return
    for column, (url_path, state) in zip(st.columns(len(targets) + 1), targets):
        if column.button(f"{pages.TITLES[url_path]} →", key=f"open_{url_path}"):
            pages.open_with(url_path, **state)


def demo_progress() -> bool:
    """The progress of ``make demo``'s training, if one is running; returns whether it is."""
    progress = read_progress(data.runs_dir())
    if not progress or progress.get("finished"):
        return False
    done, total = progress["done"], progress["total"]
    eta = progress.get("eta_s")
    eta_text = f"about {eta / 60:.0f} min left" if eta else "ETA after the first run finishes"
    st.progress(done / max(total, 1), text=f"Demo training: {done} of {total} runs done; training "
                                           f"`{progress.get('current')}` now; {eta_text}. Finished runs appear "
                                           f"below as they are written (this page refreshes every {REFRESH_S} s).")
    stale = time.time() - progress.get("updated", 0)
    if stale > 3600:
        st.caption(f"(The progress file was last updated {stale / 3600:.1f} h ago; the training may have stopped.)")
    return True


def runs_section() -> None:
    found = runs.list_runs(data.runs_dir())
    training = demo_progress()
    if not found:
        if not training:
            data.no_runs_message()
        return
    complete = [r for r in found if r.complete]
    explain.budget_banner(complete)
    table = runs_table(found)
    if not table.empty:
        shown = filtered(table)
        st.dataframe(shown, hide_index=True, width="stretch", column_config=column_config())
        st.caption(f"{len(shown)} of {len(table)} finished runs. HM, top-1, base, novel: zero-shot accuracy (%) on "
                   f"the plain-style test set; R@1: retrieval recall (%); higher is better.")
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


def page() -> None:
    st.title("Runs")
    explain.intro("overview")
    if data.runs_dir_missing():
        return
    progress = read_progress(data.runs_dir())
    if progress and not progress.get("finished"):
        st.fragment(runs_section, run_every=REFRESH_S)()
    else:
        runs_section()
