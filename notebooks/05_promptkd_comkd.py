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
# # 05 — PromptKD and ComKD-CLIP: prompts, IFAlign, EduAttention, KL refinement, base-to-novel
#
# Lessons 02–04 trained the whole student on image–caption pairs. **PromptKD** distils differently: (1) tune a few prompt vectors on the frozen teacher with a handful of labelled images; (2) freeze the student too, and train only *its* vision prompts and a small projector so that its class logits match the tuned teacher's on **unlabelled** images. The student never runs its text tower — it borrows the teacher's class features. **ComKD-CLIP** adds IFAlign (match the features' batch statistics) and EduAttention (a gated attention from image to class features) and refines the logits with KL.
#
# **Papers.** PromptKD: Li et al., *PromptKD: Unsupervised Prompt Distillation for Vision-Language Models*, CVPR 2024, [arXiv:2403.02781](https://arxiv.org/abs/2403.02781) (code: zhengli97/PromptKD). ComKD-CLIP: Chen et al., *ComKD-CLIP: Comprehensive Knowledge Distillation for Contrastive Language-Image Pre-training Model*, [arXiv:2408.04145](https://arxiv.org/abs/2408.04145).
#
# **The pipeline.**
#
# ```text
#  stage 1 (labelled base classes)           stage 2 (unlabelled images of all classes)
#  ───────────────────────────────           ──────────────────────────────────────────────────────────
#  frozen teacher CLIP                       image x ──► frozen teacher image tower ──► u_t ─┐
#   + learnable prompts (both towers)                                                        ├─► q_t = 100·u_t Wᵀ
#   trained with cross-entropy       ──► W   class names ──► tuned teacher text tower ──► W ─┤   (targets)
#   on 100·cos(image, class) logits          image x ──► frozen student + vision prompts      │
#                                                 ──► projector P ──► z ──────────────────────┴─► q_s = 100·ẑ Wᵀ
#                                            L = KD(q_s ‖ q_t)             (PromptKD)
#                                              + IFAlign(ẑ, u_t) + KD(EduAttention(z, W) logits ‖ q_t)  (ComKD)
#  only the prompts, P and EduAttention train; the student's text tower is never used
# ```

# %% [markdown] tags=["instructor"]
# **Instructor note** (removed from the student edition). Class time about 60 min. Stage 1 and stage 2 confuse students: the teacher's prompts are tuned with labels on base classes only; the student never sees a label. Point at the base/novel lines the summary prints: distillation can lower base accuracy while raising novel accuracy. If α ends near 0, ComKD is PromptKD plus IFAlign — a good moment to discuss gated residual modules that never open.

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
from lab.lesson import paper_numbers, ranking, sweep_table, versus
import ipywidgets as widgets

from lab import runs
from lab.data.shapes import PROMPT_TEMPLATES, label_space
from lab.eval.suite import encode_texts
from lab.eval.zeroshot import class_embeddings
from lab.experiments.grids import GRIDS
from lab.losses import prompt_kd as K
from lab.viz import grouped_bars

lesson = start(PRESET)

# %% [markdown]
# ## One batch
#
# `u_t`: the teacher's normalised image features; `W`: its class text features (here the zero-shot ones; the pipeline uses the tuned prompts'); `z`: the student's image features through PromptKD's projector. Logits are `100 · cos`.

# %%
batch = lesson.one_batch()
teacher, e = batch.teacher, batch.e
space = label_space('colour_shape')
W = class_embeddings(lambda t: encode_texts(teacher, t), space.classnames, PROMPT_TEMPLATES).to(lesson.device)
u_t = e.teacher_image
torch.manual_seed(0)
projector = K.Projector(e.image_raw.shape[1], u_t.shape[1]).to(lesson.device)
z = projector(e.image_raw)
q_t = 100 * u_t @ W.T
q_s = 100 * F.normalize(z, dim=-1) @ W.T
show_shapes(u_t=u_t, W=W, z=z, q_s=q_s, q_t=q_t)
assert_same(q_s, K.class_logits(z, W), 'student class logits', atol=1e-4)


