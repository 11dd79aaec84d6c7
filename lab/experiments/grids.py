"""The named ablation grids, their budgets ("scales"), run ids, and the papers' number beside each row.

A grid is a list of rows: :class:`Row` (the no-KD student or a distillation objective)
or :class:`PromptRow` (a prompt-distillation setting). ``lab.experiments.sweep`` trains them and
``lab.experiments.tables`` tabulates them.
"""

from __future__ import annotations

from dataclasses import dataclass

from lab.errors import LabError

@dataclass(frozen=True)
class Row:
    """One row of a grid: the no-KD student (``loss=""``) or a distillation objective (plus distill settings)."""

    label: str
    loss: str = ""
    settings: tuple[str, ...] = ()
    tag: str = ""  # tells apart rows of one objective with different settings

    @property
    def slug(self) -> str:
        if not self.loss:  # the no-KD student, or a distill run with no KD term (ACID alone: tag "acid")
            return self.tag or "nokd"
        return f"kd-{self.loss}" + (f"-{self.tag}" if self.tag else "")


@dataclass(frozen=True)
class PromptRow:
    """One row of a prompt-distillation grid: ``prompt_distill`` settings (method, protocol, switches)."""

    label: str
    name: str
    settings: tuple[str, ...]

    @property
    def slug(self) -> str:
        return f"pkd-{self.name}"


NO_KD = Row("no KD (task only)")
CLIPKD = Row("FD+ICL+CRD (CLIP-KD)", "crd+icl+fd")
# The ensemble's second member in the `modern` grid. STAND-IN: the repository ships one ShapesWorld teacher, so
# the second member is that same teacher again — an ensemble of two identical members, which exercises the
# code path but equals the 1-teacher row. Point this at a second shipped teacher (issue 32) once it exists.
SECOND_TEACHER = "shipped"


def _modern_grid() -> list[Row]:
    """Modern recipes (docs/methods-modern.md): open_clip's distill, MobileCLIP (published λ = pure KD, and the
    lab's harmonised task + KD), ± synthetic captions, 1 and 2 teachers, the SigLIP variant, DIME-FM."""
    pub, two = ("task_weight=0",), (f"teacher=shipped,{SECOND_TEACHER}",)
    syn = ("synthetic=both",)
    return [NO_KD, CLIPKD, Row("open_clip DistillClipLoss", "openclip"),
            Row("MobileCLIP, 1 teacher (published: contrastive 0, KD 1)", "mobileclip", pub, "pub"),
            Row("MobileCLIP, 1 teacher (lab's harmonised: task 1 + KD 1)", "mobileclip"),
            Row("MobileCLIP, 1 teacher + synthetic captions (published)", "mobileclip", (*pub, *syn), "pub-syn"),
            Row("MobileCLIP, 1 teacher + synthetic captions (harmonised)", "mobileclip", syn, "syn"),
            Row("MobileCLIP, 2 teachers [stand-in 2nd] (published)", "mobileclip", (*pub, *two), "2t-pub"),
            Row("MobileCLIP, 2 teachers [stand-in 2nd] + synthetic (published)", "mobileclip", (*pub, *two, *syn),
                "2t-pub-syn"),
            Row("MobileCLIP2 SigLIP variant (published: KD only)", "siglipkd", pub, "pub"),
            Row("DIME-FM VL+P-VL, unpaired texts (lab's two-tower extension: + task)", "dimevl+dimepvl",
                ("unpaired=true",), "2tower")]


