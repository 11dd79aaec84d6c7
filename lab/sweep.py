"""Named ablation grids run over seeds, and their results tables.

``python -m lab sweep --grid clipkd --seeds 3`` trains every row of the grid for
seeds 0 … K−1 (skipping runs that finished earlier, so an interrupted sweep resumes),
then writes ``runs/_tables/<grid>.md`` and ``.csv``: mean ± std over seeds of the
headline numbers, the teacher–HM gap each row closes relative to the no-KD row of the
same seed, geometry and wall time. Every number is the last step's.
"""

from __future__ import annotations

import csv
import io
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from lab import runs
from lab.errors import LabError

TABLES_DIR = "_tables"


@dataclass(frozen=True)
class Row:
    """One row of a grid: the no-KD student (``loss=""``) or a distillation objective (plus distill settings)."""

    label: str
    loss: str = ""
    settings: tuple[str, ...] = ()
    tag: str = ""  # tells apart rows of one objective with different settings

    @property
    def slug(self) -> str:
        return (f"kd-{self.loss}" + (f"-{self.tag}" if self.tag else "")) if self.loss else "nokd"


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


GRIDS: dict[str, list] = {
    # The analogue of CLIP-KD Table 1 plus its baselines.
    "clipkd": [NO_KD, Row("CRD", "crd"), Row("FD", "fd"), Row("MFD", "mfd"),
               Row("MFD, full image + second masked forward", "mfd", ("mfd_input=both",), "both"),
               Row("GD", "gd"), Row("ICL", "icl"),
               Row("AFD", "afd"), Row("FD+ICL", "fd+icl"), CLIPKD,
               Row("CLIP-KD +GD", "crd+icl+fd+gd"), Row("CLIP-KD +AFD", "crd+icl+fd+afd"),
               Row("TinyCLIP affinity mimicking", "am"), Row("Hinton KD (class logits)", "kd")],
    # CLIP-RD: the CLIP-KD recipe, each relational term alone and added, and the full objective.
    "cliprd": [NO_KD, CLIPKD, Row("VRD", "vrd"), Row("XRD", "xrd"),
               Row("CLIP-KD +VRD", "crd+icl+fd+vrd"), Row("CLIP-KD +XRD", "crd+icl+fd+xrd"),
               Row("CLIP-RD (CLIP-KD +VRD +XRD)", "crd+icl+fd+vrd+xrd")],
    # The two rows every table compares with: the reference student and the published CLIP-KD recipe.
    "core": [NO_KD, CLIPKD],
    # PromptKD vs ComKD-CLIP and ComKD's ablations, under the three protocols.
    "comkd": _comkd_grid(),
}
# The papers' published number beside a row (lab.papers; sources in data/papers/SOURCES.md): the authors'
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


def paper_number(grid: str, row) -> tuple[float | None, str]:
    """The published number the papers give for this row of ``grid`` and its label, or (None, "")."""
    from lab import papers

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
    "demo": (["data.size=4096", "train.steps=200", "train.warmup=20", "train.eval_every=100", "eval.per_style=256"],
             ["stage1.steps=50", "train.steps=400", "data.size=4096", "eval.per_style=256"]),
    "fast": (["data.size=512", "train.steps=12", "train.batch_size=64", "train.warmup=2", "train.eval_every=0",
              "train.log_every=4", "eval.per_style=64"],
             ["stage1.steps=4", "stage1.shots=2", "stage1.batch_size=32", "train.steps=6", "train.batch_size=32",
              "train.warmup=1", "train.log_every=3", "data.size=128", "eval.per_style=32"]),
}


def check_scale(scale: str) -> None:
    if scale not in SCALES:
        raise LabError(f"Unknown scale '{scale}'; choose one of: {', '.join(SCALES)}.")


def _prefix(scale: str) -> str:
    return "" if scale == "full" else f"{scale}-"


def run_id(row: Row, seed: int, scale: str = "full") -> str:
    return f"{_prefix(scale)}{row.slug}-s{seed}"


def grid_rows(name: str) -> list[Row]:
    if name not in GRIDS:
        raise LabError(f"Unknown grid '{name}'; choose one of: {', '.join(GRIDS)}.")
    return GRIDS[name]


def train_row(row: Row, seed: int, runs_dir: Path, scale: str = "full", overrides: Sequence[str] = ()) -> Path:
    """Train one (row, seed) run unless it finished earlier; returns its directory."""
    from lab.train.distill import default_config, distill
    from lab.train.pretrain import preset_config, pretrain

    rid = run_id(row, seed, scale)
    clip_budget, prompt_budget = SCALES[scale]
    path = runs_dir / rid
    if runs.read_run(path).complete:
        return path
    if isinstance(row, PromptRow):
        from lab.train.prompt_distill import default_config as prompt_config, prompt_distill

        settings = [*row.settings, f"train.seed={seed}", *prompt_budget, *overrides]
        if scale != "full":  # the no-KD run of the same seed and scale is the student
            settings.append(f"student={train_row(NO_KD, seed, runs_dir, scale)}")
        prompt_distill(prompt_config(settings), rid, runs_dir, overwrite=path.exists())
        return path
    settings = [f"train.seed={seed}", *clip_budget, *overrides]
    if row.loss:
        distill(default_config([f"loss={row.loss}", *row.settings, *settings]), rid, runs_dir,
                overwrite=path.exists())
    else:
        pretrain(preset_config("student", settings), rid, runs_dir, overwrite=path.exists())
    return path


