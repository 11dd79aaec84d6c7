"""The step-cost benchmark runs and reports ratios (its numbers are measured by `python -m lab bench`, not here)."""

import json

from lab.bench.step import budget_of, prompt_step_costs, step_costs
from lab.cli import main


def test_step_costs_cover_the_asked_terms():
    costs = step_costs(["fd", "clipkd"], batch_size=16, rounds=1, steps=1, progress=lambda msg: None)
    assert [c.name for c in costs] == ["fd", "clipkd"]
    assert all(c.cached_s > 0 and c.online_s > 0 and c.nokd_s > 0 for c in costs)
    assert costs[0].nokd_s == costs[1].nokd_s  # one no-KD reference for every row


def test_budgets_follow_the_issue():
    assert budget_of("fd") == budget_of("mfd(both)") == 1.15
    assert budget_of("gd") == budget_of("crd+icl+fd+gd") == 1.5


def test_cli_bench_json_and_unknown_term(capsys):
    assert main(["bench", "--terms", "icl", "--rounds", "1", "--steps", "1", "--batch-size", "8", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["step_costs"][0]["name"] == "icl" and report["step_costs"][0]["cached_ratio"] > 0
    assert main(["bench", "--terms", "icx"]) == 2
    assert "Unknown loss term 'icx'" in capsys.readouterr().err


def test_other_models_bf16_and_mfd_both(capsys):
    costs = step_costs(["mfd(both)"], batch_size=8, rounds=1, steps=1, progress=lambda msg: None,
                       teacher="shapes-teacher", precision="bf16")
    assert costs[0].budget == 1.15 and costs[0].cached_s > 0
    assert main(["bench", "--terms", "fd", "--precision", "fp8"]) == 2
    assert "Unknown precision 'fp8'; choose one of: fp32, bf16." in capsys.readouterr().err


def test_prompt_step_costs_time_every_method_against_one_reference():
    costs = prompt_step_costs(batch_size=8, rounds=1, steps=1, progress=lambda msg: None)
    assert [c.name for c in costs] == ["promptkd", "comkd", "comkd(text_query)", "am"]
    assert all(c.budget == 1.2 and c.cached_s > 0 and c.online_s > 0 for c in costs)
    assert len({c.nokd_s for c in costs}) == 1


def test_loss_scaling_and_data_throughput(capsys):
    from lab.bench.scaling import data_throughput, loss_scaling

    costs = loss_scaling(["crd", "gd"], batch_sizes=(8, 16), widths=(4,), repeats=1)
    assert [(c.name, c.batch_size, c.width) for c in costs] == [("crd", 8, 4), ("gd", 8, 4), ("crd", 16, 4),
                                                                ("gd", 16, 4)]
    assert all(c.seconds > 0 and c.task_seconds > 0 for c in costs)
    assert data_throughput(items=64) > 0


def test_demo_start_refuses_a_checkout_with_finished_runs(tmp_path, capsys):
    (tmp_path / "runs" / "demo-nokd-s0").mkdir(parents=True)
    (tmp_path / "runs" / "demo-nokd-s0" / "summary.json").write_text("{}")
    assert main(["bench", "--demo-start", str(tmp_path)]) == 2
    assert "fresh clone" in capsys.readouterr().err


def test_sweep_bench_times_rows_and_jobs_side_by_side():
    from lab.bench.sweep import format_sweep, jobs_times, sweep_times

    bench = sweep_times("core", steps=2, seeds=3, configs={"current": [], "again": []}, rows=2,
                        extra=("data.size=256", "eval.per_style=16"), progress=lambda msg: None)
    assert [(r.row, r.config) for r in bench.runs] == [("nokd", "current"), ("nokd", "again"),
                                                      ("kd-crd+icl+fd", "current"), ("kd-crd+icl+fd", "again")]
    assert all(r.extrapolated_s > r.wall_s > r.train_s > 0 for r in bench.runs)
    bench.jobs = jobs_times("core", rows=2, steps=2, jobs=2, extra=("data.size=256", "eval.per_style=16"),
                            progress=lambda msg: None)
    assert bench.jobs["sequential_s"] > 0 and bench.jobs["parallel_s"] > 0
    assert "--jobs 2" in format_sweep(bench)
