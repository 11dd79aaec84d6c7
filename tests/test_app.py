"""The dashboard under Streamlit's headless AppTest, against fixture run directories."""

import json
import shutil
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).parent.parent
PAGES = ("overview", "geometry", "similarity", "ablations", "curves", "protocols")


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
    from lab.grids import GRIDS, paper_number
    from lab.tables import PROMPT_COLUMNS, TABLES_DIR, csv_table

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


@pytest.fixture(scope="module")
def prompt_runs(smoke_run, tmp_path_factory):
    """Two seconds-long prompt-distillation runs: base-to-novel and domain shift."""
    from lab.train.prompt_distill import default_config, prompt_distill

    root = tmp_path_factory.mktemp("prompt-runs")
    quick = [f"student={smoke_run}", "stage1.steps=2", "stage1.shots=2", "stage1.batch_size=32", "train.steps=2",
             "train.batch_size=16", "data.size=32", "eval.per_style=16"]
    prompt_distill(default_config([*quick, "method=comkd"]), "b2n", root)
    prompt_distill(default_config([*quick, "method=promptkd", "protocol=domain"]), "domain", root)
    return root


@pytest.mark.parametrize("protocol, bars", [("base2novel", ["base", "novel", "hm"]),
                                            ("domain", ["plain", "textured", "sketch", "noisy"])])
def test_protocols_page_shows_each_protocol(prompt_runs, protocol, bars):
    at = run_page("protocols", prompt_runs)
    at.sidebar.selectbox(key="protocol").select(protocol).run()
    assert not at.exception
    table = at.dataframe[0].value
    column = "distilled student top1" if protocol == "domain" else "distilled student hm"
    assert len(table) == 1 and table[column].notna().all()
    figure = at.get("plotly_chart")[0].proto.spec
    assert all(f'"{bar}"' in figure for bar in bars) and "distilled student" in figure


def test_geometry_page_draws_tsne_and_keeps_it_with_the_run(demo_runs):
    at = run_page("geometry", demo_runs)
    projection = next(box for box in at.selectbox if box.label == "Projection")
    slider = next(s for s in at.slider if s.label == "Items")
    slider.set_value(200)
    projection.select("tsne").run()
    assert not at.exception
    assert len(at.get("plotly_chart")) == 1
    assert list(demo_runs.glob("*/projections/tsne-200-both.npz"))
