"""Issue 18: the validation split, and ``python -m lab tune`` selecting weights on it alone."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lab.eval.suite import EvalConfig, evaluation_set, validation_set


def _items(batch) -> set[tuple]:
    """Every item as the tuple of all its drawn factors plus its rendered pixels."""
    f = batch.factors
    return {tuple(np.asarray(f[k][i]).tobytes() for k in sorted(f)) + (batch.images[i].tobytes(),)
            for i in range(len(batch))}


def _pixels(batch) -> set[bytes]:
    return {image.tobytes() for image in batch.images}


def test_validation_and_test_sets_share_no_item():
    cfg = EvalConfig(per_style=64, val_per_style=64)
    test, val = evaluation_set(cfg), validation_set(cfg)
    assert len(val) == len(test) == 64 * 4
    assert not _items(test) & _items(val)
    assert not _pixels(test) & _pixels(val)  # not even one identical rendered image
    # Same distribution: every style, and the same label space, in both.
    assert set(val.factors["style"]) == set(test.factors["style"])
    assert len(set(val.labels())) > 20 and len(set(test.labels())) > 20


def _fake_summary(path, val_hm: float, test_hm: float) -> None:
    """A finished run as `tune` reads it: config, and a summary with validation and test scores."""
    from lab import runs

    runs.atomic_write_json(path / "config.json", {"kind": "distill", "seed": 0, "config": {}})
    runs.atomic_write_json(path / "summary.json", {"wall_time_s": 1.0, "checkpoint": "last", "hm": test_hm,
                                                   "val/hm": val_hm, "teacher/hm": 90.0})


def _fake_sweep(monkeypatch, test_hm=lambda row: 20.0) -> list[str]:
    """The sweep's runs (no KD, default weights) written instantly with the given test HM; returns the rows swept."""
    from lab.experiments import sweep

    swept = []

    def fake_sweep_run(row, seed, runs_dir, scale="full", overrides=()):
        swept.append(row.label)
        path = runs_dir / sweep.run_id(row, seed, scale)
        path.mkdir(exist_ok=True)
        _fake_summary(path, val_hm=0.0, test_hm=test_hm(row))
        return path

    monkeypatch.setattr(sweep, "train_row", fake_sweep_run)
    return swept


def test_tune_chooses_by_validation_even_when_the_test_set_disagrees(tmp_path, monkeypatch):
    """A planted weight (CLIP-KD's CRD at 4× its default) is best on validation and worst on test: it must be
    chosen."""
    from lab.experiments import tune
    from lab.losses.objective import parse_weights

    defaults = tune.default_weights(["crd", "icl", "fd"])

    def fake_tuning_run(job):
        settings, rid, runs_dir = job
        weights = parse_weights(next(s.split("=", 1)[1] for s in settings if s.startswith("weights=")))
        planted = weights == {**defaults, "crd": 4 * defaults["crd"]}
        path = tmp_path / rid
        path.mkdir()
        seed_offset = 1.0 if rid.endswith("-s1") else -1.0  # the seeds' validation scores differ; their mean does not
        _fake_summary(path, val_hm=(80.0 if planted else 50.0) + seed_offset, test_hm=5.0 if planted else 40.0)
        return rid

    swept = _fake_sweep(monkeypatch, test_hm=lambda row: 30.0 if row.loss else 20.0)
    table = tune.tune("core", seeds=2, runs_dir=tmp_path, scale="fast", train=fake_tuning_run,
                      progress=lambda msg: None)
    record = json.loads(table.with_suffix(".json").read_text())
    (row,) = record["rows"]
    assert row["weights"] == {**defaults, "crd": 4 * defaults["crd"]}  # elsewhere all tie: the defaults stay
    # The default weights were a tuning candidate (factor 1): their tuning runs give the default-weight
    # numbers (test HM 40), and only no KD is trained by the sweep — no configuration is trained twice.
    assert row["val_hm"] == 80.0 and row["test_hm_tuned"][0] == 5.0 and row["test_hm_default"][0] == 40.0
    assert swept == ["no KD (task only)"] * 2
    # The recipe's parts were tuned first, as in the clipkd grid; the recipe itself searched only CRD.
    assert list(record["recipe_parts"]) == ["CRD", "FD", "ICL", "FD+ICL"]
    (crd_search,) = row["searched"]
    # ×4 is the grid's end, so one step further (×8) was searched too; it lost, and the search stopped.
    assert [c["weight"] for c in crd_search["candidates"]] == [f * defaults["crd"] for f in (*tune.FACTORS, 8.0)]
    assert all(c["val_std"] == pytest.approx(2 ** 0.5) for c in crd_search["candidates"])  # the seeds' spread, kept
    assert f"crd={4 * defaults['crd']:g}" in table.read_text()


