"""open_clip distill, MobileCLIP (DRClipLoss, ensembles, DistillSigLipLoss) and DIME-FM: parity with the
released code (installed open_clip; ml-mobileclip's patch and DIME-FM's utils.py from LAB_PEER_REPOS)
and golden values that always run (tests/golden/modern_losses.json; rewrite with
``python tests/test_modern_losses.py`` only after the parity tests pass)."""

import json
import types
from pathlib import Path

import open_clip
import pytest
import torch
import torch.nn.functional as F

from lab.losses import modern as M
from lab.losses.functional import crd_loss

import peer_code

GOLDEN = Path(__file__).parent / "golden" / "modern_losses.json"


def batch(n=6, d_s=5, dims=(5, 3), n_text=None, seed=0):
    """float64: student raw (image, gt text, syn text), and per-teacher normalised blocks."""
    g = torch.Generator().manual_seed(seed)
    n_text = n_text or n
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    v_s, t_s, syn_s = r(n, d_s), r(n_text, d_s), r(n_text, d_s)
    v_t = [F.normalize(r(n, d), dim=1) for d in dims]
    t_t = [F.normalize(v[:n_text] + 0.5 * r(n_text, d), dim=1) for v, d in zip(v_t, dims)]
    syn_t = [F.normalize(v[:n_text] + 0.8 * r(n_text, d), dim=1) for v, d in zip(v_t, dims)]
    return types.SimpleNamespace(v=v_s.requires_grad_(), t=t_s.requires_grad_(), syn=syn_s.requires_grad_(),
                                 v_t=v_t, t_t=t_t, syn_t=syn_t)


def grads(loss, b):
    return torch.autograd.grad(loss, [b.v, b.t, b.syn], allow_unused=True, retain_graph=True)


def assert_same(ours, theirs, b):
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-12, abs=1e-12)
    for g1, g2 in zip(grads(ours, b), grads(theirs, b)):
        assert (g1 is None) == (g2 is None)
        if g1 is not None:
            torch.testing.assert_close(g1, g2, rtol=1e-10, atol=1e-12)


def norm(b):
    return F.normalize(b.v, dim=1), F.normalize(b.t, dim=1), F.normalize(b.syn, dim=1)


def test_openclip_equals_installed_distillcliploss():
    b = batch(d_s=5, dims=(5,))
    v, t, _ = norm(b)
    s_s, s_t = torch.tensor(12.0, dtype=torch.float64), torch.tensor(60.0, dtype=torch.float64)
    contrastive, distill = open_clip.loss.DistillClipLoss()(v, t, s_s, b.v_t[0], b.t_t[0], s_t)
    assert_same(M.openclip_distill_loss(v, t, s_s, b.v_t[0], b.t_t[0], s_t), distill, b)
    # CRD's official reading is the same with KL: equal gradients, values apart by the teacher's entropy.
    crd = crd_loss(v, t, s_s, b.v_t[0], b.t_t[0], s_t, "official")
    p = F.softmax(s_t * b.v_t[0] @ b.t_t[0].T, 1)
    q = F.softmax(s_t * b.t_t[0] @ b.v_t[0].T, 1)
    entropy = -0.5 * ((p * p.log()).sum(1).mean() + (q * q.log()).sum(1).mean())
    assert distill.item() == pytest.approx(crd.item() + entropy.item(), rel=1e-10)
    for g1, g2 in zip(torch.autograd.grad(distill, b.v, retain_graph=True), torch.autograd.grad(crd, b.v)):
        torch.testing.assert_close(g1, g2)


@pytest.fixture(scope="module")
def patch_loss(tmp_path_factory):
    return peer_code.patched_open_clip_loss(tmp_path_factory.mktemp("mobileclip"))


@pytest.mark.parametrize("after", [True, False])
@pytest.mark.parametrize("syn", [True, False])
def test_dr_clip_loss_equals_patch(patch_loss, after, syn):
    """DRClipLoss with a 2-teacher ensemble (concatenated, sliced by teacher_dimension), weights (0.3, 1)."""
    b = batch()
    v, t, syn_s = norm(b)
    scales = [70.0, 60.0] if after else 50.0
    peer = patch_loss.DRClipLoss(teacher_dimension=[5, 3], distill_loss_weights=[0.3, 1.0],
                                 average_after_softmax=after, dist_logit_scale=scales)
    s_s = torch.tensor(14.0, dtype=torch.float64)
    theirs = peer(v, t, s_s, torch.cat(b.v_t, 1), torch.cat(b.t_t, 1),
                  syn_s if syn else None, torch.cat(b.syn_t, 1) if syn else None)
    ours = M.dr_clip_loss(v, t, s_s, b.v_t, b.t_t, scales, syn_s if syn else None, b.syn_t if syn else None,
                          (0.3, 1.0), after)
    for o, th in zip(ours, theirs):
        assert_same(o, th, b)


