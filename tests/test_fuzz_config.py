"""Fuzzing the config layer: random dotted overrides build a valid config or raise one LabError sentence."""

import dataclasses
import math

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from lab.config import RANGES, apply_overrides, check_ranges, flat_keys
from lab.errors import LabError
from lab.train.distill import DistillConfig
from lab.train.pretrain import PretrainConfig
from lab.train.prompt_distill import PromptDistillConfig

from test_bad_inputs import assert_one_sentence

CONFIGS = [DistillConfig(), PretrainConfig(), PromptDistillConfig()]
KEYS = sorted({k for cfg in CONFIGS for k in flat_keys(cfg)})

numbers = st.one_of(st.integers(-10**12, 10**12), st.floats(allow_nan=True, allow_infinity=True),
                    st.sampled_from([0, -1, 1, 2**32, "nan", "inf", "-inf", "1e-3", "0.0", "-0"]))
words = st.one_of(st.text(max_size=12), st.sampled_from(["abc", "true", "false", "maybe", "[1, 2]", "{a: 1}", ": :",
                                                         "${nope}", "${train.steps}", "'quoted'", "null", "~"]))
keys = st.one_of(st.sampled_from(KEYS), st.sampled_from(["train.stepz", "train", "data.", ".steps", "nokey", ""]),
                 st.text(alphabet="abcdeft._", max_size=14))
override = st.tuples(keys, st.one_of(numbers.map(str), words)).map(lambda kv: f"{kv[0]}={kv[1]}")


def _valid(cfg) -> bool:
    """What a built config must be: every number finite and in its range."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            if not _valid(value):
                return False
        elif isinstance(value, float) and not math.isfinite(value):
            return False
        elif (type(cfg).__name__, f.name) in RANGES and not isinstance(value, bool):
            if not RANGES[type(cfg).__name__, f.name][0](value):
                return False
    return True


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(config=st.sampled_from(CONFIGS), overrides=st.lists(override, min_size=1, max_size=4))
def test_random_overrides_build_a_valid_config_or_one_sentence(config, overrides):
    try:
        built = apply_overrides(config, overrides)
    except LabError as err:
        message = str(err)
        assert message.endswith(".") and "\n" not in message and "Traceback" not in message, message
        return
    assert type(built) is type(config)
    assert _valid(built)
    check_ranges(built)  # idempotent: a built config passes its own check


@pytest.mark.parametrize("override, message", [
    ("train.steps=abc", "train.steps must be an integer, got 'abc'."),
    ("train.steps=0", "train.steps must be at least 1, got 0."),
    ("train.lr=nan", "train.lr must be a finite number, got nan."),
    ("train.lr=0", "train.lr=0.0 would not train"),
    ("train.compile=maybe", "train.compile must be true or false, got 'maybe'."),
    ("train.steps={a: 1}", "train.steps must be an integer"),
])
def test_typical_mistakes_read_as_one_sentence(override, message):
    with pytest.raises(LabError) as err:
        apply_overrides(DistillConfig(), [override])
    assert_one_sentence(str(err.value), message)