def test_tuning_some_rows_keeps_the_rows_tuned_before_in_the_table(tmp_path, monkeypatch):
    """`--rows FD` after `--rows CRD`: the table still holds CRD, read from its runs and not retrained; a row
    whose tuning runs are incomplete is left out rather than shown half-tuned."""
    from lab.experiments import tune

    trained = []

    def fake_tuning_run(job):
        settings, rid, runs_dir = job
        trained.append(rid)
        (tmp_path / rid).mkdir(exist_ok=True)
        _fake_summary(tmp_path / rid, val_hm=50.0, test_hm=40.0)
        return rid

    _fake_sweep(monkeypatch)
    options = dict(seeds=1, runs_dir=tmp_path, scale="fast", train=fake_tuning_run, progress=lambda msg: None)
    tune.tune("clipkd", rows=["CRD"], **options)
    tune.tune("clipkd", rows=["ICL"], **options)
    (tmp_path / trained[-1] / "summary.json").unlink()  # one of ICL's runs did not finish
    before = len(trained)
    table = tune.tune("clipkd", rows=["FD"], **options)
    assert all("-fd" in rid for rid in trained[before:])  # only FD's runs were trained
    record = json.loads(table.with_suffix(".json").read_text())
    assert [r["row"] for r in record["rows"]] == ["CRD", "FD"]
    assert "| CRD |" in table.read_text() and "| ICL |" not in table.read_text()


def test_a_best_weight_at_the_grids_end_extends_the_search_that_way():
    """Validation HM peaks at ×8 (beyond the grid): the search grows to ×8, then ×16, and keeps ×8; a peak
    further out still stops after EXTEND steps; a peak below the grid extends downwards."""
    from lab.experiments.tune import EXTEND, FACTORS, Candidate, pick, search_with_extension

    def searcher(peak: float, asked: list):
        def search(fs):
            asked.append(list(fs))
            return [Candidate("fd", {"fd": f}, -abs(np.log2(f / peak))) for f in fs]
        return search

    asked = []
    found = search_with_extension(searcher(8.0, asked), list(FACTORS), 1.0, EXTEND)
    assert asked == [list(FACTORS), [8.0], [16.0]] and pick(found, 1.0).weights["fd"] == 8.0
    assert [c.weights["fd"] for c in found] == [*FACTORS, 8.0, 16.0]
    asked = []
    found = search_with_extension(searcher(1000.0, asked), list(FACTORS), 1.0, EXTEND)
    assert len(asked) == 1 + EXTEND and pick(found, 1.0).weights["fd"] == 4.0 * 2 ** EXTEND
    asked = []
    found = search_with_extension(searcher(0.1, asked), list(FACTORS), 1.0, EXTEND)
    assert asked[1:] == [[0.125], [0.0625]] and pick(found, 1.0).weights["fd"] == 0.125
    assert search_with_extension(searcher(8.0, []), list(FACTORS), 1.0, 0) is not None  # extend=0: the grid only