# %% [markdown]
# ## PromptKD's logit distillation (PromptKD §3.3)
#
# $$L_\text{KD} = \tau^2\, \mathrm{KL}\big(\sigma(q_t/\tau)\,\|\,\sigma(q_s/\tau)\big) \quad\text{(paper; mean over the batch)}$$
#
# The released code sums over batch and classes, divides by $B\cdot C$ and multiplies by $KD_W = 1000$
# (`variant="official"`, the lab's default).

# %%
def kd(q_s, q_t, tau=1.0):  # the paper's reading, from scratch
    p_t = F.softmax(q_t / tau, dim=1)
    return tau ** 2 * (p_t * (F.log_softmax(q_t / tau, dim=1) - F.log_softmax(q_s / tau, dim=1))).sum(1).mean()


assert_same(kd(q_s, q_t), K.promptkd_loss(q_s, q_t, variant='paper'), 'PromptKD KL (paper)')
official = 1000 * (F.softmax(q_t, 1) * (F.log_softmax(q_t, 1) - F.log_softmax(q_s, 1))).sum() / q_s.numel()
assert_same(official, K.promptkd_loss(q_s, q_t), 'PromptKD KL (official)', atol=1e-5)

# %% [markdown]
# **Temperature.** Drag τ: the teacher's and the (untrained) student's class probabilities for one image, over the teacher's eight most likely classes. At τ = 1 the teacher's `100 · cos` logits are so far apart that its distribution is nearly one-hot; a higher τ shows the student the teacher's *dark knowledge* — how it ranks the wrong classes. The slider starts at the smallest τ (of 1, 2, 4, 8, 16, 32) where the teacher's top class keeps less than 80 % of the mass.

# %%
top = q_t[0].topk(8).indices
tau_dark = next((t for t in (1, 2, 4, 8, 16, 32) if F.softmax(q_t[0] / t, 0).max() < 0.8), 32)
print(f"teacher's top-class probability: {F.softmax(q_t[0], 0).max():.3f} at τ = 1, "
      f"{F.softmax(q_t[0] / tau_dark, 0).max():.3f} at τ = {tau_dark}")


def kd_temperature(tau=1.0):
    p_t, p_s = F.softmax(q_t[0] / tau, 0), F.softmax(q_s[0].detach() / tau, 0)
    names = [space.classnames[i] for i in top]
    print(f'KD loss at τ={tau:g}: {K.promptkd_loss(q_s, q_t, tau, variant="paper").item():.4f}')
    return grouped_bars({'teacher': dict(zip(names, p_t[top].tolist())), 'student': dict(zip(names, p_s[top].tolist()))}, yaxis='probability')


explore(kd_temperature, tau=widgets.FloatLogSlider(value=tau_dark, base=10, min=-1, max=1.5, step=0.1))

# %% [markdown]
# ## IFAlign (ComKD-CLIP §3.2)
#
# Match the per-channel batch mean and (biased) variance of the normalised student features $\hat z$ to the teacher's:
# $L = \lVert\mu(\hat z) - \mu(u_t)\rVert_1 + \lVert\sigma^2(\hat z) - \sigma^2(u_t)\rVert_1$.

# %%
z_hat = F.normalize(z, dim=-1)
ifalign_mine = ((z_hat.mean(0) - u_t.mean(0)).abs().sum()
                + (z_hat.var(0, unbiased=False) - u_t.var(0, unbiased=False)).abs().sum())
assert_same(ifalign_mine, K.ifalign_loss(z_hat, u_t), 'IFAlign')

# %% [markdown]
# ## EduAttention (ComKD-CLIP §3.3, the `img_query` reading)
#
# $f_e = z + \alpha\cdot\mathrm{softmax}\big(FC_q(z)\,FC_k(W)^\top/\sqrt{C}\big)\,FC_v(W)$, with $\alpha$ a learnable scalar that
# starts at 0 — a fresh EduAttention leaves PromptKD's logits unchanged. The refined logits are $100\cdot\cos(f_e, W)$.

