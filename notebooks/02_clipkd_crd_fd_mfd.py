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
# # 02 — CLIP-KD I: CRD, FD and MFD
#
# CLIP-KD (Yang et al., CVPR 2024) asks *what* of the teacher a small CLIP should copy. This lesson takes its first three answers: the teacher's **relations** inside a batch (CRD), the teacher's **features** themselves (FD), and features from a **masked** image (MFD). Each term is written from scratch on one batch, checked against `lab.losses`, and trained against the no-KD student; where the authors' released code computes something else than the paper, a cell runs both.
#
# **Paper.** Yang et al., *CLIP-KD: An Empirical Study of CLIP Model Distillation*, CVPR 2024, [arXiv:2307.12732](https://arxiv.org/abs/2307.12732) (code: winycg/CLIP-KD). Not to be confused with Tian et al.'s *Contrastive Representation Distillation* ([arXiv:1910.10699](https://arxiv.org/abs/1910.10699)), whose CRD contrasts against a memory bank of negatives — see below.
#
# **The three terms.**
#
# ```text
#              teacher (frozen)                     student (trained)
#   CRD:   S_t = s_t · v_t t_tᵀ   (N×N)    ──KL──►   S_s = s_s · v_s t_sᵀ        relations inside each model's own space
#   FD:    v_t , t_t              (N×D_T)  ──‖·‖²─►  p_v , p_t = proj(student)   the features, after a projection head
#   MFD:   v_t  from the full image        ──‖·‖²─►  p_v  from a masked image     FD, the student shown half the patches
# ```
#
# **One remark on the released code for the whole lesson:** CLIP-KD's (and CLIP-RD's) released loss code crashes in a single process (`world_size = 1`: a variable is used before it is set); it runs only under two or more processes. The lab's terms run in one process — as every cell here does — and under torchrun.

# %% [markdown] tags=["instructor"]
# **Instructor note** (removed from the student edition). Class time about 60 min. Expect confusion between CLIP-KD's CRD and Tian et al.'s CRD (the same acronym): insist that this one uses only the batch. For 2.1 the answer is the teacher's argmax caption per image; follow with: when is that the image's own caption? (When the teacher is right — then low-temperature CRD is nearly the task loss.) The released-code cells are good for a discussion of why a paper's published weights only make sense together with the code's reduction.

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
import ipywidgets as widgets

from lab import runs
from lab.losses import functional as L
from lab.lesson import ranking, sweep_table, versus
from lab.viz import embedding_maps, image_grid, similarity_heatmaps, similarity_matrices

lesson = start(PRESET)

# %%
batch = lesson.one_batch()
e = batch.e
v_s, t_s = F.normalize(e.image_raw, dim=-1), F.normalize(e.text_raw, dim=-1)
v_t, t_t = e.teacher_image, e.teacher_text
show_shapes(v_s=v_s, t_s=t_s, v_t=v_t, t_t=t_t)

# %% [markdown]
# ## CRD — contrastive relational distillation (CLIP-KD §3.2.1)
#
# Each model scores every image against every caption of the batch, in its own space:
# $S_s = s_s\, v_s t_s^\top$ and $S_t = s_t\, v_t t_t^\top$. Softmax over a row of $S$ is "which caption does image $i$ pick",
# over a row of $S^\top$ "which image does caption $j$ pick". CRD asks each of the student's distributions to match the
# teacher's, in both of these directions — always $\mathrm{KL}(\text{teacher} \,\|\, \text{student})$, so this is *not* a symmetric KL:
#
# $$L_\text{CRD} = \mathrm{KL}(S_t \,\|\, S_s) + \mathrm{KL}(S_t^\top \,\|\, S_s^\top)$$
#
# (row-wise KL, averaged over rows). CLIP-KD's CRD is *contrastive relational* distillation over the current batch only;
# Tian et al.'s CRD (ICLR 2020) is a different loss, a contrastive objective against thousands of negatives kept in a
# memory bank. Same acronym, different method.

# %%
S_s = e.scale * v_s @ t_s.T
S_t = e.teacher_scale * v_t @ t_t.T


def kl(pred, target):  # KL(softmax(target) || softmax(pred)) per row, mean over rows
    p = F.softmax(target, dim=1)
    return (p * (F.log_softmax(target, dim=1) - F.log_softmax(pred, dim=1))).sum(1).mean()


crd_mine = kl(S_s, S_t) + kl(S_s.T, S_t.T)
show_shapes(S_s=S_s, S_t=S_t)
assert_same(crd_mine, L.crd_loss(v_s, t_s, e.scale, v_t, t_t, e.teacher_scale), 'CRD')

# %% [markdown]
# **The released code's CRD (`variant="official"`)** takes the *mean* of the two directions, half the paper's sum; its published weight 1 was used with that mean, so the paper reading at weight 1 is twice as strong:

