"""The distillation trainer, the teacher cache and the sweep tables, on seconds-long CPU runs."""

import json

import pytest
import torch

from lab import runs
from lab.cli import main
from lab.errors import LabError
from lab.models import zoo
from lab.experiments.sweep import sweep
from lab.experiments.tables import TABLES_DIR, collect, gap_closed
from lab.train.cache import TeacherCache, cache_key
from lab.train.distill import default_config, distill

TINY = ["data.size=128", "train.steps=4", "train.batch_size=32", "train.warmup=1", "train.log_every=2",
        "train.eval_every=0", "eval.per_style=32"]


def tiny(loss, *extra):
    return default_config([f"loss={loss}", *TINY, *extra])


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("distill-runs")


def test_distill_writes_per_term_curves_and_geometry(runs_dir):
    path = distill(tiny("crd+fd+icl+mfd+kd"), "all", runs_dir)
    run = runs.read_run(path)
    assert run.complete, run.problems
    records = run.metrics()
    assert [r["step"] for r in records] == [2, 4]
    assert all({"loss", "task", "crd", "fd", "icl", "mfd", "kd"} <= set(r) for r in records)
    assert all(abs(r["loss"] - sum(r[k] for k in ("task", "crd", "fd", "icl", "mfd", "kd"))) < 1e-3 * r["loss"]
               for r in records)
    summary = run.summary
    assert summary["formula"].startswith("L = task + 1·crd")
    assert {"geometry/cosine_image", "geometry/cka_image", "geometry/simmat_corr", "teacher/hm"} <= set(summary)
    state = torch.load(path / runs.CHECKPOINT, weights_only=True)
    assert "projection.image.weight" in state["objective"]  # learnable parts saved with the student
    assert "teacher_image" in run.embeddings()


def test_teacher_cache_is_built_once_and_reused(runs_dir):
    cache_dir = runs_dir / ".cache" / "teacher"
    before = set(cache_dir.glob("*.safetensors")) if cache_dir.exists() else set()
    distill(tiny("fd"), "fd-a", runs_dir)
    after_first = set(cache_dir.glob("*.safetensors"))
    distill(tiny("icl"), "icl-a", runs_dir)
    assert set(cache_dir.glob("*.safetensors")) == after_first  # same teacher and data: a hit
    distill(tiny("fd", "data.seed=5"), "fd-other-data", runs_dir)
    assert len(set(cache_dir.glob("*.safetensors")) - after_first) == 1  # other data: a new entry
    assert before <= after_first


def test_cached_teacher_equals_online_teacher(runs_dir):
    teacher = zoo.shipped_teacher()
    cfg = tiny("fd")
    from lab.data.pairs import build_pairs
    from lab.config import to_dict

    dataset = build_pairs(cfg.data)
    entry, _ = TeacherCache(runs_dir / ".cache" / "teacher").load_or_build(teacher, dataset, to_dict(cfg.data))
    batch = dataset.__getitems__([3, 7, 11])
    with torch.no_grad():
        online = teacher.model.encode_image(teacher.image_tensor(batch.images), normalize=True)
    assert torch.allclose(entry["image"][[3, 7, 11]], online, atol=1e-5)
    cached = distill(tiny("fd"), "fd-cache", runs_dir)
    live = distill(tiny("fd", "teacher_mode=online"), "fd-online", runs_dir)
    losses = lambda p: [r["fd"] for r in runs.read_run(p).metrics()]
    assert losses(cached) == pytest.approx(losses(live), rel=1e-4)


def test_cache_key_changes_with_the_teacher_weights():
    a, b = zoo.load("shapes-student"), zoo.load("shapes-student")
    with torch.no_grad():
        b.model.logit_scale.add_(1.0)
    assert cache_key(a, {"x": 1}) != cache_key(b, {"x": 1})
    assert cache_key(a, {"x": 1}) != cache_key(a, {"x": 2})


def test_same_seed_same_distillation_metrics(runs_dir):
    first = distill(tiny("crd+icl"), "seed-a", runs_dir)
    second = distill(tiny("crd+icl"), "seed-b", runs_dir)
    keep = lambda p: {k: v for k, v in json.loads((p / runs.SUMMARY).read_text()).items()
                      if not k.endswith(("_s", "images_per_s", "finished"))}
    assert keep(first) == keep(second)


@pytest.mark.parametrize("overrides, message", [
    (["loss=crd+fdd"], "Unknown loss term 'fdd'"),
    (["loss=fd", "weights=icl=1"], "A weight is given for 'icl'"),
    (["teacher_mode=live"], "Unknown teacher_mode 'live'"),
    (["loss=mfd", "mfd_input=full"], "Unknown mfd_input 'full'"),
    (["teacher_mode=cache", "data.size=0"], "The teacher cache needs a fixed dataset"),
])
def test_distill_config_mistakes(overrides, message, runs_dir):
    with pytest.raises(LabError, match=message):
        distill(default_config([*TINY, *overrides]), "bad", runs_dir)
    assert not (runs_dir / "bad").exists()  # nothing half-written


