# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 07 — Modern recipes: open_clip's distillation, MobileCLIP's reinforced KD, DIME-FM
#
# Three recipes a researcher meets today. **open_clip's `DistillClipLoss`** (the `--distill-model` flag): soft-label cross-entropy between the teacher's and the student's image–text logit matrices. **MobileCLIP's multi-modal reinforced training**: the same idea with an *ensemble* of teachers averaged after the softmax, a second KD term on a *synthetic* caption, and every teacher output stored in the dataset. **DIME-FM**: KL distillation of the image tower alone, on *unpaired* images and sentences, plus a "pseudo-text" term that uses the teacher's own image features as captions. Each loss is written from scratch on one batch, checked against `lab.losses.modern` (which is itself checked against the authors' released code in `tests/test_modern_losses.py`), then trained against the no-KD student and CLIP-KD.
#
# **Papers and code.** Vasu et al., *MobileCLIP*, CVPR 2024, [arXiv:2311.17049](https://arxiv.org/abs/2311.17049); Faghri et al., *MobileCLIP2*, TMLR 2025, [arXiv:2508.20691](https://arxiv.org/abs/2508.20691) (code: apple/ml-mobileclip, `training/open_clip_v2.patch`); Sun et al., *DIME-FM*, ICCV 2023, [arXiv:2303.18232](https://arxiv.org/abs/2303.18232) (code: sunxm2357/DIME-FM); open_clip's `open_clip.loss.DistillClipLoss`. The equations, constants and paper-vs-code differences are in `docs/methods-modern.md`.

# %% [markdown] tags=["instructor"]
# **Instructor note** (removed from the student edition). Class time about 45 min. The key idea of 7.1: cross-entropy and KL differ by the teacher's entropy, a constant — same gradients, different loss values; students who compare loss curves across papers trip over this. For the ensemble (7.2) ask why averaging *after* the softmax is not the same as one softmax of averaged logits (Jensen; a confident member dominates less). The second ensemble member in the from-scratch cells is a stand-in (the fresh student's own embeddings): the lab ships one ShapesWorld teacher.

# %% [markdown]
# ## Parameters
#
# `PRESET` picks the budget: **`fast`** (seconds; what CI runs — its numbers mean nothing), **`cpu`** (minutes on a laptop) or **`gpu`** (the full budget on CUDA with a real pretrained open_clip teacher; without it the lesson explains why and falls back to `cpu`).

# %% tags=["parameters"]
import os

PRESET = os.environ.get("LAB_PRESET", "cpu")  # fast | cpu | gpu

# %%
import sys
from pathlib import Path

# the repository root (the folder holding lab/), so `import lab` works wherever Jupyter started
sys.path.insert(0, str(next(p for p in [Path.cwd(), *Path.cwd().parents] if (p / 'lab').is_dir())))

import torch
import torch.nn.functional as F

from lab.lesson import assert_same, check, show_shapes, start
from lab.lesson import ranking, versus
from lab.losses import functional as L
from lab.losses import modern as M
from lab.data.captioner import synthetic_captions
from lab.viz import ablation_bars

lesson = start(PRESET)

# %%
batch = lesson.one_batch()
e = batch.e
v_s, t_s = F.normalize(e.image_raw, dim=-1), F.normalize(e.text_raw, dim=-1)
v_t, t_t = e.teacher_image, e.teacher_text
s_s, s_t = e.scale, e.teacher_scale
show_shapes(v_s=v_s, t_s=t_s, v_t=v_t, t_t=t_t)

# %% [markdown]
# ## open_clip's `DistillClipLoss`
#
# With $S = s_s v_s t_s^\top$ and $S_T = s_t v_t t_t^\top$ (the teacher keeps its own scale), the distillation part is a
# soft-label cross-entropy in both directions, added with weight 1 to the task loss:
#
# $$L = L_\text{clip} + \tfrac12\left[H(\mathrm{softmax}(S_T), \mathrm{softmax}(S)) + H(\mathrm{softmax}(S_T^\top), \mathrm{softmax}(S^\top))\right]$$

# %%
S, S_T = s_s * v_s @ t_s.T, s_t * v_t @ t_t.T


