import json
import subprocess
import sys

import pytest

from lab import runs
from lab.cli import main
from lab.train.pretrain import preset_config, pretrain

TIMING_KEYS = {"wall_time_s", "eval_time_s", "mean_step_s", "mean_data_s", "images_per_s", "finished"}


def test_smoke_run_writes_a_valid_run_directory(smoke_run):
    run = runs.read_run(smoke_run)
    assert run.complete, run.problems
    assert run.config["config"]["model"] == "shapes-student"
    records = run.metrics()
    assert [r["step"] for r in records] == [2, 4, 6]
    assert all({"loss", "task", "lr", "images_per_s"} <= set(r) for r in records)
    assert {"top1", "base", "novel", "hm", "retrieval/i2t_r1", "zeroshot/sketch/hm"} <= set(run.summary)
    emb = run.embeddings()
    assert emb["student_image"].shape == (4 * 64, 128)
    assert emb["captions"].shape == (4 * 64,)
    assert (smoke_run / runs.CHECKPOINT).is_file()


def test_same_seed_gives_identical_metrics(tmp_path, smoke_run):
    again = pretrain(preset_config("smoke"), "again", tmp_path)
    first = json.loads((smoke_run / runs.SUMMARY).read_text())
    second = json.loads((again / runs.SUMMARY).read_text())
    assert {k: v for k, v in first.items() if k not in TIMING_KEYS} == \
        {k: v for k, v in second.items() if k not in TIMING_KEYS}
    strip = lambda path: [{k: v for k, v in r.items() if k not in ("images_per_s", "elapsed_s")}
                          for r in runs.read_run(path).metrics()]
    assert strip(smoke_run) == strip(again)


def test_other_seed_gives_other_metrics(tmp_path, smoke_run):
    other = pretrain(preset_config("smoke", ["train.seed=1"]), "other", tmp_path)
    assert runs.read_run(other).metrics()[0]["loss"] != runs.read_run(smoke_run).metrics()[0]["loss"]


def test_cli_eval_of_a_run(smoke_run, capsys):
    assert main(["eval", str(smoke_run), "--teacher", "none", "per_style=32", "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert 0 <= metrics["top1"] <= 100 and metrics["params"] > 0


@pytest.mark.parametrize("argv, message", [
    (["pretrain", "--preset", "huge"], "invalid choice: 'huge'"),
    (["pretrain", "--preset", "smoke", "train.stepz=1"], "Unknown config key 'train.stepz'"),
    (["eval", "no/such/run"], "no/such/run does not exist; pass a run directory"),
    (["eval", "shapes-student", "--teacher", "none", "per_stile=3"], "Unknown config key 'per_stile'"),
])
def test_cli_mistakes_are_one_sentence(argv, message, capsys):
    try:
        code = main(argv)
    except SystemExit as exit_:
        code = exit_.code
    err = capsys.readouterr().err
    assert code == 2
    assert message in err
    assert "Traceback" not in err


def test_unknown_command_lists_commands():
    out = subprocess.run([sys.executable, "-m", "lab", "distil"], capture_output=True, text=True)
    assert out.returncode == 2
    assert "invalid choice: 'distil'" in out.stderr and "pretrain" in out.stderr
    assert "Traceback" not in out.stderr
    helped = subprocess.run([sys.executable, "-m", "lab", "--help"], capture_output=True, text=True)
    assert "pretrain" in helped.stdout and "eval" in helped.stdout