# %%
torch.manual_seed(0)
edu = K.EduAttention(u_t.shape[1]).to(lesson.device)
with torch.no_grad():
    edu.alpha.fill_(0.5)  # as if trained, to see it act
attention = F.softmax(edu.q(z) @ edu.k(W).T / u_t.shape[1] ** 0.5, dim=-1)
f_e = z + edu.alpha * attention @ edu.v(W)
show_shapes(attention=attention, f_e=f_e)
assert_same(f_e, edu(z, W), 'EduAttention features', atol=1e-5)
assert_same(100 * F.normalize(f_e, dim=-1) @ W.T, edu.logits(z, W), 'refined logits', atol=1e-4)

# %% [markdown]
# **Refinement.** ComKD refines the EduAttention logits towards the teacher's with KL (above); its Table 6 compares MSE and L1 on the same logits. The MSE term from scratch (one batch — this says nothing about which is better; the three are *trained* below):

# %%
mse_mine = (edu.logits(z, W) - q_t).pow(2).mean()
assert_same(mse_mine, K.refinement_loss(edu.logits(z, W), q_t, 'mse'), 'MSE refinement', atol=1e-3)

# %% [markdown]
# ## Base-to-novel: training against the zero-shot student
#
# The teacher's prompts are tuned on the 32 *base* classes only; the student is distilled on unlabelled images of all 64 (transductive, as in PromptKD) and scored on base and novel classes separately. The baseline is the same frozen student zero-shot, with its own text tower and the prompt ensemble. Four runs: PromptKD, ComKD-CLIP (KL refinement) and ComKD-CLIP with MSE and with L1 refinement.

# %%
rows = {row.name: row for row in GRIDS["comkd"]}
trained = {"PromptKD": lesson.prompt_run(rows["promptkd-b2n"]), "ComKD-CLIP": lesson.prompt_run(rows["comkd-b2n"]),
           "ComKD, MSE refinement": lesson.prompt_run(rows["comkd-mse-b2n"]),
           "ComKD, L1 refinement": lesson.prompt_run(rows["comkd-l1-b2n"])}
summaries = {label: runs.read_run(path).summary for label, path in trained.items()}
first = summaries["PromptKD"]
bars = {"student zero-shot": {k: first[f"student_zeroshot/{k}"] for k in ("base", "novel", "hm")}}
bars.update({label: {k: s[k] for k in ("base", "novel", "hm")} for label, s in summaries.items()})
bars["tuned teacher"] = {k: first[f"teacher/{k}"] for k in ("base", "novel", "hm")}
for label, scores in bars.items():
    print(f"{label:<22} base {scores['base']:5.1f}  novel {scores['novel']:5.1f}  HM {scores['hm']:5.1f}")
alpha = {label: s['alpha'] for label, s in summaries.items() if s.get('alpha') is not None}
print('EduAttention α after training:', ', '.join(f'{label} {a:.3f}' for label, a in alpha.items()))
lesson.caveat()
grouped_bars(bars)

# %% [markdown]
# The stage-2 curves: each point is the student's HM (base and novel classes on the plain style) on the
# trainer's small probe subset, every 20 steps of the cpu preset. A curve that peaks and falls says the
# student over-fits the teacher's base-class knowledge; read where each one peaks and where it ends.

# %%
lesson.curves(trained, "eval/hm")

# %% [markdown]
# ## Summary
#
# * Stage 1 tunes the teacher's prompts on labelled base classes; stage 2 trains only prompts, a projector and (ComKD) EduAttention on the frozen student, from unlabelled images.
# * What this run shows — each sentence is computed from the numbers printed above:

# %%
zs = bars["student zero-shot"]
hm = {label: scores["hm"] for label, scores in bars.items()}
sentences = []
for label in ("PromptKD", "ComKD-CLIP"):
    d_base, d_novel = bars[label]["base"] - zs["base"], bars[label]["novel"] - zs["novel"]
    sentences.append(f"{label} against the zero-shot student: novel {zs['novel']:.1f} → {bars[label]['novel']:.1f} "
                     f"({d_novel:+.1f}), base {zs['base']:.1f} → {bars[label]['base']:.1f} ({d_base:+.1f}), "
                     f"HM {zs['hm']:.1f} → {bars[label]['hm']:.1f} ({bars[label]['hm'] - zs['hm']:+.1f})"
                     + (" — base accuracy *dropped* while novel rose" if d_base < 0 < d_novel else ""))