def soft_ce(target_logits, student_logits):  # H(softmax(target), softmax(student)), mean over rows
    return -(F.softmax(target_logits, 1) * F.log_softmax(student_logits, 1)).sum(1).mean()


openclip_mine = 0.5 * (soft_ce(S_T, S) + soft_ce(S_T.T, S.T))
assert_same(openclip_mine, M.openclip_distill_loss(v_s, t_s, s_s, v_t, t_t, s_t), "open_clip distill")
crd_official = L.crd_loss(v_s, t_s, s_s, v_t, t_t, s_t, variant="official")
print(f"open_clip distill {openclip_mine.item():.4f} | CLIP-KD CRD (official ½-mean KL) {crd_official.item():.4f}")

# %% [markdown]
# ## MobileCLIP: a teacher ensemble, averaged after the softmax
#
# Each of $M$ teachers gives its own row distribution, with its own scale $s_m$ (the released scripts: 100; MobileCLIP2: 70 and 60); the target is their mean,
# $P = \frac1M \sum_m \mathrm{softmax}(s_m v_m t_m^\top)$, and the KD term is $\tfrac12[H(P^{I\to T}, \mathrm{softmax}(S)) + H(P^{T\to I}, \mathrm{softmax}(S^\top))]$,
# once for the ground-truth caption and once for a synthetic one. The second member here is a **stand-in** (the fresh student's own embeddings, detached).

# %%
v_2, t_2 = v_s.detach(), t_s.detach()
P = 0.5 * (F.softmax(100 * v_t @ t_t.T, 1) + F.softmax(100 * v_2 @ t_2.T, 1))
P_T = 0.5 * (F.softmax(100 * t_t @ v_t.T, 1) + F.softmax(100 * t_2 @ v_2.T, 1))
kd_mine = 0.5 * (-(P * F.log_softmax(S, 1)).sum(1).mean() - (P_T * F.log_softmax(S.T, 1)).sum(1).mean())
assert_same(kd_mine, M.ensemble_kd_loss(v_s, t_s, s_s, [v_t, v_2], [t_t, t_2], [100.0, 100.0]), "ensemble KD")

# %% [markdown]
# **Synthetic captions.** MobileCLIP's captions come from a CoCa captioner. ShapesWorld's stand-in writes a second caption per image in new phrasings, dropping an attribute (20 %) or getting the colour or shape wrong (10 %):

# %%
for real, synthetic in list(zip(batch.pairs.captions, synthetic_captions(batch.pairs.factors)))[:6]:
    print(f"{real:<55} | {synthetic}")

# %% [markdown]
# ## DIME-FM: VL-KD and P-VL on unpaired data
#
# The student's text features *are* the teacher's; only the image tower learns (through a projection to the teacher's width, $p_v$). With a fixed scale 100,
# $L_\text{VL} = \mathrm{KL}(\mathrm{softmax}(100 v_t t_t^\top) \| \mathrm{softmax}(100 p_v t_t^\top)) + (\cdot)^\top$ at temperature 1, and
# $L_\text{PVL} = 2\,\mathrm{KL}_{T=3}(\mathrm{softmax}(100 v_t v_t^\top) \| \mathrm{softmax}(100 p_v v_t^\top))$ — the teacher's image features act as pseudo-texts. $L = 0.7 L_\text{VL} + 0.3 L_\text{PVL}$.

# %%
objective = lesson.objective("dimefm", e)
pv = F.normalize(objective.projection.image(e.image_raw), dim=-1)
sentences = t_t[torch.randperm(len(t_t), generator=torch.Generator().manual_seed(0))]  # unpaired with the images


def kl_t(teacher_logits, student_logits, T):
    p = F.softmax(teacher_logits / T, 1)
    return (p * (F.log_softmax(teacher_logits / T, 1) - F.log_softmax(student_logits / T, 1))).sum(1).mean()


vl = kl_t(100 * v_t @ sentences.T, 100 * pv @ sentences.T, 1) + kl_t(100 * sentences @ v_t.T, 100 * sentences @ pv.T, 1)
pvl = 2 * kl_t(100 * v_t @ v_t.T, 100 * pv @ v_t.T, 3)
assert_same(0.7 * vl + 0.3 * pvl, M.dime_loss(pv, v_t, sentences), "DIME-FM", atol=1e-5)

