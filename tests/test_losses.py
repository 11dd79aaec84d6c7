"""Every loss term: golden values, parity with independent computations, gradient routing."""

import json
import math
from pathlib import Path

import open_clip
import pytest
import torch
import torch.nn.functional as F

from lab.errors import LabError
from lab.losses import functional as L
from lab.losses.objective import TERMS, Embeddings, Objective

GOLDEN = Path(__file__).parent / "golden" / "losses.json"


def fixed_batch(n=6, d_s=4, d_t=5, seed=0):
    """Fixed tensors: student raw embeddings, teacher normalised embeddings, scales."""
    g = torch.Generator().manual_seed(seed)
    v_raw, t_raw = torch.randn(n, d_s, generator=g), torch.randn(n, d_s, generator=g)
    v_t = F.normalize(torch.randn(n, d_t, generator=g), dim=1)
    t_t = F.normalize(v_t + 0.5 * torch.randn(n, d_t, generator=g), dim=1)
    return v_raw, t_raw, v_t, t_t


def all_terms(variant):
    """Every term on the fixed batch, unweighted, through the functional API."""
    v_raw, t_raw, v_t, t_t = fixed_batch(d_s=5)
    v_s, t_s = F.normalize(v_raw, dim=1), F.normalize(t_raw, dim=1)
    s_s, s_t, c = torch.tensor(10.0), torch.tensor(50.0), torch.tensor(3.0)
    return {
        "clip": L.clip_loss(v_s, t_s, s_s),
        "crd": L.crd_loss(v_s, t_s, s_s, v_t, t_t, s_t, variant),
        "fd": L.fd_loss(v_s, t_s, v_t, t_t, variant),
        "gd": L.gd_loss(v_s, t_s, s_s, v_t, t_t, s_t, variant),
        "icl": L.icl_loss(v_s, t_s, v_t, t_t, c),
        "vrd": L.vrd_loss(v_s, t_s, v_t, t_t, c, 2 * c),
        "xrd": L.xrd_loss(v_s, t_s, v_t, t_t, c),
        "am": L.affinity_mimicking_loss(v_s, t_s, s_s, v_t, t_t, s_t),
        "logit_kd": L.logit_kd_loss(v_s @ t_s.T * 4, v_t @ t_t.T * 4, temperature=2.0),
    }


@pytest.mark.parametrize("variant", ["paper", "official"])
def test_golden_values(variant):
    """Stored values still hold (tests/golden/losses.json; rewrite it with `python tests/test_losses.py`
    only after checking a change against the parity tests below)."""
    golden = json.loads(GOLDEN.read_text())[variant]
    values = {k: v.item() for k, v in all_terms(variant).items()}
    assert values.keys() == golden.keys()
    for name, value in values.items():
        assert value == pytest.approx(golden[name], rel=1e-5, abs=1e-9), name


def test_task_term_matches_open_clip():
    v_raw, t_raw, _, _ = fixed_batch()
    v, t = F.normalize(v_raw, dim=1), F.normalize(t_raw, dim=1)
    theirs = open_clip.ClipLoss()(v, t, torch.tensor(14.3))
    assert L.clip_loss(v, t, torch.tensor(14.3)).item() == pytest.approx(theirs.item(), rel=1e-6)


def test_crd_by_hand_and_variants():
    v_raw, t_raw, v_t, t_t = fixed_batch(d_s=5)
    v, t = F.normalize(v_raw, dim=1), F.normalize(t_raw, dim=1)
    s, st = 10.0, 50.0
    ps, pt = F.softmax(s * v @ t.T, 1), F.softmax(st * v_t @ t_t.T, 1)
    qs, qt = F.softmax(s * t @ v.T, 1), F.softmax(st * t_t @ v_t.T, 1)
    i2t = (pt * (pt.log() - ps.log())).sum(1).mean()
    t2i = (qt * (qt.log() - qs.log())).sum(1).mean()
    assert L.crd_loss(v, t, s, v_t, t_t, st, "paper").item() == pytest.approx((i2t + t2i).item(), rel=1e-5)
    assert L.crd_loss(v, t, s, v_t, t_t, st, "official").item() == pytest.approx(0.5 * (i2t + t2i).item(), rel=1e-5)


