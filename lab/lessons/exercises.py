"""Every lesson exercise's expected value, computed from ``lab`` at run time from the cell's own inputs.

A check cell in a notebook names only the exercise and hands over the variables the answer is built
from — ``check("0.1", answer, e=e, t=t, v=v)`` — so the notebook holds no expected value to copy. The
functions here compute it with the lab's own losses and metrics (never a literal).
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
    expected: Callable[..., object]
    atol: float = 1e-5


EXERCISES: dict[str, Exercise] = {}


def exercise(number: str, title: str, atol: float = 1e-5):
    def register(expected):
        EXERCISES[number] = Exercise(number, title, expected, atol)
        return expected
    return register


def _functional():
    from lab.losses import functional

    return functional


def _prompt_kd():
    from lab.losses import prompt_kd

    return prompt_kd


# ---------------------------------------------------------------------- 00 tour

@exercise("0.1", "text→image cross-entropy")
def _(e, t, v):
    return _functional().diagonal_ce(e.scale * t @ v.T)


@exercise("0.2", "task loss of perfectly aligned pairs at scale 100")
def _(v):
    return _functional().clip_loss(v.detach(), v.detach(), 100.0)


# ---------------------------------------------------------------------- 01 CLIP and the teacher

@exercise("1.1", "harmonic mean of base 80 and novel 40")
def _():
    from lab.eval.zeroshot import harmonic_mean

    return harmonic_mean(80.0, 40.0)


@exercise("1.2", "one-template class weights")
def _(teacher, names):
    from lab.data.shapes import PROMPT_TEMPLATES
    from lab.eval.suite import encode_texts
    from lab.eval.zeroshot import class_embeddings

    return class_embeddings(lambda texts: encode_texts(teacher, texts), names, PROMPT_TEMPLATES[:1])


# ---------------------------------------------------------------------- 02 CLIP-KD I

@exercise("2.1", "where the teacher's target goes as the temperature → 0")
def _(v_t, t_t):
    return F.softmax(1e4 * v_t @ t_t.T, dim=1).argmax(1)


@exercise("2.2", "FD's per-pair image distance via cosines")
def _(pv, v_t):
    return (pv - v_t).pow(2).sum(1)


@exercise("2.3", "the released code's FD")
def _(pv, pt, v_t, t_t):
    return _functional().fd_loss(pv, pt, v_t, t_t, variant="official")


# ---------------------------------------------------------------------- 03 CLIP-KD II

@exercise("3.1", "gradient with respect to the keys")
def _(pv, pt, e):
    return _functional().clip_gradients(pv.detach(), pt.detach(), 1 / e.scale.item())[1]


@exercise("3.2", "ICL's mutual-information bound")
def _(pv, pt, v_t, t_t, c):
    return math.log(len(pv) - 1) - _functional().icl_loss(pv, pt, v_t, t_t, c)


@exercise("3.3", "AFD's fusion input width")
def _(objective):
    return objective.fusion.image.in_features


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


@exercise("6.2", "uniformity")
def _(x):
    from lab.eval.geometry import uniformity

    return uniformity(x)


@exercise("6.3", "alignment")
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


def expected(number: str, **inputs):
    """Exercise ``number``'s expected value for ``inputs`` (what its check compares the answer with)."""
    return EXERCISES[number].expected(**inputs)
