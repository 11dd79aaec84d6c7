"""The dashboard under Streamlit's headless AppTest, against fixture run directories."""

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).parent.parent
PAGES = ("overview", "geometry", "similarity", "ablations", "curves", "protocols", "divergence", "workbench")


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


CHARTS = {"geometry": "vega_lite_chart", "similarity": "plotly_chart", "ablations": "plotly_chart",
          "curves": "plotly_chart", "divergence": "vega_lite_chart"}


@pytest.mark.parametrize("page", list(CHARTS))
def test_every_page_draws_from_fixture_runs(page, demo_runs):
    at = run_page(page, demo_runs)
    assert not at.exception
    assert len(at.get(CHARTS[page])) >= 1


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
    from lab.experiments.grids import GRIDS, paper_number
    from lab.experiments.tables import PROMPT_COLUMNS, TABLES_DIR, csv_table

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


def test_ablations_page_shows_the_weights_tune_chose(tmp_path):
    """A `python -m lab tune` record (and no sweep table) is shown: chosen vs default weights, the candidates'
    validation scores, and the test set's numbers at both."""
    from lab.experiments.tables import TABLES_DIR

    record = {"grid": "clipkd", "seeds": 3, "scale": "full", "select_by": "val/hm", "rows": [
        {"row": "GD", "weights": {"gd": 0.5}, "default_weights": {"gd": 1.0}, "val_hm": 37.5,
         "test_hm_tuned": [37.1, 2.2], "test_hm_default": [36.7, 2.3], "gap_closed_tuned": [6.0, 3.0],
         "gap_closed_default": [float("nan"), float("nan")],
         "searched": [{"term": "gd", "chosen": 0.5, "candidates": [{"weight": 0.5, "val_hm": 37.5},
                                                                   {"weight": 1.0, "val_hm": None}]}]}]}
    (tmp_path / TABLES_DIR).mkdir()
    (tmp_path / TABLES_DIR / "tune-clipkd.json").write_text(json.dumps(record))
    (tmp_path / TABLES_DIR / "demo-tune-cliprd.json").write_text("{}")
    at = run_page("ablations", tmp_path)
    assert not at.exception
    assert any("python -m lab sweep" in i.value for i in at.info)  # no sweep table yet: says how to make one
    assert any("demo-tune-cliprd.json" in w.value and "not a tuning record" in w.value for w in at.warning)
    row = at.dataframe[0].value.iloc[0]
    assert (row["chosen weights"], row["default weights"]) == ("gd=0.5", "gd=1")
    assert row["searched (validation)"] == "gd: 0.5 (37.5) · 1 (—)" and row["metric"] == "hm"
    assert (row["test, chosen"], row["test, default"], row["gap closed %, default"]) == \
        ("37.1 ± 2.2", "36.7 ± 2.3", "—")
    (search,) = at.get("plotly_chart")  # every weight tried, at its validation score; an unscored one left out
    trace = json.loads(search.proto.spec)["data"][0]
    assert trace["name"] == "GD" and trace["x"] == [0.5] and trace["y"] == [37.5]


@pytest.mark.parametrize("protocol, bars", [("base2novel", ["base", "novel", "hm"]),
                                            ("domain", ["plain", "textured", "sketch", "noisy"])])
def test_protocols_page_shows_each_protocol(prompt_runs, protocol, bars):
    at = run_page("protocols", prompt_runs)
    at.sidebar.selectbox(key="protocol").select(protocol).run()
    assert not at.exception
    table = at.dataframe[0].value
    column = "student shifted top-1" if protocol == "domain" else "student HM"
    assert len(table) == 1 and table[column].notna().all()
    figure = at.get("plotly_chart")[0].proto.spec
    assert all(f'"{bar}"' in figure for bar in bars) and "distilled student" in figure


@pytest.mark.parametrize("method", ["tsne", "umap"])
def test_geometry_page_draws_each_projection_and_keeps_it_with_the_run(demo_runs, method):
    at = run_page("geometry", demo_runs)
    projection = next(box for box in at.selectbox if box.label == "Projection")
    slider = next(s for s in at.select_slider if s.label == "Items")
    slider.set_value(200)
    projection.select(method).run(timeout=600)  # UMAP compiles with numba on first use: slow in a fresh venv
    assert not at.exception
    teacher, student = (json.loads(chart.proto.spec) for chart in at.get("vega_lite_chart")[:2])
    assert teacher["title"][0] == "teacher" and student["title"][0] == "student (rotated onto the teacher)"
    assert student["title"][1].startswith("Procrustes scale")  # the alignment as numbers, not as shrinkage
    tooltip = [t["field"] for t in teacher["encoding"]["tooltip"]]
    assert tooltip[:2] == ["image", "caption"]  # hover: the item's picture, then its caption
    assert list(demo_runs.glob(f"*/projections/{method}-200-both.npz"))


def test_overview_filters_runs_and_links_a_selected_run_to_its_pages(demo_runs):
    at = run_page("overview", demo_runs)
    everything = at.dataframe[0].value
    at.text_input[0].input("nokd").run()
    assert not at.exception
    shown = at.dataframe[0].value
    assert 0 < len(shown) < len(everything) and shown["run"].str.contains("nokd").all()
    at.selectbox(key="overview_open").select(shown["run"].iloc[0]).run()
    assert [b.label for b in at.button] == ["Embedding geometry →", "Similarity matrices →", "Student vs teacher →",
                                            "Training curves →"]


