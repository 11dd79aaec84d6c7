"""The dashboard under Streamlit's headless AppTest, against fixture run directories."""

import json
import shutil
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).parent.parent / "app.py")


def run_app(runs_dir):
    at = AppTest.from_file(APP, default_timeout=60)
    at.session_state["runs_dir"] = str(runs_dir)
    return at.run()


def test_empty_runs_directory_says_how_to_make_runs(tmp_path):
    at = run_app(tmp_path)
    assert not at.exception
    assert any("make demo" in info.value for info in at.info)


def test_overview_lists_runs_and_broken_ones(tmp_path, smoke_run):
    shutil.copytree(smoke_run, tmp_path / "good")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{not json")
    at = run_app(tmp_path)
    assert not at.exception
    table = at.dataframe[0].value
    assert list(table["run"]) == ["good"]
    assert table["top1"].iloc[0] == pytest.approx(json.loads((smoke_run / "summary.json").read_text())["top1"])
    assert any("broken" in w.value and "config.json is not valid JSON" in w.value for w in at.warning)
