"""Typed configs with dotted ``key=value`` overrides (OmegaConf underneath).

Each command's config is a dataclass of dataclasses with defaults; presets and the
command line override it by dotted keys (``train.steps=200``). Unknown keys are
refused with one sentence that lists the valid keys; a badly typed value or one out of its
range (``train.steps=0``, ``train.lr=nan``) with one sentence naming what the key accepts,
when the config is built — before any run folder is made or model loaded.
"""

from __future__ import annotations

import dataclasses
import math
from typing import TypeVar

from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

from lab.errors import LabError

C = TypeVar("C")


def flat_keys(cfg) -> list[str]:
    """Every dotted key a config accepts, e.g. ``train.steps``."""
    keys = []
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            keys += [f"{f.name}.{k}" for k in flat_keys(value)]
        else:
            keys.append(f.name)
    return keys


def _unknown_key_error(cfg, key: str) -> LabError:
    section = key.rsplit(".", 1)[0] if "." in key else ""
    keys = flat_keys(cfg)
    siblings = [k for k in keys if section and k.startswith(section + ".")]
    if siblings:
        return LabError(f"Unknown config key '{key}'; valid keys under '{section}': "
                        f"{', '.join(k[len(section) + 1:] for k in siblings)}.")
    return LabError(f"Unknown config key '{key}'; valid keys: {', '.join(keys)}.")


TYPE_WORDS = {int: "an integer", float: "a number", bool: "true or false", str: "text"}


def _expected(cfg, key: str) -> str:
    obj, *path = [cfg, *key.split(".")]
    for name in path[:-1]:
        obj = getattr(obj, name)
    kind = {f.name: f.type for f in dataclasses.fields(obj)}.get(path[-1])
    kind = {"int": int, "float": float, "bool": bool, "str": str}.get(kind, kind)
    return TYPE_WORDS.get(kind, "a valid value")


def apply_overrides(cfg: C, overrides: dict | list[str] | None) -> C:
    """A copy of ``cfg`` with overrides applied (a dict of dotted keys, or ``key=value`` strings).

    Every value is checked for its type and range (:func:`check_ranges`) before anything runs:
    a mistake is one :class:`LabError` sentence naming the key and what it accepts.
    """
    if not overrides:
        check_ranges(cfg)
        return cfg
    if isinstance(overrides, dict):
        items = [(k, v, False) for k, v in overrides.items()]
    else:
        items = []
        for text in overrides:
            key, sep, value = str(text).partition("=")
            if not sep:
                raise LabError(f"Override '{text}' needs the form key=value, e.g. train.steps=200.")
            items.append((key.strip(), value, value != ""))
    valid = set(flat_keys(cfg))
    for key, _, _ in items:
        if key not in valid:
            raise _unknown_key_error(cfg, key)
    base = OmegaConf.structured(cfg)
    for key, value, parse in items:  # command-line text is parsed (YAML scalars); values are taken as given
        try:
            if parse:
                patch = OmegaConf.from_dotlist([f"{key}={value}"])
            else:
                patch = OmegaConf.create(_nest(key, value))
            base = OmegaConf.merge(base, patch)
        except ConfigKeyError as err:
            raise _unknown_key_error(cfg, str(err.full_key) or key) from err
        except Exception as err:  # OmegaConf's ValidationError, YAML parse errors, interpolation …
            raise LabError(f"{key} must be {_expected(cfg, key)}, got {value!r}.") from err
    try:
        built = OmegaConf.to_object(base)
    except OmegaConfBaseException as err:  # e.g. a value that reads as an ${interpolation}
        key = str(getattr(err, "full_key", "") or "")
        raise LabError(f"{key or 'An override'} cannot be read ({type(err).__name__}); pass a plain value "
                       f"without ${{...}}.") from err
    check_ranges(built)
    return built


# --------------------------------------------------------------------------- ranges

def _at_least(low):
    return lambda v: v >= low, f"at least {low}"


