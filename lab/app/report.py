"""One self-contained, offline HTML page of a dashboard view: its figures (Vega-Lite charts as inline SVG
rendered by vl-convert; plotly figures with plotly.js inlined once), its tables and the runs' configs —
no request leaves the page when it is opened."""

from __future__ import annotations

import html
import json
from datetime import datetime, timezone

import pandas as pd

from lab.app.export import vega_svg

STYLE = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;font-size:14px}"
         "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}"
         "pre{background:#f6f6f6;padding:1em;overflow-x:auto}")


def figure_html(figure, first_plotly: bool) -> str:
    """A figure as HTML: a plotly figure (its JS inlined the first time), else a Vega-Lite chart as SVG."""
    if hasattr(figure, "to_plotly_json"):
        return figure.to_html(full_html=False, include_plotlyjs=True if first_plotly else False)
    return vega_svg(figure)


def view_report(title: str, figures: dict[str, object], tables: dict[str, pd.DataFrame] | None = None,
                configs: dict[str, dict] | None = None) -> str:
    """The HTML page: ``figures`` and ``tables`` by caption, then each run's config (``configs`` by run id)."""
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>"
             f"<p>Written {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC by the lab's dashboard.</p>"]
    plotly_done = False
    for caption, figure in figures.items():
        parts.append(f"<h2>{html.escape(caption)}</h2>")
        parts.append(figure_html(figure, not plotly_done))
        plotly_done |= hasattr(figure, "to_plotly_json")
    for caption, table in (tables or {}).items():
        parts.append(f"<h2>{html.escape(caption)}</h2>" + table.to_html(index=False, na_rep="—"))
    for run_id, config in (configs or {}).items():
        parts.append(f"<h2>Config of {html.escape(run_id)}</h2><pre>"
                     f"{html.escape(json.dumps(config, indent=1, default=str))}</pre>")
    return "".join(parts) + "</body></html>"
