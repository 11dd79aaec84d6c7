"""How peaked the teacher's in-batch targets are: the number docs/results.md explains CRD and affinity mimicking by.

CRD and TinyCLIP's affinity mimicking match the student's in-batch distribution
``softmax(s_s · v_s t_sᵀ)`` to the teacher's ``p = softmax(s_t · v_t t_tᵀ)`` (lab.losses.functional).
How much they carry beyond the task loss's one-hot targets depends on how far ``p`` is from
one-hot: its entropy ``H(p_i) = −Σ_j p_ij log p_ij`` (0 for one-hot, ``log N`` for uniform) and the
mass ``p_ii`` on the matching caption. Measured on the training pairs the distillation rows use
(the ``student`` preset's data, batches as the trainer draws them):

``python -m lab.eval.teacher_targets [--batches 20]``
"""

from __future__ import annotations

import argparse
import json
import math

import torch

from lab.data.pairs import build_pairs, step_batches
from lab.models import zoo


@torch.no_grad()
def target_stats(teacher: zoo.ClipModel, batch_size: int, batches: int = 20, seed: int = 0) -> dict:
    """The teacher's logit scale and the mean entropy (nats) and diagonal mass of its image→text and
    text→image in-batch targets over ``batches`` training batches of ``batch_size``."""
    from lab.train.distill import default_config

    cfg = default_config()
    dataset = build_pairs(cfg.data)
    scale = float(teacher.model.logit_scale.exp())
    entropy, diagonal, count = 0.0, 0.0, 0
    for batch in step_batches(dataset, batch_size, batches, seed):
        image = teacher.model.encode_image(teacher.image_tensor(batch.images), normalize=True)
        text = teacher.model.encode_text(teacher.tokenize(batch.captions), normalize=True)
        logits = scale * image @ text.T
        for direction in (logits, logits.T):
            p = direction.softmax(dim=1)
            entropy += float(-(p * p.clamp_min(1e-30).log()).sum(dim=1).mean())
            diagonal += float(p.diagonal().mean())
            count += 1
    return {"batch_size": batch_size, "logit_scale": scale, "log_logit_scale": math.log(scale),
            "entropy_nats": entropy / count, "uniform_nats": math.log(batch_size),
            "diagonal_mass": diagonal / count, "batches": batches}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=20)
    args = parser.parse_args(argv)
    teacher = zoo.shipped_teacher()
    print(json.dumps([target_stats(teacher, n, args.batches) for n in (32, 128)], indent=2))


if __name__ == "__main__":
    main()
