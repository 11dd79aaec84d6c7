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
# # 03 — CLIP-KD II: GD, ICL and AFD
#
# Three more of CLIP-KD's answers to *what should the student copy?* **GD** copies how the teacher's contrastive loss would *move* the embeddings (its gradients); **ICL** lets the student's embeddings contrast against the teacher's, across modalities; **AFD** fuses student and teacher features and trains the fusion contrastively. In the README's full-budget sweep two of the three do not help at this scale — the lesson shows why, and what your own runs say.
#
# **Paper.** Yang et al., *CLIP-KD: An Empirical Study of CLIP Model Distillation*, CVPR 2024, [arXiv:2307.12732](https://arxiv.org/abs/2307.12732) (code: winycg/CLIP-KD).
#
# **The three terms.**
#
# ```text
#   GD:   teacher loss ──∂/∂(v_t, t_t)──► g^t     student loss ──∂/∂(p_v, p_t)──► g^s     match g^s to g^t
#   ICL:  student image p_v ──picks──► teacher caption t_t among the batch   (and p_t ──► v_t)
#   AFD:  [p_v ; v_t] ──φ_v──► v_a ,  [p_t ; t_t] ──φ_t──► t_a ,  CLIP loss on (v_a, t_a);  φ thrown away after training
# ```

# %% [markdown] tags=["instructor"]
# **Instructor note** (removed from the student edition). Class time about 60 min. GD is the hardest derivation of the course: let students check the closed form against autograd (the cell does) before the bars. Common wrong answer in 3.1: the gradient w.r.t. the anchors instead of the keys. 3.3's answer is 2·D_T because the lab projects the student to the teacher's width first; the released code's bug is exactly a wrong input width here.

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
import math

import ipywidgets as widgets

from lab.lesson import gradient_norms, ranking, sweep_table, versus
from lab.losses import functional as L
from lab.viz import grouped_bars

lesson = start(PRESET)

# %%
batch = lesson.one_batch()
e = batch.e
objective = lesson.objective("gd+icl+afd", e)
pv, pt = objective.projection(e.image_raw, e.text_raw)
v_t, t_t = e.teacher_image, e.teacher_text
print(objective.formula())
show_shapes(pv=pv, pt=pt, v_t=v_t, t_t=t_t)


# %% [markdown]
# ## GD — gradient distillation (CLIP-KD §3.2.4, appendix A)
#
# For $L_{I\to T} = \mathrm{mean}_i\,\mathrm{CE}(a_i k^\top/\tau,\, i)$ with anchors $a$ and keys $k$ the gradients have a closed form,
# with $P = \mathrm{softmax}(a k^\top/\tau)$:
#
# $$\frac{\partial L}{\partial a} = \frac{(P - I)\,k}{\tau N}, \qquad \frac{\partial L}{\partial k} = \frac{(P-I)^\top a}{\tau N}$$
#
# GD averages each modality's gradient over its two roles (anchor in one direction, key in the other) and matches
# student to teacher: $L_\text{GD} = \mathrm{mean}_k \left(\lVert g^t_{v,k} - g^s_{v,k}\rVert^2 + \lVert g^t_{t,k} - g^s_{t,k}\rVert^2\right)$, with $\tau = 1/s$.

# %%
def grads(anchor, key, tau):  # the closed form, from scratch
    residual = F.softmax(anchor @ key.T / tau, dim=1) - torch.eye(len(anchor), device=anchor.device)
    return residual @ key / (tau * len(anchor)), residual.T @ anchor / (tau * len(anchor))


# the closed form equals autograd on the cross-entropy
a, k = pv.detach().requires_grad_(), pt.detach().requires_grad_()
auto = torch.autograd.grad(F.cross_entropy(a @ k.T * e.scale.item(), torch.arange(len(a), device=a.device)), (a, k))
assert_same(grads(pv.detach(), pt.detach(), 1 / e.scale.item())[0], auto[0], 'dL/d(anchor)')

tau_s, tau_t = 1 / e.scale, 1 / e.teacher_scale
(s_img_a, s_txt_k), (s_txt_a, s_img_k) = grads(pv, pt, tau_s), grads(pt, pv, tau_s)
(t_img_a, t_txt_k), (t_txt_a, t_img_k) = grads(v_t, t_t, tau_t), grads(t_t, v_t, tau_t)
g_v_s, g_t_s = (s_img_a + s_img_k) / 2, (s_txt_a + s_txt_k) / 2
g_v_t, g_t_t = (t_img_a + t_img_k) / 2, (t_txt_a + t_txt_k) / 2
gd_mine = ((g_v_s - g_v_t).pow(2).sum(1) + (g_t_s - g_t_t).pow(2).sum(1)).mean()
show_shapes(g_v_s=g_v_s, g_t_s=g_t_s)
assert_same(gd_mine, L.gd_loss(pv, pt, e.scale, v_t, t_t, e.teacher_scale), 'GD', atol=1e-9)

