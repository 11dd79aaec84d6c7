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
# CLIP-KD (Yang et al., CVPR 2024) asks *what* of the teacher a small CLIP should copy. This lesson takes its first three answers: the teacher's **relations** inside a batch (CRD), the teacher's **features** themselves (FD), and features from a **masked** image (MFD). Each term is written from scratch on one batch, checked against `lab.losses`, and trained against the no-KD student.

# %% [markdown]
# ## Parameters
#
# `PRESET` picks the budget: **`fast`** (seconds; what CI runs — its numbers mean nothing), **`cpu`** (minutes on a laptop; enough to see the effect) or **`gpu`** (the full budget on CUDA with a real pretrained open_clip teacher; without a GPU or the weights it explains why and falls back to `cpu`). Set it here or with `LAB_PRESET=fast jupyter lab`.

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

from lab.lesson import assert_same, check, explore, show_shapes, start
import ipywidgets as widgets

from lab import runs
from lab.losses import functional as L
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
# $S_s = s_s\, v_s t_s^\top$ and $S_t = s_t\, v_t t_t^\top$. Softmax over a row is "which caption does image $i$ pick";
# CRD asks the student's distributions to match the teacher's, both ways:
#
# $$L_\text{CRD} = \mathrm{KL}(S_t \,\|\, S_s) + \mathrm{KL}(S_t^\top \,\|\, S_s^\top)$$
#
# (row-wise KL, averaged over rows; the released code takes half of it — `variant="official"`).

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
# On unit vectors $\lVert a-b\rVert^2 = 2 - 2\cos(a,b)$: FD aligns directions. Its default weight is $2000/D_T$.

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
# * Compare the HM numbers above. In the README's three-seed tables (full budget) FD alone closes about half of the teacher gap — most of what the whole CLIP-KD recipe closes — MFD somewhat less, and **CRD alone helps little at this scale**: with 64 classes in a batch many pairs are same-class, and matching the teacher's in-batch distributions adds little to what the task loss already teaches (the README's reading). At the `cpu` preset, compare FD with no KD: it should be far ahead; CRD's and MFD's single-seed differences are smaller and partly seed noise.
# * The embedding map shows how much of the teacher's layout of shapes the FD student reproduces.

# %% [markdown]
# ## Exercises

# %% [markdown]
# **Exercise 2.1.** What happens to CRD as the temperature → 0? The teacher's target rows `softmax(v_t t_tᵀ / T)` become one-hot. On which caption does each image's row put its mass? Answer with one index per image, computed *without* a softmax.

# %% tags=["solution"]
answer = (v_t @ t_t.T).argmax(1)

# %%
check("2.1", answer, v_t=v_t, t_t=t_t)

# %% [markdown]
# So at low temperature CRD becomes a cross-entropy towards the teacher's *top* caption per image — nearly the task loss itself when the teacher is right.

# %% [markdown]
# **Exercise 2.2.** Write FD's per-pair image distance ‖p_v − v_t‖² with cosines only (no subtraction of vectors).

# %% tags=["solution"]
answer = 2 - 2 * F.cosine_similarity(pv, v_t, dim=1)

# %%
check("2.2", answer, pv=pv, v_t=v_t)

# %% [markdown]
# **Exercise 2.3.** The released code's FD (`variant="official"`) is an element-wise mean. Express it with the paper's value `fd_mine` and the teacher width.

# %% tags=["solution"]
answer = fd_mine / v_t.shape[1]

# %%
check("2.3", answer, pv=pv, pt=pt, v_t=v_t, t_t=t_t)
