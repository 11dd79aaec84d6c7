"""``python -m lab lessons …`` and ``python -m lab grade …`` (wired into :mod:`lab.cli`)."""

from __future__ import annotations

import sys
from pathlib import Path

from lab.errors import LabError

ROOT = Path(__file__).resolve().parents[2]
EXECUTED = ROOT / "runs" / "lessons"


def add_commands(sub) -> None:
    p = sub.add_parser("lessons", help="the lessons: sync their notebooks, write an edition, export HTML, pack runs")
    actions = p.add_subparsers(dest="action", required=True)
    actions.add_parser("sync", help="write notebooks/NN_*.ipynb from their jupytext sources notebooks/NN_*.py")
    actions.add_parser("check", help="exit 1 if a notebook differs from its source or holds outputs")
    q = actions.add_parser("edition", help="write the student or instructor edition of every lesson")
    q.add_argument("edition", choices=("student", "instructor"))
    q.add_argument("out", help="folder to write the notebooks into")
    q = actions.add_parser("html", help="executed lessons as self-contained offline HTML pages")
    q.add_argument("--preset", default="cpu", help="the executed copies of notebooks/run_presets.py --preset P")
    q.add_argument("--executed", default="", help="folder of executed notebooks (default runs/lessons/executed-P)")
    q.add_argument("--out", default="", help="where the pages go (default runs/lessons/html-P)")
    q = actions.add_parser("pack", help="pack the finished runs of runs/lessons/PRESET into one archive")
    q.add_argument("archive")
    q.add_argument("--preset", default="cpu")
    q.add_argument("--runs-dir", default=str(EXECUTED))
    q.add_argument("--with-checkpoints", action="store_true", help="also the training checkpoints (large)")
    q = actions.add_parser("student-pack", help="what a student receives: the lab's wheel, the student edition, "
                           "the runs pack, the executed student HTML pages, how to submit (no solution)")
    q.add_argument("out", help="an empty folder to write the pack into")
    q.add_argument("--preset", default="cpu", help="the preset the HTML pages are executed in and the runs pack holds")
    q.add_argument("--runs-dir", default=str(EXECUTED), help="the lessons' runs (finished runs are reused)")
    q.add_argument("--runs-pack", default="", help="an existing runs pack to include (default: pack the runs now)")
    q.add_argument("--executed", default="", help="a folder of already executed student editions for the HTML pages")
    q = actions.add_parser("solutions-edition", help="the lessons WITH reference solutions, for self-learners")
    q.add_argument("out", help="folder to write the notebooks into")
    q = actions.add_parser("update", help="bring a student's lesson folder to this release, keeping the answers")
    q.add_argument("old_dir", help="the student's folder of lesson notebooks")
    q = actions.add_parser("site", help="the docs and the lessons as one offline static site (mkdocs --strict)")
    q.add_argument("out", help="folder for the built site (its sources are staged beside it, in OUT-src)")
    q.add_argument("--edition", default="student", choices=("student", "instructor"))
    q.add_argument("--executed", default="", help="a folder of executed lessons whose outputs the pages show")
    q = actions.add_parser("unpack", help="unpack a runs pack; then set LAB_RUNS_DIR to the folder")
    q.add_argument("archive")
    q.add_argument("runs_dir")

    p = sub.add_parser("grade", help="grade submitted lesson notebooks: canonical checks, hidden checks, points")
    p.add_argument("submissions", nargs="+", help="the students' .ipynb files (a student is the path relative to "
                                                   "the submissions' common folder, e.g. alice/00_tour)")
    p.add_argument("--csv", default="grades.csv", help="where the gradebook goes as CSV (default grades.csv)")
    p.add_argument("--timeout", type=int, default=300, help="seconds per cell; a cell past it costs its exercise")
    p.add_argument("--jobs", type=int, default=1, help="submissions graded at once (default 1)")
    p.add_argument("--root", default="", help="the submissions' root folder (default: their common folder)")
    p.add_argument("--format", choices=("csv", "gradescope"), default="csv",
                   help="gradescope: also write OUT/<student>/results.json")
    p.add_argument("--out", default="gradescope", help="the folder for --format gradescope (default gradescope/)")
    p.add_argument("--report", action="store_true", help="print per exercise: pass rate, common wrong answers, errors")