def sweep(grid: str, seeds: int = 1, runs_dir: str | Path = "runs", scale: str = "full",
          overrides: Sequence[str] = ()) -> Path:
    """Train every (row, seed) of ``grid`` that has not finished, then write its tables; returns the .md path."""
    check_scale(scale)
    rows, runs_dir = grid_rows(grid), Path(runs_dir)
    jobs = [(row, seed) for seed in range(seeds) for row in rows]
    done = sum(runs.read_run(runs_dir / run_id(r, s, scale)).complete for r, s in jobs)
    bar = tqdm(jobs, desc=f"sweep {grid}", unit="run", initial=0)
    if done:
        tqdm.write(f"{done} of {len(jobs)} runs finished earlier and are skipped")
    for row, seed in bar:
        bar.set_postfix_str(run_id(row, seed, scale))
        train_row(row, seed, runs_dir, scale, overrides)
    return write_tables(grid, seeds, runs_dir, scale)


# --------------------------------------------------------------------------- tables

COLUMNS = ("row", "loss", "seeds", "hm", "top1", "base", "novel", "gap_closed", "retrieval_i2t_r1",
           "cosine_image", "cka_image", "simmat_corr", "wall_time_s")
SUMMARY_KEYS = {"hm": "hm", "top1": "top1", "base": "base", "novel": "novel",
                "retrieval_i2t_r1": "retrieval/i2t_r1", "cosine_image": "geometry/cosine_image",
                "cka_image": "geometry/cka_image", "simmat_corr": "geometry/simmat_corr", "wall_time_s": "wall_time_s"}


def gap_closed(hm: float, nokd_hm: float, teacher_hm: float) -> float:
    """(HM_KD − HM_noKD) / (HM_teacher − HM_noKD), in percent (METHODS.md, "teacher gap closed")."""
    return 100.0 * (hm - nokd_hm) / (teacher_hm - nokd_hm)


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    values = [v for v in values if v is not None]
    if not values:
        return float("nan"), float("nan")
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def collect(grid: str, seeds: int, runs_dir: str | Path = "runs", scale: str = "full") -> list[dict]:
    """One record per row: per-seed values and their mean/std for every column."""
    runs_dir = Path(runs_dir)
    nokd = {s: runs.read_run(runs_dir / run_id(NO_KD, s, scale)) for s in range(seeds)}
    records = []
    for row in grid_rows(grid):
        per_seed: dict[str, list] = {k: [] for k in (*SUMMARY_KEYS, "gap_closed")}
        found = []
        for seed in range(seeds):
            run = runs.read_run(runs_dir / run_id(row, seed, scale))
            if not run.complete:
                continue
            found.append(seed)
            for column, key in SUMMARY_KEYS.items():
                per_seed[column].append(run.summary.get(key))
            base = nokd[seed]
            teacher_hm = run.summary.get("teacher/hm")
            if base.complete and teacher_hm is not None:
                per_seed["gap_closed"].append(gap_closed(run.summary["hm"], base.summary["hm"], teacher_hm))
        paper, source = paper_number(grid, row)
        record = {"row": row.label, "loss": row.loss or "task", "seeds": found, "per_seed": per_seed,
                  "paper": paper, "paper_source": source}
        for column, values in per_seed.items():
            record[column] = mean_std(values)
        records.append(record)
    return records


def teacher_hm(grid: str, seeds: int, runs_dir: str | Path = "runs", scale: str = "full") -> float | None:
    for seed in range(seeds):
        run = runs.read_run(Path(runs_dir) / run_id(NO_KD, seed, scale))
        if run.complete and "teacher/hm" in run.summary:
            return run.summary["teacher/hm"]
    return None


def _fmt(pair: tuple[float, float], digits: int = 1) -> str:
    mean, std = pair
    return "—" if mean != mean else f"{mean:.{digits}f} ± {std:.{digits}f}"


PAPER_NOTE = ("paper: the authors' published number for the nearest row, on real data with real CLIP models "
              "(source in each cell; data/papers/SOURCES.md) — a reference for the ordering, not comparable in "
              "absolute terms with the lab's columns.")


def _paper_cell(record: dict) -> str:
    return "—" if record["paper"] is None else f"{record['paper']:g} ({record['paper_source']})"


