"""Results tables of a grid: mean ± std over seeds, teacher gap closed, geometry, wall time, the paper's number.

Written by ``lab.experiments.sweep`` to ``runs/_tables/<scale->grid>.md`` and ``.csv``; the dashboard
reads the CSVs. Every number is the last step's.
"""

from __future__ import annotations

import csv
import io
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path

from lab import runs
from lab.experiments.grids import NO_KD, PromptRow, grid_rows, paper_number, run_id, scale_prefix

TABLES_DIR = "_tables"

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


def broken(run: runs.Run, seed: int) -> str | None:
    """Why a run that exists cannot count in its row (a damaged file), or None (finished, or not started)."""
    return None if run.ok or not run.path.exists() else f"seed {seed} ({run.run_id}: {'; '.join(run.problems)})"


def incomplete_note(records: list[dict]) -> str:
    """One line per row some of whose runs exist but are broken: the row's numbers leave them out."""
    lines = [f"**Incomplete row** {r['row']}: left out {', '.join(r['broken'])}; repair or re-run them "
             f"(`python -m lab sweep` re-runs unfinished runs)." for r in records if r.get("broken")]
    return ("\n" + "\n".join(lines) + "\n") if lines else ""


def collect(grid: str, seeds: int, runs_dir: str | Path = "runs", scale: str = "full") -> list[dict]:
    """One record per row: per-seed values and their mean/std for every column."""
    runs_dir = Path(runs_dir)
    nokd = {s: runs.read_run(runs_dir / run_id(NO_KD, s, scale)) for s in range(seeds)}
    records = []
    for row in grid_rows(grid):
        per_seed: dict[str, list] = {k: [] for k in (*SUMMARY_KEYS, "gap_closed")}
        found, left_out = [], []
        for seed in range(seeds):
            run = runs.read_run(runs_dir / run_id(row, seed, scale))
            if not run.complete:
                left_out += [problem] if (problem := broken(run, seed)) else []
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
                  "paper": paper, "paper_source": source, "broken": left_out}
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


def plus_minus(pair: tuple[float, float], digits: int = 1) -> str:
    """``(mean, std)`` as "m ± s"; "—" when the mean is NaN (no finished seed)."""
    mean, std = pair
    return "—" if mean != mean else f"{mean:.{digits}f} ± {std:.{digits}f}"


PAPER_NOTE = ("paper: the authors' published number for the nearest row, on real data with real CLIP models "
              "(source in each cell; data/papers/SOURCES.md) — a reference for the ordering, not comparable in "
              "absolute terms with the lab's columns.")


def _paper_cell(record: dict) -> str:
    return "—" if record["paper"] is None else f"{record['paper']:g} ({record['paper_source']})"


def _seeds(record: dict) -> str:
    cell = ",".join(map(str, record["seeds"])) or "none"
    return cell + (f" (incomplete: {len(record['broken'])} broken)" if record.get("broken") else "")


def markdown_table(records: list[dict], teacher: float | None) -> str:
    head = ("| row | seeds | HM | top-1 | base | novel | gap closed % | i→t R@1 | cos (img) | CKA (img) "
            "| sim-matrix r | wall s | paper |")
    lines = [head, "|" + "---|" * 13]
    for r in records:
        lines.append("| " + " | ".join([
            r["row"], _seeds(r), plus_minus(r["hm"]), plus_minus(r["top1"]), plus_minus(r["base"]),
            plus_minus(r["novel"]), "—" if r["loss"] == "task" else plus_minus(r["gap_closed"]),
            plus_minus(r["retrieval_i2t_r1"]),
            plus_minus(r["cosine_image"], 3), plus_minus(r["cka_image"], 3), plus_minus(r["simmat_corr"], 3),
            plus_minus(r["wall_time_s"], 0), _paper_cell(r)]) + " |")
    note = (f"\nTeacher HM {teacher:.1f}. " if teacher is not None else "\n") + \
        "Mean ± std over seeds, last step; HM etc. are zero-shot on the plain-style test set (%). Weights: each " \
        "term's default, chosen on no split (`python -m lab tune` chooses them on the validation split). " + PAPER_NOTE
    return "\n".join(lines) + "\n" + note + "\n" + incomplete_note(records)


def csv_table(records: list[dict], columns: Sequence[str] = COLUMNS[3:]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["row", "loss", "seeds"] + [f"{c}_{s}" for c in columns for s in ("mean", "std")]
                    + ["paper", "paper_source", "incomplete"])
    for r in records:
        writer.writerow([r["row"], r["loss"], " ".join(map(str, r["seeds"]))]
                        + [f"{v:.6g}" for c in columns for v in r[c]]
                        + ["" if r["paper"] is None else f"{r['paper']:g}", r["paper_source"],
                           "; ".join(r.get("broken", []))])
    return out.getvalue()


