"""The dashboard in a real browser: serve ``app.py`` and drive headless Chromium through its pages.

Shared by the browser test (every page renders its charts, no error shown, screenshots
kept) and ``python -m lab bench --dashboard`` (how long switching pages and runs takes).
Needs Debian's ``chromium`` (``apt-get install chromium``) and the ``playwright`` package,
which drives that browser (no browser download).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from lab.app.pages import TITLES
from lab.errors import LabError

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                  "--no-first-run", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync")


@dataclass(frozen=True)
class DashboardPage:
    title: str  # the navigation label and the page's heading
    url_path: str
    chart: str | None  # CSS selector of a drawn chart the page must show, None for table-only pages


# The chart selectors match what plotly and Vega draw, so they appear only once a chart has rendered.
PLOTLY = '[data-testid="stPlotlyChart"] .main-svg'
VEGA = '[data-testid="stVegaLiteChart"] canvas, [data-testid="stVegaLiteChart"] svg.marks'
CHARTS = {"overview": None, "geometry": VEGA, "similarity": PLOTLY, "ablations": PLOTLY, "curves": PLOTLY,
          "protocols": PLOTLY, "divergence": VEGA, "workbench": None}
PAGES = tuple(DashboardPage(TITLES[path], path, CHARTS[path]) for path in TITLES)
HEADINGS = {"Overview": "Runs"}  # pages whose heading differs from their navigation label
ERRORS = '[data-testid="stException"], [data-testid="stAlertContentError"]'
NOTHING_YET = '[data-testid="stAlertContentInfo"]'  # how a page says it has nothing to draw yet ("No sweep tables …")
CHART_FRAMES = '[data-testid="stPlotlyChart"], [data-testid="stVegaLiteChart"]'


def chromium_path() -> str | None:
    """The system Chromium, if installed."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def healthy(url: str) -> bool:
    """Whether a Streamlit server answers at ``url`` (its ``/_stcore/health`` endpoint)."""
    try:
        with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as answer:
            return answer.status == 200
    except OSError:
        return False


@contextmanager
def serve(runs_dir: str | Path, timeout: float = 60.0):
    """``streamlit run app.py`` on a free localhost port, reading ``runs_dir``; yields its base URL."""
    port = _free_port()
    env = {**os.environ, "LAB_RUNS_DIR": str(runs_dir), "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"), "--server.headless", "true",
               "--server.address", "127.0.0.1", "--server.port", str(port), "--browser.gatherUsageStats", "false",
               "--server.fileWatcherType", "none"]
    server = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while not healthy(url):
            if server.poll() is not None or time.monotonic() > deadline:
                output = server.stdout.read().decode(errors="replace") if server.poll() is not None else ""
                raise LabError(f"The dashboard server did not start within {timeout:.0f} s. {output[-2000:]}")
            time.sleep(0.2)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()


@contextmanager
def browser_page(width: int = 1500, height: int = 1100):
    """A fresh headless Chromium tab (system Chromium, driven by playwright)."""
    from playwright.sync_api import sync_playwright

    executable = chromium_path()
    if executable is None:
        raise LabError("No Chromium found; install it (Debian: apt-get install chromium) to test the dashboard "
                       "in a browser.")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=list(CHROMIUM_FLAGS))
        try:
            yield browser.new_page(viewport={"width": width, "height": height})
        finally:
            browser.close()


def wait_until_drawn(tab, page: DashboardPage, timeout_ms: int = 60_000, nothing_ok: bool = False) -> None:
    """Wait until the page shows its heading, has finished running, and has drawn its chart — or, with
    ``nothing_ok``, says it has nothing to draw yet (then any chart it does show is waited for too)."""
    heading = HEADINGS.get(page.title, page.title)
    tab.get_by_role("heading", name=heading, exact=True).first.wait_for(timeout=timeout_ms)
    drawn = page.chart or '[data-testid="stDataFrame"]'
    tab.locator(f'{drawn}, {ERRORS}' + (f', {NOTHING_YET}' if nothing_ok else '')).first.wait_for(
        state="visible", timeout=timeout_ms)
    shown = errors_shown(tab)
    if shown:
        raise LabError(f"The {page.title} page shows an error: {shown[0][:1000]}")
    _wait_until_idle(tab, timeout_ms)
    if nothing_ok and page.chart and tab.locator(CHART_FRAMES).count():
        tab.locator(page.chart).first.wait_for(state="visible", timeout=timeout_ms)


