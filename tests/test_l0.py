"""TinyCLIP's hard-concrete L0 gates (lab.models.l0): parity with microsoft/Cream's L0Module + golden values."""

from collections import namedtuple

import pytest
import torch

from lab.models.l0 import HardConcreteMasks
from peer import peer_module

# The shipped teacher's image tower: width 128, 4 heads, MLP 512, 4 layers.
SHAPE = dict(width=128, heads=4, mlp=512, layers=4)


def _lab(groups=("hidden", "heads", "intermediate", "layer")):
    masks = HardConcreteMasks(**SHAPE, start_sparsity=0.0, target_sparsity=0.5, warmup=100, groups=groups)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in masks.log_alpha.values():
            p.copy_(torch.empty(p.shape).uniform_(-4.0, 6.0, generator=g))
    return masks


def test_gates_golden():
    masks = _lab()
    size = masks.expected_size().item()
    loss, expected, target = masks.lagrangian(50)
    assert target == 0.25
    assert size == pytest.approx(340689.0625, rel=1e-5)
    assert expected == pytest.approx(0.5693150, rel=1e-5)
    assert loss.item() == 0.0  # ŝ above t: the official one-sided penalty is 0
    masks.target_sparsity = 0.8
    gap = 0.8 - expected
    assert masks.lagrangian(200)[0].item() == pytest.approx(10 * gap + 10 * gap ** 2, rel=1e-5)
    masks.eval()
    z = masks()
    assert {k: tuple(v.shape) for k, v in z.items()} == {
        "hidden_z": (128,), "heads_z": (4, 1, 4, 1, 1), "intermediate_z": (4, 1, 1, 512), "ffn_z": (4,), "mha_z": (4,)}
    assert int((z["hidden_z"] == 0).sum()) == 35 and int((z["intermediate_z"] == 0).sum()) == 511
    fresh = HardConcreteMasks(**SHAPE, target_sparsity=0.5)  # every gate open at log α = 10
    loss, expected, _ = fresh.lagrangian(0)
    assert expected == pytest.approx(0.0032637, rel=1e-4)  # P(z > 0) at log α = 10 is just below 1
    assert loss.item() == pytest.approx(10 * (0.5 - expected) + 10 * (0.5 - expected) ** 2, rel=1e-5)


@pytest.mark.parametrize("groups", [("hidden", "heads", "intermediate", "layer"), ("heads", "intermediate", "layer")])
def test_parity_with_tinyclip_l0module(groups):
    official = peer_module("microsoft/Cream", "TinyCLIP/src/open_clip/l0module.py", "tinyclip_l0module")
    config = namedtuple("Config", "hidden_size intermediate_size num_attention_heads num_hidden_layers")(128, 512, 4, 4)
    theirs = official.L0Module(config, start_sparsity=0.0, target_sparsity=0.5, lagrangian_warmup=100,
                               pruning_type=list(groups))
    mine = _lab(groups)
    names = {"hidden": "hidden_loga", "heads": "heads_loga", "intermediate": "intermediate_loga",
             "ffn": "ffn_loga", "mha": "mha_loga"}
    with torch.no_grad():
        for name, p in mine.log_alpha.items():
            getattr(theirs, names[name]).copy_(p)
    assert theirs.types == list(mine.log_alpha)
    for step in (0, 50, 200):
        a, b = theirs.lagrangian_regularization(step), mine.lagrangian(step)
        assert a[0].item() == pytest.approx(b[0].item(), rel=1e-6, abs=1e-9)
        assert a[1] == pytest.approx(b[1], rel=1e-6) and a[2] == b[2]
    for training in (True, False):
        theirs.train(training)
        mine.train(training)
        torch.manual_seed(3)
        z_theirs = theirs()
        torch.manual_seed(3)
        z_mine = mine()
        assert z_theirs.keys() == z_mine.keys()
        for key in z_theirs:
            assert torch.equal(z_theirs[key].float(), z_mine[key].float()), (training, key)
    theirs.constrain_parameters()
    mine.constrain()
    for name, p in mine.log_alpha.items():
        assert torch.equal(getattr(theirs, names[name]), p)
