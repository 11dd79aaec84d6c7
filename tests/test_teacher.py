"""The shipped ShapesWorld teacher: present, small, matching its card, and as good as the card says."""

import json

import pytest

from lab.config import to_dict
from lab.eval.suite import EvalConfig, evaluate
from lab.train.pretrain import preset_config
from lab.models import zoo
from lab.models.export import sha256

CARD = zoo.SHIPPED_TEACHER.with_suffix(".card.json")


@pytest.fixture(scope="module")
def card():
    return json.loads(CARD.read_text())


def test_shipped_teacher_matches_its_card(card):
    assert zoo.SHIPPED_TEACHER.stat().st_size <= 25 * 2**20
    assert sha256(zoo.SHIPPED_TEACHER) == card["sha256"]
    for key in ("recipe", "seed", "train_wall_time_s", "machine", "config", "eval"):
        assert card[key] not in (None, "", {}), key
    assert card["recipe"].startswith("python -m lab pretrain --preset teacher")
    assert card["train_wall_time_s"] < 45 * 60
    assert card["eval"]["metrics"]["zeroshot/plain/top1"] >= 90.0


# Settings added after the teacher was trained. None changes how it trains: the data.* ones apply to
# webdataset shards only, the others to evaluation probes, benchmarks and logging.
ADDED_SINCE_THE_CARD = {"data.shuffle_buffer", "data.flip", "data.corrupt", "data.augment", "data.augmentations",
                        "data.crop_scale", "eval.probe_per_style", "eval.snapshot_items", "eval.benchmarks", "eval.val_per_style",
                        "train.logger", "eval.classnames", "init", "train.accumulate", "train.grad_checkpointing"}
# ... and the added training settings at the values that train exactly as before (no inheritance, one chunk,
# no activation checkpointing: the same arithmetic).
NEUTRAL_TRAINING = {"init": "random", "train.accumulate": 1, "train.grad_checkpointing": False}


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in d.items():
        out.update(_flat(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value})
    return out


def test_card_recipe_is_the_current_teacher_preset(card):
    """`make teacher` would rebuild this very teacher: every setting on the card is today's preset's, and the
    preset's only other settings are the listed later additions that do not touch the teacher's training."""
    on_card, now = _flat(card["config"]), _flat(to_dict(preset_config("teacher")))
    assert {k: now.get(k) for k in on_card} == on_card
    assert set(now) - set(on_card) == ADDED_SINCE_THE_CARD
    assert {k: now[k] for k in NEUTRAL_TRAINING} == NEUTRAL_TRAINING


def test_shipped_teacher_zero_shot_on_fresh_test_images(card):
    teacher = zoo.shipped_teacher()
    assert teacher.arch == "shapes-teacher"
    # Other test images than the card's (another seed), fewer of them: the card's number within sampling error.
    metrics, _ = evaluate(teacher, EvalConfig(seed=99, per_style=384))
    assert metrics["top1"] >= card["eval"]["metrics"]["top1"] - 5
    assert metrics["hm"] >= 85.0