def _wait_until_idle(tab, timeout_ms: int = 60_000) -> None:
    """Wait until Streamlit's "running" indicator is gone."""
    tab.wait_for_timeout(100)  # a click's rerun takes a moment to show the indicator
    tab.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=timeout_ms)


def errors_shown(tab) -> list[str]:
    """Texts of the exceptions and error boxes the page shows."""
    boxes = tab.locator(ERRORS)
    return [boxes.nth(i).inner_text() for i in range(boxes.count())]


def open_page(tab, base_url: str, page: DashboardPage, timeout_ms: int = 60_000, nothing_ok: bool = False) -> float:
    """Load ``page`` by its URL (a fresh session); returns the seconds until it was drawn."""
    started = time.perf_counter()
    tab.goto(f"{base_url}/{'' if page.url_path == 'overview' else page.url_path}")  # the default page is at /
    wait_until_drawn(tab, page, timeout_ms, nothing_ok)
    return time.perf_counter() - started


def switch_page(tab, page: DashboardPage) -> float:
    """Click ``page`` in the sidebar navigation; returns the seconds until it was drawn."""
    started = time.perf_counter()
    tab.locator('[data-testid="stSidebarNav"]').get_by_text(page.title, exact=True).click()
    wait_until_drawn(tab, page)
    return time.perf_counter() - started


def choose(tab, label: str, option: str) -> None:
    """Pick ``option`` in the selectbox labelled ``label`` and wait for the page to rerun."""
    tab.get_by_role("combobox", name=label, exact=True).click()
    tab.get_by_role("option", name=option, exact=True).click()
    _wait_until_idle(tab)


def hover_until_tooltip(tab, chart, panel_share: float = 0.45, steps: int = 18):
    """Move the mouse over a grid covering the chart's left ``panel_share`` until a Vega tooltip with a
    picture shows; returns that tooltip, or None."""
    box = chart.bounding_box()
    tooltip = tab.locator("#vg-tooltip-element.visible")
    for i in range(1, steps):
        for j in range(1, steps):
            tab.mouse.move(box["x"] + box["width"] * panel_share * i / steps, box["y"] + box["height"] * j / steps)
            if tooltip.locator("img").count():
                return tooltip
    return None


def timed_choice(tab, label: str, option: str) -> float:
    """:func:`choose`, timed from the click to the page idle again."""
    started = time.perf_counter()
    choose(tab, label, option)
    return time.perf_counter() - started


def slide_to_end(tab, label: str) -> None:
    """Move the slider labelled ``label`` to its largest value (keyboard End) and wait for the rerun."""
    slider = tab.get_by_role("slider", name=label)
    slider.focus()
    slider.press("End")
    _wait_until_idle(tab)


POINT_CENTRES = """el => Array.from(el.querySelectorAll('g.mark-symbol.role-mark path')).map(p => {
    const r = p.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; })"""
LEGEND_FILL = """(el, label) => {
    for (const text of el.querySelectorAll('g.role-legend text')) {
        if (text.textContent.trim() !== label) continue;
        const entry = text.closest('g.role-legend-label').parentElement;  // one entry: its symbol and label
        const symbol = entry.querySelector('g.role-legend-symbol path');
        if (symbol) return getComputedStyle(symbol).fill || symbol.getAttribute('fill');
    }
    return null; }"""


def point_centres(chart) -> list[tuple[float, float]]:
    """Screen positions of the point marks of an SVG-rendered Vega chart (``chart``: a locator)."""
    return [tuple(p) for p in chart.evaluate(POINT_CENTRES)]


def legend_fill(chart, label: str) -> str | None:
    """The fill colour (``rgb(r, g, b)``) of the legend symbol labelled ``label`` in an SVG Vega chart."""
    return chart.evaluate(LEGEND_FILL, label)