def _comkd_grid() -> list[PromptRow]:
    """ComKD-CLIP's comparisons and ablations (its Tables 2–6) under each protocol."""
    b2n = ("protocol=base2novel",)
    rows = [PromptRow("PromptKD", "promptkd-b2n", (*b2n, "method=promptkd")),
            PromptRow("ComKD-CLIP", "comkd-b2n", (*b2n, "method=comkd")),
            PromptRow("ComKD w/o IFAlign", "comkd-no-ifalign-b2n", (*b2n, "method=comkd", "use_ifalign=false")),
            PromptRow("ComKD w/o EduAttention", "comkd-no-edu-b2n", (*b2n, "method=comkd", "use_edu=false")),
            PromptRow("ComKD, IFAlign mean only", "comkd-mean-b2n", (*b2n, "method=comkd", "align_variance=false")),
            PromptRow("ComKD, IFAlign variance only", "comkd-var-b2n", (*b2n, "method=comkd", "align_mean=false")),
            PromptRow("ComKD, MSE refinement", "comkd-mse-b2n", (*b2n, "method=comkd", "refine=mse")),
            PromptRow("ComKD, L1 refinement", "comkd-l1-b2n", (*b2n, "method=comkd", "refine=l1")),
            PromptRow("ComKD, EduAttention text_query", "comkd-textq-b2n",
                      (*b2n, "method=comkd", "edu_variant=text_query")),
            PromptRow("TinyCLIP affinity mimicking", "am-b2n", (*b2n, "method=am"))]
    for target in ("colour_shape", "shape", "colour", "size"):
        rows += [PromptRow(f"{m} cross colour_shape→{target}", f"{m}-cross-{target}",
                           ("protocol=cross", f"method={m}", f"label_space={target}")) for m in ("promptkd", "comkd")]
    rows += [PromptRow(f"{m} domain plain→other styles", f"{m}-domain", ("protocol=domain", f"method={m}"))
             for m in ("promptkd", "comkd")]
    return rows


def _kdpl_grid() -> list[PromptRow]:
    """KDPL (label-free, hand-crafted teacher) and KDPL-CA beside PromptKD and ComKD-CLIP, three protocols.

    The PromptKD/ComKD rows share slugs and settings with the ``comkd`` grid, so a sweep reuses their runs.
    KDPL-CA distils over the 83-name dictionary, K=16 per batch (the lab's choice; the official K_MAX is
    1000 of a 20,930-name dictionary).
    """
    protocols = {"b2n": ("protocol=base2novel",), "cross-shape": ("protocol=cross", "label_space=shape"),
                 "domain": ("protocol=domain",)}
    methods = {"promptkd": ("PromptKD", ("method=promptkd",)), "comkd": ("ComKD-CLIP", ("method=comkd",)),
               "kdpl": ("KDPL", ("method=kdpl",)),
               "kdpl-ca": ("KDPL-CA", ("method=kdpl", "class_agnostic=true", "kdpl_k=16"))}
    return [PromptRow(f"{label}, {where}", f"{slug}-{where}", (*p, *settings))
            for where, p in protocols.items() for slug, (label, settings) in methods.items()]


_INHERIT = ("init=inherit",)

