"""A distillation objective built from term names and weights.

``Objective("crd+fd+icl", weights={"fd": 2000}, variant="official", ...)`` holds the
learnable parts the terms need, prints its formula (``L = task + 1·crd + 2000·fd +
1·icl``) and returns a dict of named, weighted terms. The task term (CLIP's loss on
the student) is always on: dropping it costs accuracy (CLIP-KD issue #8).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
import torch.nn as nn
import torch.nn.functional as F

from lab.errors import LabError
from lab.losses import functional as L
from lab.losses import modern as M
from lab.losses.modules import Fusion, LearnableScale, Projection


@dataclass
class Embeddings:
    """What the terms read for one batch.

    Student: raw (unnormalised) image/text embeddings and its exponentiated scale;
    teacher: normalised embeddings and scale (constants). ``masked_image_raw`` is the
    student's embedding of the masked images (MFD only); ``class_text_raw`` (C, D_S) and
    ``teacher_class_text`` (C, D_T, normalised) are both models' zero-shot class weights
    (Hinton KD only).
    """

    image_raw: torch.Tensor
    text_raw: torch.Tensor
    scale: torch.Tensor
    teacher_image: torch.Tensor
    teacher_text: torch.Tensor
    teacher_scale: torch.Tensor | float
    masked_image_raw: torch.Tensor | None = None
    class_text_raw: torch.Tensor | None = None
    teacher_class_text: torch.Tensor | None = None
    # Modern recipes (lab.losses.modern): the ensemble's members after the first (normalised image and
    # text embeddings and scales, one per extra teacher); the student's raw embedding of a synthetic
    # caption per item and every teacher's embedding of it (teacher 1 first).
    extra_teachers: tuple = ()
    syn_text_raw: torch.Tensor | None = None
    teacher_syn_text: tuple | None = None


@dataclass(frozen=True)
class Term:
    """One loss term: how to compute it, its default weight per variant, what it needs."""

    summary: str
    compute: Callable  # (objective, Embeddings, normalised student, projected student) -> tensor
    default_weight: Callable[[str, int], float]  # (variant, teacher width) -> weight
    has_variants: bool = False


def _crd(obj, e, s, p):
    return L.crd_loss(s[0], s[1], e.scale, e.teacher_image, e.teacher_text, e.teacher_scale, obj.variant_of("crd"))


def _am(obj, e, s, p):
    return L.affinity_mimicking_loss(s[0], s[1], e.scale, e.teacher_image, e.teacher_text, e.teacher_scale)


def _fd(obj, e, s, p):
    return L.fd_loss(p[0], p[1], e.teacher_image, e.teacher_text, obj.variant_of("fd"))


def _mfd(obj, e, s, p):
    if e.masked_image_raw is None:
        raise LabError("The mfd term needs the student's masked-image embedding; the trainer did not provide it.")
    masked = obj.projection.project_image(e.masked_image_raw)
    return L.fd_loss(masked, p[1], e.teacher_image, e.teacher_text, obj.variant_of("mfd"))


def _gd(obj, e, s, p):
    return L.gd_loss(p[0], p[1], e.scale, e.teacher_image, e.teacher_text, e.teacher_scale, obj.variant_of("gd"))


def _icl(obj, e, s, p):
    return L.icl_loss(p[0], p[1], e.teacher_image, e.teacher_text, obj.scales["cross"]())


def _afd(obj, e, s, p):
    va, ta = obj.fusion(p[0], p[1], e.teacher_image, e.teacher_text)
    return L.afd_loss(va, ta, obj.scales["fusion"]())


def _vrd(obj, e, s, p):
    return L.vrd_loss(p[0], p[1], e.teacher_image, e.teacher_text, obj.scales["image"](), obj.scales["text"]())


def _xrd(obj, e, s, p):
    return L.xrd_loss(p[0], p[1], e.teacher_image, e.teacher_text, obj.scales["cross"]())


def _kd(obj, e, s, p):
    if e.class_text_raw is None or e.teacher_class_text is None:
        raise LabError("The kd term needs both models' class text embeddings; the trainer did not provide them.")
    student_logits = e.scale * s[0] @ F.normalize(e.class_text_raw, dim=-1).T
    teacher_logits = e.teacher_scale * e.teacher_image @ e.teacher_class_text.T
    return L.logit_kd_loss(student_logits, teacher_logits)


def _openclip(obj, e, s, p):
    return M.openclip_distill_loss(s[0], s[1], e.scale, e.teacher_image, e.teacher_text, e.teacher_scale)


def _ensemble(obj, e):
    """Every teacher's (image, text, scale), teacher 1 first, and the scales the MobileCLIP terms use."""
    members = [(e.teacher_image, e.teacher_text, e.teacher_scale), *e.extra_teachers]
    if obj.distill_scale == "own":
        scales = [float(m[2]) for m in members]
    else:
        scales = [float(x) for x in obj.distill_scale.split(",")]
        scales = scales * len(members) if len(scales) == 1 else scales
        if len(scales) != len(members):
            raise LabError(f"distill_scale gives {len(scales)} scales for {len(members)} teachers; give one, "
                           f"one per teacher, or 'own'.")
    return [m[0] for m in members], [m[1] for m in members], scales


