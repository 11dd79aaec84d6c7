"""The dashboard served by ``streamlit run`` and loaded in headless Chromium.

Every page must draw its chart with no error shown; the screenshots are kept as test
artifacts in ``test-artifacts/browser/`` (or ``$LAB_TEST_ARTIFACTS/browser``). Without a
Chromium the tests skip, unless ``LAB_REQUIRE_BROWSER=1`` (set by ``.ci/run``) makes that a failure.
"""

import colorsys
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lab import runs
from lab.app import browser
from lab.train.distill import default_config, distill

ROOT = Path(__file__).parent.parent
ARTIFACTS = Path(os.environ.get("LAB_TEST_ARTIFACTS", ROOT / "test-artifacts")) / "browser"


def need_chromium():
    if browser.chromium_path() is None:
        message = "no Chromium installed (Debian: apt-get install chromium); .ci/run installs it"
        if os.environ.get("LAB_REQUIRE_BROWSER") == "1":
            pytest.fail(f"LAB_REQUIRE_BROWSER=1 but {message}.")
        pytest.skip(message)


def misaligned_copy(source: Path, target: Path) -> None:
    """A copy of a run whose student embeddings are replaced by random unit vectors: a student that aligns
    poorly with its teacher (the case the old maps drew as a tiny streak)."""
    shutil.copytree(source, target)
    with np.load(source / runs.EMBEDDINGS) as stored:
        arrays = {k: stored[k] for k in stored.files}
    rng = np.random.default_rng(0)
    for key in ("student_image", "student_text"):
        noise = rng.normal(size=arrays[key].shape)
        arrays[key] = (noise / np.linalg.norm(noise, axis=1, keepdims=True)).astype(np.float16)
    np.savez(target / runs.EMBEDDINGS, **arrays)


def mixed_sources_table() -> str:
    """A ComKD sweep table whose rows cite two papers' tables (PromptKD's and ComKD-CLIP's), as the real one does."""
    from lab.experiments.grids import GRIDS, paper_number
    from lab.experiments.tables import PROMPT_COLUMNS, csv_table

    records = []
    for i, row in enumerate(GRIDS["comkd"]):
        paper, source = paper_number("comkd", row)
        records.append({"row": row.label, "loss": row.name, "seeds": [0], "paper": paper, "paper_source": source,
                        **{c: (40.0 + i, 0.0) for c in PROMPT_COLUMNS}})
    return csv_table(records, PROMPT_COLUMNS)


@pytest.fixture(scope="module")
def browser_runs(demo_runs, prompt_runs, tmp_path_factory):
    """The fixture runs (core grid, two prompt-distillation runs), a run with snapshots over training, and a
    deliberately misaligned copy of a distilled run."""
    need_chromium()
    root = tmp_path_factory.mktemp("browser-runs")
    for source in (demo_runs, prompt_runs):
        shutil.copytree(source, root, dirs_exist_ok=True)
    misaligned_copy(demo_runs / "fast-kd-crd+icl+fd-s0", root / "misaligned")
    (root / "_tables" / "comkd.csv").write_text(mixed_sources_table())
    distill(default_config(["loss=fd", "data.size=128", "train.steps=10", "train.batch_size=32", "train.warmup=1",
                            "train.log_every=2", "train.eval_every=1", "eval.per_style=32",
                            "eval.probe_per_style=32", "eval.snapshot_items=32"]), "snapshots", root)
    return root


