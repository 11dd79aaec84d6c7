"""The dashboard under Streamlit's headless AppTest, against fixture run directories."""

import json
import shutil
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).parent.parent
PAGES = ("overview", "geometry", "similarity", "ablations", "curves")


@pytest.fixture(autouse=True)
def importable_lab(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT))  # scripts AppTest runs must import lab like `streamlit run` does


def run_page(page, runs_dir):
    at = AppTest.from_string(f"from lab.app import {page}\n{page}.page()", default_timeout=60)
    at.session_state["runs_dir"] = str(runs_dir)
    return at.run()


def test_app_entry_point_runs(tmp_path):
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.session_state["runs_dir"] = str(tmp_path)
    at.run()
    assert not at.exception
    assert any("make demo" in info.value for info in at.info)


@pytest.mark.parametrize("page", PAGES)
def test_every_page_without_runs_says_how_to_make_them(page, tmp_path):
    at = run_page(page, tmp_path)
    assert not at.exception
    assert any(("make demo" in i.value) or ("python -m lab sweep" in i.value) for i in at.info)


@pytest.mark.parametrize("page", ["geometry", "similarity", "ablations", "curves"])
def test_every_page_draws_from_fixture_runs(page, demo_runs):
    at = run_page(page, demo_runs)
    assert not at.exception
    assert len(at.get("plotly_chart")) >= 1


def test_overview_lists_runs_and_broken_ones(tmp_path, smoke_run):
    shutil.copytree(smoke_run, tmp_path / "good")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{not json")
    at = run_page("overview", tmp_path)
    assert not at.exception
    table = at.dataframe[0].value
    assert list(table["run"]) == ["good"]
    assert table["top1"].iloc[0] == pytest.approx(json.loads((smoke_run / "summary.json").read_text())["top1"])
    assert any("broken" in w.value and "config.json is not valid JSON" in w.value for w in at.warning)


def test_ablations_page_shows_a_prompt_grid_table_with_its_paper_column(tmp_path):
    from lab.sweep import GRIDS, PROMPT_COLUMNS, TABLES_DIR, csv_table, paper_number

    records = []
    for i, row in enumerate(GRIDS["comkd"]):
        paper, source = paper_number("comkd", row)
        records.append({"row": row.label, "loss": row.name, "seeds": [0], "paper": paper, "paper_source": source,
                        **{c: (40.0 + i, 0.0) for c in PROMPT_COLUMNS}})
    (tmp_path / TABLES_DIR).mkdir()
    (tmp_path / TABLES_DIR / "comkd.csv").write_text(csv_table(records, PROMPT_COLUMNS))
    at = run_page("ablations", tmp_path)
    assert not at.exception
    metric = next(box for box in at.selectbox if box.label == "Metric")
    assert metric.options[0] == "student (the protocol's metric)"
    table = at.dataframe[0].value
    assert table.loc[table["row"] == "PromptKD", "paper"].iloc[0] == 83.73
