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
# # 01 — CLIP, ShapesWorld and the teacher
#
# Before distilling anything we need a teacher worth copying and a fair baseline. This lesson shows how ShapesWorld is built (factors, label spaces, base and novel classes, styles), how a CLIP classifies an image *zero-shot* from class names alone, how good the shipped teacher is, and what the student reaches when trained alone — the **no-KD baseline** every later lesson beats (or fails to beat).
#
# **Papers.** CLIP and zero-shot classification with prompt ensembles: Radford et al., *Learning Transferable Visual Models From Natural Language Supervision*, ICML 2021, [arXiv:2103.00020](https://arxiv.org/abs/2103.00020). The base-to-novel protocol: Zhou et al., *Conditional Prompt Learning for Vision-Language Models* (CoCoOp), CVPR 2022, [arXiv:2203.05557](https://arxiv.org/abs/2203.05557).
#
# **Zero-shot classification.**
#
# ```text
#   "a photo of a red circle." ─┐
#   "a sketch of a red circle." ├─► text tower ─► normalise ─► mean ─► normalise ─► w_red-circle ─┐
#   … (every template)         ─┘                                                                ├─► argmax_c cos(f(x), w_c)
#   image x ──────────────────────► image tower ─► normalise ─► f(x) ────────────────────────────┘
# ```

# %% [markdown] tags=["instructor"]
# **Instructor note** (removed from the student edition). Class time about 40 min. The point to land: the zero-shot classifier is built from text alone, so novel classes cost nothing to add — this is what base-to-novel evaluation (lesson 05) relies on. In 1.2 most students forget the final normalisation; the check's message shows the largest differing entry.

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
from lab.data.shapes import PROMPT_TEMPLATES, STYLES, ShapesWorld, StreamSpec, label_space
from lab.eval import zeroshot
from lab.eval.suite import encode_images, encode_texts
from lab.models.zoo import load_teacher
from lab.viz import image_grid, similarity_heatmaps, similarity_matrices
from lab import runs
from lab.lesson import versus

lesson = start(PRESET)

# %% [markdown]
# ## The world
#
# An item is drawn from factors — 8 colours × 8 shapes × 3 sizes × 9 positions, a rotation and one of four styles — and rendered; the caption is written from the same factors. The 64 colour–shape classes are split into 32 *base* and 32 *novel* classes (for base-to-novel evaluation).

# %%
world = ShapesWorld(32)
test = {style: world.sample(StreamSpec(seed=1234, split='test', styles=(style,)), 0, 256) for style in STYLES}
grid = [test[s].images[i] for s in STYLES for i in range(6)]
image_grid(grid, [f'{s}: {test[s].captions[i][:20]}' for s in STYLES for i in range(6)], columns=6)

# %%
space = label_space('colour_shape')
print(space.num_classes, 'classes; base', len(space.base_ids), 'novel', len(space.novel_ids))
print('e.g.', space.classnames[:5])
print(PROMPT_TEMPLATES[:3])

# %% [markdown]
# ## Zero-shot classification
#
# A CLIP turns class names into a classifier. For class $c$, embed each prompt template filled with its name,
# normalise, average and normalise again: $w_c = \mathrm{normalize}\big(\tfrac1T\sum_\tau \mathrm{normalize}(f_\text{text}(\tau(c)))\big)$.
# An image $x$ is assigned $\arg\max_c \cos(f_\text{img}(x), w_c)$. *Base* accuracy lets only base classes compete,
# *novel* only novel ones, and HM $= 2\,\text{base}\cdot\text{novel}/(\text{base}+\text{novel})$.