def markdown_table(records: list[dict], teacher: float | None) -> str:
    head = ("| row | seeds | HM | top-1 | base | novel | gap closed % | i→t R@1 | cos (img) | CKA (img) "
            "| sim-matrix r | wall s | paper |")
    lines = [head, "|" + "---|" * 13]
    for r in records:
        lines.append("| " + " | ".join([
            r["row"], ",".join(map(str, r["seeds"])) or "none", _fmt(r["hm"]), _fmt(r["top1"]), _fmt(r["base"]),
            _fmt(r["novel"]), "—" if r["loss"] == "task" else _fmt(r["gap_closed"]), _fmt(r["retrieval_i2t_r1"]),
            _fmt(r["cosine_image"], 3), _fmt(r["cka_image"], 3), _fmt(r["simmat_corr"], 3),
            _fmt(r["wall_time_s"], 0), _paper_cell(r)]) + " |")
    note = (f"\nTeacher HM {teacher:.1f}. " if teacher is not None else "\n") + \
        "Mean ± std over seeds, last step; HM etc. are zero-shot on the plain-style test set (%). " + PAPER_NOTE
    return "\n".join(lines) + "\n" + note + "\n"


def csv_table(records: list[dict], columns: Sequence[str] = COLUMNS[3:]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["row", "loss", "seeds"] + [f"{c}_{s}" for c in columns for s in ("mean", "std")]
                    + ["paper", "paper_source"])
    for r in records:
        writer.writerow([r["row"], r["loss"], " ".join(map(str, r["seeds"]))]
                        + [f"{v:.6g}" for c in columns for v in r[c]]
                        + ["" if r["paper"] is None else f"{r['paper']:g}", r["paper_source"]])
    return out.getvalue()


# Prompt-distillation grids: each run's headline (HM, target top-1 …) is named in its summary.
PROMPT_COLUMNS = ("score", "base", "novel", "student_zeroshot", "teacher", "teacher_zeroshot", "alpha", "wall_time_s")


def collect_prompt(grid: str, seeds: int, runs_dir: str | Path = "runs", scale: str = "full") -> list[dict]:
    """One record per prompt row: the protocol's headline for the student and its references, mean ± std."""
    records = []
    for row in grid_rows(grid):
        per_seed: dict[str, list] = {k: [] for k in PROMPT_COLUMNS}
        found, headline, protocol = [], "", ""
        for seed in range(seeds):
            run = runs.read_run(Path(runs_dir) / run_id(row, seed, scale))
            if not run.complete:
                continue
            found.append(seed)
            summary, headline, protocol = run.summary, run.summary["headline"], run.summary["protocol"]
            values = {"score": summary[headline], "base": summary["base"], "novel": summary["novel"],
                      "alpha": summary.get("alpha"), "wall_time_s": summary.get("wall_time_s"),
                      **{who: summary[f"{who}/{headline}"] for who in ("student_zeroshot", "teacher",
                                                                      "teacher_zeroshot")}}
            for column in PROMPT_COLUMNS:
                per_seed[column].append(values[column])
        paper, source = paper_number(grid, row)
        records.append({"row": row.label, "loss": row.name, "seeds": found, "headline": headline,
                        "protocol": protocol.split(" ")[0], "per_seed": per_seed, "paper": paper,
                        "paper_source": source,
                        **{c: mean_std(v) for c, v in per_seed.items()}})
    return records


def prompt_markdown_table(records: list[dict]) -> str:
    lines = ["| row | protocol | seeds | student | metric | base | novel | student zero-shot | tuned teacher "
             "| teacher zero-shot | α | wall s | paper |", "|" + "---|" * 13]
    for r in records:
        lines.append("| " + " | ".join([
            r["row"], r["protocol"], ",".join(map(str, r["seeds"])) or "none", _fmt(r["score"]), r["headline"],
            _fmt(r["base"]), _fmt(r["novel"]), _fmt(r["student_zeroshot"]), _fmt(r["teacher"]),
            _fmt(r["teacher_zeroshot"]), _fmt(r["alpha"], 3), _fmt(r["wall_time_s"], 0), _paper_cell(r)]) + " |")
    note = ("\nMean ± std over seeds, last step (%). metric: hm = base-to-novel HM on the plain style; top1 = "
            "top-1 on the target label space (plain style); target_top1 = mean top-1 over the styles the teacher "
            "and student never saw. base/novel: plain style (domain: the source style). " + PAPER_NOTE)
    return "\n".join(lines) + "\n" + note + "\n"


def write_tables(grid: str, seeds: int, runs_dir: str | Path = "runs", scale: str = "full") -> Path:
    name = f"{_prefix(scale)}{grid}"
    folder = Path(runs_dir) / TABLES_DIR
    title = f"## {name} ({seeds} seed{'s' if seeds > 1 else ''})\n\n"
    if isinstance(grid_rows(grid)[0], PromptRow):
        records = collect_prompt(grid, seeds, runs_dir, scale)
        markdown, columns = title + prompt_markdown_table(records), PROMPT_COLUMNS
    else:
        records = collect(grid, seeds, runs_dir, scale)
        markdown = title + markdown_table(records, teacher_hm(grid, seeds, runs_dir, scale))
        columns = COLUMNS[3:]
    runs.atomic_write_bytes(folder / f"{name}.md", markdown.encode())
    runs.atomic_write_bytes(folder / f"{name}.csv", csv_table(records, columns).encode())
    return folder / f"{name}.md"