# %% [markdown]
# **Why GD barely moves the student.** The matched gradients scale as 1/(τN), so GD at weight 1 is tiny next to the task loss. Weight 1 is the lab's untuned choice for the paper reading (CLIP-KD publishes no weight for it; its released code uses 1e8 on its own, official reading — next section). Drag the weight: the bars are the norm of the gradient each weighted term sends to the student's image embeddings on this batch.

# %%
norms = gradient_norms(objective, e)


def gd_weight(weight=1.0):
    bars = {'task': norms['task'], f'GD × {weight:g}': norms['gd'] * weight, 'ICL': norms['icl'], 'AFD': norms['afd']}
    return grouped_bars({'gradient norm': bars}, yaxis='‖∂L/∂image‖')


explore(gd_weight, weight=widgets.FloatLogSlider(value=1.0, base=10, min=0, max=6, step=0.5))

# %% [markdown]
# **The released code's GD (`variant="official"`).** It passes the logit *scale* $s$ where the temperature $\tau = 1/s$ belongs, so its softmax divides the cosines by $s \approx$ 14–100 instead of multiplying — the rows come out nearly uniform — and it matches the four partial gradients with element-mean MSE. Its weight 1e8 is calibrated to that tiny value. Side by side on this batch:

# %%
s_val = e.scale.item()
for name, tau in (("paper (τ = 1/s)", 1 / s_val), ("official (τ = s)", s_val)):
    rows_max = F.softmax(pv.detach() @ pt.detach().T / tau, dim=1).max(1).values.mean().item()
    print(f"{name:<18} mean largest softmax entry per row {rows_max:.3f}  (uniform: {1 / len(pv):.3f})")
gd_paper = L.gd_loss(pv, pt, e.scale, v_t, t_t, e.teacher_scale, variant="paper")
gd_official = L.gd_loss(pv, pt, e.scale, v_t, t_t, e.teacher_scale, variant="official")
print(f"GD paper {gd_paper.item():.3e} × weight 1 | GD official {gd_official.item():.3e} × weight 1e8 "
      f"= {1e8 * gd_official.item():.3e}")

# %% [markdown]
# ## ICL — interactive contrastive learning (CLIP-KD §3.2.5)
#
# The student's image embedding must pick the *teacher's* caption embedding among the batch, and vice versa:
#
# $$L_\text{ICL} = \tfrac12\left[\mathrm{CE}_\text{diag}(c\,p_v t_t^\top) + \mathrm{CE}_\text{diag}(c\,p_t v_t^\top)\right]$$
#
# with a learnable scale $c$. It bounds the mutual information: $I(v_s; t_t) \ge \log(N-1) - L_\text{ICL}$.

# %%
c = objective.scales['cross']()
target = torch.arange(len(pv), device=pv.device)
icl_mine = 0.5 * (F.cross_entropy(c * pv @ t_t.T, target) + F.cross_entropy(c * pt @ v_t.T, target))
assert_same(icl_mine, objective(e)['icl'] / objective.weights['icl'], 'ICL')

# %% [markdown]
# ## AFD — augmented feature distillation (CLIP-KD §3.2.6)
#
# Fusion layers $\phi_v, \phi_t$ (Linear $2D_T \to D_S$) mix student and teacher:
# $v_a = \mathrm{normalize}(\phi_v([p_v; v_t]))$, $t_a$ likewise, and the CLIP loss trains $(v_a, t_a)$. The fusion is
# thrown away after training.

# %%
phi_v, phi_t = objective.fusion.image, objective.fusion.text
va = F.normalize(torch.cat([pv, v_t], 1) @ phi_v.weight.T + phi_v.bias, dim=-1)
ta = F.normalize(torch.cat([pt, t_t], 1) @ phi_t.weight.T + phi_t.bias, dim=-1)
logits = objective.scales['fusion']() * va @ ta.T
afd_mine = 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))
show_shapes(va=va, ta=ta)
assert_same(afd_mine, objective(e)['afd'] / objective.weights['afd'], 'AFD')

