"""Student vs teacher: where the student departs from the teacher (:mod:`lab.eval.divergence`), per item,
per class and factor pair, and per retrieval query — computed in the full embedding spaces."""

from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd
import streamlit as st

from lab import runs, viz
from lab.app import data, explain, export
from lab.eval import divergence as dv

K_CHOICES = (5, 10, 20, 50)


@st.cache_data(show_spinner=False, max_entries=16)
def _analyses(path: str, stamp: float, k: int) -> tuple[np.ndarray, pd.DataFrame, pd.DataFrame]:
    emb = runs.read_run(path).embeddings()
    return (dv.knn_iou(emb["teacher_image"], emb["student_image"], k), dv.factor_divergence(emb),
            dv.rank_changes(emb))


def analyses(run: runs.Run, k: int):
    return _analyses(str(run.path), data._stamp(run.path / runs.EMBEDDINGS), k)


def histogram(iou: np.ndarray, k: int) -> alt.Chart:
    """The per-item kNN IoU as a histogram with a brush on its x axis (drag to select items)."""
    brush = alt.selection_interval(encodings=["x"], name="brush")
    frame = pd.DataFrame({"kNN IoU": iou})
    return (alt.Chart(frame).mark_bar().encode(
        x=alt.X("kNN IoU:Q", bin=alt.Bin(maxbins=20, extent=[0, 1]), title=f"kNN IoU of each image (k = {k})"),
        y=alt.Y("count()", title="images"))
        .add_params(brush).properties(height=180, width="container"))


def brushed(selection, iou: np.ndarray) -> np.ndarray:
    """The items inside the histogram's brush (all items when nothing is brushed)."""
    ranges = (selection or {}).get("selection", {}).get("brush", {}) if selection else {}
    values = next(iter(ranges.values()), None) if ranges else None
    if not values:
        return np.arange(len(iou))
    low, high = min(values), max(values)
    return np.flatnonzero((iou >= low) & (iou <= high))


def neighbour_lists(run: runs.Run, emb: dict, item: int, k: int) -> None:
    split = dv.neighbour_split(emb["teacher_image"], emb["student_image"], item, k)
    images = data.thumbnails(run)
    titles = {"common": "in both", "teacher_only": "teacher only (the student lost them)",
              "student_only": "student only (the student invented them)"}
    for column, (key, title) in zip(st.columns(3), titles.items()):
        table = pd.DataFrame({"caption": [emb["captions"][j] for j in split[key]], "item": split[key]})
        if images is not None:
            table.insert(0, "picture", [images[j] for j in split[key]])
        column.markdown(f"**{title}** ({len(table)})")
        column.dataframe(table, hide_index=True, width="stretch",
                         column_config={"picture": st.column_config.ImageColumn("picture", width="small")})


def page() -> None:
    st.title("Student vs teacher")
    st.markdown("Where the student departs from its teacher, item by item, class by class and query by query — all "
                "computed in the full embedding spaces (not on a 2-D map).")
    picked = data.pick_run_with_teacher("divergence_run")
    if picked is None:
        return
    run, emb = picked
    explain.budget_banner([run])
    data.keep_known("divergence_k", list(K_CHOICES), default=10)
    k = st.select_slider("Neighbours k", K_CHOICES, key="divergence_k")
    with st.spinner("Comparing the two spaces"):
        iou, ranked, changes = analyses(run, k)

    st.subheader("Neighbourhood agreement per item")
    selection = st.altair_chart(viz.readable(histogram(iou, k)), width="stretch", on_select="rerun",
                                key="divergence_histogram")
    chosen = brushed(selection, iou)
    st.caption(f"Each image's k nearest images in each space, |common| / |either| (1 = the same neighbours). Drag on "
               f"the histogram to select items: {len(chosen)} of {len(iou)} selected, lowest agreement first below.")
    order = chosen[np.argsort(iou[chosen], kind="stable")]
    data.keep_known("divergence_item", [int(i) for i in order], default=int(order[0]) if len(order) else None)
    if len(order):
        item = st.selectbox("Neighbours of", [int(i) for i in order], key="divergence_item",
                            format_func=lambda i: f"{emb['captions'][i]} (item {i}, IoU {iou[i]:.2f})")
        neighbour_lists(run, emb, item, k)

    st.subheader("Classes and factors the student rearranged")
    shown = ranked.head(40)[["sentence", "change", "teacher", "student", "grouping", "within"]].round(2)
    st.dataframe(shown, hide_index=True, width="stretch",
                 column_config={"sentence": st.column_config.TextColumn(width="large")})
    export.data_download(ranked, {"run": run.run_id, "modality": "image"}, f"{run.run_id}-divergence-ranking",
                         label="CSV of the whole ranking")
    st.caption("Pairs of classes (and of colours, shapes, sizes, styles; overall and within each style) ranked by "
               "how much the similarity of their centroids changed: each model's centroid cosines standardised over "
               "its own pairs; change > 0: the student pulls the two together (merges them), < 0: pushes them apart. "
               "Groups of fewer than 3 items are left out.")

    st.subheader("Retrieval: the correct match's rank, teacher vs student")
    direction = st.radio("Direction", ("image→text", "text→image"), horizontal=True, key="divergence_direction")
    table = changes[changes["direction"] == direction].drop(columns="direction")
    st.dataframe(table[["rank lost", "teacher rank", "student rank", "item", "caption"]], hide_index=True,
                 width="stretch", height=320)
    export.data_download(changes, {"run": run.run_id}, f"{run.run_id}-rank-changes", label="CSV of every query")
    lost, gained = int((table["rank lost"] > 0).sum()), int((table["rank lost"] < 0).sum())
    st.caption(f"Rank of each query's correct match among all {len(table)} (1 = found first). Rank lost > 0: the "
               f"student ranks it lower than the teacher ({lost} queries); < 0: higher ({gained}). Sorted by rank lost; "
               f"click a column to sort by another.")