@pytest.mark.parametrize("mfd_input", ["masked", "both"])
def test_mfd_input_decides_what_the_other_terms_see(mfd_input):
    from lab.data.pairs import DataConfig, build_pairs, to_tensors
    from lab.losses.objective import Objective
    from lab.train.distill import DistillStep

    teacher, student = zoo.shipped_teacher(), zoo.load("shapes-student")
    objective = Objective("mfd", student.embed_dim, teacher.embed_dim)
    seen = []
    objective.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    batch = build_pairs(DataConfig(size=8)).__getitems__(list(range(8)))
    DistillStep(student, teacher, objective, mfd_input=mfd_input)(batch)
    e = seen[0]
    with torch.no_grad():
        full = student.model.encode_image(to_tensors(batch, student)[0])
    assert not torch.allclose(e.masked_image_raw, full, atol=1e-4)  # the masking is real
    if mfd_input == "masked":  # one forward: every term reads the masked image's embedding
        assert e.image_raw is e.masked_image_raw
    else:
        assert torch.allclose(e.image_raw, full, atol=1e-5)


def test_teacher_checkpoint_of_another_architecture_is_refused(tmp_path):
    student = zoo.load("shapes-student")
    path = tmp_path / "student-weights.safetensors"
    zoo.save_weights(student, path)
    with pytest.raises(LabError, match="does not match"):
        zoo.load(f"shapes-teacher:{path}")


def test_cli_distill_and_unknown_term(runs_dir, capsys):
    assert main(["distill", "--loss", "vrd+xrd", "--name", "cli", "--runs-dir", str(runs_dir), *TINY]) == 0
    assert "L = task + 1·vrd + 1·xrd" in capsys.readouterr().out
    assert main(["distill", "--loss", "crd+xyz", "--runs-dir", str(runs_dir), *TINY]) == 2
    err = capsys.readouterr().err
    assert "Unknown loss term 'xyz'; valid terms: crd, fd" in err and "Traceback" not in err


def test_gap_closed():
    assert gap_closed(60.0, 40.0, 90.0) == pytest.approx(40.0)


def test_sweep_resumes_and_tabulates(demo_runs, capsys):
    table = demo_runs / TABLES_DIR / "fast-core.md"
    text = table.read_text()
    assert "| no KD (task only) | 0,1 |" in text and "| FD+ICL+CRD (CLIP-KD) | 0,1 |" in text
    assert "| 34.9 (CLIP-KD T1, ImageNet top-1) |" in text  # the paper's number beside the lab's, labelled
    assert table.with_suffix(".csv").read_text().count("\n") == 3
    records = collect("core", 2, demo_runs, scale="fast")
    assert len(records[1]["per_seed"]["gap_closed"]) == 2
    mtimes = {p: p.stat().st_mtime_ns for p in demo_runs.glob("fast-*/summary.json")}
    assert len(mtimes) == 4
    sweep("core", seeds=2, runs_dir=demo_runs, scale="fast")
    assert {p: p.stat().st_mtime_ns for p in demo_runs.glob("fast-*/summary.json")} == mtimes  # all skipped
    captured = capsys.readouterr()
    assert "4 of 4 runs finished earlier" in captured.out + captured.err
    assert [r.run_id for r in runs.list_runs(demo_runs)] == sorted(p.parent.name for p in mtimes)


def test_demo_fast_makes_every_grid_with_every_row(tmp_path, capsys):
    """`python -m lab demo --fast`: one seed of every grid, each table with every row; a second call skips all."""
    from lab.experiments.demo import DEMO_GRIDS
    from lab.experiments.grids import GRIDS

    assert main(["demo", "--fast", "--runs-dir", str(tmp_path)]) == 0
    for grid in DEMO_GRIDS:
        text = (tmp_path / TABLES_DIR / f"fast-{grid}.md").read_text()
        rows = [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| row")]
        assert [r.split(" | ")[0][2:] for r in rows] == [row.label for row in GRIDS[grid]], grid
        assert all(" | 0 | " in r for r in rows), grid  # seed 0 reported on every row
    comkd = (tmp_path / TABLES_DIR / "fast-comkd.md").read_text()
    assert all(f"| {metric} |" in comkd for metric in ("hm", "top1", "target_top1"))  # every protocol
    summaries = sorted(tmp_path.glob("fast-*/summary.json"))
    mtimes = [p.stat().st_mtime_ns for p in summaries]
    capsys.readouterr()
    assert main(["demo", "--fast", "--runs-dir", str(tmp_path)]) == 0
    assert [p.stat().st_mtime_ns for p in summaries] == mtimes
    captured = capsys.readouterr()
    assert "finished earlier and are skipped" in captured.out + captured.err


def test_unknown_grid_lists_the_grids():
    with pytest.raises(LabError, match="Unknown grid 'clip'; choose one of: clipkd, cliprd, core, comkd, .*promptkd-vs-comkd"):
        sweep("clip")
