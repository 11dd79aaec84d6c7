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
# # 08 — Where the student starts and what it sees: weight inheritance and ACID
#
# Two levers of distillation that are not a loss term. **TinyCLIP's weight inheritance** starts the student from a slice of the teacher instead of a random draw; **ACID** picks, from a larger super-batch, the examples the student finds hard and the teacher finds easy — data curation as distillation. Each is written from scratch on one batch, checked against the lab, and trained against the no-KD student.
#
# **Papers.** Wu et al., *TinyCLIP: CLIP Distillation via Affinity Mimicking and Weight Inheritance*, ICCV 2023, [arXiv:2309.12314](https://arxiv.org/abs/2309.12314) (code: microsoft/Cream, `TinyCLIP/`; the lab's inheritance equals its `weight_inherit` tensor for tensor, `tests/test_inherit.py`). Udandarao et al., *Active Data Curation Effectively Distills Large-Scale Multimodal Models*, CVPR 2025, [arXiv:2411.18674](https://arxiv.org/abs/2411.18674) — **paper-level: no official code**; its sampler is JEST's (Evans et al., NeurIPS 2024, [arXiv:2406.17711](https://arxiv.org/abs/2406.17711)). Details: `docs/methods-modern2.md`.

# %% [markdown] tags=["instructor"]
# **Instructor note** (removed from the student edition). Class time about 45 min. The shipped student is exactly half the teacher (width, heads, image layers), so inheritance applies without any surgery: a good moment to ask what *cannot* be sliced (patch size, head width, vocabulary). For ACID, insist that the reference loss comes from the reference model — a public port of JEST got this wrong, and then "learnability" is zero everywhere.

# %% [markdown]
# ## Parameters
#
# `PRESET`: **`fast`** (seconds; CI; numbers mean nothing), **`cpu`** (minutes on a laptop) or **`gpu`** (the full budget on CUDA).

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

from lab import runs
from lab.data import curation as C
from lab.eval.probe import steps_to_reach
from lab.lesson import assert_same, check, show_shapes, start
from lab.models import inherit
from lab.models import zoo

lesson = start(PRESET)

# %% [markdown]
# ## Manual weight inheritance (TinyCLIP §3.2)
#
# Per tower, the student's block $i$ is the teacher's block $i\cdot\lfloor L_T/L_S\rfloor$, and every tensor keeps its *first* rows and columns — except attention's packed $W_{qkv}$ (q, k and v stacked), which must keep the first **heads** of each of q, k and v:
#
# $$W^S_{qkv} = \mathrm{view}(W^T_{qkv},\ 3, H_T, d_h, W_T)[:, :H_S, :, :W_S]$$

# %%
teacher = zoo.shipped_teacher()
torch.manual_seed(0)
student = zoo.create("shapes-student")
T, S = teacher.model.state_dict(), student.model.state_dict()
L_T, L_S = len(teacher.model.visual.transformer.resblocks), len(student.model.visual.transformer.resblocks)
step = L_T // L_S
print(f"image tower: teacher {L_T} blocks, student {L_S}: the student's blocks come from {list(range(0, L_S * step, step))}")

key = "visual.transformer.resblocks.{}.attn.in_proj_weight"
H_T, H_S, d_h = 4, 2, 32
mine = T[key.format(1 * step)].view(3, H_T, d_h, 128)[:, :H_S, :, :64].reshape(3 * H_S * d_h, 64)
inherited = inherit.inherit_state(student.model, teacher.model)
show_shapes(teacher_qkv=T[key.format(step)], student_qkv=mine)
assert_same(mine, inherited[key.format(1)], "inherited q/k/v of the student's block 1")
assert_same(T["visual.proj"][:64, :128], inherited["visual.proj"], "inherited image projection")

# %% [markdown]
# A student that is not a slice — another patch size, head width or vocabulary — cannot inherit; the lab says why in one sentence:

# %%
import open_clip  # noqa: E402

try:
    inherit.check_slice(open_clip.model.CLIP(128, dict(image_size=32, patch_size=4, width=64, layers=2, head_width=32),
                                             dict(context_length=20, vocab_size=49408, width=64, heads=2, layers=2)),
                        teacher.model)
except Exception as err:
    print(err)