def test_new_terms_of_a_recipe_are_those_its_largest_earlier_row_lacks():
    from lab.experiments.grids import GRIDS, Row
    from lab.experiments.tune import new_terms

    rows = [r for r in GRIDS["clipkd"] if r.loss]
    by_label = {r.label: (r, rows[:i]) for i, r in enumerate(rows)}
    assert new_terms(*by_label["CLIP-KD +GD"]) == ["gd"]
    assert new_terms(*by_label["FD+ICL+CRD (CLIP-KD)"]) == ["crd"]
    assert new_terms(*by_label["GD"]) == ["gd"]
    assert new_terms(Row("x", "crd+icl+fd"), []) == ["crd", "icl", "fd"]


def test_a_recipe_is_tuned_through_the_same_parts_in_every_grid():
    from lab.experiments.grids import GRIDS
    from lab.experiments.tune import recipe_parts

    assert recipe_parts(GRIDS["clipkd"]) == []
    parts = ["CRD", "FD", "ICL", "FD+ICL"]  # the clipkd grid's rows CLIP-KD is tuned through
    assert [r.label for r in recipe_parts(GRIDS["cliprd"])] == [r.label for r in recipe_parts(GRIDS["core"])] == parts


def test_tune_trains_real_fast_runs_and_scores_them_on_validation(tmp_path):
    from lab import runs
    from lab.experiments.tune import tune

    table = tune("clipkd", seeds=1, runs_dir=tmp_path, scale="fast", factors=(0.5, 2.0), rows=["FD"], extend=0,
                 progress=lambda msg: None)
    record = json.loads(table.with_suffix(".json").read_text())
    (row,) = record["rows"]
    (search,) = row["searched"]
    best = max(search["candidates"], key=lambda c: c["val_hm"])
    assert row["weights"]["fd"] == best["weight"] == search["chosen"]
    tuning_runs = [r for r in runs.list_runs(tmp_path) if "tune-" in r.run_id]
    assert len(tuning_runs) == 2 and all("val/hm" in r.summary and "hm" in r.summary for r in tuning_runs)
    assert (tmp_path / "fast-kd-fd-s0" / "summary.json").exists()  # the default-weight run beside it


def test_tune_refuses_rows_with_nothing_to_choose_and_unknown_rows(capsys, tmp_path):
    from lab.cli import main

    assert main(["tune", "--grid", "comkd", "--rows", "PromptKD", "--scale", "fast", "--runs-dir", str(tmp_path)]) == 2
    assert "None of the rows asked for has a weight to choose" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir() if p.name != "_tables"] == []  # refused before any run was trained
    assert main(["tune", "--grid", "clipkd", "--rows", "FDD", "--scale", "fast"]) == 2
    assert "Unknown row 'FDD'" in capsys.readouterr().err


