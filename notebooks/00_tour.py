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
# # 00 — A tour of the lab
#
# A large CLIP (the **teacher**) already knows how images and captions match. A small CLIP (the **student**) is cheaper to run but, trained alone, learns far less. *Knowledge distillation* trains the student on the same data **and** on signals read off the teacher. This lab makes that concrete on *ShapesWorld*, a generated world of coloured shapes with exact ground truth, small enough to train on a laptop.
#
# In this tour: one batch of data, the two models, the task loss every objective keeps, a distillation objective, and a first distilled student against the no-KD baseline.
#
# **Papers.** Knowledge distillation: Hinton et al., *Distilling the Knowledge in a Neural Network*, [arXiv:1503.02531](https://arxiv.org/abs/1503.02531). CLIP: Radford et al., [arXiv:2103.00020](https://arxiv.org/abs/2103.00020). The lab's methods: CLIP-KD [arXiv:2307.12732](https://arxiv.org/abs/2307.12732) (lessons 02–03), CLIP-RD [arXiv:2603.25383](https://arxiv.org/abs/2603.25383) (04), PromptKD [arXiv:2403.02781](https://arxiv.org/abs/2403.02781) and ComKD-CLIP [arXiv:2408.04145](https://arxiv.org/abs/2408.04145) (05).
#
# **Distillation in one picture.**
#
# ```text
#   image, caption ──► teacher CLIP (frozen, 7.6 M) ──► v_t, t_t ──┐
#                                                                  ├─► distillation terms (CRD, FD, ICL, …) ─┐
#   image, caption ──► student CLIP (trained, 3.4 M) ─► v_s, t_s ──┤                                        ├─► loss
#                                                                  └─► task loss (CLIP's contrastive loss) ──┘
# ```

# %% [markdown] tags=["instructor"]
# **Instructor note** (removed from the student edition). Class time about 45 min (runs: 2 min on a 2-core CPU at the cpu preset, instant with the runs pack). Students often expect 0.2's loss to be 0: with t = v the diagonal is the largest logit of each row, but the other images of the batch are not orthogonal to image i, so each row still spreads some mass (a batch of near-duplicates gives a large loss). Ask what happens to 0.2 as the scale grows.

# %% [markdown]
# ## Parameters
#
# `PRESET` picks the budget: **`fast`** (seconds; what CI runs — its numbers mean nothing), **`cpu`** (minutes on a laptop; enough to see the effect) or **`gpu`** (the full budget on CUDA with a real pretrained open_clip teacher; without a GPU or the weights it explains why and falls back to `cpu`). Set it here or with `LAB_PRESET=fast make lab`.

# %% tags=["parameters"]
import os

PRESET = os.environ.get("LAB_PRESET", "cpu")  # fast | cpu | gpu

# %%
import sys
from pathlib import Path

# the repository root (the folder holding lab/), so `import lab` works wherever Jupyter started;
# none in a student pack, where lab is installed from its wheel
ROOT = next((p for p in [Path.cwd(), *Path.cwd().parents] if (p / 'lab').is_dir()), None)
if ROOT is not None:
    sys.path.insert(0, str(ROOT))

import torch
import torch.nn.functional as F

from lab.lesson import assert_same, check, explore, show_shapes, start
from lab.lesson import sample_images, versus
from lab.losses import functional as L

lesson = start(PRESET)

# %% [markdown]
# ## One batch of ShapesWorld
#
# Every item is an image (32×32) and a caption that names its colour, shape and often its size and position. `lesson.one_batch()` draws a batch and embeds it with a fresh student (with gradients) and with the frozen teacher.

# %%
batch = lesson.one_batch()
pairs, e = batch.pairs, batch.e
print(pairs.captions[:4])
sample_images(pairs)

# %% [markdown]
# The student's raw embeddings, its learnable scale, and the teacher's normalised embeddings:

# %%
show_shapes(student_image=e.image_raw, student_text=e.text_raw, teacher_image=e.teacher_image, teacher_text=e.teacher_text)
print('student scale', e.scale.item(), '| teacher scale', e.teacher_scale)

# %% [markdown]
# ## The task loss: CLIP's contrastive loss
#
# With $N$ normalised image embeddings $v$ and text embeddings $t$ and the scale $s$:
#
# $$L_\text{task} = \tfrac12\left[\mathrm{CE}_\text{diag}(s\,v t^\top) + \mathrm{CE}_\text{diag}(s\,t v^\top)\right]$$
#
# where $\mathrm{CE}_\text{diag}(M)$ is the cross-entropy of row $i$ of $M$ against class $i$: each image must pick its
# own caption among the batch, and each caption its own image. Every objective in the lab keeps this term.

