"""What the dashboard says in words: each page's opening lines, the metrics' glossary, and the budget banner."""

from __future__ import annotations

import streamlit as st

from lab import runs
from lab.experiments.grids import SCALES
from lab.train.checkpoint import _flat

INTROS = {
    "overview": "Every run in the runs directory with its headline numbers. HM is the harmonic mean of base- and "
                "novel-class zero-shot accuracy (higher is better); compare a distilled student with the no-KD "
                "student of the same budget, and both with the teacher's HM. Pick a run below to open it elsewhere.",
    "geometry": "Where the same test items land in each model's space: look for the same clusters in both panels; "
                "colour by *neighbourhood* to see whose neighbours changed. Both panels have the same size; the fit "
                "is the residual in the student's title.",
    "similarity": "Cosine similarity between one test item per class. A good student reproduces the teacher's "
                  "pattern; in the difference, red = the student finds two classes more alike than the teacher does.",
    "ablations": "Each sweep row's lab number (mean ± std over its seeds) beside the paper's for the nearest row. "
                 "ShapesWorld and small models: compare the *ordering* (rank agreement), not the values.",
    "curves": "Every logged loss term and probe metric over training. Loss totals are not comparable across "
              "objectives (each adds its own terms), so the task term (the CLIP loss every run has) is the default.",
    "protocols": "Prompt distillation under three protocols (base → novel classes, cross label space, style shift): "
                 "the zero-shot models, the tuned teacher and the distilled student side by side.",
}

# metric key (summary's geometry/*) -> (plain words, direction, the teacher's own value when it has one)
GLOSSARY = {
    "cosine_image": ("mean cosine between an image's student and teacher embeddings (after the distillation head)",
                     "higher = closer to the teacher", 1.0),
    "cosine_text": ("mean cosine between a caption's student and teacher embeddings", "higher = closer to the teacher",
                    1.0),
    "cka_image": ("linear CKA: how similar the two image-embedding spaces are up to rotation and scale",
                  "higher = closer to the teacher (1 = same)", 1.0),
    "cka_text": ("linear CKA of the caption embeddings", "higher = closer to the teacher (1 = same)", 1.0),
    "knn_overlap_image": ("share of each image's 10 nearest neighbours that are the same in both models",
                          "higher = closer to the teacher (1 = same)", 1.0),
    "knn_overlap_text": ("share of each caption's 10 nearest neighbours that are the same in both models",
                         "higher = closer to the teacher (1 = same)", 1.0),
    "simmat_corr": ("correlation between the two models' image–caption similarity matrices",
                    "higher = closer to the teacher (1 = same)", 1.0),
    "alignment": ("mean squared distance between an image and its own caption (Wang & Isola)",
                  "lower = matching pairs closer; compare with the teacher's", "teacher_alignment"),
    "uniformity_image": ("how evenly the images spread over the sphere (log mean Gaussian potential)",
                         "lower = more spread out; compare with the teacher's", "teacher_uniformity_image"),
}

BUDGET_WORDS = {"fast": "the `fast` budget (a few steps: the numbers are noise)",
                "demo": "the `demo` budget (minutes on a CPU: rough numbers)"}


def intro(page: str) -> None:
    st.markdown(INTROS[page])


def geometry_glossary(summary: dict) -> list[dict]:
    """Rows of the geometry table: metric, meaning, direction, the run's value and the teacher's reference."""
    rows = []
    for key, value in ((k.split("/", 1)[1], v) for k, v in summary.items() if k.startswith("geometry/")):
        if key.startswith("teacher_"):
            continue
        words, direction, reference = GLOSSARY.get(key, ("", "", None))
        if isinstance(reference, str):
            reference = summary.get(f"geometry/{reference}")
        rows.append({"metric": key, "this run": round(float(value), 3),  # values first: on screen at 1024 px
                     "teacher": None if reference is None else round(float(reference), 3),
                     "direction": direction, "what it measures": words})
    return rows


def budget_of(run: runs.Run) -> str:
    """``fast``, ``demo`` or ``full``: the budget of :data:`lab.experiments.grids.SCALES` whose steps and data size the run used."""
    settings = _flat(run.config.get("config", {}))
    for scale in ("fast", "demo"):
        clip_rows, prompt_rows = SCALES[scale]
        overrides = dict(o.split("=", 1) for o in (prompt_rows if run.kind == "promptkd" else clip_rows))
        keys = [k for k in ("train.steps", "data.size") if k in overrides]
        if keys and all(str(settings.get(k)) == overrides[k] for k in keys):
            return scale
    return "full"


def budget_banner(shown: list[runs.Run]) -> None:
    """A one-line warning when any of the runs shown was trained at the fast or demo budget."""
    budgets = {budget_of(r) for r in shown}
    for scale in ("fast", "demo"):
        if scale in budgets:
            count = sum(budget_of(r) == scale for r in shown)
            st.markdown(f":orange-background[⚠️ {count} of {len(shown)} runs shown: trained at "
                        f"{BUDGET_WORDS[scale]}.]")  # one line: the charts stay on a 1024×768 screen