a = alpha["ComKD-CLIP"]
sentences.append(f"ComKD's EduAttention ended at α = {a:.3f}. Its refined features are z + α·attention, so "
                 + ("with α this close to 0 ComKD computes almost exactly PromptKD's logits and differs from it only "
                    "by IFAlign: " if abs(a) < 0.1 else "EduAttention does change the logits here: ")
                 + versus(hm, "ComKD-CLIP", "PromptKD") + ".")
refinement = {"KL": hm["ComKD-CLIP"], "MSE": hm["ComKD, MSE refinement"], "L1": hm["ComKD, L1 refinement"]}
sentences.append(f"Refinement, trained side by side (one seed): {ranking(refinement)}.")
sentences.append(f"Every student stays far below the tuned teacher (HM {hm['tuned teacher']:.1f}): only prompts and a "
                 "projector train on a frozen 3.4 M-parameter tower.")
lesson.say(*sentences)

# %% [markdown]
# **At the full budget.** One seed at this budget moves a few points either way. The README's three-seed, full-budget table of the `comkd` grid is the evidence for "ComKD does not beat PromptKD on ShapesWorld" and for the refinement ordering; when those runs are on this machine the next cell shows it:

# %%
sweep_table("comkd", rows=("PromptKD", "ComKD-CLIP", "ComKD, MSE refinement", "ComKD, L1 refinement"))

# %% [markdown]
# And what ComKD-CLIP's paper reports for the three refinements (its Table 6, SUN397 base-to-novel HM, a real CLIP — *paper* numbers, not comparable with ShapesWorld's):

# %%
paper_refinement = paper_numbers("comkd_table6_refinement", metric="hm")

# %% [markdown]
# ## Exercises

# %% [markdown]
# **Exercise 5.1.** Express the official PromptKD loss (KD_W = 1000) through the paper's value and the number of classes C.

# %% tags=["solution"]
answer = 1000 / W.shape[0] * kd(q_s, q_t)

# %%
check("5.1", answer, q_s=q_s, q_t=q_t)

# %% [markdown]
# **Exercise 5.2.** A fresh EduAttention has α = 0. What logits does it give? Compute them without the module.

# %% tags=["solution"]
answer = 100 * F.normalize(z, dim=-1) @ W.T

# %%
check("5.2", answer, z=z, W=W, u_t=u_t)

# %% [markdown]
# **Exercise 5.3.** Compute IFAlign with the **mean part only** (ComKD's Table 5 ablation).

# %% tags=["solution"]
answer = (z_hat.mean(0) - u_t.mean(0)).abs().sum()

# %%
check("5.3", answer, z_hat=z_hat, u_t=u_t)

# %% [markdown]
# **Experiment 5.4 (open-ended, not graded).** Does a higher distillation temperature help at this budget? Train PromptKD at τ = 2, 4 and 8 (a row with the setting `temperature=…`, e.g. `lesson.prompt_run(PromptRow("PromptKD τ=4", "promptkd-t4-b2n", (*rows["promptkd-b2n"].settings, "temperature=4")))` with `from lab.experiments.grids import PromptRow`), plot base, novel and HM against τ with `grouped_bars`, and say — from your numbers — whether the dark knowledge the slider showed reaches the student.

# %% tags=["experiment"]
# your experiment

