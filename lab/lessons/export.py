"""Executed lessons as self-contained HTML: read a lesson with its figures before (or without) running it.

nbconvert's ``lab`` template, plus plotly.js put into the page once (the Altair charts carry their own
vega bundle, :mod:`lab.lessons.offline`), and without the template's require.js from a CDN. Equations are
typeset by MathJax 2 from the ``mathjax/`` folder written beside the pages (the static files the
``jupyter-server-mathjax`` package ships, in their STIX-Web font: the only one it ships), so a page needs no
network for its figures or its maths.
"""

from __future__ import annotations

import copy
import re
import shutil
from pathlib import Path

import nbformat

from lab.lessons import offline

MATHJAX_DIR = "mathjax"  # beside the exported pages
MATHJAX_URL = f"{MATHJAX_DIR}/MathJax.js?config=TeX-AMS-MML_HTMLorMML-full,Safe"
# jupyter-server-mathjax ships MathJax 2's STIX-Web fonts only: without this, MathJax asks for its default TeX
# fonts (fonts/TeX/fontdata.js, a 404 offline) and falls back to a small, wrong font
MATHJAX_FONT = ('<script type="text/x-mathjax-config">MathJax.Hub.Config({"HTML-CSS": {availableFonts: ["STIX-Web"], '
                'preferredFont: "STIX-Web", webFont: "STIX-Web", imageFont: null}});</script>\n')
REQUIRE_JS = re.compile(r'<script src="https://cdnjs\.cloudflare\.com/ajax/libs/require\.js/[^"]*"></script>\n?')


def copy_mathjax(out: Path) -> Path:
    """MathJax 2's static files in ``out/mathjax/`` (about 10 MB, copied once), for pages exported into ``out``."""
    import jupyter_server_mathjax

    target = Path(out) / MATHJAX_DIR
    if not (target / "MathJax.js").is_file():
        shutil.copytree(Path(jupyter_server_mathjax.__file__).parent / "static", target, dirs_exist_ok=True)
    return target


def notebook_html(notebook) -> str:
    """One executed notebook as an HTML page that draws every figure with no network; its equations need
    :func:`copy_mathjax` into the page's folder."""
    from nbconvert import HTMLExporter

    notebook = copy.deepcopy(notebook)
    notebook.metadata.pop("widgets", None)  # the sliders' state: static HTML cannot run them (and would load a CDN)
    body, _ = HTMLExporter(template_name="lab", mathjax_url=MATHJAX_URL).from_notebook_node(notebook)
    body = REQUIRE_JS.sub("", body)
    body = body.replace("<!-- Load mathjax -->", MATHJAX_FONT + "<!-- Load mathjax -->", 1)
    if "lab-plotly" in body:
        body = body.replace("</head>", offline.plotly_bundle() + "\n</head>", 1)
    return body


def export(paths: list[Path], out: Path) -> list[Path]:
    """Write ``out/NAME.html`` for each executed notebook in ``paths``; returns the pages written."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    copy_mathjax(out)
    written = []
    for path in paths:
        page = out / f"{Path(path).stem}.html"
        page.write_text(notebook_html(nbformat.read(path, as_version=4)), encoding="utf-8")
        written.append(page)
    return written