def test_overview_ranks_each_task_in_its_own_table(demo_runs, prompt_runs, tmp_path):
    """CLIP zero-shot runs and each prompt protocol are separate tables, each sorted by HM: a colour-only label
    space's 100 % never tops a column of CLIP runs."""
    for source in (demo_runs, prompt_runs):
        shutil.copytree(source, tmp_path, dirs_exist_ok=True)
    at = run_page("overview", tmp_path)
    assert not at.exception
    tables = [d.value for d in at.dataframe]
    assert len(tables) == 3  # CLIP zero-shot, base → novel, style shift
    assert tables[0]["kind"].isin(["pretrain", "distill"]).all()  # trained CLIP students: one task
    assert all((t["kind"] == "promptkd").all() and len(t) == 1 for t in tables[1:])
    hm = tables[0]["hm"].tolist()
    assert hm == sorted(hm, reverse=True)
    captions = " ".join(c.value for c in at.caption)
    assert "base: the classes the teacher was tuned on" in captions and "the style it was distilled on" in captions


def test_a_demo_that_stopped_is_said_to_have_stopped(tmp_path, smoke_run):
    import time

    shutil.copytree(smoke_run, tmp_path / "good")
    (tmp_path / "_demo").mkdir()
    progress = {"total": 39, "done": 3, "current": "demo-kd-fd-s0", "eta_s": 600, "finished": False,
                "updated": time.time() - 3600}
    (tmp_path / "_demo" / "progress.json").write_text(json.dumps(progress))
    at = run_page("overview", tmp_path)
    assert not at.exception
    assert any("demo training stopped" in w.value and "60 min" in w.value for w in at.warning)
    assert not any("min left" in str(p.proto) for p in at.get("progress"))
    progress["updated"] = time.time()  # alive: the bar and its ETA
    (tmp_path / "_demo" / "progress.json").write_text(json.dumps(progress))
    at = run_page("overview", tmp_path)
    assert any("about 10 min left" in str(p.proto) for p in at.get("progress"))


def test_ablations_draw_one_paper_source_per_axis(tmp_path):
    """ComKD's grid cites PromptKD's table for one row and ComKD-CLIP's for the others: the chart's paper axis
    carries one source's rows only, and each source gets its own ρ, named."""
    from lab.experiments.grids import GRIDS, paper_number
    from lab.experiments.tables import PROMPT_COLUMNS, TABLES_DIR, csv_table

    records = []
    for i, row in enumerate(GRIDS["comkd"]):
        paper, source = paper_number("comkd", row)
        records.append({"row": row.label, "loss": row.name, "seeds": [0], "paper": paper, "paper_source": source,
                        **{c: (40.0 + i, 0.0) for c in PROMPT_COLUMNS}})
    from lab.app.ablations import protocols_of

    protocols = protocols_of("comkd", pd.DataFrame({"row": [r["row"] for r in records]}))
    records = [r for r, protocol in zip(records, protocols) if protocol == "base2novel"]  # the page's first protocol
    sources = {r["paper_source"] for r in records if r["paper"] is not None}
    assert len(sources) >= 2  # the case the chart used to mix
    (tmp_path / TABLES_DIR).mkdir()
    (tmp_path / TABLES_DIR / "comkd.csv").write_text(csv_table(records, PROMPT_COLUMNS))
    at = run_page("ablations", tmp_path)
    assert not at.exception
    figure = json.loads(at.get("plotly_chart")[0].proto.spec)
    paper = next(t for t in figure["data"] if t["name"].startswith("paper"))
    drawn = {r["paper_source"] for r, v in zip(records, paper["y"]) if v is not None}
    assert len(drawn) == 1 and paper["name"] == f"paper ({drawn.pop()})"
    caption = " ".join(c.value for c in at.caption)
    assert all(s in caption for s in sources)
    lab_axis, paper_axis = figure["layout"]["yaxis"]["range"], figure["layout"]["yaxis2"]["range"]
    assert lab_axis[0] > 30 and paper_axis[0] > 0  # each axis spans its data, neither starts at 0


def test_runs_workbench_groups_seeds_as_the_sweep_table_does(demo_runs, tmp_path):
    """Grouped mean ± std equal the sweep table's for the same rows; a config diff lists exactly the setting
    changed; the parallel coordinates draw one line per run."""
    from lab import runs
    from lab.app import workbench
    from lab.experiments.grids import run_id
    from lab.experiments.grids import grid_rows
    from lab.experiments.tables import collect

    found = [r for r in runs.list_runs(demo_runs) if r.complete]
    frame = workbench.runs_frame(found)
    groups = workbench.grouped(frame)
    for row, record in zip(grid_rows("core"), collect("core", 2, demo_runs, "fast")):
        group = groups[groups["runs"].str.split(", ").apply(lambda ids: run_id(row, 0, "fast") in ids)].iloc[0]
        assert group["n seeds"] == len(record["seeds"]) == 2
        assert (group["HM mean"], group["HM std"]) == pytest.approx(record["hm"])
    source = found[0].path
    shutil.copytree(source, tmp_path / "changed")
    config = json.loads((source / "config.json").read_text())
    config["config"]["train"]["lr"] = config["config"]["train"]["lr"] * 2
    (tmp_path / "changed" / "config.json").write_text(json.dumps(config))
    diff = workbench.config_diff(found[0], runs.read_run(tmp_path / "changed"))
    assert diff["setting"].tolist() == ["train.lr"]
    figure = workbench.parallel(frame, found)
    assert all(len(d.values) == len(found) for d in figure.data[0].dimensions)
    at = run_page("workbench", demo_runs)
    assert not at.exception and len(at.dataframe) >= 2