def test_prompt_grid_tuning_chooses_ifalign_by_each_protocols_validation_metric(tmp_path, monkeypatch):
    """ComKD-CLIP (base2novel: HM) and a cross row (top-1): a planted IFAlign weight, best on validation and worst on
    test, is chosen in each; the one-term rows are listed as not tuned."""
    from lab import runs
    from lab.experiments import tune

    planted = {"base2novel": 2.0, "cross": 0.5}

    def fake_prompt_run(job):
        cfg, rid, runs_dir = job
        metric = {"base2novel": "hm", "cross": "top1"}[cfg.protocol]
        best = cfg.ifalign_weight == planted[cfg.protocol]
        path = tmp_path / rid
        path.mkdir()
        _fake_summary(path, val_hm=0.0, test_hm=0.0)  # its config.json; the summary, a prompt run's:
        runs.atomic_write_json(path / "summary.json", {"wall_time_s": 1.0, "checkpoint": "last",
                                                       metric: 5.0 if best else 40.0,
                                                       f"val/{metric}": 80.0 if best else 50.0})
        return rid

    _fake_sweep(monkeypatch)
    table = tune.tune("comkd", seeds=2, runs_dir=tmp_path, scale="fast", train=fake_prompt_run,
                      rows=["PromptKD", "ComKD-CLIP", "comkd cross colour_shape→shape"], progress=lambda msg: None)
    record = json.loads(table.with_suffix(".json").read_text())
    by_row = {r["row"]: r for r in record["rows"]}
    assert set(by_row) == {"ComKD-CLIP", "comkd cross colour_shape→shape"} and record["untuned"] == ["PromptKD"]
    comkd, cross = by_row["ComKD-CLIP"], by_row["comkd cross colour_shape→shape"]
    assert (comkd["metric"], cross["metric"]) == ("hm", "top1")
    assert comkd["weights"] == {"ifalign": 2.0} and cross["weights"] == {"ifalign": 0.5}
    assert comkd["val_hm"] == 80.0 and comkd["test_hm_tuned"][0] == 5.0 and comkd["test_hm_default"][0] == 40.0
    # each tuning run started from the no-KD student of its seed, and scored the validation split
    assert (tmp_path / "fast-tune-pkd-comkd-b2n-ifalign2-s1").is_dir()
    assert "ifalign_weight=2" in table.read_text() and "Not tuned" in table.read_text()
    # tuning one row again later keeps the other in the table, read from its runs, none retrained
    again = tune.tune("comkd", seeds=2, runs_dir=tmp_path, scale="fast", train=lambda job: pytest.fail(job[1]),
                      rows=["ComKD-CLIP"], progress=lambda msg: None)
    assert json.loads(again.with_suffix(".json").read_text())["rows"] == record["rows"]


def test_sweep_with_two_jobs_writes_what_one_job_writes(tmp_path):
    """`--jobs 2` (two worker processes) trains the same runs to the same numbers and the same table."""
    import csv

    from lab import runs
    from lab.experiments.sweep import sweep

    tables = {jobs: sweep("core", seeds=1, runs_dir=tmp_path / f"jobs{jobs}", scale="fast", jobs=jobs)
              for jobs in (1, 2)}
    names = {jobs: sorted(r.run_id for r in runs.list_runs(tmp_path / f"jobs{jobs}")) for jobs in (1, 2)}
    assert names[1] == names[2] == ["fast-kd-crd+icl+fd-s0", "fast-nokd-s0"]
    for name in names[1]:
        one, two = (runs.read_run(tmp_path / f"jobs{j}" / name).summary for j in (1, 2))
        keys = [k for k in one if not k.endswith("_s") and isinstance(one[k], (int, float))]  # not the timings
        assert keys and {k: one[k] for k in keys} == {k: two[k] for k in keys}, name
    rows = {j: list(csv.DictReader(tables[j].with_suffix(".csv").open())) for j in (1, 2)}
    drop = lambda r: {k: v for k, v in r.items() if not k.startswith("wall_time")}  # noqa: E731
    assert [drop(r) for r in rows[1]] == [drop(r) for r in rows[2]]


def test_prompt_grid_tuning_trains_real_fast_runs_from_the_no_kd_students(tmp_path):
    from lab import runs
    from lab.experiments.tune import tune

    table = tune("comkd", seeds=1, runs_dir=tmp_path, scale="fast", factors=(1.0, 2.0), rows=["ComKD-CLIP"],
                 extend=0, progress=lambda msg: None)
    (row,) = json.loads(table.with_suffix(".json").read_text())["rows"]
    (search,) = row["searched"]
    assert row["weights"]["ifalign"] == max(search["candidates"], key=lambda c: c["val_hm"])["weight"]
    tuning = [runs.read_run(tmp_path / f"fast-tune-pkd-comkd-b2n-ifalign{w:g}-s0") for w in (1.0, 2.0)]
    assert all(r.complete and "val/hm" in r.summary for r in tuning)
    assert [r.config["config"]["ifalign_weight"] for r in tuning] == [1.0, 2.0]
    assert row["test_hm_default"][0] == tuning[0].summary["hm"]  # weight 1 was searched: its run gives the default
    assert all(r.config["config"]["student"] == str(tmp_path / "fast-nokd-s0") for r in tuning)
