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


@pytest.mark.parametrize("variant", K.EDU_VARIANTS)
def test_edu_attention_logits_equal_the_logits_of_its_features(variant):
    z, _, classes = batch()
    edu = K.EduAttention(8, variant)
    with torch.no_grad():
        edu.alpha.fill_(0.7)
    assert torch.allclose(edu.logits(z, classes), K.class_logits(edu(z, classes), classes), atol=1e-4)


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


def test_refinement_losses_by_hand():
    q_s, q_t = torch.randn(4, 7), torch.randn(4, 7)
    assert torch.equal(K.refinement_loss(q_s, q_t, "kl"), K.promptkd_loss(q_s, q_t))
    assert K.refinement_loss(q_s, q_t, "mse").item() == pytest.approx(((q_s - q_t) ** 2).mean().item(), rel=1e-6)
    assert K.refinement_loss(q_s, q_t, "l1").item() == pytest.approx((q_s - q_t).abs().mean().item(), rel=1e-6)
    with pytest.raises(ValueError, match="Unknown refinement 'l2'"):
        K.refinement_loss(q_s, q_t, "l2")


SMOKE = ["stage1.steps=4", "stage1.shots=2", "stage1.batch_size=32", "train.steps=4", "train.batch_size=16",
         "data.size=64", "eval.per_style=32", "train.log_every=2"]


@pytest.mark.parametrize("settings, headline, terms", [
    (["method=comkd"], "hm", {"kl", "ifalign"}),
    (["method=promptkd", "protocol=cross", "label_space=shape"], "top1", {"kl"}),
    (["method=comkd", "protocol=domain", "refine=mse", "align_mean=false"], "target_top1", {"mse", "ifalign"}),
    (["method=am"], "hm", {"am"}),
])
def test_prompt_distillation_protocols(settings, headline, terms, smoke_run, tmp_path_factory):
    """Stage 1 and stage 2 end to end on seconds-long settings: a valid run with every reported number."""
    from lab import runs
    from lab.train.prompt_distill import default_config, prompt_distill

    cfg = default_config([f"student={smoke_run}", *SMOKE, *settings, "train.eval_every=2", "eval.probe_per_style=8",
                          "eval.val_per_style=16"])
    run = runs.read_run(prompt_distill(cfg, "run", tmp_path_factory.mktemp("prompt")))
    assert run.complete, run.problems
    assert run.summary["headline"] == headline
    assert 0 <= run.summary[f"val/{headline}"] <= 100  # the validation split, which `tune --grid comkd` chooses by
    assert {headline, f"teacher/{headline}", f"teacher_zeroshot/{headline}", f"student_zeroshot/{headline}",
            "student/sketch/top1"} <= set(run.summary)
    logged = run.metrics()
    assert any("stage1/ce" in r and "stage1/text_l1" in r for r in logged)  # PromptSRC consistency is on
    assert any(terms <= set(r) for r in logged)
    # the stage-2 probe: the headline numbers on a small test subset every train.eval_every steps, for the curves
    assert [r["step"] for r in logged if f"eval/{headline}" in r] == [2, 4]


def test_tuned_teacher_prompts_are_cached_per_setting(smoke_run, tmp_path):
    from lab import runs
    from lab.train.prompt_distill import default_config, prompt_distill

    first = prompt_distill(default_config([f"student={smoke_run}", *SMOKE, "method=promptkd"]), "a", tmp_path)
    again = prompt_distill(default_config([f"student={smoke_run}", *SMOKE, "method=comkd"]), "b", tmp_path)
    other = prompt_distill(default_config([f"student={smoke_run}", *SMOKE, "stage1.lr=1e-3"]), "c", tmp_path)
    assert [runs.read_run(p).summary["stage1_cache"] for p in (first, again, other)] == ["built", "hit", "built"]
    a, b = (torch.load(p / runs.CHECKPOINT, weights_only=True)["classes"] for p in (first, again))
    assert torch.equal(a, b)  # the cached prompts give the same class features W