def test_crd_and_affinity_mimicking_share_gradients():
    v_raw, t_raw, v_t, t_t = fixed_batch(d_s=5)
    grads = []
    for fn in (lambda v, t: L.crd_loss(v, t, 10.0, v_t, t_t, 50.0, "official"),
               lambda v, t: L.affinity_mimicking_loss(v, t, 10.0, v_t, t_t, 50.0)):
        v, t = v_raw.clone().requires_grad_(), t_raw.clone().requires_grad_()
        fn(F.normalize(v, dim=1), F.normalize(t, dim=1)).backward()
        grads.append((v.grad, t.grad))
    assert torch.allclose(grads[0][0], grads[1][0], atol=1e-6)
    assert torch.allclose(grads[0][1], grads[1][1], atol=1e-6)


def test_fd_by_hand_and_reduction():
    a, b = torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([[0.0, 1.0], [0.0, 1.0]])
    # image pairs: |(1,-1)|² = 2 and 0; text pairs identical: 0.
    assert L.fd_loss(a, b, b, b, "paper").item() == pytest.approx(1.0)
    assert L.fd_loss(a, b, b, b, "official").item() == pytest.approx(2.0 / 4)
    with pytest.raises(ValueError, match="project the student"):
        L.fd_loss(torch.ones(2, 3), torch.ones(2, 3), a, a)


def test_gd_closed_form_equals_autograd():
    """∂/∂v of the CLIP loss in closed form (paper reading) equals torch.autograd.grad."""
    v_raw, t_raw, _, _ = fixed_batch(d_s=5)
    v, t = F.normalize(v_raw, dim=1).requires_grad_(), F.normalize(t_raw, dim=1).requires_grad_()
    scale = 10.0
    g_v, g_t = torch.autograd.grad(L.clip_loss(v, t, scale), (v, t))
    img_anchor, txt_key = L.clip_gradients(v, t, 1 / scale)
    txt_anchor, img_key = L.clip_gradients(t, v, 1 / scale)
    assert torch.allclose(0.5 * (img_anchor + img_key), g_v, atol=1e-6)
    assert torch.allclose(0.5 * (txt_key + txt_anchor), g_t, atol=1e-6)


def test_gd_is_zero_when_student_equals_teacher_and_grows_otherwise():
    _, _, v_t, t_t = fixed_batch()
    assert L.gd_loss(v_t, t_t, 50.0, v_t, t_t, 50.0).item() == pytest.approx(0.0, abs=1e-12)
    assert L.gd_loss(t_t, v_t, 50.0, v_t, t_t, 50.0).item() > 0


def test_official_gd_uses_the_scale_as_temperature():
    """The released code's softmax with τ = scale is almost uniform."""
    _, _, v_t, t_t = fixed_batch()
    n = v_t.shape[0]
    anchor, _ = L.clip_gradients(v_t, t_t, 50.0)
    uniform = (t_t.mean(0, keepdim=True) - t_t) / (50.0 * n)
    assert torch.allclose(anchor, uniform, atol=1e-3 / n)


def test_icl_by_hand():
    v_raw, t_raw, v_t, t_t = fixed_batch(d_s=5)
    v, t = F.normalize(v_raw, dim=1), F.normalize(t_raw, dim=1)
    c = 3.0
    i2t = -F.log_softmax(c * v @ t_t.T, 1).diagonal().mean()
    t2i = -F.log_softmax(c * t @ v_t.T, 1).diagonal().mean()
    assert L.icl_loss(v, t, v_t, t_t, c).item() == pytest.approx(0.5 * (i2t + t2i).item(), rel=1e-6)


def test_logit_kd_by_hand():
    s, t = torch.tensor([[1.0, 2.0, 0.0]]), torch.tensor([[0.0, 3.0, 1.0]])
    p, q = F.softmax(t / 2, 1), F.softmax(s / 2, 1)
    assert L.logit_kd_loss(s, t, 2.0).item() == pytest.approx(4 * (p * (p.log() - q.log())).sum().item(), rel=1e-6)