# Prompt-distillation grids: each run's headline (HM, target top-1 …) is named in its summary.
PROMPT_COLUMNS = ("score", "base", "novel", "student_zeroshot", "teacher", "teacher_zeroshot", "alpha", "wall_time_s")


def collect_prompt(grid: str, seeds: int, runs_dir: str | Path = "runs", scale: str = "full") -> list[dict]:
    """One record per prompt row: the protocol's headline for the student and its references, mean ± std."""
    records = []
    for row in grid_rows(grid):
        per_seed: dict[str, list] = {k: [] for k in PROMPT_COLUMNS}
        found, headline, protocol, left_out = [], "", "", []
        for seed in range(seeds):
            run = runs.read_run(Path(runs_dir) / run_id(row, seed, scale))
            if not run.complete:
                left_out += [problem] if (problem := broken(run, seed)) else []
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
                        "paper_source": source, "broken": left_out,
                        **{c: mean_std(v) for c, v in per_seed.items()}})
    return records


def paired_differences(records: list[dict], reference: str = "PromptKD") -> list[str]:
    """Each row minus the ``reference`` row of the same protocol, seed by seed over the seeds both finished.

    Seeds share the no-KD student and the stage-1 prompts, so the paired difference's spread is the
    one that says whether two methods differ; the rows' own ± also carries the seeds' spread.
    """
    ref = next((r for r in records if r["row"] == reference), None)
    if ref is None:
        return []
    ref_scores = dict(zip(ref["seeds"], ref["per_seed"]["score"]))
    lines = []
    for r in records:
        if r is ref or r["protocol"] != ref["protocol"]:
            continue
        diffs = [score - ref_scores[seed] for seed, score in zip(r["seeds"], r["per_seed"]["score"])
                 if seed in ref_scores]
        if diffs:
            mean, std = mean_std(diffs)
            error = f", s.e. {std / len(diffs) ** 0.5:.1f}" if len(diffs) > 1 else ""
            lines.append(f"{r['row']} {mean:+.1f} ± {std:.1f} (n = {len(diffs)}{error})")
    return lines


def prompt_markdown_table(records: list[dict]) -> str:
    lines = ["| row | protocol | seeds | student | metric | base | novel | student zero-shot | tuned teacher "
             "| teacher zero-shot | α | wall s | paper |", "|" + "---|" * 13]
    for r in records:
        lines.append("| " + " | ".join([
            r["row"], r["protocol"], _seeds(r), plus_minus(r["score"]), r["headline"],
            plus_minus(r["base"]), plus_minus(r["novel"]), plus_minus(r["student_zeroshot"]), plus_minus(r["teacher"]),
            plus_minus(r["teacher_zeroshot"]), plus_minus(r["alpha"], 3), plus_minus(r["wall_time_s"], 0),
            _paper_cell(r)]) + " |")
    note = ("\nMean ± std over seeds, last step (%). metric: hm = base-to-novel HM on the plain style; top1 = "
            "top-1 on the target label space (plain style); target_top1 = mean top-1 over the styles the teacher "
            "and student never saw. base/novel: plain style (domain: the source style). " + PAPER_NOTE)
    paired = paired_differences(records)
    if paired:
        note += ("\n\nMinus PromptKD, seed by seed (same protocol, the seeds both rows finished; mean ± std): "
                 + "; ".join(paired) + ".")
    return "\n".join(lines) + "\n" + note + "\n" + incomplete_note(records)


def write_tables(grid: str, seeds: int, runs_dir: str | Path = "runs", scale: str = "full") -> Path:
    name = f"{scale_prefix(scale)}{grid}"
    folder = Path(runs_dir) / TABLES_DIR
    title = f"## {name} ({seeds} seed{'s' if seeds > 1 else ''})\n\n"
    if isinstance(grid_rows(grid)[0], PromptRow):
        records = collect_prompt(grid, seeds, runs_dir, scale)
        markdown, columns = title + prompt_markdown_table(records), PROMPT_COLUMNS
    else:
        records = collect(grid, seeds, runs_dir, scale)
        markdown = title + markdown_table(records, teacher_hm(grid, seeds, runs_dir, scale))
        columns = COLUMNS[3:]
    for record in records:
        if record["broken"]:
            print(f"warning: row {record['row']!r} is incomplete, left out {', '.join(record['broken'])}",
                  file=sys.stderr)
    runs.atomic_write_bytes(folder / f"{name}.md", markdown.encode())
    runs.atomic_write_bytes(folder / f"{name}.csv", csv_table(records, columns).encode())
    return folder / f"{name}.md"