# %%
crd_official = L.crd_loss(v_s, t_s, e.scale, v_t, t_t, e.teacher_scale, variant="official")
print(f"CRD paper {crd_mine.item():.4f} | official {crd_official.item():.4f} (ratio {crd_mine.item() / crd_official.item():.2f})")

# %% [markdown]
# **Temperature.** Each model's scale is an inverse temperature: the larger it is, the closer to one-hot its rows (the teacher's learned scale is printed below). Drag the temperature: the heatmaps are row-wise softmax(cos / T) of teacher and student image–caption similarities of a trained no-KD student (one test item per class) — what CRD compares.

# %%
print(f'student scale {e.scale.item():.1f}, teacher scale {e.teacher_scale:.1f} (temperature 1/scale)')
nokd = lesson.clip_run()
emb_nokd = runs.read_run(nokd).embeddings()


def relations(temperature=0.07):
    return similarity_heatmaps(similarity_matrices(emb_nokd, 'image-text', temperature))


explore(relations, temperature=widgets.FloatLogSlider(value=0.07, base=10, min=-2, max=0, step=0.1))

# %% [markdown]
# ## FD — feature distillation (CLIP-KD §3.2.2)
#
# The student is projected to the teacher's width by a linear head per modality and re-normalised ($p_v, p_t$);
# FD pulls each projected embedding onto the teacher's:
#
# $$L_\text{FD} = \tfrac1N \sum_k \left(\lVert p_{v,k} - v_{t,k}\rVert^2 + \lVert p_{t,k} - t_{t,k}\rVert^2\right)$$
#
# On unit vectors $\lVert a-b\rVert^2 = 2 - 2\cos(a,b)$: FD aligns directions. Its default weight in the lab is $2000/D_T$: 2000 is the
# weight of the *released code*, whose FD is an element-wise mean (over $N \cdot D_T$ entries, `variant="official"`) — $D_T$
# times smaller than the paper's per-pair sum, so the same strength in the paper's reading is $2000/D_T$ (exercise 2.3).

# %%
objective = lesson.objective("fd", e)
pv, pt = objective.projection(e.image_raw, e.text_raw)
fd_mine = ((pv - v_t).pow(2).sum(1) + (pt - t_t).pow(2).sum(1)).mean()
show_shapes(pv=pv, pt=pt)
assert_same(fd_mine, L.fd_loss(pv, pt, v_t, t_t), 'FD')
assert_same(objective.weights['fd'] * fd_mine, objective(e)['fd'], 'weighted FD term of the objective')
print(objective.formula())

# %% [markdown]
# ## MFD — masked feature distillation (CLIP-KD §3.2.3)
#
# The student sees the image with a random half of its patches dropped (MAE-style: the dropped patch tokens are
# removed, the rest keep their positional embeddings); FD is then computed on that embedding. Drag the mask
# ratio to see what the student is shown.

# %%
visual = batch.student.model.visual
patch = visual.conv1.kernel_size[0]
grid = batch.pairs.images.shape[1] // patch


def masked(images, ratio):
    """Black out the patches L.mask_patches drops (it is run on the patch indices)."""
    ids = torch.arange(grid * grid, dtype=torch.float).expand(len(images), -1).unsqueeze(-1)
    kept = L.mask_patches(ids, ratio, torch.Generator().manual_seed(0)).squeeze(-1).long()
    keep = torch.zeros(len(images), grid * grid, dtype=torch.bool).scatter_(1, kept, True)
    keep = keep.view(-1, grid, grid).repeat_interleave(patch, 1).repeat_interleave(patch, 2)
    return images * keep.numpy()[..., None]


def show_masking(ratio=0.5):
    return image_grid(masked(batch.pairs.images[:8], ratio), [f'ratio {ratio:.2f}'] * 8)


explore(show_masking, ratio=widgets.FloatSlider(value=0.5, min=0.0, max=0.9, step=0.05))

# %%
objective = lesson.objective("mfd", e)
generator = torch.Generator().manual_seed(0)
e.masked_image_raw = L.masked_encode_image(visual, batch.images, 0.5, generator)
pm = F.normalize(objective.projection.image(e.masked_image_raw), dim=-1)
pt_m = F.normalize(objective.projection.text(e.text_raw), dim=-1)
mfd_mine = ((pm - v_t).pow(2).sum(1) + (pt_m - t_t).pow(2).sum(1)).mean()
assert_same(objective.weights['mfd'] * mfd_mine, objective(e)['mfd'], 'weighted MFD term')
assert_same(L.masked_encode_image(visual, batch.images, 0.0), visual(batch.images),
            'masked encoder at ratio 0 = the plain image tower', atol=1e-5)