def test_vrd_kl_and_image_ce_reach_only_the_image_tower():
    v_raw, t_raw, v_t, t_t = fixed_batch(d_s=5)
    v, t = v_raw.clone().requires_grad_(), t_raw.clone().requires_grad_()
    pv, pt = F.normalize(v, dim=1), F.normalize(t, dim=1)
    grad_v, grad_t = torch.autograd.grad(L.vrd_loss(pv, pt, v_t, t_t, 3.0, 6.0), (v, t))
    a_txt = 6.0 * t_t @ F.normalize(t, dim=1).T  # a fresh graph
    (text_ce_grad,) = torch.autograd.grad(0.5 * (L.diagonal_ce(a_txt) + L.diagonal_ce(a_txt.T)), t)
    assert torch.allclose(grad_t, text_ce_grad, atol=1e-6)  # the KL and image CE add nothing to the text tower
    assert grad_v.abs().sum() > 0


def test_xrd_reaches_both_towers():
    v_raw, t_raw, v_t, t_t = fixed_batch(d_s=5)
    v, t = v_raw.clone().requires_grad_(), t_raw.clone().requires_grad_()
    grad_v, grad_t = torch.autograd.grad(L.xrd_loss(F.normalize(v, dim=1), F.normalize(t, dim=1), v_t, t_t, 3.0), (v, t))
    assert grad_v.abs().sum() > 0 and grad_t.abs().sum() > 0


def test_mask_patches_keeps_ceil_and_order():
    tokens = torch.arange(2 * 7 * 3, dtype=torch.float).view(2, 7, 3)
    kept = L.mask_patches(tokens, 0.5, torch.Generator().manual_seed(0))
    assert kept.shape == (2, 4, 3)  # ceil(0.5 * 7)
    for b in range(2):
        rows = kept[b, :, 0] // 3 - 7 * b
        assert torch.all(rows[1:] > rows[:-1])  # original order kept
    assert L.mask_patches(tokens, 0.0).shape == tokens.shape
    with pytest.raises(ValueError, match="mask_ratio"):
        L.mask_patches(tokens, 1.0)


def test_mask_patches_takes_a_generator_on_another_device():
    """A CPU generator masks tokens on another device (a notebook's generator, GPU tokens); 'meta' stands in for CUDA."""
    tokens = torch.zeros(2, 7, 3, device="meta")
    kept = L.mask_patches(tokens, 0.5, torch.Generator().manual_seed(0))
    assert kept.shape == (2, 4, 3) and kept.device == tokens.device


def test_masked_forward_equals_open_clip_without_masking_and_differs_with():
    from lab.models import zoo

    torch.manual_seed(0)
    student = zoo.load("shapes-student")
    images = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        full = student.model.encode_image(images)
        assert torch.allclose(L.masked_encode_image(student.model.visual, images, 0.0), full, atol=1e-5)
        masked = L.masked_encode_image(student.model.visual, images, 0.5, torch.Generator().manual_seed(1))
    assert not torch.allclose(masked, full, atol=1e-3)


@pytest.mark.parametrize("name", sorted(TERMS))
def test_teacher_never_receives_gradient(name):
    v_raw, t_raw, v_t, t_t = fixed_batch(d_s=4, d_t=5)
    v_raw.requires_grad_(), t_raw.requires_grad_()
    v_t, t_t = v_t.clone().requires_grad_(), t_t.clone().requires_grad_()
    objective = Objective([name], student_dim=4, teacher_dim=5)
    masked = v_raw * 0.9 if name == "mfd" else None
    classes = F.normalize(torch.randn(3, 5), dim=1).requires_grad_()
    terms = objective(Embeddings(v_raw, t_raw, torch.tensor(10.0), v_t, t_t, torch.tensor(50.0), masked,
                                 class_text_raw=torch.randn(3, 4), teacher_class_text=classes))
    terms[name].backward()
    assert v_t.grad is None and t_t.grad is None and classes.grad is None
    assert (v_raw.grad is not None and v_raw.grad.abs().sum() > 0) or \
        (t_raw.grad is not None and t_raw.grad.abs().sum() > 0)