@pytest.mark.parametrize("settings, message", [
    (["protocol=base2novel", "label_space=shape"], "base2novel protocol splits the colour_shape classes"),
    (["protocol=few"], "Unknown protocol 'few'; choose one of: base2novel, cross, domain"),
    (["method=kd"], "Unknown method 'kd'"),
    (["protocol=domain", "source_style=oil"], "Unknown source_style 'oil'"),
    (["refine=l2"], "Unknown refinement|Unknown refine 'l2'"),
])
def test_prompt_distillation_config_mistakes(settings, message, tmp_path):
    from lab.errors import LabError
    from lab.train.prompt_distill import default_config, prompt_distill

    with pytest.raises(LabError, match=message):
        prompt_distill(default_config(["student=shapes-student", *settings]), "bad", tmp_path)
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize("method", ["comkd", "promptkd", "am"])
def test_stage_two_trains_only_prompts_projector_and_edu_attention(method):
    from lab.models import zoo
    from lab.train.prompt_distill import Student, default_config, stage_two_terms

    cfg = default_config([f"method={method}"])
    student = Student(zoo.load("shapes-student"), 256, cfg)
    with torch.no_grad():
        if student.edu is not None:
            student.edu.alpha.fill_(0.5)  # at α = 0 the attention layers get no gradient by construction
    images = torch.randn(6, 3, 32, 32)
    u_t, classes = F.normalize(torch.randn(6, 256), dim=1), F.normalize(torch.randn(5, 256), dim=1)
    u_t.requires_grad_()  # W is computed under no_grad in the pipeline; u_t must stay a constant here
    sum(stage_two_terms(cfg, student, student.features(images), u_t, classes).values()).backward()
    trained = {n.split(".")[0] for n, p in student.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert trained == ({"prompts", "projector", "edu"} if method == "comkd" else {"prompts", "projector"})
    assert all(p.grad is None for p in student.clip.model.parameters())
    assert u_t.grad is None  # no gradient reaches the teacher's features


def test_ifalign_weight_scales_the_ifalign_term_only():
    from lab.models import zoo
    from lab.train.prompt_distill import Student, default_config, stage_two_terms

    torch.manual_seed(0)
    images = torch.randn(6, 3, 32, 32)
    u_t, classes = F.normalize(torch.randn(6, 256), dim=1), F.normalize(torch.randn(5, 256), dim=1)
    student = Student(zoo.load("shapes-student"), 256, default_config(["method=comkd"])).eval()
    with torch.no_grad():
        z = student.features(images)
        one, three = (stage_two_terms(default_config(["method=comkd", f"ifalign_weight={w}"]), student, z, u_t,
                                      classes) for w in (1, 3))
    assert torch.allclose(three["ifalign"], 3 * one["ifalign"]) and one["ifalign"] > 0
    assert torch.equal(three["kl"], one["kl"])


def test_a_factor_on_a_single_term_loss_leaves_adamw_training_unchanged():
    """Why `tune --grid comkd` tunes only rows with two stage-2 terms: the lab's Trainer (AdamW, no clipping) takes
    the same steps on c·L as on L — a one-term row's weight has nothing to choose."""
    from lab.train.loop import Trainer, TrainConfig
    from lab.train.prompt_distill import default_config

    def train(factor: float) -> torch.Tensor:
        torch.manual_seed(0)
        model = torch.nn.Linear(8, 4)
        x, y = torch.randn(32, 8), torch.randn(32, 4)
        cfg = TrainConfig(steps=20, lr=1e-2, warmup=2, weight_decay=0.0, log_every=100)
        Trainer(model.named_parameters(), cfg).fit([x] * cfg.steps, lambda b: {"kl": factor * F.mse_loss(model(b), y)})
        return model.weight.detach()

    torch.manual_seed(0)
    start = torch.nn.Linear(8, 4).weight.detach()
    base = train(1.0)
    moved = (base - start).abs().max()
    assert moved > 0.05  # it trained; a factor changes where it ends by < 0.1 % of how far it went (ε = 1e-6)
    assert all((train(c) - base).abs().max() < 1e-3 * moved for c in (1000.0, 0.25))
    assert default_config().train.grad_clip == 0  # stage 2 clips no gradient: the invariance holds there


def test_default_student_is_the_no_kd_run_of_the_same_seed(smoke_run, tmp_path):
    """``student=nokd`` (the default) names ``<runs>/nokd-s<seed>``; missing, it says how to train it."""
    import shutil

    from lab.errors import LabError
    from lab.train.prompt_distill import _student_spec, default_config

    with pytest.raises(LabError, match="needs the finished no-KD run .*nokd-s3"):
        _student_spec(default_config(["train.seed=3"]), tmp_path)
    shutil.copytree(smoke_run, tmp_path / "nokd-s3")  # a finished run there is used, not retrained
    assert _student_spec(default_config(["train.seed=3"]), tmp_path) == str(tmp_path / "nokd-s3")
    assert _student_spec(default_config(["student=shapes-student"]), tmp_path) == "shapes-student"


def test_paired_differences_match_seeds_and_protocols():
    from lab.experiments.tables import paired_differences

    def record(row, protocol, seeds, scores):
        return {"row": row, "protocol": protocol, "seeds": seeds, "per_seed": {"score": scores}}

    records = [record("PromptKD", "base2novel", [0, 1, 2], [40.0, 42.0, 44.0]),
               record("ComKD-CLIP", "base2novel", [0, 2, 3], [41.0, 43.0, 50.0]),  # seed 3 has no PromptKD run
               record("comkd cross", "cross", [0, 1], [10.0, 11.0])]  # another protocol: not compared
    assert paired_differences(records) == ["ComKD-CLIP +0.0 ± 1.4 (n = 2, s.e. 1.0)"]
    assert paired_differences(records[1:]) == []  # no PromptKD row