# %% [markdown]
# **Two bugs of the released AFD.** (1) The released code's fusion layer has the right input width only when the student and teacher widths are equal: fed the student's $D_S$-wide features beside the teacher's $D_T$-wide ones it crashes with a shape error. The lab sizes the fusion from both widths. The cell builds a fusion layer sized for equal widths ($2 D_T$) and feeds it what the released code feeds at $D_S \ne D_T$:

# %%
d_s, d_t = e.image_raw.shape[1], v_t.shape[1]
equal_width_fusion = torch.nn.Linear(2 * d_t, d_s).to(lesson.device)
try:
    equal_width_fusion(torch.cat([e.image_raw, v_t], 1))
    print("no error: the widths are equal here")
except RuntimeError as err:
    print(f"D_S = {d_s}, D_T = {d_t}: {type(err).__name__}: {str(err).splitlines()[0]}")
print(f"the lab's fusion: {objective.fusion.image}  (input 2·D_T after the projection to the teacher's width)")

# %% [markdown]
# (2) The released code's AFD launch script trains CRD, not AFD, so its "AFD" run is another CRD run. What the two objectives are:

# %%
print("AFD:", lesson.objective("afd", e).formula())
print("what the released AFD script trains:", lesson.objective("crd", e).formula())

# %% [markdown]
# ## Training against the no-KD student

# %%
trained = {"no KD": lesson.clip_run(), "GD": lesson.clip_run("gd"), "ICL": lesson.clip_run("icl"), "AFD": lesson.clip_run("afd")}
hm = lesson.compare(trained)

# %%
lesson.curves(trained, "eval/hm" if PRESET != "fast" else "task")

# %% [markdown]
# ## Summary
#
# * GD matches closed-form gradients of the contrastive loss; ICL contrasts student against teacher across modalities; AFD trains a fusion of both.
# * What your runs show — computed from the numbers printed above (one seed):

# %%
lesson.say(f"HM: {ranking(hm)}.",
           *(versus(hm, label, "no KD") for label in ("ICL", "GD", "AFD")),
           f"GD's gradient on the student's image embeddings is {norms['gd'] / norms['task']:.2g}× the task loss's "
           "on the batch above: at weight 1 it can barely move the student.")

# %% [markdown]
# **At the full budget.** In the README's three-seed, full-budget table (`clipkd` grid) ICL closes about 39 % of the teacher gap, while GD at weight 1 (the lab's untuned choice) and AFD close 5 % and 2 %, within seed noise: GD's matched gradients are tiny (the bars above), and AFD's fusion can lean on the teacher's half of its input, which already solves the task, so little gradient reaches the student. When those runs are on this machine, the next cell shows the table:

# %%
sweep_table("clipkd", rows=("no KD", "GD", "ICL", "AFD"))

# %% [markdown]
# ## Exercises

# %% [markdown]
# **Exercise 3.1.** With autograd, compute the gradient of `mean_i CE(pv_i · ptᵀ · s, i)` with respect to the **keys** `pt` (use detached copies).

# %% tags=["solution"]
a, k = pv.detach().requires_grad_(), pt.detach().requires_grad_()
answer = torch.autograd.grad(F.cross_entropy(a @ k.T * e.scale.item(), target), k)[0]

# %%
check("3.1", answer, pv=pv, pt=pt, scale=e.scale)

# %% [markdown]
# **Exercise 3.2.** ICL's mutual-information bound: compute log(N − 1) − L_ICL for this batch.

# %% tags=["solution"]
answer = math.log(len(pv) - 1) - icl_mine

# %%
check("3.2", answer, pv=pv, pt=pt, v_t=v_t, t_t=t_t, c=c)

# %% [markdown]
# **Exercise 3.3.** How wide is the input of AFD's image fusion layer? (In terms of the teacher width.)

# %% tags=["solution"]
answer = 2 * v_t.shape[1]

# %%
check("3.3", answer, student_width=e.image_raw.shape[1], teacher_width=v_t.shape[1])

# %% [markdown]
# **Experiment 3.4 (open-ended, not graded).** GD at weight 1 barely moves the student. Find a GD weight that helps: read off the slider above the weight at which GD's gradient norm matches the task loss's, train GD there and at 10× and 0.1× of it (`lesson.clip_run("gd", ("weights=gd=1000",), "w1000")`), and compare HM with the no-KD student's. Does GD then help, or does it only add noise?

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

quiz_answers = {"3.q1": None, "3.q2": None, "3.q3": None, "3.q4": None}
show_quiz("03", quiz_answers)