def test_mfd_gradient_reaches_the_image_tower_only_through_the_masked_forward():
    v_raw, t_raw, v_t, t_t = fixed_batch(d_s=4, d_t=5)
    v_raw.requires_grad_()
    masked = (v_raw.detach() * 0.5).requires_grad_()
    objective = Objective("mfd", student_dim=4, teacher_dim=5)
    objective(Embeddings(v_raw, t_raw, torch.tensor(10.0), v_t, t_t, 50.0, masked))["mfd"].backward()
    assert v_raw.grad is None and masked.grad.abs().sum() > 0


def test_objective_formula_defaults_and_errors():
    obj = Objective("clipkd", student_dim=128, teacher_dim=256)
    assert obj.formula() == "L = task + 1·crd + 1·icl + 7.8125·fd   [crd: paper, fd: paper]"
    official = Objective("crd+fd+gd", 128, 256, variant="official")
    assert official.weights == {"crd": 1.0, "fd": 2000.0, "gd": 1e8}
    assert Objective("fd", 128, 256, weights="fd=3").weights["fd"] == 3.0
    with pytest.raises(LabError, match="Unknown loss term 'fdd'; valid terms: crd, fd"):
        Objective("crd+fdd", 128, 256)
    with pytest.raises(LabError, match="not in the objective"):
        Objective("crd", 128, 256, weights="fd=3")
    with pytest.raises(LabError, match="form term=number"):
        Objective("fd", 128, 256, weights="fd:3")


def test_objective_bad_inputs_are_clear():
    obj = Objective("fd", student_dim=4, teacher_dim=5)
    empty = torch.zeros(0, 4)
    with pytest.raises(LabError, match="empty"):
        obj(Embeddings(empty, empty, torch.tensor(1.0), torch.zeros(0, 5), torch.zeros(0, 5), 1.0))
    v_raw, t_raw, v_t, t_t = fixed_batch(d_s=4, d_t=5)
    with pytest.raises(LabError, match="built for student width 4 and teacher width 5"):
        obj(Embeddings(torch.randn(6, 3), torch.randn(6, 3), torch.tensor(1.0), v_t, t_t, 1.0))


def test_feature_terms_refuse_mismatched_widths_without_a_projection():
    _, _, v_t, t_t = fixed_batch(d_s=4, d_t=5)
    student = F.normalize(torch.randn(6, 4), dim=1)
    for term in (lambda: L.fd_loss(student, student, v_t, t_t), lambda: L.icl_loss(student, student, v_t, t_t, 1.0),
                 lambda: L.gd_loss(student, student, 10.0, v_t, t_t, 50.0),
                 lambda: L.vrd_loss(student, student, v_t, t_t, 1.0, 1.0), lambda: L.xrd_loss(student, student, v_t, t_t, 1.0)):
        with pytest.raises(ValueError, match="project the student with a Linear head first"):
            term()


def test_learnable_parts_are_saved_with_the_objective():
    obj = Objective("crd+icl+fd+vrd+xrd+afd", 4, 5)
    keys = set(obj.state_dict())
    assert {"projection.image.weight", "scales.cross.log_scale", "scales.image.log_scale",
            "fusion.image.weight"} <= keys
    assert math.isclose(obj.scales["cross"]().item(), 1 / 0.07, rel_tol=1e-5)
    assert math.isclose(Objective("icl", 4, 5, variant="official").scales["cross"]().item(),
                        math.log(1 / 0.07), rel_tol=1e-5)


if __name__ == "__main__":
    GOLDEN.parent.mkdir(exist_ok=True)
    table = {variant: {k: v.item() for k, v in all_terms(variant).items()} for variant in ("paper", "official")}
    GOLDEN.write_text(json.dumps(table, indent=2) + "\n")
    print(f"wrote {GOLDEN}")
