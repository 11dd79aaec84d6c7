"""PromptKD / ComKD-CLIP losses and modules on fixed tensors."""

import pytest
import torch
import torch.nn.functional as F

from lab.losses import prompt_kd as K


def batch(b=6, c=5, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(b, d, generator=g)
    u_t = F.normalize(torch.randn(b, d, generator=g), dim=1)
    classes = F.normalize(torch.randn(c, d, generator=g), dim=1)
    return z, u_t, classes


@pytest.mark.parametrize("variant", K.EDU_VARIANTS)
def test_alpha_zero_gives_promptkd_logits(variant):
    z, _, classes = batch()
    edu = K.EduAttention(8, variant)
    assert edu.alpha.item() == 0.0
    assert torch.allclose(K.class_logits(edu(z, classes), classes), K.class_logits(z, classes), atol=1e-5)
    with torch.no_grad():
        edu.alpha.fill_(0.5)
    assert not torch.allclose(K.class_logits(edu(z, classes), classes), K.class_logits(z, classes), atol=1e-3)


def test_text_query_is_class_conditional():
    z, _, classes = batch()
    edu = K.EduAttention(8, "text_query")
    with torch.no_grad():
        edu.alpha.fill_(1.0)
    out = edu(z, classes)
    assert out.shape == (6, 5, 8)
    a = torch.softmax(edu.k(z) @ edu.q(classes).T / 8 ** 0.5, dim=-1)
    assert torch.allclose(out[2, 3], z[2] + a[2, 3] * edu.v(z)[2], atol=1e-6)


def test_ifalign_by_hand():
    s = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    t = torch.tensor([[0.0, 0.0], [0.0, 0.0]])
    # means (0.5, 1) vs 0: 1.5; biased variances (0.25, 1) vs 0: 1.25
    assert K.ifalign_loss(s, t).item() == pytest.approx(2.75)
    assert K.ifalign_loss(s, t, variance=False).item() == pytest.approx(1.5)
    assert K.ifalign_loss(s, t, mean=False).item() == pytest.approx(1.25)
    with pytest.raises(ValueError, match="mean part, the variance part, or both"):
        K.ifalign_loss(s, t, mean=False, variance=False)


def test_promptkd_official_scaling_is_weight_over_classes_times_paper():
    q_s, q_t = torch.randn(4, 7), torch.randn(4, 7)
    paper = K.promptkd_loss(q_s, q_t, variant="paper")
    official = K.promptkd_loss(q_s, q_t, weight=1000.0, variant="official")
    assert official.item() == pytest.approx(1000.0 / 7 * paper.item(), rel=1e-5)
    p_t = F.softmax(q_t, 1)
    by_hand = (p_t * (p_t.log() - F.log_softmax(q_s, 1))).sum(1).mean()
    assert paper.item() == pytest.approx(by_hand.item(), rel=1e-5)


def test_teacher_side_gets_no_gradient():
    z, u_t, classes = batch()
    z.requires_grad_(), u_t.requires_grad_()
    q_t = K.class_logits(u_t, classes)  # built from u_t: any gradient through it would reach u_t
    (K.promptkd_loss(K.class_logits(z, classes), q_t) + K.ifalign_loss(F.normalize(z, dim=1), u_t)).backward()
    assert z.grad.abs().sum() > 0 and u_t.grad is None


def test_prompt_distillation_smoke_run(smoke_run, tmp_path):
    """Stage 1 and stage 2 end to end on seconds-long settings: a valid run with every reported number."""
    from lab import runs
    from lab.train.prompt_distill import default_config, prompt_distill

    cfg = default_config([f"student={smoke_run}", "stage1.steps=4", "stage1.shots=2", "stage1.batch_size=32",
                          "train.steps=4", "train.batch_size=16", "data.size=64", "eval.per_style=32",
                          "train.log_every=2"])
    run = runs.read_run(prompt_distill(cfg, "comkd", tmp_path))
    assert run.complete, run.problems
    assert {"hm", "teacher/hm", "student_zeroshot/hm", "student/sketch/hm"} <= set(run.summary)
    logged = run.metrics()
    assert any("stage1/ce" in r for r in logged) and any({"kd", "ifalign"} <= set(r) for r in logged)
