"""ACID / ACED's sampler (lab.data.curation) — paper-level, no official code: hand-checked golden cases."""

import math

import pytest
import torch
import torch.nn.functional as F

from lab.data import curation as C
from lab.errors import LabError


def test_sigmoid_loss_matrix_by_hand():
    image = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    text = torch.tensor([[1.0, 0.0], [math.sqrt(0.5), math.sqrt(0.5)]])
    loss = C.sigmoid_loss_matrix(image, text, 2.0)
    sp = lambda x: math.log1p(math.exp(x))  # noqa: E731  softplus
    expected = [[sp(-2.0), sp(2 * math.sqrt(0.5))], [sp(0.0), sp(-2 * math.sqrt(0.5))]]
    assert torch.allclose(loss, torch.tensor(expected), rtol=1e-6)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_4x4_joint_choice_differs_from_independent_top_k():
    s = torch.zeros(4, 4)
    s.diagonal().copy_(torch.tensor([0.0, 100.0, 10.0, 50.0]))
    s[1, 2] = s[2, 1] = 60.0  # 2 is learnable *together with* 1
    # chunk 1 (one pick): argmax of the diagonal = 1; chunk 2: 0 → 0, 2 → 10 + 120 = 130, 3 → 50
    logits = C.conditional_logits(s, torch.tensor([False, True, False, False]))
    assert logits[[0, 2, 3]].tolist() == [0.0, 130.0, 50.0]  # (the chosen 1 is masked out of the draw)
    for seed in range(5):
        assert C.joint_sample(s, 2, n_chunks=2, generator=_gen(seed)).tolist() == [1, 2]
        assert sorted(C.joint_sample(s, 2, n_chunks=1, generator=_gen(seed)).tolist()) == [1, 3]  # independent


def test_8x8_chunks_follow_the_chosen_set():
    s = torch.zeros(8, 8)
    s[0, 0] = 40.0
    s[0, 4] = s[4, 0] = 10.0
    for i in range(5, 8):
        for j in range(4, 8):
            if i != j:
                s[i, j] = s[j, i] = 30.0
    # 0 (40) first; then 4 (0 + 10 + 10 = 20, the rest 0); then 5, 6, 7 each 60 more per chosen neighbour
    for seed in range(5):
        picked = C.joint_sample(s, 5, n_chunks=5, generator=_gen(seed)).tolist()
        assert picked[:2] == [0, 4] and sorted(picked) == [0, 4, 5, 6, 7]


def test_first_chunk_is_softmax_sampling():
    s = torch.diag(torch.tensor([0.0, math.log(2.0), math.log(4.0)]))
    g = _gen(3)
    counts = torch.bincount(torch.stack([C.joint_sample(s, 1, 1, g) for _ in range(3000)]).flatten(), minlength=3)
    assert (counts / 3000).tolist() == pytest.approx([1 / 7, 2 / 7, 4 / 7], abs=0.03)


def test_chunked_sampling_is_deterministic_under_a_seed():
    s = torch.randn(40, 40, generator=_gen(1))
    a, b = C.joint_sample(s, 8, 4, _gen(7)), C.joint_sample(s, 8, 4, _gen(7))
    assert torch.equal(a, b) and len(set(a.tolist())) == 8
    assert a.tolist() == [18, 35, 3, 19, 26, 37, 28, 22]  # golden
    assert not torch.equal(a, C.joint_sample(s, 8, 4, _gen(8)))


def test_learnability_subtracts_the_reference_models_loss():
    g = _gen(2)
    learner = (F.normalize(torch.randn(6, 4, generator=g), dim=1), F.normalize(torch.randn(6, 4, generator=g), dim=1), 10.0)
    reference = (F.normalize(torch.randn(6, 8, generator=g), dim=1), F.normalize(torch.randn(6, 8, generator=g), dim=1), 50.0)
    s = C.learnability(learner, reference)
    assert torch.allclose(s, C.sigmoid_loss_matrix(*learner) - C.sigmoid_loss_matrix(*reference))
    assert s.abs().max() > 0.1  # the learner's loss twice (the known port's mistake) would give zeros


def test_sizes_and_mistakes():
    assert C.super_batch_size(64, 0.8) == 320 and C.super_batch_size(64, 0.0) == 64
    with pytest.raises(LabError, match="curation_filter"):
        C.super_batch_size(64, 1.0)
    with pytest.raises(LabError, match="sub-batch"):
        C.joint_sample(torch.zeros(4, 4), 5)


def test_acid_in_distill_scores_the_reference_with_the_teacher(monkeypatch, tmp_path):
    from lab import runs
    from lab.train import distill as D

    calls = []
    real = D.learnability

    def spy(learner, reference):
        calls.append((learner[0].shape, reference[0].shape, float(reference[2])))
        return real(learner, reference)

    monkeypatch.setattr(D, "learnability", spy)
    tiny = ["data.size=64", "train.steps=2", "train.batch_size=8", "train.warmup=1", "train.eval_every=0",
            "eval.per_style=8", "train.log_every=1"]
    path = D.distill(D.default_config([*tiny, "loss=crd", "curation=acid", "curation_chunks=4"]), "aced", tmp_path)
    assert runs.read_run(path).complete  # ACED; ACID alone (loss="") runs in `sweep --grid curation --fast`
    teacher_scale = D.zoo.shipped_teacher().model.logit_scale.exp().item()
    assert len(calls) == 2
    for learner_shape, reference_shape, scale in calls:
        assert learner_shape == (40, 128) and reference_shape == (40, 256)  # super-batch 5 × 8, the teacher's width
        assert scale == pytest.approx(teacher_scale, rel=1e-4)