# %%
teacher = load_teacher(lesson.teacher, lesson.device)
plain = test['plain']
names = space.classnames
# from scratch: the prompt ensemble
per_prompt = encode_texts(teacher, [tpl.format(c) for c in names for tpl in PROMPT_TEMPLATES])
W = F.normalize(per_prompt.view(len(names), len(PROMPT_TEMPLATES), -1).mean(1), dim=-1)
images = encode_images(teacher, plain.images)
labels = torch.as_tensor(plain.labels(space))
show_shapes(per_prompt=per_prompt, W=W, images=images, labels=labels)
assert_same(W, zeroshot.class_embeddings(lambda t: encode_texts(teacher, t), names, PROMPT_TEMPLATES), 'class weights', atol=1e-5)
mine = 100.0 * ((images @ W.T).argmax(1) == labels).float().mean()
assert_same(mine, zeroshot.top1(images, W, labels), 'teacher top-1 (%) on 256 plain test images')

# %%
for style in STYLES:
    scores = zeroshot.zeroshot_scores(encode_images(teacher, test[style].images), W,
        torch.as_tensor(test[style].labels(space)), space.base_ids, space.novel_ids)
    print(f"{style:<9} top-1 {scores['top1']:5.1f}  base {scores['base']:5.1f}  novel {scores['novel']:5.1f}  HM {scores['hm']:5.1f}")

# %% [markdown]
# ## The no-KD baseline
#
# The student trained alone with the task loss, at this preset's budget. Every distilled run in lessons 02–06 uses exactly the same data, steps and optimiser.

# %%
nokd = lesson.clip_run()
summary = runs.read_run(nokd).summary
print(f"no-KD student HM {summary['hm']:.1f} | teacher HM {summary['teacher/hm']:.1f} on the same test set")

# %%
lesson.curves({"no KD": nokd}, "eval/hm" if PRESET != "fast" else "task")

# %% [markdown]
# How alike are the two spaces? Cosine similarity of every image to every caption, one item per class, teacher beside student:

# %%
similarity_heatmaps(similarity_matrices(runs.read_run(nokd).embeddings(), "image-text"))

# %% [markdown]
# ## Summary
#
# * ShapesWorld gives exact labels for several label spaces, a base/novel split and four styles.
# * Zero-shot classification is a nearest-class-embedding rule; the teacher is strong on every style (the table above).
# * The gap between the teacher and the no-KD student, from the numbers printed above, is what distillation tries to close; the student's similarity matrix beside the teacher's shows how much less sharply it separates the classes:

# %%
lesson.say(versus({"the teacher": summary["teacher/hm"], "the no-KD student": summary["hm"]},
                  "the teacher", "the no-KD student"))

# %% [markdown]
# ## Exercises

# %% [markdown]
# **Exercise 1.1.** Write `answer(base, novel)`: the harmonic mean of a base accuracy and a novel accuracy (the HM above). The check tries base 80 and novel 40; the grader tries others.

# %% tags=["solution"]
def answer(base, novel):
    return 2 * base * novel / (base + novel)

# %%
check("1.1", answer, base=80, novel=40)

# %% [markdown]
# **Exercise 1.2.** Write `answer(teacher, names)`: the teacher's class weights for the class names `names`, from the **first template only** (no ensemble).

# %% tags=["solution"]
def answer(teacher, names):
    return F.normalize(encode_texts(teacher, [PROMPT_TEMPLATES[0].format(c) for c in names]), dim=-1)

# %%
check("1.2", answer, teacher=teacher, names=names)

# %% [markdown]
# Does the single template change the teacher's top-1? Try `zeroshot.top1(images, answer(teacher, names), labels)`.

# %% [markdown]
# **Experiment 1.3 (open-ended, not graded).** Which prompt template is the teacher's best, and does the ensemble beat every single template? Compute the teacher's plain-style top-1 with each template of `PROMPT_TEMPLATES` alone (`zeroshot.class_embeddings(..., PROMPT_TEMPLATES[i:i + 1])`, then `zeroshot.top1`), plot them with `grouped_bars`, and add the ensemble's bar.

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

quiz_answers = {"1.q1": None, "1.q2": None, "1.q3": None, "1.q4": None}
show_quiz("01", quiz_answers)