SEEN_STEPS = """() => { window.seenSteps = new Set(); window.stepWatcher = setInterval(() => {
    for (const p of document.querySelectorAll('p')) {
        const m = /^Step (\\d+) of/.exec(p.textContent.trim()); if (m) window.seenSteps.add(m[1]); } }, 25); }"""


def watch_steps(tab) -> None:
    """Start recording every "Step N of …" line the page shows (the training-evolution view's frames)."""
    tab.evaluate(SEEN_STEPS)


def steps_seen(tab, at_least: int, timeout_ms: int = 60_000) -> list[str]:
    """The steps recorded since :func:`watch_steps`, once ``at_least`` were seen or ``timeout_ms`` passed."""
    try:
        tab.wait_for_function(f"() => window.seenSteps.size >= {at_least}", timeout=timeout_ms)
    except Exception:  # playwright's TimeoutError: return what was seen, for the test's message
        pass
    return tab.evaluate("() => Array.from(window.seenSteps)")


def fully_visible(tab, locator) -> bool:
    """Whether the element lies wholly inside the browser's viewport (no scrolling needed to see it)."""
    box, view = locator.bounding_box(), tab.viewport_size
    return (box is not None and box["x"] >= 0 and box["y"] >= 0 and box["x"] + box["width"] <= view["width"] + 1
            and box["y"] + box["height"] <= view["height"] + 1)


COLUMNS_IN_VIEW = """el => {
    const heads = [...el.querySelectorAll('th[role=columnheader]')];
    const view = document.documentElement.clientWidth, grid = el.getBoundingClientRect();
    const scroller = el.querySelector('.dvn-scroller');
    const sideways = scroller && scroller.scrollWidth > scroller.clientWidth + 1;
    // the grid renders a header cell for each column of its visible range; when it scrolls sideways the last
    // one may be cut, so only the others count as seen
    const seen = heads.map(th => th.textContent);
    return (grid.right <= view + 1 && grid.left >= 0) ? (sideways ? seen.slice(0, -1) : seen) : []; }"""
FIRST_CELLS = """(el, n) => [...el.querySelectorAll('tbody tr')].slice(0, n).map(
    tr => [...tr.querySelectorAll('td')].map(td => td.textContent))"""


def columns_in_view(table) -> list[str]:
    """The column titles of a dataframe (``table``: a locator of ``stDataFrame``) seen whole without scrolling
    the page or the table sideways."""
    table.locator("th[role=columnheader]").first.wait_for(state="attached", timeout=30_000)
    return table.evaluate(COLUMNS_IN_VIEW)


def first_rows(table, n: int = 3) -> list[list[str]]:
    """The texts of the first ``n`` rows of a dataframe as drawn (its sort applied)."""
    table.locator("tbody tr").first.wait_for(state="attached", timeout=30_000)
    return table.evaluate(FIRST_CELLS, n)


def plotly_traces(chart) -> list[dict]:
    """The traces a plotly chart drew (``chart``: a locator of ``stPlotlyChart``): name and y values."""
    return chart.evaluate("el => el.querySelector('.js-plotly-plot').data.map(t => ({name: t.name, y: t.y}))")


def screenshots(runs_dir: str | Path, out_dir: str | Path) -> list[Path]:
    """A PNG of every dashboard page over ``runs_dir`` (plus the Geometry page with a tooltip), in ``out_dir``;
    a page with nothing to draw yet (no sweep tables, no prompt runs) is taken as it says so."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    with serve(runs_dir) as url, browser_page() as tab:
        for page in PAGES:
            open_page(tab, url, page, nothing_ok=True)
            written.append(out / f"{page.url_path}.png")
            tab.screenshot(path=str(written[-1]), full_page=True)
            maps = tab.locator(page.chart) if page.url_path == "geometry" else None
            if maps is not None and maps.count() and hover_until_tooltip(tab, maps.first):
                written.append(out / "geometry-hover.png")
                tab.screenshot(path=str(written[-1]))
    return written
