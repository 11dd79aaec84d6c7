"""Figures that draw with no network: Altair and plotly output whose JavaScript comes from installed packages.

``enable()`` (called by :func:`lab.lesson.start`) makes every Altair chart and plotly figure shown in a
lesson display offline:

* **Altair** (vega-lite 6, which JupyterLab has no built-in renderer for): a ``text/html`` output holding
  vega, vega-lite and vega-embed inlined from ``vl-convert-python``'s bundle (no CDN), then the chart;
* **plotly**: its own mimetype, which JupyterLab's bundled plotly extension draws offline, plus a
  ``text/html`` fallback (the figure's ``div``) for exported HTML, where :mod:`lab.lessons.export` puts
  plotly.js itself into the page once.

Every figure's HTML is wrapped in ``<div class="lab-figure lab-vega|lab-plotly">`` so a browser test can
count the figures a page should draw.
"""

from __future__ import annotations

import functools
import json
import uuid

RENDERER = "lab-offline"
FIGURE_CLASS = "lab-figure"


@functools.cache
def vega_bundle() -> str:
    """vega + vega-lite + vega-embed as one script (defines ``window.vegaEmbed``), for Altair's vega-lite version."""
    import vl_convert
    from altair.utils._importers import vl_version_for_vl_convert

    return vl_convert.javascript_bundle(vl_version=vl_version_for_vl_convert())


@functools.cache
def plotly_bundle() -> str:
    """plotly.js as a script that defines ``window.Plotly`` (the copy inside the installed plotly package)."""
    from plotly.offline import get_plotlyjs

    return f'<script>window.PlotlyConfig = {{MathJaxConfig: "local"}};</script>\n<script charset="utf-8">{get_plotlyjs()}</script>'


def _script(source: str) -> str:
    # hide an AMD loader (require.js in some pages) so the bundle sets its window globals
    return f"<script>(function (define, module, exports) {{\n{source}\n}}).call(window);</script>"


def vega_html(spec: dict) -> str:
    """A self-contained ``div`` that draws the vega-lite ``spec`` (bundle inlined)."""
    div = f"lab-vega-{uuid.uuid4().hex[:12]}"
    embed = (f"vegaEmbed('#{div}', {json.dumps(spec)}, {{actions: false}})"
             f".catch(function (err) {{ document.getElementById('{div}').textContent = 'Figure error: ' + err; }});")
    return (f'<div class="{FIGURE_CLASS} lab-vega"><div id="{div}"></div>'
            f"{_script(vega_bundle())}<script>{embed}</script></div>")


def altair_renderer(spec: dict, **metadata) -> dict:
    return {"text/html": vega_html(spec)}


def plotly_html(fig_dict: dict) -> str:
    """The figure's ``div`` and the script that draws it; plotly.js must be on the page (export adds it)."""
    import plotly.io as pio

    body = pio.to_html(fig_dict, include_plotlyjs=False, full_html=False, validate=False,
                       config={"displaylogo": False})
    return f'<div class="{FIGURE_CLASS} lab-plotly">{body}</div>'


def _plotly_renderer():
    from plotly.io._base_renderers import MimetypeRenderer

    class OfflineRenderer(MimetypeRenderer):
        def to_mimebundle(self, fig_dict):
            from plotly.io.json import to_json_plotly

            return {"application/vnd.plotly.v1+json": json.loads(to_json_plotly(fig_dict)),
                    "text/html": plotly_html(fig_dict)}

    return OfflineRenderer()


def enable() -> None:
    """Show every Altair chart and plotly figure of this kernel offline (idempotent)."""
    import altair as alt
    import plotly.io as pio

    if RENDERER not in alt.renderers.names():
        alt.renderers.register(RENDERER, altair_renderer)
    alt.renderers.enable(RENDERER)
    if RENDERER not in pio.renderers:
        pio.renderers[RENDERER] = _plotly_renderer()
    pio.renderers.default = RENDERER