def _mobileclip(obj, e, s, p):
    images, texts, scales = _ensemble(obj, e)
    after = obj.ensemble_average == "softmax"
    scales = scales if after else scales[0]
    loss = M.ensemble_kd_loss(s[0], s[1], e.scale, images, texts, scales, None, after)
    if e.syn_text_raw is not None:
        loss = loss + M.ensemble_kd_loss(s[0], F.normalize(e.syn_text_raw, dim=-1), e.scale, images,
                                         list(e.teacher_syn_text), scales, None, after)
    return loss


def _siglipkd(obj, e, s, p):
    images, texts, scales = _ensemble(obj, e)
    return M.siglip_distill_loss(s[0], s[1], e.scale, obj.siglip_bias, images, texts, scales, None,
                                 (0.0, 1.0), obj.ensemble_average == "softmax")[1]


def _dimevl(obj, e, s, p):
    return M.dime_vl_loss(p[0], e.teacher_image, e.teacher_text)


def _dimepvl(obj, e, s, p):
    return M.dime_pvl_loss(p[0], e.teacher_image)


def _fd_weight(variant: str, teacher_dim: int) -> float:
    # The official 2000 multiplies an element mean; the paper's per-sample sum is D_T times larger.
    return 2000.0 if variant == "official" else 2000.0 / teacher_dim


TERMS: dict[str, Term] = {
    "crd": Term("CLIP-KD contrastive relational distillation (= CLIP-RD's HRD)", _crd, lambda v, d: 1.0, True),
    "fd": Term("CLIP-KD feature distillation", _fd, _fd_weight, True),
    "mfd": Term("CLIP-KD masked feature distillation (student sees masked images)", _mfd, _fd_weight, True),
    "gd": Term("CLIP-KD gradient distillation", _gd, lambda v, d: 1e8 if v == "official" else 1.0, True),
    "icl": Term("CLIP-KD interactive contrastive learning", _icl, lambda v, d: 1.0),
    "afd": Term("CLIP-KD augmented feature distillation", _afd, lambda v, d: 1.0),
    "vrd": Term("CLIP-RD vertical relational distillation", _vrd, lambda v, d: 1.0),
    "xrd": Term("CLIP-RD cross relational distillation", _xrd, lambda v, d: 1.0),
    "am": Term("TinyCLIP affinity mimicking", _am, lambda v, d: 1.0),
    "kd": Term("Hinton KD on zero-shot class logits", _kd, lambda v, d: 1.0),
    "openclip": Term("open_clip's DistillClipLoss (soft-label CE of both logit matrices)", _openclip, lambda v, d: 1.0),
    "mobileclip": Term("MobileCLIP reinforced KD: teacher ensemble, gt + synthetic captions", _mobileclip,
                       lambda v, d: 1.0),
    "siglipkd": Term("MobileCLIP2 DistillSigLipLoss (targets 2·mean σ − 1)", _siglipkd, lambda v, d: 1.0),
    "dimevl": Term("DIME-FM VL-KD (KL both ways, scale 100, T = 1)", _dimevl, lambda v, d: 0.7),
    "dimepvl": Term("DIME-FM P-VL (teacher images as pseudo-texts, T = 3)", _dimepvl, lambda v, d: 0.3),
}
# Terms that read the synthetic caption (its contrastive part joins the task term, as DRClipLoss does).
SYN_TERMS = ("mobileclip",)
ENSEMBLE_AVERAGES = ("softmax", "concat")
# The learnable scales each term uses; ICL and XRD share the cross scale as in CLIP-RD's code.
SCALES_OF = {"icl": ("cross",), "xrd": ("cross",), "afd": ("fusion",), "vrd": ("image", "text")}
RECIPES = {"clipkd": "crd+icl+fd", "cliprd": "crd+icl+fd+vrd+xrd", "dimefm": "dimevl+dimepvl"}
# Where the student is projected to the teacher's width (only matters when the widths differ):
# "after" — CLIP-KD's code and the lab's default: the task loss and CRD/HRD read the student's own
# embeddings, only the cross-model terms the projection; "before" — CLIP-RD's official reading (its
# multi-process code): every term, the task loss and HRD included, reads the projected student.
PROJECTION_POINTS = ("after", "before")