def test_ensemble_average_equals_patch(patch_loss):
    b = batch(dims=(5, 3, 4))
    peer = patch_loss.DistillClipLoss(teacher_dimension=[5, 3, 4], average_after_softmax=True)
    theirs = peer.get_logits_ensemble(torch.cat(b.v_t, 1), torch.cat(b.t_t, 1), [30.0, 70.0, 10.0], [0.5, 0.0, -1.0])
    ours = M.ensemble_targets(b.v_t, b.t_t, [30.0, 70.0, 10.0], [0.5, 0.0, -1.0])
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("after", [True, False])
def test_distill_siglip_equals_patch(patch_loss, after):
    b = batch()
    v, t, _ = norm(b)
    scales, biases = ([20.0, 10.0], [-3.0, -1.0]) if after else (15.0, -2.0)
    peer = patch_loss.DistillSigLipLoss(teacher_dimension=[5, 3], distill_loss_weights=[0.4, 1.0],
                                        average_after_sigmoid=after, dist_logit_scale=scales, dist_logit_bias=biases)
    s_s, b_s = torch.tensor(10.0, dtype=torch.float64), torch.tensor(-4.0, dtype=torch.float64, requires_grad=True)
    theirs = peer(v, t, s_s, b_s, torch.cat(b.v_t, 1), torch.cat(b.t_t, 1))
    ours = M.siglip_distill_loss(v, t, s_s, b_s, b.v_t, b.t_t, scales, biases, (0.4, 1.0), after)
    for o, th in zip(ours, theirs):
        assert_same(o, th, b)
        torch.testing.assert_close(torch.autograd.grad(o, b_s, retain_graph=True)[0],
                                   torch.autograd.grad(th, b_s, retain_graph=True)[0])


def test_dime_fm_equals_released_get_loss():
    """Unpaired: 6 images, 4 sentences; the student's image tower output is ``models['student_img_model']``."""
    peer = peer_code.dime_fm()
    b = batch(d_s=5, dims=(5,), n_text=4)
    args = types.SimpleNamespace(use_udist_loss=False, use_pvl_loss=True, t_vl=1.0, t_pvl=3.0, t_udist=7.0,
                                 w_vl_loss=0.7, w_pvl_loss=0.3, w_udist_loss=0.0)
    models = {"student_img_model": lambda images: images, "create_logits": peer.set_logit_scale()}
    loss, vl, pvl, _ = peer.get_loss(models, b.v, b.v_t[0], b.t_t[0], args, torch.nn.KLDivLoss(reduction="batchmean"))
    assert_same(M.dime_vl_loss(b.v, b.v_t[0], b.t_t[0]), vl, b)
    assert_same(M.dime_pvl_loss(b.v, b.v_t[0]), pvl, b)
    assert_same(M.dime_loss(b.v, b.v_t[0], b.t_t[0]), loss, b)


def all_terms():
    b = batch()
    v, t, syn_s = norm(b)
    s, bias = torch.tensor(14.0, dtype=torch.float64), torch.tensor(-4.0, dtype=torch.float64)
    dr = M.dr_clip_loss(v, t, s, b.v_t, b.t_t, [70.0, 60.0], syn_s, b.syn_t, (0.3, 1.0))
    sig = M.siglip_distill_loss(v, t, s, bias, b.v_t, b.t_t, [20.0, 10.0], [-3.0, -1.0], (0.4, 1.0))
    return {
        "openclip": M.openclip_distill_loss(v, t, s, b.v_t[0], b.t_t[0], 60.0),
        "dr_contrastive": dr[0], "dr_distill": dr[1],
        "dr_concat": M.dr_clip_loss(v, t, s, b.v_t, b.t_t, 50.0, average_after_softmax=False)[1],
        "siglip_contrastive": sig[0], "siglip_distill": sig[1],
        "dime_vl": M.dime_vl_loss(b.v, b.v_t[0], b.t_t[0][:4]),
        "dime_pvl": M.dime_pvl_loss(b.v, b.v_t[0]),
    }


def test_golden_values():
    golden = json.loads(GOLDEN.read_text())
    values = {k: v.item() for k, v in all_terms().items()}
    assert values.keys() == golden.keys()
    for name, value in values.items():
        assert value == pytest.approx(golden[name], rel=1e-9), name


def test_targets_are_distributions_and_one_teacher_is_hinton():
    b = batch()
    p = M.ensemble_targets(b.v_t, b.t_t, [70.0, 60.0])
    torch.testing.assert_close(p.sum(1), torch.ones(6, dtype=torch.float64))
    one = M.ensemble_targets(b.v_t[:1], b.t_t[:1], [70.0])
    torch.testing.assert_close(one, M.ensemble_targets(b.v_t[:1], b.t_t[:1], 70.0, average_after_softmax=False))
    with pytest.raises(ValueError, match="one scale and one bias per teacher"):
        M.ensemble_targets(b.v_t, b.t_t, [70.0])


if __name__ == "__main__":
    GOLDEN.write_text(json.dumps({k: v.item() for k, v in all_terms().items()}, indent=2) + "\n")
    print(f"wrote {GOLDEN}")
