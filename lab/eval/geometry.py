"""How closely a student's embedding space reproduces the teacher's.

All functions take (N, D) arrays or tensors whose rows correspond (same items);
teacher and student widths may differ except for :func:`mean_cosine`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _t(x) -> torch.Tensor:
    return torch.as_tensor(x).double()


def mean_cosine(a, b) -> float:
    """Mean row-wise cosine similarity cos(a_i, b_i) (CLIP-KD Fig. 3); widths must match."""
    a, b = _t(a), _t(b)
    if a.shape != b.shape:
        raise ValueError(f"mean_cosine needs equal shapes, got {tuple(a.shape)} and {tuple(b.shape)}; "
                         f"project the student to the teacher's width first.")
    return F.cosine_similarity(a, b, dim=1).mean().item()


def linear_cka(x, y) -> float:
    """Linear CKA (Kornblith et al. 2019): ‖Yᶜᵀ Xᶜ‖²_F / (‖Xᶜᵀ Xᶜ‖_F ‖Yᶜᵀ Yᶜ‖_F), c = column-centred."""
    x, y = _t(x), _t(y)
    x = x - x.mean(dim=0)
    y = y - y.mean(dim=0)
    cross = (y.T @ x).pow(2).sum()
    return (cross / ((x.T @ x).norm() * (y.T @ y).norm())).item()


def similarity_matrix(a, b) -> torch.Tensor:
    """Cosine similarity matrix between the rows of a and b."""
    return F.normalize(_t(a), dim=1) @ F.normalize(_t(b), dim=1).T


def similarity_correlation(s_teacher, s_student) -> float:
    """Pearson correlation between the entries of two N×N similarity matrices."""
    a, b = _t(s_teacher).flatten(), _t(s_student).flatten()
    a, b = a - a.mean(), b - b.mean()
    return (a @ b / (a.norm() * b.norm())).item()


def nearest_neighbours(x, k: int) -> torch.Tensor:
    """(N, k) indices of each row's k nearest other rows by cosine, nearest first."""
    sim = similarity_matrix(x, x)
    sim.fill_diagonal_(-float("inf"))
    return sim.topk(min(k, sim.shape[0] - 1), dim=1).indices


def knn_overlap_per_item(a, b, k: int = 10) -> torch.Tensor:
    """Per item i: the fraction of its k nearest neighbours (cosine, self excluded) shared by both spaces."""
    na, nb = nearest_neighbours(a, k), nearest_neighbours(b, k)
    shared = (na.unsqueeze(2) == nb.unsqueeze(1)).any(dim=2).sum(dim=1)
    return shared.double() / na.shape[1]


def knn_overlap(a, b, k: int = 10) -> float:
    """Mean fraction of each item's k nearest neighbours (cosine, self excluded) shared by both spaces."""
    return knn_overlap_per_item(a, b, k).mean().item()


def alignment(x, y, alpha: float = 2.0) -> float:
    """Alignment (Wang & Isola 2020): E ‖x_i − y_i‖^α over positive pairs (lower is better)."""
    x, y = F.normalize(_t(x), dim=1), F.normalize(_t(y), dim=1)
    return (x - y).norm(dim=1).pow(alpha).mean().item()


def uniformity(x, t: float = 2.0) -> float:
    """Uniformity (Wang & Isola 2020): log E_{i≠j} exp(−t ‖x_i − x_j‖²) (lower is more uniform)."""
    x = F.normalize(_t(x), dim=1)
    sq = torch.pdist(x).pow(2)
    return torch.log(torch.exp(-t * sq).mean()).item()


def geometry_report(student: dict, teacher: dict, k: int = 10, projected: dict | None = None) -> dict[str, float]:
    """Teacher–student fidelity for paired image/text embeddings ``{"image": …, "text": …}``.

    The mean cosine compares ``projected`` (the student mapped to the teacher's width
    by a distillation head) when given, else the student itself where widths agree.
    """
    out = {}
    for modality in ("image", "text"):
        s, t = student[modality], teacher[modality]
        aligned = projected[modality] if projected is not None else s
        if aligned.shape[1] == t.shape[1]:
            out[f"cosine_{modality}"] = mean_cosine(aligned, t)
        out[f"cka_{modality}"] = linear_cka(s, t)
        out[f"knn_overlap_{modality}"] = knn_overlap(s, t, k)
    out["simmat_corr"] = similarity_correlation(similarity_matrix(teacher["image"], teacher["text"]),
                                                similarity_matrix(student["image"], student["text"]))
    out["alignment"] = alignment(student["image"], student["text"])
    out["uniformity_image"] = uniformity(student["image"])
    out["teacher_alignment"] = alignment(teacher["image"], teacher["text"])
    out["teacher_uniformity_image"] = uniformity(teacher["image"])
    return out