def parse_terms(spec: str) -> list[str]:
    """``"crd+fd+icl"`` (or a recipe name) -> ["crd", "fd", "icl"]; unknown names list the valid ones."""
    spec = RECIPES.get(spec, spec)
    names = [n.strip() for n in spec.replace(",", "+").split("+") if n.strip() and n.strip() != "task"]
    for name in names:
        if name not in TERMS:
            raise LabError(f"Unknown loss term '{name}'; valid terms: {', '.join(TERMS)} "
                           f"(or a recipe: {', '.join(RECIPES)}).")
    if len(set(names)) != len(names):
        raise LabError(f"Loss term listed twice in '{spec}'; name each term once.")
    return names


def parse_weights(spec: str | dict | None) -> dict[str, float]:
    """``"fd=2000,icl=0.5"`` -> {"fd": 2000.0, "icl": 0.5}."""
    if not spec:
        return {}
    if isinstance(spec, dict):
        return {k: float(v) for k, v in spec.items()}
    out = {}
    for item in spec.split(","):
        name, sep, value = item.partition("=")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            raise LabError(f"Weight '{item}' needs the form term=number, e.g. fd=2000.") from None
        if not sep:
            raise LabError(f"Weight '{item}' needs the form term=number, e.g. fd=2000.")
    return out


