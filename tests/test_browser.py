"""The dashboard served by ``streamlit run`` and loaded in headless Chromium.

Every page must draw its chart with no error shown; the screenshots are kept as test
artifacts in ``test-artifacts/browser/`` (or ``$LAB_TEST_ARTIFACTS/browser``). Without a
Chromium the tests skip, unless ``LAB_REQUIRE_BROWSER=1`` (set by ``.ci/run``) makes that a failure.
"""

import os
import shutil
from pathlib import Path

import pytest

from lab.app import browser

ROOT = Path(__file__).parent.parent
ARTIFACTS = Path(os.environ.get("LAB_TEST_ARTIFACTS", ROOT / "test-artifacts")) / "browser"


@pytest.fixture(scope="module")
def served(demo_runs, prompt_runs, tmp_path_factory):
    """The dashboard over the fixture runs (core grid and two prompt-distillation runs), and a browser tab."""
    if browser.chromium_path() is None:
        message = "no Chromium installed (Debian: apt-get install chromium); .ci/run installs it"
        if os.environ.get("LAB_REQUIRE_BROWSER") == "1":
            pytest.fail(f"LAB_REQUIRE_BROWSER=1 but {message}.")
        pytest.skip(message)
    root = tmp_path_factory.mktemp("browser-runs")
    for source in (demo_runs, prompt_runs):
        shutil.copytree(source, root, dirs_exist_ok=True)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with browser.serve(root) as url, browser.browser_page() as tab:
        yield url, tab


@pytest.mark.parametrize("page", browser.PAGES, ids=lambda p: p.url_path)
def test_every_page_draws_in_chromium_without_errors(served, page):
    url, tab = served
    browser.open_page(tab, url, page)
    tab.screenshot(path=str(ARTIFACTS / f"{page.url_path}.png"), full_page=True)
    assert browser.errors_shown(tab) == []
    if page.chart:
        assert tab.locator(page.chart).count() >= 1


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
    browser.choose(tab, "Colour by", "colour")
    browser.switch_page(tab, pages["similarity"])
    browser.switch_page(tab, pages["geometry"])
    assert tab.get_by_role("combobox", name="Colour by", exact=True).input_value() == "colour"
    assert browser.errors_shown(tab) == []
    assert tab.locator('[data-testid="stAlertContentWarning"]').count() == 0
