import pytest

from lab.config import apply_overrides, flat_keys, from_dict, to_dict
from lab.errors import LabError
from lab.train.pretrain import PretrainConfig, preset_config


def test_dotted_overrides_are_typed():
    cfg = apply_overrides(PretrainConfig(), ["train.steps=7", "train.lr=3e-4", "data.holdout=true", "model=x"])
    assert cfg.train.steps == 7 and cfg.train.lr == pytest.approx(3e-4) and cfg.data.holdout is True
    assert cfg.model == "x"
    assert apply_overrides(PretrainConfig(), ["reference_teacher="]).reference_teacher == ""


def test_unknown_key_lists_valid_keys():
    with pytest.raises(LabError, match=r"Unknown config key 'train.stepz'; valid keys under 'train': steps, batch_size"):
        apply_overrides(PretrainConfig(), ["train.stepz=3"])
    with pytest.raises(LabError, match=r"valid keys: model, data.source"):
        apply_overrides(PretrainConfig(), ["colour=red"])


def test_bad_values_and_forms_are_explained():
    with pytest.raises(LabError, match="train.steps.*'many'"):
        apply_overrides(PretrainConfig(), ["train.steps=many"])
    with pytest.raises(LabError, match="key=value"):
        apply_overrides(PretrainConfig(), ["train.steps"])


def test_presets_and_round_trip():
    cfg = preset_config("teacher", ["train.seed=3"])
    assert cfg.model == "shapes-teacher" and cfg.train.seed == 3
    assert from_dict(PretrainConfig, to_dict(cfg)) == cfg
    assert "eval.per_style" in flat_keys(cfg)
    with pytest.raises(LabError, match="Unknown preset 'huge'; choose one of: teacher, student, smoke"):
        preset_config("huge")