# %% [markdown]
# ## Training against the no-KD student and CLIP-KD
#
# Same data, steps and optimiser for every run (the `modern` grid's rows): MobileCLIP at its published weights (task 0, KD 1) with and without synthetic captions, open_clip's distill, and DIME-FM in the lab's two-tower reading (task + VL + P-VL on unpaired texts).

# %%
trained = {"no KD": lesson.clip_run(), "CLIP-KD": lesson.clip_run("crd+icl+fd"),
           "open_clip distill": lesson.clip_run("openclip"),
           "MobileCLIP": lesson.clip_run("mobileclip", ("task_weight=0",), "pub"),
           "MobileCLIP + synthetic": lesson.clip_run("mobileclip", ("task_weight=0", "synthetic=both"), "pub-syn"),
           "DIME-FM (two-tower)": lesson.clip_run("dimevl+dimepvl", ("unpaired=true",), "2tower")}
hm = lesson.compare(trained)

# %%
ablation_bars(list(hm), list(hm.values()), [0.0] * len(hm))

# %% [markdown]
# ## Summary
#
# * open_clip's distill is CLIP-KD's CRD with a cross-entropy: the same gradients, a larger loss value.
# * MobileCLIP averages an ensemble's distributions and distils on a synthetic caption too; its published setting is pure KD.
# * DIME-FM trains the image tower only, from unpaired images and sentences.
# * What your runs show (one seed; a few points either way are seed noise):

# %%
lesson.say(f"HM: {ranking(hm)}.", versus(hm, "MobileCLIP", "no KD"), versus(hm, "MobileCLIP + synthetic", "MobileCLIP"),
           versus(hm, "open_clip distill", "CLIP-KD"))

# %% [markdown]
# ## Exercises

# %% [markdown]
# **Exercise 7.1.** open_clip's distill value minus CRD's official value is a constant that does not depend on the student. Compute it from the teacher's embeddings and scale only.

# %% tags=["solution"]
P_it, P_ti = F.softmax(s_t * v_t @ t_t.T, 1), F.softmax(s_t * t_t @ v_t.T, 1)
answer = -0.5 * ((P_it * P_it.log()).sum(1).mean() + (P_ti * P_ti.log()).sum(1).mean())

# %%
check("7.1", answer, v_s=v_s, t_s=t_s, s_s=s_s, v_t=v_t, t_t=t_t, s_t=s_t)

# %% [markdown]
# **Exercise 7.2.** The ensemble target without `--distill-average-after-softmax`: ONE softmax of the concatenated features' logits at scale 100 (image → text rows, members `v_t, t_t` and `v_2, t_2`).

# %% tags=["solution"]
answer = F.softmax(100 * (torch.cat([v_t, v_2], 1) @ torch.cat([t_t, t_2], 1).T), 1)

# %%
check("7.2", answer, v_t=v_t, t_t=t_t, v_2=v_2, t_2=t_2)

# %% [markdown]
# **Exercise 7.3.** MobileCLIP2's SigLIP target for one teacher at scale 10 and bias 0, written with `tanh` (no sigmoid).

# %% tags=["solution"]
answer = torch.tanh(10 * v_t @ t_t.T / 2)

# %%
check("7.3", answer, v_t=v_t, t_t=t_t)

# %% [markdown]
# **Experiment 7.4 (open-ended, not graded).** Do synthetic captions help more when the captioner errs less? Train MobileCLIP + synthetic with `captioner_wrong=0` and `captioner_wrong=0.3` (`lesson.clip_run("mobileclip", ("task_weight=0", "synthetic=both", "captioner_wrong=0.3"), "w30")`) and compare their HM with `ablation_bars`.

# %% tags=["experiment"]
# your experiment

# %% [markdown]
# ## Self-check quiz
#
# A few questions on this lesson's ideas. Put your answer to each in `quiz_answers` — a letter for a
# multiple-choice question, a number otherwise — and run the cell: it says whether each answer is right and
# why, and explains every option (under "Explanation of every option"). The grader reads `quiz_answers`
# from your notebook.

# %% tags=["quiz-answers"]
from lab.lessons.quiz import show_quiz

quiz_answers = {"7.q1": None, "7.q2": None, "7.q3": None, "7.q4": None}
show_quiz("07", quiz_answers)