GRIDS: dict[str, list] = {
    # The analogue of CLIP-KD Table 1 plus its baselines.
    "clipkd": [NO_KD, Row("CRD", "crd"), Row("FD", "fd"), Row("MFD", "mfd"),
               Row("MFD, full image + second masked forward", "mfd", ("mfd_input=both",), "both"),
               Row("GD", "gd"), Row("ICL", "icl"),
               Row("AFD", "afd"), Row("FD+ICL", "fd+icl"), CLIPKD,
               Row("CLIP-KD +GD", "crd+icl+fd+gd"), Row("CLIP-KD +AFD", "crd+icl+fd+afd"),
               Row("TinyCLIP affinity mimicking", "am"), Row("Hinton KD (class logits)", "kd")],
    # CLIP-RD: the CLIP-KD recipe, each relational term alone and added, and the full objective.
    # VRD and XRD weigh 1: the lab's choice — CLIP-RD's only launch script leaves them at 0 (METHODS.md).
    "cliprd": [NO_KD, CLIPKD, Row("VRD (×1, lab's weight)", "vrd"), Row("XRD (×1, lab's weight)", "xrd"),
               Row("CLIP-KD +VRD (×1, lab's weight)", "crd+icl+fd+vrd"),
               Row("CLIP-KD +XRD (×1, lab's weight)", "crd+icl+fd+xrd"),
               Row("CLIP-RD (CLIP-KD +VRD +XRD, ×1 each: lab's weights; the authors' script sets 0)",
                   "crd+icl+fd+vrd+xrd")],
    # The two rows every table compares with: the reference student and the published CLIP-KD recipe.
    "core": [NO_KD, CLIPKD],
    # PromptKD vs ComKD-CLIP and ComKD's ablations, under the three protocols.
    "comkd": _comkd_grid(),
    # TinyCLIP's manual weight inheritance (lab.models.inherit) against the seed's random start, same steps.
    "inherit": [NO_KD, Row("inherit + AM", "am", _INHERIT, "inherit"),
                Row("inherit + CLIP-KD recipe", "crd+icl+fd", _INHERIT, "inherit"),
                Row("random init + AM", "am"), CLIPKD],
    # ACID / ACED (paper-level: no official code): the sub-batch chosen by learnability (lab.data.curation), alone,
    # with the softmax KD term (ACED = ACID + crd), against KD alone.
    "curation": [NO_KD, Row("ACID (curation alone)", "", ("curation=acid",), "acid"), Row("KD alone (crd)", "crd"),
                 Row("ACED (ACID + crd)", "crd", ("curation=acid",), "aced")],
    # KDPL's label-free prompt distillation beside PromptKD and ComKD-CLIP (lab.train.prompt_kdpl).
    "kdpl": _kdpl_grid(),
    # The headline pair alone (the same runs as comkd's first two rows), for a many-seed paired comparison.
    "promptkd-vs-comkd": _comkd_grid()[:2],
    # open_clip's distill, MobileCLIP's reinforced KD (ensembles, synthetic captions, SigLIP variant), DIME-FM.
    "modern": _modern_grid(),
}
# The papers' published number beside a row (lab.experiments.papers; sources in data/papers/SOURCES.md): the authors'
# result on real data, shown in its own labelled column and never mixed into the lab's columns.
_CLIPKD_T1 = {"nokd": "student", "kd-crd": "+CRD", "kd-fd": "+FD", "kd-mfd": "+MFD", "kd-mfd-both": "+MFD",
              "kd-gd": "+GD", "kd-icl": "+ICL", "kd-afd": "+AFD", "kd-fd+icl": "+FD+ICL",
              "kd-crd+icl+fd": "+FD+ICL+CRD", "kd-crd+icl+fd+gd": "+FD+ICL+CRD+GD",
              "kd-crd+icl+fd+afd": "+FD+ICL+CRD+AFD"}
_CLIPRD = {"nokd": ("student", "CLIP-RD, ImageNet top-1"),
           "kd-crd+icl+fd": ("CLIP-KD*", "CLIP-RD's re-run of CLIP-KD, ImageNet top-1; CLIP-KD's paper: 42.6"),
           "kd-crd+icl+fd+vrd+xrd": ("CLIP-RD", "CLIP-RD, ImageNet top-1")}
_COMKD_SUN397 = {"pkd-comkd-b2n": ("comkd_table6_refinement", {"kd_loss": "KL"}),
                 "pkd-comkd-mse-b2n": ("comkd_table6_refinement", {"kd_loss": "MSE"}),
                 "pkd-comkd-l1-b2n": ("comkd_table6_refinement", {"kd_loss": "L1"}),
                 "pkd-comkd-mean-b2n": ("comkd_table5_alignment", {"alignment": "L_align_mean"}),
                 "pkd-comkd-var-b2n": ("comkd_table5_alignment", {"alignment": "L_align_var"})}