SEED = (lambda v: 0 <= v < 2**32, "between 0 and 2**32 - 1")
POSITIVE = (lambda v: v > 0, "positive")
NON_NEGATIVE = _at_least(0)
# (config class, field) -> (test, what it accepts). Floats must also be finite (checked for every float field).
RANGES = {
    ("TrainConfig", "steps"): _at_least(1), ("TrainConfig", "batch_size"): _at_least(1),
    ("TrainConfig", "lr"): POSITIVE, ("TrainConfig", "weight_decay"): NON_NEGATIVE,
    ("TrainConfig", "warmup"): NON_NEGATIVE, ("TrainConfig", "grad_clip"): NON_NEGATIVE,
    ("TrainConfig", "log_every"): _at_least(1), ("TrainConfig", "eval_every"): NON_NEGATIVE,
    ("TrainConfig", "checkpoint_every"): NON_NEGATIVE, ("TrainConfig", "seed"): SEED,
    ("TrainConfig", "threads"): NON_NEGATIVE, ("TrainConfig", "accumulate"): _at_least(1),
    ("DataConfig", "size"): NON_NEGATIVE, ("DataConfig", "seed"): SEED, ("DataConfig", "image_size"): _at_least(16),
    ("DataConfig", "workers"): NON_NEGATIVE, ("DataConfig", "shuffle_buffer"): NON_NEGATIVE,
    ("DataConfig", "augmentations"): NON_NEGATIVE,
    ("EvalConfig", "seed"): SEED, ("EvalConfig", "per_style"): NON_NEGATIVE, ("EvalConfig", "batch_size"): _at_least(1),
    ("EvalConfig", "geometry_k"): _at_least(1), ("EvalConfig", "probe_per_style"): NON_NEGATIVE,
    ("EvalConfig", "snapshot_items"): NON_NEGATIVE, ("EvalConfig", "val_per_style"): NON_NEGATIVE,
    ("StageOneConfig", "shots"): _at_least(1), ("StageOneConfig", "length"): _at_least(1),
    ("StageOneConfig", "depth"): _at_least(1), ("StageOneConfig", "steps"): _at_least(1),
    ("StageOneConfig", "batch_size"): _at_least(1), ("StageOneConfig", "lr"): POSITIVE,
    ("PromptDistillConfig", "kd_weight"): NON_NEGATIVE, ("PromptDistillConfig", "ifalign_weight"): NON_NEGATIVE,
    ("PromptDistillConfig", "temperature"): POSITIVE,
    ("PromptDistillConfig", "prompt_length"): _at_least(1), ("PromptDistillConfig", "prompt_depth"): _at_least(1),
    ("DistillConfig", "mask_ratio"): (lambda v: 0 <= v < 1, "at least 0 and below 1"),
    ("CacheTeacherConfig", "threads"): NON_NEGATIVE, ("CacheTeacherConfig", "batch_size"): _at_least(1),
}
# Values that are in range yet would not do what the user expects.
NO_EFFECT = {("TrainConfig", "lr"): (0, "would not train (every step leaves the weights as they are); pass a "
                                        "positive learning rate, e.g. train.lr=1e-3")}


def _label_spaces() -> tuple[str, ...]:
    from lab.data.shapes import LABEL_SPACES

    return tuple(LABEL_SPACES)


def _numbers(text: str) -> bool:
    try:
        return all(math.isfinite(float(x)) and float(x) >= 0 for x in text.split(",")) if text else True
    except ValueError:
        return False


# Text settings read late in a run (at its evaluation): checked when built, so no run trains first and fails after.
CHOICES = {("EvalConfig", "label_space"): _label_spaces, ("PromptDistillConfig", "label_space"): _label_spaces,
           ("PromptDistillConfig", "source_space"): _label_spaces}
FORMATS = {("DataConfig", "style_weights"): (_numbers, "comma-separated non-negative numbers, one per style, "
                                                         "e.g. 0.4,0.2,0.2,0.2 (or empty for equal weights)")}


def check_ranges(cfg, prefix: str = "") -> None:
    """Every setting of a built config in its range (a finite number, a step count of at least 1 …),
    checked before any folder is made or any model is loaded; a value out of range is one sentence."""
    for f in dataclasses.fields(cfg):
        value, key = getattr(cfg, f.name), f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            check_ranges(value, f"{key}.")
            continue
        rule = (type(cfg).__name__, f.name)
        if rule in NO_EFFECT and value == NO_EFFECT[rule][0]:
            raise LabError(f"{key}={value} {NO_EFFECT[rule][1]}.")
        if isinstance(value, float) and not math.isfinite(value):
            raise LabError(f"{key} must be a finite number, got {value}.")
        if rule in CHOICES and value not in CHOICES[rule]():
            raise LabError(f"Unknown {key} '{value}'; choose one of: {', '.join(CHOICES[rule]())}.")
        if rule in FORMATS and not FORMATS[rule][0](value):
            raise LabError(f"{key} must be {FORMATS[rule][1]}, got {value!r}.")
        if rule in RANGES and not isinstance(value, bool) and isinstance(value, (int, float)):
            test, accepts = RANGES[rule]
            if not test(value):
                raise LabError(f"{key} must be {accepts}, got {value}.")


def overridden(overrides: dict | list[str] | None, key: str) -> bool:
    """Whether ``key`` is set by these overrides (a dict of dotted keys or ``key=value`` strings)."""
    if not overrides:
        return False
    keys = overrides.keys() if isinstance(overrides, dict) else (str(t).partition("=")[0].strip() for t in overrides)
    return key in keys


def _nest(key: str, value) -> dict:
    head, _, rest = key.partition(".")
    return {head: _nest(rest, value) if rest else value}


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


def from_dict(cls: type[C], data: dict) -> C:
    """Rebuild a config from ``to_dict`` output (keys this version no longer has are ignored)."""
    default = cls()
    known = set(flat_keys(default))
    flat = {}

    def walk(prefix, d):
        for k, v in d.items():
            key = f"{prefix}{k}"
            if isinstance(v, dict) and any(kk.startswith(key + ".") for kk in known):
                walk(key + ".", v)
            elif key in known:
                flat[key] = v

    walk("", data)
    return apply_overrides(default, flat)