# %% [markdown]
# ## KDPL: prompt distillation without any label (Mistretta et al., ECCV 2024)
#
# KDPL ([arXiv:2407.03056](https://arxiv.org/abs/2407.03056), code: miccunifi/KDPL — the lab's loss equals its `forward_backward` and `sampling`, `tests/test_kdpl.py`) drops PromptKD's stage 1: the teacher keeps a hand-crafted prompt ("a photo of a {}."), both models' logits use the *student's* logit scale, and the loss is a **symmetric** KL over the $K$ classes the teacher finds most likely on the batch (by batch-mean probability) — no label anywhere:
#
# $$L = \tfrac12\,\mathrm{KL}(p_t\,\|\,p_s) + \tfrac12\,\mathrm{KL}(p_s\,\|\,p_t),\qquad \text{classes} = \operatorname{top-}K_c\ \tfrac1B \textstyle\sum_b \mathrm{softmax}(q_t)_{bc}$$
#
# KDPL-CA ("class-agnostic") draws the $K$ classes from a dictionary of every class name the lab knows (83 names). From scratch on this batch's logits:

# %%
mean_p = F.softmax(q_t, dim=1).mean(0)
top = mean_p.argsort(descending=True)[:16]
log_p_t_top, log_p_s_top = F.log_softmax(q_t[:, top], 1), F.log_softmax(q_s[:, top], 1)  # logs, not log(p): p underflows
forward = (log_p_t_top.exp() * (log_p_t_top - log_p_s_top)).sum(1).mean()
reverse = (log_p_s_top.exp() * (log_p_s_top - log_p_t_top)).sum(1).mean()
assert_same(0.5 * forward + 0.5 * reverse, K.kdpl_loss(q_s[:, K.kdpl_classes(q_t, 16)], q_t[:, K.kdpl_classes(q_t, 16)]),
            'KDPL symmetric KL over the top-16 classes', atol=1e-4)

# %% [markdown]
# Trained on the base-to-novel protocol beside PromptKD (the same unlabelled images; KDPL distils over the base classes' names, KDPL-CA over the dictionary):

# %%
kdpl_rows = {row.name: row for row in GRIDS["kdpl"]}
kdpl_trained = {"PromptKD": trained["PromptKD"], "KDPL": lesson.prompt_run(kdpl_rows["kdpl-b2n"]),
                "KDPL-CA": lesson.prompt_run(kdpl_rows["kdpl-ca-b2n"])}
kdpl_bars = {"student zero-shot": bars["student zero-shot"]}
kdpl_bars.update({label: {k: runs.read_run(p).summary[k] for k in ("base", "novel", "hm")} for label, p in kdpl_trained.items()})
for label, scores in kdpl_bars.items():
    print(f"{label:<18} base {scores['base']:5.1f}  novel {scores['novel']:5.1f}  HM {scores['hm']:5.1f}")
lesson.caveat()
grouped_bars(kdpl_bars)

# %%
kdpl_hm = {label: scores["hm"] for label, scores in kdpl_bars.items()}
lesson.say(f"HM: {ranking(kdpl_hm)}.", versus(kdpl_hm, "KDPL", "PromptKD"), versus(kdpl_hm, "KDPL", "student zero-shot"))

# %% [markdown]
# **Exercise 5.5.** Write KDPL's loss over the teacher's top-8 classes (by batch-mean probability) from `q_s` and `q_t`.

# %% tags=["solution"]
keep = F.softmax(q_t, dim=1).mean(0).topk(8).indices
lp_s, lp_t = F.log_softmax(q_s[:, keep], 1), F.log_softmax(q_t[:, keep], 1)
answer = 0.5 * (lp_t.exp() * (lp_t - lp_s)).sum(1).mean() + 0.5 * (lp_s.exp() * (lp_s - lp_t)).sum(1).mean()

# %%
check("5.5", answer, q_s=q_s, q_t=q_t)

# %% [markdown]
# ## Self-check quiz
#
# A few questions on this lesson's ideas. Put your answer to each in `quiz_answers` — a letter for a
# multiple-choice question, a number otherwise — and run the cell: it says whether each answer is right and
# why, and explains every option (under "Explanation of every option"). The grader reads `quiz_answers`
# from your notebook.

# %% tags=["quiz-answers"]
from lab.lessons.quiz import show_quiz

quiz_answers = {"5.q1": None, "5.q2": None, "5.q3": None, "5.q4": None}
show_quiz("05", quiz_answers)
