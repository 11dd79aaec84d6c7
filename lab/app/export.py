"""Figures and their numbers out of the dashboard: SVG and PNG of a Vega-Lite chart (rendered offline by
vl-convert, no browser or network), CSV of exactly the numbers a chart draws with the run ids and settings
in a ``#`` header, and CSV of a table."""

from __future__ import annotations

import io
import re

import numpy as np
import pandas as pd
import streamlit as st


def slug(text: str) -> str:
    """A file-name-safe version of ``text`` (run ids and settings)."""
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", text).strip("_")


def with_header(table: pd.DataFrame, header: dict[str, object]) -> str:
    """``table`` as CSV after ``# key: value`` lines (what the numbers are: run, projection, …); full precision."""
    lines = "".join(f"# {k}: {v}\n" for k, v in header.items())
    return lines + table.to_csv(index=False, float_format="%.9g")


def read_with_header(text: str) -> tuple[dict[str, str], pd.DataFrame]:
    """The inverse of :func:`with_header`: the header and the table."""
    header = dict(line[2:].split(": ", 1) for line in text.splitlines() if line.startswith("# "))
    return header, pd.read_csv(io.StringIO(text), comment="#")


def map_table(points: pd.DataFrame, model: str, colour_by: str) -> pd.DataFrame:
    """The numbers a map panel draws: each point's item, modality, caption, colouring and x, y."""
    columns = ["item", "modality", "caption", colour_by, f"{model}_x", f"{model}_y"]
    if colour_by == "class":
        columns.insert(4, "shape")
    table = points[[c for c in dict.fromkeys(columns) if c in points]].copy()
    return table.rename(columns={f"{model}_x": "x", f"{model}_y": "y"})


def matrices_table(matrices: dict[str, np.ndarray], names: list[str]) -> pd.DataFrame:
    """The similarity heatmaps' numbers, one row per cell: row and column (position and class), then each
    matrix's value (teacher, student, student − teacher)."""
    n = len(names)
    i, j = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    table = pd.DataFrame({"row": i.ravel(), "row class": np.asarray(names)[i.ravel()], "column": j.ravel(),
                          "column class": np.asarray(names)[j.ravel()]})
    for name, m in matrices.items():
        table[name] = np.asarray(m).ravel()
    return table


def vega_svg(chart) -> str:
    import vl_convert as vlc

    return vlc.vegalite_to_svg(chart.to_json())


def vega_png(chart, scale: float = 2.0) -> bytes:
    import vl_convert as vlc

    return vlc.vegalite_to_png(chart.to_json(), scale=scale)


def chart_downloads(chart, table: pd.DataFrame, header: dict[str, object], name: str, where=st) -> None:
    """SVG, PNG and CSV buttons under a Vega-Lite chart; the images are rendered when clicked."""
    base = slug(name)
    svg, png, csv = where.columns(3)
    svg.download_button("SVG", lambda: vega_svg(chart), f"{base}.svg", "image/svg+xml", key=f"svg_{base}",
                        on_click="ignore", width="stretch")
    png.download_button("PNG", lambda: vega_png(chart), f"{base}.png", "image/png", key=f"png_{base}",
                        on_click="ignore", width="stretch")
    csv.download_button("CSV", lambda: with_header(table, header), f"{base}.csv", "text/csv", key=f"csv_{base}",
                        on_click="ignore", width="stretch")


def data_download(table: pd.DataFrame, header: dict[str, object], name: str, label: str = "CSV of the numbers drawn",
                  where=st) -> None:
    """One CSV button for a figure's (or a table's) numbers."""
    base = slug(name)
    where.download_button(label, lambda: with_header(table, header), f"{base}.csv", "text/csv", key=f"csv_{base}",
                          on_click="ignore")