# %%
v = F.normalize(e.image_raw, dim=-1)
t = F.normalize(e.text_raw, dim=-1)
logits = e.scale * v @ t.T  # (N, N): image i against caption j
target = torch.arange(len(v), device=v.device)
mine = 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))
show_shapes(v=v, t=t, logits=logits)
assert_same(mine, L.clip_loss(v, t, e.scale), 'task loss')

# %% [markdown]
# ## A distillation objective
#
# `lab.losses.objective.Objective` builds an objective from term names and prints its formula. CLIP-KD's recipe is `crd+icl+fd`; lessons 02–04 take every term apart.

# %%
objective = lesson.objective("crd+icl+fd", e)
print(objective.formula())
for name, value in objective(e).items():
    print(f'{name:>5} {value.item():.4f}')

# %% [markdown]
# ## A first distilled student
#
# Two runs with the same data, steps and optimiser: the no-KD student (task loss only) and the student distilled with CLIP-KD's recipe. A finished run is reused, so running this cell again is instant. HM is the harmonic mean of zero-shot top-1 on the 32 base and the 32 novel colour–shape classes; *gap closed* is the share of the teacher–student HM gap that distillation removes.

# %%
runs = {"no KD": lesson.clip_run(), "CLIP-KD (crd+icl+fd)": lesson.clip_run("crd+icl+fd")}
hm = lesson.compare(runs)

# %%
lesson.curves(runs, "eval/hm" if PRESET != "fast" else "task")

# %% [markdown]
# Each run is a directory: its config, metrics, summary, embeddings and checkpoint. The dashboard (`streamlit run app.py`) and `python -m lab` read the same directories.

# %%
print(sorted(p.name for p in runs["CLIP-KD (crd+icl+fd)"].iterdir()))

# %% [markdown]
# ## Summary
#
# * ShapesWorld pairs, a teacher (7.6 M parameters) and a student (3.4 M) — both real open_clip models.
# * Every objective is the task loss plus weighted distillation terms; the lab's functions are the equations of the papers, and this notebook's from-scratch loss matched them exactly.
# * What the two runs show, computed from the numbers printed above (one seed; the README's three-seed tables measure the same comparison at the full budget):

# %%
lesson.say(versus(hm, "CLIP-KD (crd+icl+fd)", "no KD"))

# %% [markdown]
# Next: lesson 01 (CLIP, ShapesWorld and the teacher).

# %% [markdown]
# ## Exercises

# %% [markdown]
# **Exercise 0.1.** Write `answer(v, t, scale)`: the *text→image* cross-entropy alone — each caption picks its image among the batch — for normalised image embeddings `v`, caption embeddings `t` and the scale `scale`. It is one of the task loss's two terms, without the ½ in front. The check calls your function on this batch; the grader also calls it on batches you have not seen.

# %% tags=["solution"]
def answer(v, t, scale):
    logits = scale * t @ v.T  # caption i against image j
    return F.cross_entropy(logits, torch.arange(len(t), device=t.device))

# %%
check("0.1", answer, v=v, t=t, scale=e.scale)

# %% [markdown]
# **Exercise 0.2.** Write `answer(v)`: the task loss when every caption embedding equals its image embedding (`t = v`) and the scale is 100, computed with the formula above.

# %% tags=["solution"]
def answer(v):
    same = v.detach()
    logits_same = 100 * same @ same.T
    target = torch.arange(len(same), device=same.device)
    return 0.5 * (F.cross_entropy(logits_same, target) + F.cross_entropy(logits_same.T, target))

# %%
check("0.2", answer, v=v)

# %% [markdown]
# Why is 0.2 not zero? (Hint: the other images in the batch are not orthogonal to image *i*.)

# %% [markdown]
# **Experiment 0.3 (open-ended, not graded).** Which of the recipe's three terms carries its gain? Train the recipe without each term in turn (`lesson.clip_run("icl+fd")`, `lesson.clip_run("crd+fd")`, `lesson.clip_run("crd+icl")`), compare all of them with `lesson.compare({...})`, and say — from your numbers — which term the recipe cannot do without. Lessons 02 and 03 take each term apart.

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

quiz_answers = {"0.q1": None, "0.q2": None, "0.q3": None}
show_quiz("00", quiz_answers)