# %% [markdown]
# ## ACID: learnability and joint selection (paper-level)
#
# On a super-batch of $N$ pairs, each model's pairwise sigmoid-contrastive loss $\ell_{ij} = \mathrm{softplus}(-z_{ij}\, t\langle x_i, y_j\rangle)$ ($z_{ii}=1$, $z_{ij}=-1$) gives the learnability $s = \ell^{\text{student}} - \ell^{\text{teacher}}$. JEST draws the sub-batch in chunks, each candidate with probability $\propto \exp\big(s_{ii} + \sum_{j \in S}(s_{ij}+s_{ji})\big)$ given the chosen set $S$.

# %%
batch = lesson.one_batch(40)
e = batch.e
v_s, t_s = F.normalize(e.image_raw, dim=-1).detach(), F.normalize(e.text_raw, dim=-1).detach()
z = 2 * torch.eye(len(v_s)) - 1
l_student = F.softplus(-z * (e.scale.detach() * v_s @ t_s.T))
l_teacher = F.softplus(-z * (e.teacher_scale * e.teacher_image @ e.teacher_text.T))
s = l_student - l_teacher
assert_same(s, C.learnability((v_s, t_s, e.scale.detach()), (e.teacher_image, e.teacher_text, e.teacher_scale)),
            "learnability")
chosen = C.joint_sample(s, 8, n_chunks=4, generator=torch.Generator().manual_seed(0))
print("chosen (of 40):", chosen.tolist())
print("their captions:", [batch.pairs.captions[i] for i in chosen[:4]])

# %% [markdown]
# ## Training: inherited against random starts, and ACED against KD alone
#
# Same data, steps and optimiser for every run. "inherit + AM" and "random init + AM" differ only in the start (TinyCLIP's affinity mimicking in both); ACED is the `crd` KD term on the sub-batch ACID picks from a 5× super-batch (its scoring costs two extra no-gradient forwards of the super-batch per step).

# %%
trained = {"no KD": lesson.clip_run(), "random init + AM": lesson.clip_run("am"),
           "inherit + AM": lesson.clip_run("am", ("init=inherit",), "inherit"),
           "KD alone (crd)": lesson.clip_run("crd"), "ACED (ACID + crd)": lesson.clip_run("crd", ("curation=acid",), "aced")}
hm = lesson.compare(trained)

# %% [markdown]
# TinyCLIP's claim is a speed-up: the inherited student reaches a given accuracy in fewer steps. Read it off the probe curves — the first step at which each run reaches the no-KD student's final HM:

# %%
key = "eval/hm" if PRESET != "fast" else "task"
if key == "eval/hm":
    curves = {label: [(r["step"], r[key]) for r in runs.read_run(p).metrics() if key in r] for label, p in trained.items()}
    for label, points in curves.items():
        reached = steps_to_reach(points, hm["no KD"])
        print(f"{label:<20} reaches the no-KD final HM {hm['no KD']:.1f} at step {reached if reached else '— (never)'}")
lesson.curves(trained, key)

# %% [markdown]
# ## Exercises

# %%
L_T, L_S = 12, 3
chosen_mask = torch.zeros(len(s), dtype=torch.bool)
chosen_mask[chosen[:4]] = True

# %% [markdown]
# **Exercise 8.1.** TinyCLIP's manual inheritance of a student of `L_S = 3` blocks from a teacher of `L_T = 12`: which teacher blocks does it take? Answer with the list of indices.

# %% tags=["solution"]
answer = list(range(0, L_S * (L_T // L_S), L_T // L_S))

# %%
check("8.1", answer, L_T=L_T, L_S=L_S)

# %% [markdown]
# **Exercise 8.2.** With `chosen_mask` the examples already chosen, compute every candidate's conditional logit $s_{ii} + \sum_{j\in S}(s_{ij} + s_{ji})$ (one number per example of the super-batch).

# %% tags=["solution"]
answer = s.diagonal() + s[:, chosen_mask].sum(1) + s[chosen_mask].sum(0)

# %%
check("8.2", answer, s=s, chosen_mask=chosen_mask)

# %% [markdown]
# ## Self-check quiz
#
# A few questions on this lesson's ideas. Put your answer to each in `quiz_answers` — a letter for a
# multiple-choice question, a number otherwise — and run the cell: it says whether each answer is right and
# why, and explains every option (under "Explanation of every option"). The grader reads `quiz_answers`
# from your notebook.

# %% tags=["quiz-answers"]
from lab.lessons.quiz import show_quiz

quiz_answers = {"8.q1": None, "8.q2": None, "8.q3": None, "8.q4": None}
show_quiz("08", quiz_answers)