def _cmd_lessons(args) -> int:
    from lab.lessons import editions, export, pack, sources

    if args.action == "sync":
        for path in sources.sync():
            print(f"wrote {path.relative_to(ROOT)}")
    elif args.action == "check":
        problems = sources.stale()
        for problem in problems:
            print(f"{problem}; run `python -m lab lessons sync`", file=sys.stderr)
        return 1 if problems else 0
    elif args.action == "edition":
        for path in editions.write_edition(args.edition, Path(args.out)):
            print(f"wrote {path}")
    elif args.action == "html":
        executed = Path(args.executed or EXECUTED / f"executed-{args.preset}")
        notebooks = sorted(executed.glob("[0-9][0-9]_*.ipynb"))
        if not notebooks:
            raise LabError(f"No executed lessons in {executed}; run "
                           f"`python notebooks/run_presets.py --preset {args.preset}` first.")
        for page in export.export(notebooks, Path(args.out or EXECUTED / f"html-{args.preset}")):
            print(f"wrote {page} ({page.stat().st_size / 1e6:.1f} MB)")
    elif args.action == "pack":
        names = pack.pack(args.preset, Path(args.archive), Path(args.runs_dir), args.with_checkpoints)
        print(f"packed {len(names)} runs of {Path(args.runs_dir) / args.preset} into {args.archive} "
              f"({Path(args.archive).stat().st_size / 1e6:.1f} MB)")
    elif args.action == "student-pack":
        from lab.lessons import studentpack

        files = studentpack.write_pack(Path(args.out), args.preset, Path(args.runs_dir),
                                       Path(args.executed) if args.executed else None,
                                       Path(args.runs_pack) if args.runs_pack else None)
        size = sum(p.stat().st_size for p in files) / 1e6
        print(f"wrote the student pack {args.out}: {len(files)} files, {size:.1f} MB (see its README.md)")
    elif args.action == "solutions-edition":
        from lab.lessons import studentpack

        for path in studentpack.write_solutions_edition(Path(args.out)):
            print(f"wrote {path} (WITH the reference solutions)")
    elif args.action == "update":
        from lab.lessons import update

        for line in update.update(Path(args.old_dir)):
            print(line)
    elif args.action == "site":
        from lab.lessons import site

        out = site.build(Path(args.out), args.edition, Path(args.executed) if args.executed else None)
        print(f"built the site in {out}; serve it with `python -m http.server -d {out}` (search needs http)")
    elif args.action == "unpack":
        presets = pack.unpack(Path(args.archive), Path(args.runs_dir))
        print(f"unpacked {', '.join(presets)} into {args.runs_dir}; now: export LAB_RUNS_DIR={args.runs_dir}")
    return 0


def _cmd_grade(args) -> int:
    try:
        from lab.lessons import grade
    except ImportError as err:  # a student's copy: the hidden checks (lab/lessons/solutions.py) are not in it
        raise LabError(f"The grader needs the instructor's copy of the lab ({err}); run it from the "
                       f"instructor's repository.") from err

    grades = grade.grade([Path(p) for p in args.submissions], args.timeout, jobs=args.jobs,
                         root=Path(args.root) if args.root else None)
    print(grade.table(grades))
    grade.write_csv(grades, Path(args.csv))
    print(f"wrote {args.csv}")
    if args.format == "gradescope":
        written = grade.write_gradescope(grades, Path(args.out))
        print(f"wrote {len(written)} Gradescope results.json under {args.out}/")
    if args.report:
        print(grade.report(grades))
    return 0


COMMANDS = {"lessons": _cmd_lessons, "grade": _cmd_grade}
