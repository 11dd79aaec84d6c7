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


def test_card_recipe_is_the_current_teacher_preset(card):
    """`make teacher` would rebuild this very teacher: the card's config is today's preset."""
    assert card["config"] == to_dict(preset_config("teacher"))


def test_shipped_teacher_zero_shot_on_fresh_test_images(card):
    teacher = zoo.shipped_teacher()
    assert teacher.arch == "shapes-teacher"
    # Other test images than the card's (another seed), fewer of them: the card's number within sampling error.
    metrics, _ = evaluate(teacher, EvalConfig(seed=99, per_style=384))
    assert metrics["top1"] >= card["eval"]["metrics"]["top1"] - 5
    assert metrics["hm"] >= 85.0