# %% [markdown]
# **The released code's MFD** computes the masked forward pass and then overwrites its result with the unmasked one, so what it trains is plain FD. The lab masks for real (the cell above); here is the value the released code's "MFD" takes on this batch, beside the real one:

# %%
pv_full = F.normalize(objective.projection.image(e.image_raw), dim=-1)
released_mfd = ((pv_full - v_t).pow(2).sum(1) + (pt_m - t_t).pow(2).sum(1)).mean()  # the mask thrown away
assert_same(released_mfd, L.fd_loss(pv_full, pt_m, v_t, t_t), "released 'MFD' = FD on the unmasked image")
print(f"MFD with the mask {mfd_mine.item():.4f} | released code's MFD (mask discarded) {released_mfd.item():.4f}")

# %% [markdown]
# ## Training against the no-KD student
#
# Same data, steps and optimiser for every run; only the objective differs (MFD as the paper intends: the student sees only the masked image).

# %%
trained = {"no KD": nokd, "CRD": lesson.clip_run("crd"), "FD": lesson.clip_run("fd"), "MFD": lesson.clip_run("mfd")}
hm = lesson.compare(trained)

# %%
lesson.curves(trained, "eval/hm" if PRESET != "fast" else "task")

# %% [markdown]
# Where do the images land? The teacher's image embeddings (PCA) beside the FD student's, rotated onto the teacher's, coloured by shape:

# %%
embedding_maps(runs.read_run(trained["FD"]).embeddings(), "shape", n=400, with_texts=False)

# %% [markdown]
# ## Summary
#
# * CRD copies the teacher's in-batch *relations*; FD its *features*; MFD does FD from a masked view.
# * What your runs show — computed from the numbers printed above (one seed; a few points either way are seed noise):

# %%
lesson.say(f"HM: {ranking(hm)}.", versus(hm, "FD", "CRD"), versus(hm, "FD", "MFD"), versus(hm, "CRD", "no KD"))

# %% [markdown]
# **At the full budget.** In the README's three-seed, full-budget table (`clipkd` grid) FD alone closes about half of the teacher gap — most of what the whole CLIP-KD recipe closes — MFD somewhat less, and CRD alone little: with 64 classes in a batch many pairs are same-class, and matching the teacher's in-batch distributions adds little to what the task loss already teaches (the README's reading). When those runs are on this machine the next cell shows the table:

# %%
sweep_table("clipkd", rows=("no KD", "CRD", "FD", "MFD"))

# %% [markdown]
# The embedding map above shows how much of the teacher's layout of shapes the FD student reproduces.

# %% [markdown]
# ## Exercises

# %% [markdown]
# **Exercise 2.1.** What happens to CRD as the temperature → 0? The teacher's target rows `softmax(v_t t_tᵀ / T)` become one-hot. On which caption does each image's row put its mass? Write `answer(v_t, t_t)` returning one index per image, computed *without* a softmax.

# %% tags=["solution"]
def answer(v_t, t_t):
    return (v_t @ t_t.T).argmax(1)

# %%
check("2.1", answer, v_t=v_t, t_t=t_t)

# %% [markdown]
# So at low temperature CRD becomes a cross-entropy towards the teacher's *top* caption per image — nearly the task loss itself when the teacher is right.

# %% [markdown]
# **Exercise 2.2.** Write `answer(pv, v_t)`: FD's per-pair image distance ‖p_v − v_t‖² of unit vectors, with cosines only (no subtraction of vectors).

# %% tags=["solution"]
def answer(pv, v_t):
    return 2 - 2 * F.cosine_similarity(pv, v_t, dim=1)

# %%
check("2.2", answer, pv=pv, v_t=v_t)

# %% [markdown]
# **Exercise 2.3.** The released code's FD (`variant="official"`) is an element-wise mean. Express it with the paper's value `fd_mine` and the teacher width.

# %% tags=["solution"]
answer = fd_mine / v_t.shape[1]

# %%
check("2.3", answer, pv=pv, pt=pt, v_t=v_t, t_t=t_t)

# %% [markdown]
# **Experiment 2.4 (open-ended, not graded).** The paper sweeps MFD's mask ratio from 0 to 0.75 and finds no gain over 0. Does that hold here? Train MFD at mask ratios 0.25, 0.5 and 0.75 (the distill setting `mask_ratio=…`: `lesson.clip_run("mfd", ("mask_ratio=0.75",), "r75")`), plot HM against the ratio with `ablation_bars` (`from lab.viz import ablation_bars`; `ablation_bars(labels, hms, [0.0] * len(hms), "HM (one seed)")` draws one bar per run, its mean the run's HM — the zeros are the standard deviations one seed cannot give), and compare with FD (ratio 0).

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

quiz_answers = {"2.q1": None, "2.q2": None, "2.q3": None, "2.q4": None}
show_quiz("02", quiz_answers)
