"""TinyCLIP's manual weight inheritance (lab.models.inherit): parity with microsoft/Cream, golden values, refusals."""

import contextlib
import io
import json
from pathlib import Path

import pytest
import torch

from lab.errors import LabError
from lab.models import inherit, zoo
from peer import peer_module

GOLDEN = json.loads((Path(__file__).parent / "golden" / "inherit.json").read_text())


@pytest.fixture(scope="module")
def pair():
    torch.manual_seed(0)
    return zoo.create("shapes-student"), zoo.shipped_teacher()


def _signature(x):
    x = x.double().flatten()
    w = torch.arange(1, x.numel() + 1, dtype=torch.float64) / x.numel()
    return [x.sum().item(), (x * w).sum().item(), x.abs().max().item()]


def test_layer_indices_are_tinyclip_interval_front():
    assert inherit.layer_indices(12, 3) == [0, 4, 8]
    assert inherit.layer_indices(4, 2) == [0, 2]
    assert inherit.layer_indices(6, 4) == [0, 1, 2, 3]


def test_in_proj_keeps_the_first_heads_of_q_k_and_v():
    head_dim, heads, width = 2, 3, 6
    w = torch.arange(3 * heads * head_dim * width, dtype=torch.float32).view(3 * heads * head_dim, width)
    out = inherit.slice_in_proj(w, torch.Size([3 * 1 * head_dim, 4]), head_dim)
    rows = [0, 1, 6, 7, 12, 13]  # q's, k's and v's first head (not simply the first 6 rows)
    assert torch.equal(out, w[rows, :4])


def test_inherited_student_matches_the_golden_values(pair):
    student, teacher = pair
    state = inherit.inherit_state(student.model, teacher.model)
    for key, expected in GOLDEN["tensors"].items():
        assert _signature(state[key]) == pytest.approx(expected, rel=1e-6, abs=1e-7), key
    # student block 1 of the image tower is the teacher's block 2 (step 2), its first 2 of 4 heads
    t = teacher.model.state_dict()["visual.transformer.resblocks.2.attn.in_proj_weight"].view(3, 4, 32, 128)
    assert torch.equal(state["visual.transformer.resblocks.1.attn.in_proj_weight"],
                       t[:, :2, :, :64].reshape(192, 64))


def test_parity_with_tinyclip_weight_inherit(pair):
    official = peer_module("microsoft/Cream", "TinyCLIP/src/open_clip/weight_inherit.py", "tinyclip_weight_inherit")
    student, teacher = pair
    mine = inherit.inherit_state(student.model, teacher.model)
    s_image, s_text = inherit.towers(student.model.state_dict())
    t_image, t_text = inherit.towers(teacher.model.state_dict())
    with contextlib.redirect_stdout(io.StringIO()):  # as TinyCLIP's main.py calls it: once per tower
        theirs = {**official.weight_inherit(dict(s_image), dict(t_image), student.model.visual.transformer.resblocks[0].attn.head_dim),
                  **official.weight_inherit(dict(s_text), dict(t_text), student.model.transformer.resblocks[0].attn.head_dim)}
    assert len(theirs) == len(mine) - 1  # all but the logit scale, which TinyCLIP does not inherit
    for key, value in theirs.items():
        assert torch.equal(value, mine[key]), key


def _student(section, key, value):
    import open_clip

    cfg = json.loads((Path(zoo.PRESET_DIR) / "shapes-student.json").read_text())
    cfg[section][key] = value
    return open_clip.model.CLIP(cfg["embed_dim"], cfg["vision_cfg"], cfg["text_cfg"])


@pytest.mark.parametrize("section, key, value, words", [
    ("vision_cfg", "patch_size", 4, "image tower's patch size is"),
    ("vision_cfg", "head_width", 16, "image tower's head width is 16, the teacher's 32"),
    ("text_cfg", "vocab_size", 1000, "text tower's vocabulary is 1000"),
    ("vision_cfg", "layers", 5, "image tower has 5 layers, more than the teacher's 4"),
    ("text_cfg", "layers", 3, "text tower has 3 layers, more than the teacher.s 2"),
])
def test_a_student_that_is_not_a_slice_gets_one_sentence(pair, section, key, value, words):
    _, teacher = pair
    inherit.check_slice(pair[0].model, teacher.model)  # the shipped student is a slice
    with pytest.raises(LabError, match=words):
        inherit.check_slice(_student(section, key, value), teacher.model)


def test_init_values_are_checked():
    for ok in ("random", "inherit", "inherit:shipped"):
        inherit.check_init(ok)
    for bad in ("inherited", "random:x", "inherit:"):
        with pytest.raises(LabError, match="init"):
            inherit.check_init(bad)


def test_trainers_start_from_the_inherited_student(starts, tmp_path, pair):
    from lab.train.distill import default_config, distill
    from lab.train.pretrain import preset_config, pretrain

    tiny = ["data.size=32", "train.steps=1", "train.batch_size=16", "train.warmup=1", "train.eval_every=0",
            "eval.per_style=8", "train.seed=5"]
    distill(default_config([*tiny, "loss=am", "init=inherit"]), "inherit-am", tmp_path)
    pretrain(preset_config("student", [*tiny, "init=inherit:shipped"]), "inherit-nokd", tmp_path)
    random = dict(zoo.load_student("shapes-student", 5).model.named_parameters())
    inherited = inherit.inherit_state(pair[0].model, pair[1].model)
    kd, nokd = starts
    for key, value in kd.items():
        assert torch.equal(value, nokd[key]), key  # both trainers, one inherited start
        if key != "logit_scale":
            assert torch.equal(value, inherited[key]), key
    assert torch.equal(kd["logit_scale"], random["logit_scale"])  # the scale is the seed's own, as in TinyCLIP
    assert not torch.equal(kd["visual.proj"], random["visual.proj"])
