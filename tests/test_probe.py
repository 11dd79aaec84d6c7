"""The evaluation probe: a cheap score every ``train.eval_every`` steps and the student's snapshots over training."""

import numpy as np

from lab import runs
from lab.eval.probe import read_snapshots
from lab.train.distill import default_config, distill
from lab.train.pretrain import pretrain, preset_config

TINY = ["data.size=128", "train.steps=6", "train.batch_size=32", "train.warmup=1", "train.log_every=2",
        "train.eval_every=2", "eval.per_style=32", "eval.probe_per_style=24", "eval.snapshot_items=20"]


def test_distill_logs_probe_points_and_stores_a_snapshot_per_point(tmp_path):
    path = distill(default_config(["loss=fd", *TINY]), "probed", tmp_path)
    run = runs.read_run(path)
    assert run.complete, run.problems
    probed = [r for r in run.metrics() if "eval/hm" in r]
    assert [r["step"] for r in probed] == [2, 4, 6]
    assert all(0 <= r["eval/geometry/knn_overlap_image"] <= 1 and -1 <= r["eval/geometry/cka_image"] <= 1
               for r in probed)
    snaps = read_snapshots(path)
    assert snaps["steps"].tolist() == [2, 4, 6]
    assert snaps["student_image"].shape[:2] == (3, 20) and snaps["student_image"].dtype == np.float16
    assert snaps["teacher_image"].shape[0] == 20 and len(snaps["captions"]) == 20
    assert not np.allclose(snaps["student_image"][0], snaps["student_image"][-1])  # the student moved
    # The snapshot items are the first plain-style items of the full evaluation set.
    final = run.embeddings()
    plain = np.flatnonzero(final["factor_style"] == 0)[:20]
    assert final["captions"][plain].tolist() == snaps["captions"].tolist()
    np.testing.assert_allclose(snaps["student_image"][-1].astype(np.float32),
                               final["student_image"][plain].astype(np.float32), atol=2e-3)


def test_pretrain_probe_without_a_teacher_stores_frames_only(tmp_path):
    cfg = preset_config("smoke", ["train.eval_every=3", "eval.probe_per_style=16", "eval.snapshot_items=8"])
    path = pretrain(cfg, "smoke-probed", tmp_path)
    snaps = read_snapshots(path)
    assert snaps["steps"].tolist() == [3, 6] and "teacher_image" not in snaps
    assert not any(k.startswith("eval/geometry/") for r in runs.read_run(path).metrics() for k in r)


def test_a_damaged_snapshot_file_reads_as_none(tmp_path):
    (tmp_path / runs.SNAPSHOTS).write_bytes(b"PK\x03\x04 cut")
    assert read_snapshots(tmp_path) is None
