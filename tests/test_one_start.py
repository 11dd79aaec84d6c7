"""One start per seed: every trainer's student at ``train.seed=k`` begins from the same weights.

The initial weights are read where training begins (the parameters handed to the Trainer), so the test
sees what each trainer really starts from, whatever it built before (a teacher, projection heads, a cache).
"""

import torch

from lab.train.distill import default_config, distill
from lab.train.pretrain import preset_config, pretrain

TINY = ["data.size=64", "train.steps=1", "train.batch_size=32", "train.warmup=1", "train.eval_every=0",
        "eval.per_style=16"]


def _max_diff(a, b):
    assert a.keys() == b.keys()
    return max((a[k] - b[k]).abs().max().item() for k in a)


def test_every_trainer_starts_the_student_of_a_seed_from_the_same_weights(starts, tmp_path):
    pretrain(preset_config("student", [*TINY, "train.seed=3"]), "nokd", tmp_path)
    for i, extra in enumerate((["loss=fd"], ["loss=crd+icl+fd"], ["loss=vrd+xrd", "projection=before"],
                               ["loss=fd", "teacher_mode=online"])):
        distill(default_config([*TINY, "train.seed=3", *extra]), f"kd{i}", tmp_path)
    nokd, *kd = starts
    assert len(kd) == 4
    for start in kd:
        assert _max_diff(nokd, start) == 0.0
    pretrain(preset_config("student", [*TINY, "train.seed=4"]), "nokd-other-seed", tmp_path)
    assert _max_diff(nokd, starts[-1]) > 0.01  # another seed really is another start
