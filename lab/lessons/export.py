"""Executed lessons as self-contained HTML: read a lesson with its figures before (or without) running it.

nbconvert's ``lab`` template, plus plotly.js put into the page once (the Altair charts carry their own
vega bundle, :mod:`lab.lessons.offline`), and without the template's require.js from a CDN. Equations are
typeset by MathJax when the page can reach its CDN; offline they show as TeX source.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

import nbformat

from lab.lessons import offline

REQUIRE_JS = re.compile(r'<script src="https://cdnjs\.cloudflare\.com/ajax/libs/require\.js/[^"]*"></script>\n?')


def notebook_html(notebook) -> str:
    """One executed notebook as an HTML page that draws every figure with no network."""
    from nbconvert import HTMLExporter

    notebook = copy.deepcopy(notebook)
    notebook.metadata.pop("widgets", None)  # the sliders' state: static HTML cannot run them (and would load a CDN)
    body, _ = HTMLExporter(template_name="lab").from_notebook_node(notebook)
    body = REQUIRE_JS.sub("", body)
    if "lab-plotly" in body:
        body = body.replace("</head>", offline.plotly_bundle() + "\n</head>", 1)
    return body


def export(paths: list[Path], out: Path) -> list[Path]:
    """Write ``out/NAME.html`` for each executed notebook in ``paths``; returns the pages written."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for path in paths:
        page = out / f"{Path(path).stem}.html"
        page.write_text(notebook_html(nbformat.read(path, as_version=4)), encoding="utf-8")
        written.append(page)
    return written