class Objective(nn.Module):
    """``L = L_task + Σ λ_i L_i`` over the named terms, with their learnable parts."""

    def __init__(self, terms: str | list[str], student_dim: int, teacher_dim: int,
                 weights: str | dict | None = None, variant: str = "paper",
                 variants: dict[str, str] | None = None, projection_point: str = "after",
                 distill_scale: str = "100", ensemble_average: str = "softmax", task_weight: float = 1.0):
        super().__init__()
        if ensemble_average not in ENSEMBLE_AVERAGES:
            raise LabError(f"Unknown ensemble_average '{ensemble_average}'; choose one of: {', '.join(ENSEMBLE_AVERAGES)}.")
        self.distill_scale, self.ensemble_average = str(distill_scale), ensemble_average
        if projection_point not in PROJECTION_POINTS:
            raise LabError(f"Unknown projection '{projection_point}'; choose one of: {', '.join(PROJECTION_POINTS)}.")
        self.projection_point = projection_point
        if variant not in L.VARIANTS:
            raise LabError(f"Unknown variant '{variant}'; choose one of: {', '.join(L.VARIANTS)}.")
        self.names = parse_terms(terms) if isinstance(terms, str) else list(terms)
        self.variant, self.variants = variant, dict(variants or {})
        given = parse_weights(weights)
        # ``task=0`` switches CLIP's loss off: MobileCLIP's published λ (weights 0 1) and DIME-FM's pure KD.
        if "task" in given and task_weight != 1.0:
            raise LabError("The task weight is given twice (weights=task=… and task_weight=…); give it once.")
        self.task_weight = given.pop("task", task_weight)
        for name in given:
            if name not in self.names:
                raise LabError(f"A weight is given for '{name}', which is not in the objective "
                               f"({'+'.join(self.names) or 'task only'}); add it with --loss or drop the weight.")
        self.weights = {n: given.get(n, TERMS[n].default_weight(self.variant_of(n), teacher_dim)) for n in self.names}
        self.projection = Projection(student_dim, teacher_dim)
        scale_names = sorted({s for n in self.names for s in SCALES_OF.get(n, ())})
        self.scales = nn.ModuleDict({s: LearnableScale(variant) for s in scale_names})
        self.fusion = Fusion(student_dim, teacher_dim) if "afd" in self.names else None
        # SigLIP's learnable bias for the student (init −10, Zhai et al. 2023); only with siglipkd.
        self.siglip_bias = nn.Parameter(torch.tensor(-10.0)) if "siglipkd" in self.names else None

    def variant_of(self, name: str) -> str:
        return self.variants.get(name, self.variant)

    @property
    def needs_masked_images(self) -> bool:
        return "mfd" in self.names

    @property
    def needs_class_texts(self) -> bool:
        return "kd" in self.names

    @property
    def needs_synthetic_captions(self) -> bool:
        return any(n in SYN_TERMS for n in self.names)

    def formula(self) -> str:
        task = "task" if self.task_weight == 1 else f"{_number(self.task_weight)}·task"
        parts = [task] + [f"{_number(self.weights[n])}·{n}" for n in self.names]
        variants = {n: self.variant_of(n) for n in self.names if TERMS[n].has_variants}
        suffix = f"   [{', '.join(f'{n}: {v}' for n, v in variants.items())}]" if variants else ""
        return "L = " + " + ".join(parts) + suffix

    def __str__(self) -> str:
        return self.formula()

    def forward(self, e: Embeddings) -> dict[str, torch.Tensor]:
        if e.image_raw.shape[0] == 0:
            raise LabError("The batch is empty; a distillation step needs at least one image–text pair.")
        if e.teacher_image.shape[1] != self.projection.teacher_dim or e.image_raw.shape[1] != self.projection.student_dim:
            raise LabError(f"The objective was built for student width {self.projection.student_dim} and teacher "
                           f"width {self.projection.teacher_dim}, but got {e.image_raw.shape[1]} and "
                           f"{e.teacher_image.shape[1]}; rebuild it for these models.")
        e = replace(e, teacher_image=e.teacher_image.detach(), teacher_text=e.teacher_text.detach(),
                    teacher_scale=_detached(e.teacher_scale), teacher_class_text=_detached(e.teacher_class_text),
                    extra_teachers=tuple((i.detach(), t.detach(), _detached(c)) for i, t, c in e.extra_teachers),
                    teacher_syn_text=None if e.teacher_syn_text is None else tuple(x.detach() for x in e.teacher_syn_text))  # the teacher is frozen, whatever the caller passes
        student = (F.normalize(e.image_raw, dim=-1), F.normalize(e.text_raw, dim=-1))
        projected = self.projection(e.image_raw, e.text_raw)
        if self.projection_point == "before":  # CLIP-RD's multi-process code: task loss and HRD on the projection
            student = projected
        task = L.clip_loss(student[0], student[1], e.scale)
        if e.syn_text_raw is not None and self.needs_synthetic_captions:  # DRClipLoss: gt + synthetic contrastive
            task = task + L.clip_loss(student[0], F.normalize(e.syn_text_raw, dim=-1), e.scale)
        out = {"task": self.task_weight * task}
        for name in self.names:
            out[name] = self.weights[name] * TERMS[name].compute(self, e, student, projected)
        return out

    def clamp_(self) -> None:
        """Keep the paper-variant scales in range after an optimiser step."""
        for scale in self.scales.values():
            scale.clamp_()


def _detached(x):
    return x.detach() if isinstance(x, torch.Tensor) else x


def _number(x: float) -> str:
    return f"{x:g}"
