"""The lessons' exercises: what each one asks for, the lab's reference for it, and what kind of wrong an answer is.

An exercise's answer is either a **function** ``answer(v, t, scale)`` (its ``params``), which the lesson's
check calls on the lesson's own tensors and the grader also calls on inputs the student never saw (the
hidden checks of :mod:`lab.lessons.solutions`, instructor-only), or, for the exercises not yet restated so, a
**value** the check compares on the lesson's tensors only.

A check cell names only the exercise and hands over the inputs — ``check("0.1", answer, v=v, t=t, scale=e.scale)``
— so the notebook holds no expected value; each reference is computed from the lab's own losses and metrics
(never a literal). The self-check in a student's copy needs these references (it can only say "correct" by
computing the right value), so they are the lab's public functions again; what keeps a grade honest is that
the grader runs the hidden checks in its own process, in a kernel that has neither this module nor
:mod:`lab.lessons.solutions` (:mod:`lab.lessons.grade`).

:func:`diagnose` says what kind of wrong an answer is — shape, sign, a factor of 2, off by a constant, which
entries — and never the expected value or the gap to it, so its feedback cannot be followed back to the answer.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Exercise:
    number: str
    title: str
    reference: Callable[..., object]
    params: tuple[str, ...] = ()  # the answer is a function of these (checked on hidden inputs too); () = a value
    atol: float = 1e-5


EXERCISES: dict[str, Exercise] = {}


def exercise(number: str, title: str, params: tuple[str, ...] = (), atol: float = 1e-5):
    def register(reference):
        EXERCISES[number] = Exercise(number, title, reference, tuple(params), atol)
        return reference
    return register


def _functional():
    from lab.losses import functional

    return functional


def _prompt_kd():
    from lab.losses import prompt_kd

    return prompt_kd


# ---------------------------------------------------------------------- 00 tour

@exercise("0.1", "text→image cross-entropy", ("v", "t", "scale"))
def _(v, t, scale):
    return _functional().diagonal_ce(scale * t @ v.T)


@exercise("0.2", "task loss of perfectly aligned pairs at scale 100", ("v",))
def _(v):
    return _functional().clip_loss(v.detach(), v.detach(), 100.0)


# ---------------------------------------------------------------------- 01 CLIP and the teacher

@exercise("1.1", "harmonic mean of base and novel accuracy", ("base", "novel"))
def _(base, novel):
    from lab.eval.zeroshot import harmonic_mean

    return harmonic_mean(base, novel)


@exercise("1.2", "one-template class weights", ("teacher", "names"))
def _(teacher, names):
    from lab.data.shapes import PROMPT_TEMPLATES
    from lab.eval.suite import encode_texts
    from lab.eval.zeroshot import class_embeddings

    return class_embeddings(lambda texts: encode_texts(teacher, texts), names, PROMPT_TEMPLATES[:1])


# ---------------------------------------------------------------------- 02 CLIP-KD I

@exercise("2.1", "where the teacher's target goes as the temperature → 0", ("v_t", "t_t"))
def _(v_t, t_t):
    return F.softmax(1e4 * v_t @ t_t.T, dim=1).argmax(1)


@exercise("2.2", "FD's per-pair image distance via cosines", ("pv", "v_t"))
def _(pv, v_t):
    return (pv - v_t).pow(2).sum(1)


@exercise("2.3", "the released code's FD")
def _(pv, pt, v_t, t_t):
    return _functional().fd_loss(pv, pt, v_t, t_t, variant="official")


# ---------------------------------------------------------------------- 03 CLIP-KD II

@exercise("3.1", "gradient with respect to the keys")
def _(pv, pt, scale):
    return _functional().clip_gradients(pv.detach(), pt.detach(), 1 / float(scale))[1]


@exercise("3.2", "ICL's mutual-information bound")
def _(pv, pt, v_t, t_t, c):
    return math.log(len(pv) - 1) - _functional().icl_loss(pv, pt, v_t, t_t, c)


@exercise("3.3", "AFD's fusion input width")
def _(student_width, teacher_width):
    from lab.losses.objective import Objective

    return Objective("afd", int(student_width), int(teacher_width)).fusion.image.in_features


# ---------------------------------------------------------------------- 04 CLIP-RD

@exercise("4.1", "XRD's row-wise symmetric KL")
def _(x1, x2):
    kl_rows = _functional().kl_rows
    return 0.5 * (kl_rows(x1, x2) + kl_rows(x2, x1))


@exercise("4.2", "XRD of agreeing relations")
def _(pv, v_t, lam):
    return _functional().xrd_loss(pv, pv, v_t, v_t, lam)


@exercise("4.3", "VRD's KL part")
def _(a_img, a_txt):
    kl_rows = _functional().kl_rows
    return 0.5 * (kl_rows(a_img, a_txt) + kl_rows(a_img.T, a_txt.T))


# ---------------------------------------------------------------------- 05 PromptKD and ComKD-CLIP

@exercise("5.1", "official PromptKD = KD_W / C × paper")
def _(q_s, q_t):
    return _prompt_kd().promptkd_loss(q_s, q_t)


@exercise("5.2", "a fresh EduAttention's logits", atol=1e-3)
def _(z, W, u_t):
    torch.manual_seed(1)
    return _prompt_kd().EduAttention(u_t.shape[1]).to(z.device).logits(z, W)


@exercise("5.3", "IFAlign, mean part only")
def _(z_hat, u_t):
    return _prompt_kd().ifalign_loss(z_hat, u_t, variance=False)


# ---------------------------------------------------------------------- 06 ablations and geometry

@exercise("6.1", "CKA of a rotated copy")
def _(x):
    from lab.eval.geometry import linear_cka

    return linear_cka(x, x)


@exercise("6.2", "uniformity", ("x",))
def _(x):
    from lab.eval.geometry import uniformity

    return uniformity(x)


@exercise("6.3", "alignment", ("x", "xt"))
def _(x, xt):
    from lab.eval.geometry import alignment

    return alignment(x, xt)


# ---------------------------------------------------------------------- 07 modern recipes

def _modern():
    from lab.losses import modern

    return modern


@exercise("7.1", "open_clip distill minus CRD official: the teacher's entropy")
def _(v_s, t_s, s_s, v_t, t_t, s_t):
    return (_modern().openclip_distill_loss(v_s, t_s, s_s, v_t, t_t, s_t)
            - _functional().crd_loss(v_s, t_s, s_s, v_t, t_t, s_t, "official"))


@exercise("7.2", "an ensemble's target without average-after-softmax")
def _(v_t, t_t, v_2, t_2):
    return _modern().ensemble_targets([v_t, v_2], [t_t, t_2], 100.0, average_after_softmax=False)


@exercise("7.3", "the SigLIP target of one teacher")
def _(v_t, t_t):
    return _modern().ensemble_sigmoid_targets([v_t], [t_t], [10.0])


# ---------------------------------------------------------------------- 05 (end) KDPL

@exercise("5.5", "KDPL's symmetric KL over the teacher's top-8 classes")
def _(q_s, q_t):
    keep = _prompt_kd().kdpl_classes(q_t, 8)
    return _prompt_kd().kdpl_loss(q_s[:, keep], q_t[:, keep])


# ---------------------------------------------------------------------- 08 weight inheritance and ACID

@exercise("8.1", "the teacher blocks a 3-block student inherits from 12")
def _(L_T, L_S):
    from lab.models.inherit import layer_indices

    return torch.tensor(layer_indices(L_T, L_S))


@exercise("8.2", "JEST's conditional logits given the chosen set")
def _(s, chosen_mask):
    from lab.data.curation import conditional_logits

    return conditional_logits(s, chosen_mask)



# ---------------------------------------------------------------------- what kind of wrong


def as_tensor(value) -> torch.Tensor | None:
    """``value`` as a float64 CPU tensor, or None when it is not a number or a tensor."""
    if isinstance(value, (str, bytes)) or value is None:
        return None
    try:
        return torch.as_tensor(value.detach() if torch.is_tensor(value) else value, dtype=torch.float64).cpu()
    except (TypeError, ValueError, RuntimeError):
        return None


def _close(a: torch.Tensor, b: torch.Tensor, atol: float) -> bool:
    return a.shape == b.shape and bool(torch.isclose(a, b, rtol=1e-4, atol=atol).all())


FACTORS = ((2.0, "twice what it should be — a missing ½, or a sum where a mean belongs?"),
           (0.5, "half of what it should be — an extra ½, or only one of two terms?"),
           (-1.0, "the right size with the wrong sign"))


def diagnose(answer, expected, atol: float = 1e-5) -> str | None:
    """What kind of wrong ``answer`` is against ``expected`` (None when they agree), in words that name the
    mistake — never the expected value, nor how far the answer is from it."""
    got, want = as_tensor(answer), as_tensor(expected)
    if got is None:
        return f"the answer is a {type(answer).__name__}, not a number or a tensor"
    if got.shape != want.shape:
        if got.numel() == want.numel() == 1:
            got = got.reshape(want.shape)
        elif got.dim() == 2 and got.shape == want.shape[::-1]:
            return f"the shape is transposed: yours is {tuple(got.shape)}, the question asks for {tuple(want.shape)}"
        else:
            return f"the shape is wrong: yours is {tuple(got.shape)}, the question asks for {tuple(want.shape)}"
    if not bool(torch.isfinite(got).all()):
        return "the answer holds NaN or infinite values"
    if _close(got, want, atol):
        return None
    for factor, words in FACTORS:
        if _close(got, factor * want, atol) and bool((want.abs() > atol).any()):
            return words
    if got.dim() == 2 and _close(got, want.T, atol):
        return "it is the transpose of the answer (rows and columns swapped)"
    if got.numel() > 1:
        shift = got - want
        if _close(shift, torch.full_like(shift, shift.flatten()[0].item()), atol):
            return "every entry is off by the same constant — a missing or extra term that does not depend on the entry?"
        close = torch.isclose(got, want, rtol=1e-4, atol=atol)
        if got.dim() == 2 and got.shape[0] == got.shape[1] and bool(close.fill_diagonal_(True).all()):
            return "only the diagonal is wrong"
        close = torch.isclose(got, want, rtol=1e-4, atol=atol)
        wrong = int((~close).sum())
        if got.dim() == 2:
            rows = int((~close).any(1).sum())
            return f"{wrong} of {got.numel()} entries are wrong, in {rows} of {got.shape[0]} rows"
        return f"{wrong} of {got.numel()} entries are wrong"
    return "not the expected value (its shape is right)"