@pytest.fixture(scope="module")
def served(browser_runs):
    """The dashboard over :func:`browser_runs`, and a browser tab."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with browser.serve(browser_runs) as url, browser.browser_page() as tab:
        browser.open_page(tab, url, browser.PAGES[0], timeout_ms=300_000)  # cold server and browser: slow once
        yield url, tab


PAGES = {p.url_path: p for p in browser.PAGES}
MAPS = '[data-testid="stVegaLiteChart"]'


def hue(css_colour: str) -> float:
    r, g, b = (int(v) / 255 for v in css_colour[css_colour.index("(") + 1:css_colour.index(")")].split(",")[:3])
    return 360 * colorsys.rgb_to_hsv(r, g, b)[0]


@pytest.mark.parametrize("page", browser.PAGES, ids=lambda p: p.url_path)
def test_every_page_draws_in_chromium_without_errors(served, page):
    url, tab = served
    browser.open_page(tab, url, page)
    tab.screenshot(path=str(ARTIFACTS / f"{page.url_path}.png"), full_page=True)
    assert browser.errors_shown(tab) == []
    if page.chart:
        assert tab.locator(page.chart).count() >= 1


def test_screenshots_take_pages_that_have_nothing_to_draw_yet(browser_runs, tmp_path):
    """One run, no sweep tables, no prompt runs: `python -m lab screenshots` still writes every page, the
    empty ones saying what to run, instead of waiting a minute for a chart that will not come."""
    one_run = tmp_path / "runs"
    shutil.copytree(browser_runs / "snapshots", one_run / "snapshots")
    # A process of its own: this module's browser is open, and Playwright runs one per thread.
    done = subprocess.run([sys.executable, "-m", "lab", "screenshots", "--runs-dir", str(one_run), "--out",
                           str(tmp_path / "png")], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    written = [Path(line) for line in done.stdout.split()]
    assert {p.stem for p in written} >= {p.url_path for p in browser.PAGES}
    assert all(p.stat().st_size > 0 for p in written)


def test_hovering_a_map_point_shows_its_picture_and_caption(served):
    url, tab = served
    geometry = next(p for p in browser.PAGES if p.url_path == "geometry")
    browser.open_page(tab, url, geometry)
    tooltip = browser.hover_until_tooltip(tab, tab.locator(geometry.chart).first)
    tab.screenshot(path=str(ARTIFACTS / "geometry-hover.png"))
    assert tooltip is not None, "no tooltip appeared anywhere over the teacher's map"
    assert tooltip.locator("img").get_attribute("src").startswith("data:image/webp;base64,")
    assert "caption" in tooltip.inner_text()


def test_overview_opens_a_run_in_the_geometry_page(served):
    url, tab = served
    overview, geometry = (next(p for p in browser.PAGES if p.url_path == name) for name in ("overview", "geometry"))
    browser.open_page(tab, url, overview)
    browser.choose(tab, "Open a run in the other pages", "fast-kd-crd+icl+fd-s1")
    tab.get_by_role("button", name="Embedding geometry →").click()
    browser.wait_until_drawn(tab, geometry)
    assert tab.get_by_role("combobox", name="Run", exact=True).input_value() == "fast-kd-crd+icl+fd-s1"
    assert browser.errors_shown(tab) == []


def test_view_settings_survive_a_visit_to_another_page(served):
    url, tab = served
    pages = {p.url_path: p for p in browser.PAGES}
    browser.open_page(tab, url, pages["geometry"])
    browser.choose(tab, "Colour by", "colour (its real colour)")
    browser.switch_page(tab, pages["similarity"])
    browser.switch_page(tab, pages["geometry"])
    assert tab.get_by_role("combobox", name="Colour by", exact=True).input_value() == "colour (its real colour)"
    assert browser.errors_shown(tab) == []
    warnings = tab.locator('[data-testid="stAlertContentWarning"]')
    assert not any("widget" in warnings.nth(i).inner_text() for i in range(warnings.count()))


def test_a_poorly_aligned_student_is_drawn_as_large_as_the_teacher(served):
    url, tab = served
    browser.open_page(tab, url, PAGES["geometry"])
    browser.choose(tab, "Run", "misaligned")
    teacher, student = (np.array(browser.point_centres(tab.locator(MAPS).nth(i))) for i in (0, 1))
    radius = [np.sqrt(((p - p.mean(axis=0)) ** 2).sum(axis=1).mean()) for p in (teacher, student)]
    tab.screenshot(path=str(ARTIFACTS / "geometry-misaligned.png"))
    assert len(teacher) > 100 and len(student) == len(teacher)
    assert 0.5 < radius[1] / radius[0] < 2, radius


def test_colour_legend_shows_each_colour_in_its_own_hue(served):
    url, tab = served
    browser.open_page(tab, url, PAGES["geometry"])
    browser.choose(tab, "Run", "fast-kd-crd+icl+fd-s0")
    browser.choose(tab, "Colour by", "colour (its real colour)")
    student = tab.locator(MAPS).nth(1)
    for _ in range(300):  # until the legend of the new colouring is drawn
        if browser.legend_fill(student, "purple") is not None:
            break
        tab.wait_for_timeout(100)
    red, purple = (hue(browser.legend_fill(student, name)) for name in ("red", "purple"))
    assert red < 15 or red > 345, red
    assert 260 < purple < 300, purple


def test_protocols_run_picker_matches_the_chart_after_a_protocol_switch(served):
    url, tab = served
    browser.open_page(tab, url, PAGES["protocols"])
    for protocol in ("domain", "base2novel"):
        browser.choose(tab, "Protocol", protocol)
        tab.wait_for_function(f"() => document.querySelector('[data-testid=stPlotlyChart] .gtitle')"
                              f"?.textContent.endsWith('({protocol})')", timeout=60_000)  # the rerun drew
        picked = tab.get_by_role("combobox", name="Run", exact=True).input_value()
        title = tab.locator('[data-testid="stPlotlyChart"] .gtitle').first.text_content()
        assert title.startswith(f"{picked} ({protocol})"), (picked, title)


def test_curve_settings_survive_a_page_round_trip(served):
    url, tab = served
    browser.open_page(tab, url, PAGES["curves"])
    for label, role in (("log y", "checkbox"), ("wall time", "radio")):
        tab.get_by_text(label, exact=True).click()
        for _ in range(300):  # until the widget shows the click (the server's rerun may start late under load)
            if tab.get_by_role(role, name=label).is_checked():
                break
            tab.wait_for_timeout(100)
        tab.wait_for_timeout(1500)  # the server's rerun with the new value starts late under load
        browser._wait_until_idle(tab)
    browser.switch_page(tab, PAGES["overview"])
    browser.switch_page(tab, PAGES["curves"])
    assert tab.get_by_role("checkbox", name="log y").is_checked()
    assert tab.get_by_role("radio", name="wall time").is_checked()
    assert tab.get_by_role("radio", name="step").is_checked() is False


def test_training_evolution_plays_at_least_five_frames(served):
    url, tab = served
    browser.open_page(tab, url, PAGES["geometry"])
    browser.choose(tab, "Run", "snapshots")
    browser.watch_steps(tab)
    tab.get_by_role("button", name="▶ Play").click()  # the play loop shows each of the ten stored steps in turn
    seen = browser.steps_seen(tab, at_least=5)
    assert len(seen) >= 5 and set(seen) <= {str(step) for step in range(1, 11)}, seen


def test_broken_tables_leave_the_ablations_page_up_with_a_warning_naming_them(served, demo_runs, tmp_path):
    _, tab = served
    shutil.copytree(demo_runs / "_tables", tmp_path / "_tables")
    (tmp_path / "_tables" / "empty.csv").write_text("")
    (tmp_path / "_tables" / "half.csv").write_text("row,loss,seeds,hm_mean,hm_std\nno KD,task,0 1,4")
    with browser.serve(tmp_path) as url:  # a second server over these tables, in the same browser tab
        browser.open_page(tab, url, PAGES["ablations"], timeout_ms=180_000)
        tab.screenshot(path=str(ARTIFACTS / "ablations-broken-tables.png"))
        warnings = " ".join(tab.locator('[data-testid="stAlertContentWarning"]').all_inner_texts())
        assert "empty.csv" in warnings and "half.csv" in warnings
        assert tab.locator(PAGES["ablations"].chart).count() >= 1 and browser.errors_shown(tab) == []


def test_at_projector_size_every_pages_main_chart_is_fully_visible(served):
    url, tab = served
    tab.set_viewport_size({"width": 1024, "height": 768})
    try:
        for page in browser.PAGES:
            browser.open_page(tab, url, page)
            tab.screenshot(path=str(ARTIFACTS / f"{page.url_path}-1024x768.png"))
            main = tab.locator(page.chart or '[data-testid="stDataFrame"]')
            for i in range(2 if page.url_path == "geometry" else 1):  # both map panels
                assert browser.fully_visible(tab, main.nth(i)), f"{page.url_path}: chart {i} is not fully on screen"
    finally:
        tab.set_viewport_size({"width": 1500, "height": 1100})


def test_no_picture_misleads_at_projector_size(served):
    """At 1024×768: the Overview's HM-sorted first table holds comparable runs only; an Ablations chart draws one
    paper source; the numbers the Geometry and Protocols pages talk about are on screen without scrolling."""
    from lab.experiments.grids import GRIDS, paper_number

    url, tab = served
    tab.set_viewport_size({"width": 1024, "height": 768})
    frames = '[data-testid="stDataFrame"]'
    try:
        browser.open_page(tab, url, PAGES["overview"])
        tables = tab.locator(frames)
        assert tables.count() == 3  # CLIP zero-shot, base → novel, style shift
        first = [row[0] for row in browser.first_rows(tables.first, 3)]
        assert len(first) == 3 and not any(r in ("b2n", "domain") for r in first), first
        assert browser.columns_in_view(tables.first)[:2] == ["run", "HM"]

        browser.open_page(tab, url, PAGES["ablations"])
        browser.choose(tab, "Sweep", "comkd")
        tab.wait_for_timeout(500)
        browser._wait_until_idle(tab)
        (paper,) = [t for t in browser.plotly_traces(tab.locator('[data-testid="stPlotlyChart"]').first)
                    if t["name"].startswith("paper")]
        cited = {paper_number("comkd", row)[1] for row, y in zip(GRIDS["comkd"], paper["y"]) if y is not None}
        assert len(cited) == 1 and paper["name"] == f"paper ({cited.pop()})", paper

        browser.open_page(tab, url, PAGES["geometry"])
        metrics, changed, teacher_nn, student_nn = (tab.locator(frames).nth(i) for i in range(4))
        assert {"metric", "this run", "teacher"} <= set(browser.columns_in_view(metrics))
        assert "kNN agreement" in browser.columns_in_view(changed)
        assert all("in both" in browser.columns_in_view(t) for t in (teacher_nn, student_nn))

        browser.open_page(tab, url, PAGES["protocols"])
        scores = set(browser.columns_in_view(tab.locator(frames).first))
        assert {"student HM", "tuned teacher HM", "student 0-shot HM", "teacher 0-shot HM"} <= scores, scores
        tab.screenshot(path=str(ARTIFACTS / "protocols-1024x768-columns.png"))
    finally:
        tab.set_viewport_size({"width": 1500, "height": 1100})


def test_a_copied_link_opens_the_same_view_in_a_fresh_browser(served):
    """A view's settings live in its URL: the link opens the same run, colouring and projection in a new browser
    context (no shared session); a link to a given item and training step shows them; a bad link names what it
    could not find and opens the page's default."""
    url, tab = served
    browser.open_page(tab, url, PAGES["geometry"])
    browser.choose(tab, "Run", "fast-kd-crd+icl+fd-s1")
    browser.choose(tab, "Colour by", "colour (its real colour)")
    tab.wait_for_function("() => location.search.includes('colour=colour')", timeout=60_000)
    link = tab.url
    assert "run=fast-kd-crd%2Bicl%2Bfd-s1" in link or "run=fast-kd-crd+icl+fd-s1" in link, link
    fresh = tab.context.browser.new_context(viewport={"width": 1500, "height": 1100})
    try:
        other = fresh.new_page()
        other.goto(link)
        browser.wait_until_drawn(other, PAGES["geometry"])
        for label, value in (("Run", "fast-kd-crd+icl+fd-s1"), ("Colour by", "colour (its real colour)"),
                             ("Projection", "PCA")):
            assert other.get_by_role("combobox", name=label, exact=True).input_value() == value, label
        other.goto(f"{url}/geometry?run=snapshots&step=4&item=3")
        browser.wait_until_drawn(other, PAGES["geometry"])
        other.get_by_text("Step 4 of 10", exact=False).first.wait_for(timeout=60_000)
        assert "(item 3)" in other.get_by_role("combobox", name="Nearest neighbours of").input_value()
        other.goto(f"{url}/geometry?run=no-such-run")
        browser.wait_until_drawn(other, PAGES["geometry"])
        warnings = " ".join(other.locator('[data-testid="stAlertContentWarning"]').all_inner_texts())
        assert "no-such-run" in warnings and "not here" in warnings, warnings
        other.screenshot(path=str(ARTIFACTS / "geometry-bad-link.png"))
    finally:
        fresh.close()
