"""The modern recipes wired into the objective, the trainer's inputs and ShapesWorld's captioner."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lab.data.captioner import synthetic_captions
from lab.data.pairs import ShapesPairs
from lab.data.shapes import COLOUR_NAMES, SHAPES, StreamSpec
from lab.errors import LabError
from lab.losses import modern as M
from lab.losses.objective import Embeddings, Objective
from lab.train.distill import default_config, distill


def embeddings(n=8, d_s=6, d_t=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    t1, t2 = F.normalize(r(n, d_t), dim=1), F.normalize(r(n, 3), dim=1)
    e = Embeddings(r(n, d_s), r(n, d_s), torch.tensor(14.0), t1, F.normalize(t1 + r(n, d_t), dim=1), 50.0,
                   extra_teachers=((t2, F.normalize(t2 + r(n, 3), dim=1), 30.0),),
                   syn_text_raw=r(n, d_s), teacher_syn_text=(F.normalize(r(n, d_t), dim=1), F.normalize(r(n, 3), dim=1)))
    return e


def test_objective_mobileclip_is_drcliploss():
    """L = λ_c·task + λ_kd·mobileclip with synthetic captions and 2 teachers equals DRClipLoss's sum."""
    e = embeddings()
    obj = Objective("mobileclip", 6, 5, "task=0.25,mobileclip=2", distill_scale="70,60")
    out = obj(e)
    v, t, syn = (F.normalize(x, dim=1) for x in (e.image_raw, e.text_raw, e.syn_text_raw))
    c, d = M.dr_clip_loss(v, t, e.scale, [e.teacher_image, e.extra_teachers[0][0]],
                          [e.teacher_text, e.extra_teachers[0][1]], [70.0, 60.0], syn, list(e.teacher_syn_text),
                          (0.25, 2.0))
    assert out["task"].item() == pytest.approx(c.item(), rel=1e-6)
    assert out["mobileclip"].item() == pytest.approx(d.item(), rel=1e-6)
    assert obj.formula() == "L = 0.25·task + 2·mobileclip"


def test_objective_dime_reads_projected_image_only():
    e = embeddings()
    obj = Objective("dimefm", 6, 5, "task=0")
    out = obj(e)
    total = out["dimevl"] + out["dimepvl"]
    pv = obj.projection(e.image_raw, e.text_raw)[0]
    assert total.item() == pytest.approx(M.dime_loss(pv, e.teacher_image, e.teacher_text).item(), rel=1e-6)
    total.backward()  # LiT-style: no gradient reaches the student's text
    assert obj.projection.text.weight.grad is None or obj.projection.text.weight.grad.abs().sum() == 0


def test_distill_scale_must_match_the_ensemble():
    with pytest.raises(LabError, match="2 scales for 3 teachers"):
        e = embeddings()
        e.extra_teachers = e.extra_teachers * 2
        e.teacher_syn_text = None
        e.syn_text_raw = None
        Objective("mobileclip", 6, 5, distill_scale="70,60")(e)


def test_ensemble_needs_an_ensemble_term(tmp_path):
    with pytest.raises(LabError, match="needs an ensemble term"):
        distill(default_config(["loss=crd", "teacher=shipped,shipped"]), "x", tmp_path)
    assert not (tmp_path / "x").exists()


def test_captioner_rates_and_phrasing():
    items = ShapesPairs(StreamSpec(), 2000)._items
    plain = synthetic_captions(items.factors, drop=0.0, wrong=0.0)
    assert not set(plain) & set(items.captions)  # differently phrased
    for i in range(50):
        assert COLOUR_NAMES[items.factors["colour"][i]] in plain[i] and SHAPES[items.factors["shape"][i]] in plain[i]
    noisy = synthetic_captions(items.factors, drop=0.2, wrong=0.1)
    wrong_shape = np.mean([SHAPES[s] not in c for s, c in zip(items.factors["shape"], noisy)])
    no_colour = np.mean([COLOUR_NAMES[k] not in c for k, c in zip(items.factors["colour"], noisy)])
    assert 0.03 < wrong_shape < 0.08  # shape is wrong in half of the 10% errors
    assert 0.17 < no_colour < 0.30  # dropped (20%) or replaced (5%)
    assert synthetic_captions(items.factors) == synthetic_captions(items.factors)  # deterministic per item


def test_task_weight_setting_and_its_conflict():
    e = embeddings()
    assert Objective("mobileclip", 6, 5, task_weight=0.0)(e)["task"].item() == 0.0
    assert Objective("mobileclip", 6, 5, task_weight=0.0).formula() == "L = 0·task + 1·mobileclip"
    with pytest.raises(LabError, match="task weight is given twice"):
        Objective("mobileclip", 6, 5, "task=0", task_weight=0.5)
