"""Ablations as lab vs paper: each sweep row's mean ± std over its seeds beside the paper's number."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from lab import viz
from lab.app import data, explain
from lab.experiments.grids import GRIDS, SCALES, PromptRow

METRICS = {"HM": "hm", "top-1": "top1", "gap closed %": "gap_closed", "image→text R@1": "retrieval_i2t_r1",
           "CKA (image)": "cka_image", "student (the protocol's metric)": "score", "base": "base", "novel": "novel",
           "student zero-shot": "student_zeroshot"}


def grid_of(table_name: str) -> str:
    """The grid a table was written for (its name without the budget prefix)."""
    for scale in SCALES:
        if scale != "full" and table_name.startswith(f"{scale}-"):
            return table_name[len(scale) + 1:]
    return table_name


def protocols_of(table_name: str, table: pd.DataFrame) -> pd.Series | None:
    """Each row's protocol in a prompt-distillation grid (None for CLIP grids)."""
    rows = GRIDS.get(grid_of(table_name), [])
    if not rows or not isinstance(rows[0], PromptRow):
        return None
    by_label = {r.label: next((s.split("=", 1)[1] for s in r.settings if s.startswith("protocol=")), "base2novel")
                for r in rows}
    return table["row"].map(by_label).fillna("other")


def n_seeds(table: pd.DataFrame) -> pd.Series:
    return table["seeds"].fillna("").astype(str).str.split().str.len()


def lab_vs_paper(table: pd.DataFrame, column: str) -> pd.DataFrame:
    """The table with its lab-vs-paper columns first: row, n seeds, mean ± std ("—" for one seed), paper, source."""
    seeds = n_seeds(table)
    cell = [f"{m:.1f} ± —" if n < 2 else f"{m:.1f} ± {s:.1f}"
            for m, s, n in zip(table[f"{column}_mean"], table[f"{column}_std"], seeds)]
    first = pd.DataFrame({"row": table["row"], "n seeds": seeds, "lab (mean ± std)": cell,
                          "paper": table.get("paper"), "paper source": table["paper_source"].fillna("—") if "paper_source" in table else None})
    rest = table.drop(columns=[c for c in ("row", "paper", "paper_source") if c in table])
    return pd.concat([first, rest.round(3)], axis=1)


def paper_sources(table: pd.DataFrame) -> list[str]:
    """The paper tables the rows' numbers come from, the one with most rows first."""
    if "paper_source" not in table or "paper" not in table:
        return []
    given = table.loc[table["paper"].notna(), "paper_source"].dropna()
    return list(given.value_counts(sort=True).index)


def paper_from(table: pd.DataFrame, source: str) -> list[float | None]:
    """The paper column restricted to the rows from ``source`` (None elsewhere): one axis, one paper table."""
    return [float(p) if s == source and pd.notna(p) else None for p, s in zip(table["paper"], table["paper_source"])]


def rank_agreements(table: pd.DataFrame, column: str) -> list[str]:
    """One Spearman ρ per paper source, each named."""
    return [f"{source}: {viz.rank_agreement(table[f'{column}_mean'].tolist(), paper_from(table, source))}"
            for source in paper_sources(table)]


def page() -> None:
    st.title("Ablations")
    explain.intro("ablations")
    if data.runs_dir_missing():
        return
    tables, problems = data.sweep_tables()
    for problem in problems:
        st.warning(problem)
    if not tables:
        st.info(f"No sweep tables in `{data.runs_dir()}/_tables` yet. Make one with "
                f"`python -m lab sweep --grid clipkd --seeds 3` (or `make demo` for one seed of every grid at the demo budget).")
    else:
        sweep_section(tables)
    tuned_section()


def tuned_section() -> None:
    """The weights ``python -m lab tune`` chose on the validation split, with the test set's numbers beside,
    and every weight the search tried."""
    records, problems = data.tune_records()
    for problem in problems:
        st.warning(problem)
    if not records:
        return
    st.subheader("Weights chosen on the validation split")
    data.keep_known("tune_table", list(records))
    name = st.selectbox("Tuning", list(records), key="tune_table")
    if name.startswith(("fast-", "demo-")):
        st.markdown(f":orange-background[⚠️ These weights were tuned at {explain.BUDGET_WORDS[name.split('-', 1)[0]]}.]")
    weights = st.column_config.TextColumn(width="medium")  # a recipe's weights fit unclipped
    st.dataframe(data.tune_table(records[name]), hide_index=True, width="stretch",
                 column_config={"chosen weights": weights, "default weights": weights})
    st.caption("Each row's new terms were searched over the weights listed, each with its validation score (the "
               "row's metric: HM, or a prompt protocol's top-1), averaged over the seeds; the validation split, "
               "disjoint from the test set, chose. The test set chose nothing: it gives the numbers at the chosen "
               "and at the default weights (mean ± std over the seeds).")
    st.plotly_chart(viz.weight_search(records[name]["rows"]), width="stretch")
    st.caption("Every weight the search tried, at its mean validation score over the seeds (the split that chose), "
               "± its std over the seeds (an older record has none: rerun its `python -m lab tune` command, which "
               "trains nothing already trained). "
               "A line that peaks inside the range found its best weight; a flat line means the weight hardly "
               "matters; the search went one step past an end while the best was there (at most twice). The y axis "
               "spans only the scores drawn: weigh a gap against the error bars, not by its height. Click a "
               "legend entry to hide a row.")


def sweep_section(tables: dict[str, pd.DataFrame]) -> None:
    data.keep_known("sweep_table", list(tables))
    name = st.sidebar.selectbox("Sweep", list(tables), key="sweep_table")
    table = tables[name]
    if name.startswith(("fast-", "demo-")):
        st.markdown(f":orange-background[⚠️ This table was made at {explain.BUDGET_WORDS[name.split('-', 1)[0]]}.]")
    protocols = protocols_of(name, table)
    left, right = st.columns(2)
    if protocols is not None:  # one protocol at a time: each has its own headline metric
        protocol = right.selectbox("Protocol", sorted(protocols.unique()), key="ablation_protocol")
        table = table[protocols == protocol].reset_index(drop=True)
    label = left.selectbox("Metric", [m for m, column in METRICS.items() if f"{column}_mean" in table],
                           key="ablation_metric")
    column = METRICS[label]
    seeds = n_seeds(table)
    sources = paper_sources(table)
    source = None
    if len(sources) > 1:  # one paper table per axis: its rows' numbers only
        data.keep_known("ablation_source", sources)
        source = st.selectbox("Paper numbers drawn (one source table at a time)", sources, key="ablation_source")
    elif sources:
        source = sources[0]
    st.plotly_chart(viz.ablation_bars(table["row"], table[f"{column}_mean"], table[f"{column}_std"], label,
                                      n_seeds=seeds, paper=None if source is None else paper_from(table, source),
                                      paper_metric=source or "paper"), width="stretch")
    if len(sources) > 1:
        st.caption("The rows' paper numbers come from different tables, each drawn alone; rank agreement per "
                   "source — " + "; ".join(rank_agreements(table, column)) + ".")
    st.dataframe(lab_vs_paper(table, column), hide_index=True, width="stretch")
    st.caption("Lab numbers on ShapesWorld, mean ± std over each row's seeds (— when there is one seed), last step. "
               "The `paper` column is the authors' published number for the nearest row (its source beside it), "
               "measured on real data with real CLIP models: drawn on its own axis (diamonds; each axis spans its own "
               "data), a reference for the ordering (Spearman ρ above the chart), not comparable in absolute terms.")