PAPER_REFERENCES: dict[str, dict[str, tuple[str, str, dict]]] = {  # grid -> row slug -> (label, table, match)
    "clipkd": {slug: ("CLIP-KD T1, ImageNet top-1", "clipkd_table1", {"method": m, "metric": "imagenet"})
               for slug, m in _CLIPKD_T1.items()},
    "cliprd": {slug: (label, "cliprd_table", {"method": m, "metric": "imagenet"})
               for slug, (m, label) in _CLIPRD.items()},
    "comkd": {
        "pkd-promptkd-b2n": ("PromptKD T1, 11-dataset mean HM", "promptkd_base2novel",
                             {"method": "PromptKD", "dataset": "Average", "metric": "hm"}),
        **{slug: ("ComKD-CLIP T5/T6, SUN397 HM", table, {**match, "metric": "hm"})
           for slug, (table, match) in _COMKD_SUN397.items()},
        **{f"pkd-{m}-cross-{t}": ("ComKD-CLIP T2, mean top-1 of 10 targets", "comkd_table2_cross",
                                  {"method": name, "dataset": "Average"})
           for m, name in (("promptkd", "PromptKD"), ("comkd", "ComKD-CLIP"))
           for t in ("colour_shape", "shape", "colour", "size")},
        **{f"pkd-{m}-domain": ("ComKD-CLIP T3, mean top-1 of 4 targets", "comkd_table3_domain",
                               {"method": name, "dataset": "Average"})
           for m, name in (("promptkd", "PromptKD"), ("comkd", "ComKD-CLIP"))},
    },
}

PAPER_REFERENCES["core"] = PAPER_REFERENCES["clipkd"]
_MOBILECLIP_S0 = ("MobileCLIP-S0 (README), ImageNet top-1", "modern_table",
                  {"model": "MobileCLIP-S0", "metric": "imagenet"})
PAPER_REFERENCES["modern"] = {
    **{slug: PAPER_REFERENCES["clipkd"][slug] for slug in ("nokd", "kd-crd+icl+fd")},
    "kd-mobileclip-2t-pub-syn": _MOBILECLIP_S0,  # the full recipe: ensemble + synthetic captions, pure KD
    "kd-dimevl+dimepvl-2tower": ("DIME-FM ViT-B/32 (README), ImageNet top-1", "modern_table",
                                 {"model": "Distill-ViT-B/32", "metric": "imagenet"}),
}
PAPER_REFERENCES["promptkd-vs-comkd"] = PAPER_REFERENCES["comkd"]


def paper_number(grid: str, row) -> tuple[float | None, str]:
    """The published number the papers give for this row of ``grid`` and its label, or (None, "")."""
    from lab.experiments import papers

    reference = PAPER_REFERENCES.get(grid, {}).get(row.slug)
    if reference is None:
        return None, ""
    label, table, match = reference
    return papers.value(table, **match), label


# Budgets besides the full one (the README's numbers), as config overrides for CLIP rows and prompt rows.
# "demo": what `make demo` trains — one seed of every grid in minutes on a laptop CPU, numbers rougher
# than the full budget's; "fast": seconds per run for tests and smoke checks (numbers meaningless).
SCALES: dict[str, tuple[list[str], list[str]]] = {
    "full": ([], []),
    "demo": (["data.size=4096", "train.steps=200", "train.warmup=20", "train.eval_every=20", "eval.probe_per_style=128",
              "eval.per_style=256"],
             ["stage1.steps=50", "train.steps=400", "data.size=4096", "eval.per_style=256"]),
    "fast": (["data.size=512", "train.steps=12", "train.batch_size=64", "train.warmup=2", "train.eval_every=0",
              "train.log_every=4", "eval.per_style=64"],
             ["stage1.steps=4", "stage1.shots=2", "stage1.batch_size=32", "train.steps=6", "train.batch_size=32",
              "train.warmup=1", "train.log_every=3", "data.size=128", "eval.per_style=32"]),
}


def check_scale(scale: str) -> None:
    if scale not in SCALES:
        raise LabError(f"Unknown scale '{scale}'; choose one of: {', '.join(SCALES)}.")


def scale_prefix(scale: str) -> str:
    return "" if scale == "full" else f"{scale}-"


def run_id(row: Row, seed: int, scale: str = "full") -> str:
    return f"{scale_prefix(scale)}{row.slug}-s{seed}"


def grid_rows(name: str) -> list[Row]:
    if name not in GRIDS:
        raise LabError(f"Unknown grid '{name}'; choose one of: {', '.join(GRIDS)}.")
    return GRIDS[name]
