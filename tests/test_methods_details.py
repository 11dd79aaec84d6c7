"""Details found by comparing with the authors' code: MFD's official floor, CLIP-RD's projection point,
and the CLIP-RD rows' VRD/XRD weights labelled as the lab's choice."""

import math

import pytest
import torch
import torch.nn.functional as F

from lab.errors import LabError
from lab.losses import functional as L
from lab.losses.objective import Embeddings, Objective


@pytest.mark.parametrize("ratio,ceil,floor", [(0.5, 8, 8), (0.75, 4, 4), (0.3, 12, 11), (0.6, 7, 6)])
def test_mfd_official_keeps_the_floor_of_the_kept_patches(ratio, ceil, floor):
    tokens = torch.randn(2, 16, 4)
    assert math.ceil((1 - ratio) * 16 - 1e-9) == ceil and int(16 * (1 - ratio) + 1e-9) == floor
    assert L.mask_patches(tokens, ratio, torch.Generator().manual_seed(0)).shape[1] == ceil
    assert L.mask_patches(tokens, ratio, torch.Generator().manual_seed(0), keep_rule="floor").shape[1] == floor


def _embeddings(student_dim: int, teacher_dim: int) -> Embeddings:
    g = torch.Generator().manual_seed(1)
    return Embeddings(torch.randn(8, student_dim, generator=g), torch.randn(8, student_dim, generator=g),
                      torch.tensor(14.3), F.normalize(torch.randn(8, teacher_dim, generator=g), dim=-1),
                      F.normalize(torch.randn(8, teacher_dim, generator=g), dim=-1), torch.tensor(100.0))


def test_cliprd_official_projects_the_student_before_the_task_loss_and_hrd():
    e = _embeddings(16, 32)
    torch.manual_seed(0)
    after = Objective("crd+fd", 16, 32)
    torch.manual_seed(0)
    before = Objective("crd+fd", 16, 32, projection_point="before")
    a, b = after(e), before(e)
    pv, pt = before.projection(e.image_raw, e.text_raw)
    assert torch.allclose(b["task"], L.clip_loss(pv, pt, e.scale))
    assert torch.allclose(b["crd"], L.crd_loss(pv, pt, e.scale, e.teacher_image, e.teacher_text, e.teacher_scale))
    assert not torch.allclose(a["task"], b["task"])
    assert torch.allclose(a["fd"], b["fd"])  # the cross-model terms read the projection either way
    same = _embeddings(32, 32)  # equal widths: no projection, the two readings agree
    assert all(torch.allclose(v, Objective("crd+fd", 32, 32, projection_point="before")(same)[k])
               for k, v in Objective("crd+fd", 32, 32)(same).items())
    with pytest.raises(LabError, match="Unknown projection 'sideways'"):
        Objective("fd", 16, 32, projection_point="sideways")


def test_cliprd_rows_say_their_vrd_xrd_weights_are_the_labs():
    from lab.experiments.grids import grid_rows

    rows = [r for r in grid_rows("cliprd") if "vrd" in r.loss or "xrd" in r.loss]
    assert rows and all("lab's weight" in r.label for r in rows)
