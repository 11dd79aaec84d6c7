"""Protocols: base vs novel vs HM, cross-dataset and domain-shift results of the prompt-distillation runs."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from lab import runs, viz
from lab.app import data, explain
from lab.data.shapes import STYLES

MODELS = {"teacher_zeroshot": "teacher zero-shot", "teacher": "tuned teacher",
          "student_zeroshot": "student zero-shot", "student": "distilled student"}
# Shown first: ComKD-CLIP, then PromptKD, under each protocol (grid rows of lab.experiments.grids).
FEATURED = ("pkd-comkd-b2n", "pkd-promptkd-b2n", "pkd-comkd-cross-colour_shape", "pkd-comkd-domain")
HEADLINES = {"base2novel": ("base", "novel", "hm"), "cross": ("top1",), "domain": ("top1", "target_top1")}


def protocol_of(run: runs.Run) -> str:
    return run.config.get("config", {}).get("protocol", "base2novel")


SHORT = {"student": "student", "teacher": "tuned teacher", "student_zeroshot": "student 0-shot",
         "teacher_zeroshot": "teacher 0-shot"}
HEADLINE = {"base2novel": ("hm", "HM"), "cross": ("top1", "top-1"), "domain": ("target_top1", "shifted top-1")}


def runs_table(found: list[runs.Run], protocol: str) -> pd.DataFrame:
    """The protocol's runs, scores first (the headline metric per model, then the student's details), the run's
    settings last: the numbers stay on screen at 1024 px."""
    key, name = HEADLINE[protocol]
    rows = []
    for run in found:
        cfg, summary = run.config.get("config", {}), run.summary
        row = {f"{SHORT[who]} {name}": summary.get(f"{who}/{key}") for who in SHORT}
        if protocol == "base2novel":
            row.update({"student base": summary.get("student/base"), "student novel": summary.get("student/novel")})
        if protocol == "domain":
            row[f"student {cfg.get('source_style', 'plain')} top-1"] = summary.get("student/top1")
        row.update({"run": run.run_id, "method": cfg.get("method"), "seed": run.config.get("seed")})
        if protocol == "cross":
            row["label space"] = cfg.get("label_space")
        rows.append(row)
    return pd.DataFrame(rows).round(1)


def model_scores(run: runs.Run, protocol: str) -> dict[str, dict[str, float]]:
    """Per model: base/novel/HM (base2novel), top-1 (cross) or top-1 per style (domain)."""
    if protocol == "domain":
        return {label: {s: run.summary.get(f"{who}/{s}/top1") for s in STYLES} for who, label in MODELS.items()}
    return {label: {k: run.summary.get(f"{who}/{k}") for k in HEADLINES[protocol]} for who, label in MODELS.items()}


def pick_protocol_run(chosen: list[runs.Run], protocol: str) -> runs.Run:
    """The sidebar's run among ``protocol``'s runs: one picker per protocol, so that it can never show another
    protocol's run; ``protocol_open`` (set once by the Overview's links) preselects it."""
    ids = [r.run_id for r in chosen]
    key = f"protocol_run_{protocol}"
    opened = st.session_state.pop("protocol_open", None)
    if opened in ids:
        st.session_state[key] = opened
    data.keep_known(key, ids, default=data.featured(ids, prefer=FEATURED)[0])
    run_id = st.sidebar.selectbox("Run", ids, key=key)
    return chosen[ids.index(run_id)]


def page() -> None:
    st.title("Protocols")
    explain.intro("protocols")
    if data.runs_dir_missing():
        return
    found = [r for r in data.finished_runs() if r.kind == "promptkd"]
    if not found:
        st.info(f"No prompt-distillation runs in `{data.runs_dir()}` yet. Make them with "
                f"`python -m lab sweep --grid comkd --scale demo` (or `make demo`).")
        return
    explain.budget_banner(found)
    protocols = sorted({protocol_of(r) for r in found})
    data.keep_known("protocol", protocols)
    protocol = st.sidebar.selectbox("Protocol", protocols, key="protocol")
    chosen = [r for r in found if protocol_of(r) == protocol]
    run = pick_protocol_run(chosen, protocol)
    st.plotly_chart(viz.grouped_bars(model_scores(run, protocol), yaxis="top-1 / HM (%)",
                                     title=f"{run.run_id} ({protocol})"), width="stretch")
    st.caption(run.summary.get("protocol", protocol))
    table = runs_table(chosen, protocol)
    st.dataframe(table, hide_index=True, width="stretch", column_config={
        c: st.column_config.NumberColumn(c, format="%.1f", width="small") for c in table if c not in ("run", "method",
                                                                                                    "seed", "label space")})
    st.caption(f"{HEADLINE[protocol][1]} (%) of each model under the {protocol} protocol; 0-shot: before any "
               f"tuning or distillation.")
    if protocol == "domain":
        st.caption(f"Tuned and distilled on the {run.config['config'].get('source_style', 'plain')} style; "
                   f"the other styles are domains neither model was adapted to.")
