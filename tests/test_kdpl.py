"""KDPL's label-free symmetric KL and top-K class selection: golden values and parity with miccunifi/KDPL."""

import ast
import sys
import types

import pytest
import torch
import torch.nn.functional as F

from lab.losses import prompt_kd as K
from peer import peer_source


def _logits(seed=0, b=6, c=10):
    g = torch.Generator().manual_seed(seed)
    return 30 * torch.randn(b, c, generator=g) / 10, 30 * torch.randn(b, c, generator=g) / 10


def test_kdpl_hand_checked_two_classes():
    # one image, two classes: p_t = (0.8, 0.2), p_s = (0.5, 0.5)
    t = torch.tensor([[torch.log(torch.tensor(4.0)).item(), 0.0]])
    s = torch.zeros(1, 2)
    kl_ts = 0.8 * torch.log(torch.tensor(1.6)) + 0.2 * torch.log(torch.tensor(0.4))
    kl_st = 0.5 * torch.log(torch.tensor(0.5 / 0.8)) + 0.5 * torch.log(torch.tensor(0.5 / 0.2))
    assert K.kdpl_loss(s, t).item() == pytest.approx((0.5 * kl_ts + 0.5 * kl_st).item(), rel=1e-6)


def test_kdpl_golden_and_top_k():
    s, t = _logits()
    idx = K.kdpl_classes(t, 4)
    assert idx.tolist() == [0, 6, 3, 9]
    assert K.kdpl_loss(s[:, idx], t[:, idx]).item() == pytest.approx(1.5386213, rel=1e-5)
    assert K.kdpl_loss(s, t).item() == pytest.approx(2.8331165, rel=1e-5)
    assert K.kdpl_classes(t, 50).numel() == 10  # K ≥ C: every class (non-class-agnostic KDPL)
    s.requires_grad_(True)
    K.kdpl_loss(s, t.requires_grad_(True)).backward()
    assert t.grad is None and s.grad.abs().sum() > 0  # only the student is trained


def _official():
    """kdpl_utils.sampling and CoOp_KDPL.forward_backward, executed with stubs for what they import but do not use."""
    utils_src = peer_source("miccunifi/KDPL", "src/trainers/kdpl_utils.py")
    coop_src = peer_source("miccunifi/KDPL", "src/trainers/coop_kdpl.py")
    def stub(name, **attrs):
        module = types.ModuleType(name)
        module.__dict__.update(attrs)
        return module

    fake = {"dassl": stub("dassl"), "dassl.metrics": stub("m", compute_accuracy=None),
            "dassl.optim": stub("o", build_optimizer=None, build_lr_scheduler=None), "clip": stub("clip", clip=None),
            "clip.clip": stub("cc"), "clip.simple_tokenizer": stub("st", SimpleTokenizer=lambda: None)}
    saved = {k: sys.modules.get(k) for k in fake}
    sys.modules.update(fake)
    try:
        utils = {}
        exec(compile(utils_src, "kdpl_utils.py", "exec"), utils)
    finally:
        for k, v in saved.items():
            sys.modules.pop(k) if v is None else sys.modules.__setitem__(k, v)
    tree = ast.parse(coop_src)
    method = next(n for c in tree.body if isinstance(c, ast.ClassDef) and c.name == "CoOp_KDPL"
                  for n in c.body if isinstance(n, ast.FunctionDef) and n.name == "forward_backward")
    ns = {"F": F, "sampling": utils["sampling"], "torch": torch}
    exec(compile(ast.Module([method], []), "coop_kdpl.py", "exec"), ns)
    return utils["sampling"], ns["forward_backward"]


def test_parity_with_official_kdpl():
    sampling, forward_backward = _official()
    for seed, k in ((0, 4), (1, 10), (2, 3)):
        s_full, t_full = _logits(seed, b=8, c=10)
        s_full.requires_grad_(True)
        assert sorted(sampling(t_full, K=k).tolist()) == sorted(K.kdpl_classes(t_full, k).tolist())
        seen = {}
        me = types.SimpleNamespace(
            parse_batch_train=lambda batch: (batch, None), teacher_model=lambda image: t_full.clone(),
            student_model=lambda image, idx: s_full[:, torch.as_tensor(idx)],
            model_backward_and_update=lambda loss: seen.setdefault("loss", loss), batch_idx=0, num_batches=2,
            k_max=k)
        forward_backward(me, None)
        idx = K.kdpl_classes(t_full, k)
        mine = K.kdpl_loss(s_full[:, idx], t_full[:, idx])
        assert mine.item() == pytest.approx(seen["loss"].item(), rel=1e-6, abs=1e-7)
        g_official = torch.autograd.grad(seen["loss"], s_full)[0]
        g_mine = torch.autograd.grad(mine, s_full)[0]
        assert torch.allclose(g_official, g_mine, atol=1e-6)


SMOKE = ["train.steps=4", "train.batch_size=16", "data.size=64", "eval.per_style=32", "train.log_every=2"]


@pytest.mark.parametrize("settings, headline", [
    (["method=kdpl"], "hm"),
    (["method=kdpl", "class_agnostic=true", "kdpl_k=8", "protocol=cross", "label_space=shape"], "top1"),
])
def test_kdpl_on_the_prompt_pipeline(settings, headline, smoke_run, tmp_path_factory):
    """KDPL end to end: no stage 1 (no labels), the kdpl term logged, every reported number present."""
    from lab import runs
    from lab.train.prompt_distill import default_config, prompt_distill

    cfg = default_config([f"student={smoke_run}", *SMOKE, *settings])
    run = runs.read_run(prompt_distill(cfg, "run", tmp_path_factory.mktemp("kdpl")))
    assert run.complete, run.problems
    assert {headline, f"teacher/{headline}", f"student_zeroshot/{headline}"} <= set(run.summary)
    logged = run.metrics()
    assert any("kdpl" in r for r in logged) and not any("stage1/ce" in r for r in logged)


def test_kdpl_trains_only_the_vision_prompts_and_uses_the_students_scale():
    from lab.models import zoo
    from lab.train import prompt_kdpl as KD
    from lab.train.prompt_distill import Student, default_config, stage_two_terms

    clip = zoo.create("shapes-student")
    cfg = default_config(["method=kdpl", "kdpl_k=3"])
    student = Student(clip, 256, cfg)
    assert [n for n, p in student.named_parameters() if p.requires_grad] == ["prompts.tokens"]
    assert student.scale == pytest.approx(clip.model.logit_scale.exp().item())
    g = torch.Generator().manual_seed(0)
    z, u_t = torch.randn(5, 128, generator=g), F.normalize(torch.randn(5, 256, generator=g), dim=1)
    names = KD.dictionary()
    s_cls, t_cls = F.normalize(torch.randn(len(names), 128, generator=g), dim=1), \
        F.normalize(torch.randn(len(names), 256, generator=g), dim=1)
    term = stage_two_terms(cfg, student, z, u_t, s_cls, t_cls)["kdpl"]
    q_t = student.scale * u_t @ t_cls.T
    keep = K.kdpl_classes(q_t, 3)
    q_s = student.scale * F.normalize(z, dim=1) @ s_cls.T
    assert term.item() == pytest.approx(K.kdpl_loss(q_s[:, keep], q_t[:, keep]).item(), rel=1e-6)
    assert len(names) == len(set(names)) == 83  # every ShapesWorld class name once
