"""One training step per loss term, on one process or under torchrun: the terms' values and every gradient.

``python tests/dist_equivalence.py OUT.pt`` (one process) and
``torchrun --nproc_per_node 2 tests/dist_equivalence.py OUT.pt`` (gloo on CPU) compute the same global
batch through the trainers' own code path (:class:`DistillStep` / :class:`StageTwoStep`,
:meth:`Trainer.compute`); rank 0 saves ``{case: {"terms": ..., "grads": ...}}`` for
``tests/test_distributed.py`` to compare.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from lab.data.pairs import DataConfig, build_pairs  # noqa: E402
from lab.data.shapes import label_space  # noqa: E402
from lab.losses.objective import TERMS, Objective  # noqa: E402
from lab.models import zoo  # noqa: E402
from lab.train import dist  # noqa: E402
from lab.train.cache import teacher_embeddings  # noqa: E402
from lab.train.distill import DistillStep  # noqa: E402
from lab.train.loop import Trainer, TrainConfig, seed_everything  # noqa: E402
from lab.train.prompt_distill import METHODS, PromptDistillConfig, StageTwoStep, Student  # noqa: E402

GLOBAL_BATCH = 16


def one_step(named: dict, step_fn, batch, ctx) -> dict:
    """The terms and the gradient of every named parameter after one forward and backward."""
    terms, _ = Trainer(list(named.items()), TrainConfig(), ctx=ctx).compute(step_fn, batch)
    return {"terms": {k: v.detach().clone() for k, v in terms.items()},
            "grads": {n: p.grad.clone() for n, p in named.items() if p.grad is not None}}


def main(out: str) -> None:
    torch.set_num_threads(1)
    ctx = dist.init(torch.device("cpu"))
    teacher = zoo.shipped_teacher()
    dataset = build_pairs(DataConfig(size=64))
    cached = teacher_embeddings(teacher, dataset)
    batch = dataset.__getitems__(list(range(GLOBAL_BATCH))[ctx.shard(GLOBAL_BATCH)])  # this rank's rows
    classnames = label_space("colour_shape").classnames
    results = {}
    for name in ["task", *TERMS]:  # every term of the Objective registry (each beside the task term)
        seed_everything(0)
        student = zoo.load("shapes-student")
        objective = Objective([] if name == "task" else [name], student.embed_dim, teacher.embed_dim)
        named = {**dict(student.model.named_parameters()),
                 **{f"objective.{n}": p for n, p in objective.named_parameters()}}
        step = DistillStep(student, teacher, objective, cached, classnames=classnames, seed=0, ctx=ctx)
        results[name] = one_step(named, step, batch, ctx)
    classes = F.normalize(torch.randn(64, teacher.embed_dim, generator=torch.Generator().manual_seed(1)), dim=-1)
    for method in METHODS:  # the prompt-distillation stage-2 terms (refinement, IFAlign, affinity mimicking)
        seed_everything(0)
        cfg = PromptDistillConfig(method=method)
        student = Student(zoo.load("shapes-student"), teacher.embed_dim, cfg)
        named = {n: p for n, p in student.named_parameters() if p.requires_grad}
        student_classes, teacher_classes = classes, None
        if method == "kdpl":  # KDPL: the student's own class weights (its width) and the teacher's
            student_classes = F.normalize(torch.randn(64, student.clip.embed_dim,
                                                      generator=torch.Generator().manual_seed(2)), dim=-1)
            teacher_classes = classes
        results[f"prompt-{method}"] = one_step(named, StageTwoStep(cfg, student, cached["image"], student_classes,
                                                                   ctx, teacher_classes), batch, ctx)
    if ctx.is_main:
        torch.save({"world_size": ctx.world_size, "results": results}, out)


if __name__ == "__main__":
    main(sys.argv[1])
