"""Overview page: every run in the chosen directory, filterable, its key metrics, links into the other
pages, broken runs with their problems, and the progress of a ``make demo`` training behind the dashboard."""

from __future__ import annotations

import time
from pathlib import Path

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


def task_of(run: runs.Run) -> str:
    """What a run's HM/top-1 are measured on: runs of different tasks (CLIP zero-shot over every class, a prompt
    protocol, another label space) are never ranked in one column."""
    if run.kind != "promptkd":
        return "CLIP zero-shot"
    cfg = run.config.get("config", {})
    protocol = protocol_of(run)
    if protocol == "cross":
        return f"prompt KD, cross: {cfg.get('label_space', 'colour_shape')} classes"
    if protocol == "domain":
        return f"prompt KD, style shift from {cfg.get('source_style', 'plain')}"
    return "prompt KD, base → novel"


def task_caption(task: str) -> str:
    """A caption true for every row of ``task``'s table."""
    if task == "CLIP zero-shot":
        return ("HM, top-1, base, novel: zero-shot accuracy (%) of the trained CLIP student on the plain-style test "
                "set over every colour × shape class (base/novel: the two halves of the classes); R@1: retrieval "
                "recall (%); higher is better.")
    if task.startswith("prompt KD, cross"):
        return ("The distilled student's accuracy (%) on the plain-style test set of its own label space "
                f"({task.split(': ', 1)[1]}): a different set of classes from every other table, so its numbers "
                "compare only within this table.")
    if task.startswith("prompt KD, style shift"):
        return ("The distilled student's accuracy (%) on the style it was distilled on (HM, top-1, base, novel); "
                "the Protocols page has its top-1 on the shifted styles.")
    return ("The distilled student's accuracy (%) on the plain-style test set of the colour × shape classes; base: "
            "the classes the teacher was tuned on, novel: the others, HM their harmonic mean.")


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
               "task": task_of(run), "kind": run.kind, "budget": explain.budget_of(run),
               "model": cfg.get("model") or cfg.get("student", ""), "seed": run.config.get("seed")}
        rows.append(row)
    return pd.DataFrame(rows)


def by_task(table: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """One table per task (CLIP zero-shot first), each sorted by HM (best first), its empty columns dropped."""
    order = sorted(table["task"].unique(), key=lambda t: (t != "CLIP zero-shot", t))
    out = []
    for task in order:
        part = table[table["task"] == task].drop(columns="task")
        part = part.sort_values("hm", ascending=False, kind="stable", na_position="last").dropna(axis=1, how="all")
        out.append((task, part.reset_index(drop=True)))
    return out


def column_config() -> dict:
    return {k: st.column_config.NumberColumn(LABELS[k], format=FORMATS.get(k, "%.1f")) for k in KEY_METRICS}


def filtered(table: pd.DataFrame) -> tuple[pd.DataFrame, str | None]:
    """The table restricted by the page's filters (run kinds, a search over run ids and objectives), and the run
    picked in the same row to open in the other pages (None until one is picked)."""
    left, middle, right = st.columns([1, 1.3, 1.3])
    kinds = left.multiselect("Kinds", sorted(table["kind"].unique()), placeholder="all kinds")
    search = middle.text_input("Search runs and objectives", placeholder="e.g. crd, s1, comkd")
    keep = table["kind"].isin(kinds) if kinds else pd.Series(True, index=table.index)
    if search:
        text = table["run"] + " " + table["objective"].astype(str)
        keep &= text.str.contains(search, case=False, regex=False)
    shown = table[keep].reset_index(drop=True)
    run_id = right.selectbox("Open a run in the other pages", list(shown["run"]), index=None,
                             placeholder="pick a run", key="overview_open")
    return shown, run_id


def links(run: runs.Run) -> None:
    """Buttons that open the pages showing ``run``, with the run already picked."""
    targets = []
    if data.has_teacher_embeddings(run):
        targets += [("geometry", {"geometry_run": run.run_id}), ("similarity", {"similarity_run": run.run_id}),
                    ("divergence", {"divergence_run": run.run_id})]
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


STOPPED_S = 600  # no progress record and no file of the run in training written for this long: it stopped


def last_sign_of_life(progress: dict, runs_dir: str | Path) -> float:
    """When the demo last wrote anything: its progress record, or a file of the run it is training (whose
    metrics are appended every few steps)."""
    stamps = [progress.get("updated", 0.0)]
    current = Path(runs_dir) / str(progress.get("current") or "")
    if progress.get("current") and current.is_dir():
        stamps += [f.stat().st_mtime for f in current.iterdir() if f.is_file()]
    return max(stamps)


def demo_stopped(progress: dict, runs_dir: str | Path, now: float | None = None) -> float | None:
    """Seconds since an unfinished demo last wrote anything, when that is over :data:`STOPPED_S` (it was
    killed or crashed); None while it is alive."""
    quiet = (time.time() if now is None else now) - last_sign_of_life(progress, runs_dir)
    return quiet if quiet > STOPPED_S else None


def demo_progress() -> bool:
    """The progress of ``make demo``'s training, if one is running; returns whether it is."""
    progress = read_progress(data.runs_dir())
    if not progress or progress.get("finished"):
        return False
    done, total = progress["done"], progress["total"]
    quiet = demo_stopped(progress, data.runs_dir())
    if quiet is not None:
        st.warning(f"The demo training stopped: {done} of {total} runs done, `{progress.get('current')}` "
                   f"unfinished, nothing written for {quiet / 60:.0f} min. Run `make demo` again to go on (finished "
                   f"runs are skipped).")
        return False
    eta = progress.get("eta_s")
    eta_text = f"about {eta / 60:.0f} min left" if eta else "ETA after the first run finishes"
    st.progress(done / max(total, 1), text=f"Demo training: {done} of {total} runs done; training "
                                           f"`{progress.get('current')}` now; {eta_text}. Finished runs appear "
                                           f"below as they are written (this page refreshes every {REFRESH_S} s).")
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
        shown, run_id = filtered(table)
        st.caption(f"{len(shown)} of {len(table)} finished runs, one table per task (HM is only comparable within "
                   f"one), each sorted by HM.")
        if run_id is not None:
            links(next(r for r in found if r.run_id == run_id))
        for task, part in by_task(shown):
            st.markdown(f"**{task}** ({len(part)} {'run' if len(part) == 1 else 'runs'})")
            st.dataframe(part, hide_index=True, width="stretch", column_config=column_config(),
                         height=min(36 + 35 * len(part), 400))
            st.caption(task_caption(task))
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
    if progress and not progress.get("finished") and demo_stopped(progress, data.runs_dir()) is None:
        st.fragment(runs_section, run_every=REFRESH_S)()
    else:
        runs_section()
