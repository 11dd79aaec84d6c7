"""GradCache (train.accumulate=N): the gradient of an N-chunk step equals the full batch's, in float64,
for the CLIP-KD (crd+icl+fd) and CLIP-RD (crd+icl+fd+vrd+xrd) recipes and Hinton KD's class prompts."""

import copy

import pytest
import torch

from lab.data.pairs import DataConfig, build_pairs
from lab.errors import LabError
from lab.losses.objective import Objective
from lab.models import zoo
from lab.train.distill import DistillStep, default_config, distill
from lab.train.loop import TrainConfig, Trainer

BATCH = 12


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    student = zoo.create("shapes-student")
    student.model.double().train()
    batch = build_pairs(DataConfig(size=BATCH, image_size=32)).__getitems__(list(range(BATCH)))
    dt = 24  # a teacher of another width: the projection is exercised too
    g = torch.Generator().manual_seed(1)
    cached = {"image": torch.nn.functional.normalize(torch.randn(BATCH, dt, generator=g, dtype=torch.float64), dim=-1),
              "text": torch.nn.functional.normalize(torch.randn(BATCH, dt, generator=g, dtype=torch.float64), dim=-1),
              "scale": torch.tensor([30.0], dtype=torch.float64)}
    return student, batch, cached, dt


def _gradients(setup, loss: str, chunks: int) -> dict[str, torch.Tensor]:
    student, batch, cached, dt = setup
    student = copy.deepcopy(student)
    torch.manual_seed(2)
    objective = Objective(loss, student.embed_dim, dt).double()
    teacher = copy.deepcopy(student)  # only read for the class prompts of kd
    step = DistillStep(student, teacher, objective, cached, classnames=("red circle", "blue square", "green star"),
                       accumulate=chunks)
    if objective.needs_class_texts:  # the teacher's class weights at the cached teacher's width
        g = torch.Generator().manual_seed(3)
        step.teacher_classes = torch.nn.functional.normalize(torch.randn(3, dt, generator=g, dtype=torch.float64), dim=-1)
    params = list(student.model.named_parameters()) + [(f"objective.{n}", p) for n, p in objective.named_parameters()]
    trainer = Trainer(params, TrainConfig(steps=1, warmup=0))
    terms, loss_value = trainer.compute(step, batch)
    return {"loss": loss_value.detach(), **{n: p.grad.clone() for n, p in params if p.grad is not None}}


@pytest.mark.parametrize("loss", ["clipkd", "cliprd", "crd+kd"])
def test_gradcache_gradients_equal_the_full_batch(setup, loss):
    full, chunked = _gradients(setup, loss, 1), _gradients(setup, loss, 4)
    assert full.keys() == chunked.keys() and len(full) > 10
    for name in full:
        torch.testing.assert_close(chunked[name], full[name], rtol=1e-9, atol=1e-12, msg=name)
    if loss != "crd+kd":  # the recipes have a projection and learnable scales
        assert any(name.startswith("objective.") for name in full)
    assert full["visual.conv1.weight"].abs().sum() > 0


def test_mfd_with_accumulate_is_refused_before_training(tmp_path):
    with pytest.raises(LabError, match="train.accumulate=2 cannot replay MFD"):
        distill(default_config(["loss=mfd", "train.accumulate=2", "data.size=8", "train.steps=1"]), "x", tmp_path)
    assert not (tmp_path / "x").exists()
