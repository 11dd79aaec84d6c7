"""``python -m lab <command>``: the lab's command line.

Mistakes a user can make end in one sentence naming the fix (exit status 2),
never a traceback.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import sys
import time
from pathlib import Path

from lab.errors import LabError
from lab.lessons import cli as lesson_commands


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}.\n")


def _whole_number_at_least(least: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
        if value < least:
            raise argparse.ArgumentTypeError(f"must be at least {least}, got {value}")
        return value
    return parse


positive_int = _whole_number_at_least(1)  # an argparse type: a count of rounds, steps, seeds, a batch size
non_negative_int = _whole_number_at_least(0)  # an argparse type: a count that may be 0


def _add_run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--name", default="", help="run id (default: <preset>-seed<seed>-<time>)")
    p.add_argument("--runs-dir", default=os.environ.get("LAB_RUNS_DIR", "runs"), help="where runs are written")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run of the same name")
    p.add_argument("--resume", action="store_true",
                   help="continue the interrupted run --name from its last checkpoint (same settings)")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="config overrides by dotted key, e.g. train.steps=200")


def build_parser() -> argparse.ArgumentParser:
    from lab.train.presets import PRESETS

    parser = _Parser(prog="python -m lab", description="CLIP knowledge-distillation lab.")
    sub = parser.add_subparsers(dest="command", metavar="command", parser_class=_Parser)

    p = sub.add_parser("pretrain", help="train a CLIP with the contrastive loss alone (teacher or no-KD student)")
    p.add_argument("--preset", default="student", choices=sorted(PRESETS),
                   help="teacher (the shipped teacher's recipe), student (the no-KD baseline), smoke")
    p.add_argument("--export", default="", help="also write the final weights to this .safetensors file")
    _add_run_args(p)

    p = sub.add_parser("distill", help="distil a student from a frozen teacher (CLIP-KD / CLIP-RD terms)")
    p.add_argument("--teacher", default="shipped", help="teacher model spec (default: the shipped teacher)")
    p.add_argument("--student", default="shapes-student", help="student model spec")
    p.add_argument("--loss", default="clipkd", help="terms joined by '+', e.g. crd+fd+icl, or a recipe: clipkd, cliprd")
    p.add_argument("--weight", default="", help="weights, e.g. fd=2000,icl=0.5 (default: each term's own)")
    p.add_argument("--variant", default="paper", choices=["paper", "official"], help="paper or official reading")
    _add_run_args(p)

    p = sub.add_parser("promptkd", help="prompt distillation (PromptKD, ComKD-CLIP) on ShapesWorld")
    p.add_argument("--method", default="comkd", help="promptkd, comkd, am or kdpl")
    p.add_argument("--protocol", default="base2novel", help="base2novel, cross or domain")
    _add_run_args(p)

    p = sub.add_parser("eval", help="evaluate a run, checkpoint or model spec on the ShapesWorld test set")
    p.add_argument("model", help="run directory, checkpoint file, preset or ARCH:TAG")
    p.add_argument("--teacher", default="shipped", help="reference teacher for geometry metrics, or 'none'")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="eval config overrides, e.g. per_style=256")
    p.add_argument("--benchmark", action="append", default=[], metavar="SPEC",
                   help="real data instead of ShapesWorld (repeatable): classify:FOLDER, classify:SPLIT.json:IMAGE_ROOT "
                        "or retrieval:FILE.json; clip_benchmark's metrics and JSON records")
    p.add_argument("--classnames", default="", help="classify:FOLDER: one class name per line, in folder order")
    p.add_argument("--templates", default="openai", help="prompt templates: openai (ImageNet's 80), simple or lab")
    p.add_argument("--split", default="test", help="split of a CoOp split file or a Karpathy retrieval file")
    p.add_argument("--output", default="", help="also write the benchmark records to this JSON file")
    p.add_argument("--workers", type=int, default=0, help="benchmark images: DataLoader worker processes decoding "
                   "and preprocessing batches (0: in this process)")

    p = sub.add_parser("sweep", help="train a named ablation grid over seeds (resumable) and write its tables")
    p.add_argument("--grid", required=True, help="clipkd, cliprd, core, comkd, promptkd-vs-comkd, modern, inherit, "
                   "curation or kdpl")
    p.add_argument("--seeds", type=positive_int, default=1, help="seeds 0 … K-1 (default 1)")
    p.add_argument("--scale", default="full", help="full (default), demo (minutes per grid) or fast (seconds per run)")
    p.add_argument("--fast", action="store_true", help="same as --scale fast (tests and smoke checks)")
    p.add_argument("--runs-dir", default=os.environ.get("LAB_RUNS_DIR", "runs"), help="where runs are written")
    p.add_argument("--jobs", type=positive_int, default=1,
                   help="runs trained at once, each in its own process (one per GPU when there are several; "
                        "default 1, usually fastest on a CPU)")
    p.add_argument("--executor", default="local", choices=("local", "slurm"),
                   help="local (default): this machine, --jobs at a time; slurm: every run a Slurm job through "
                        "submitit (logs under <runs-dir>/_submitit/)")
    p.add_argument("--slurm-partition", default="", help="with --executor slurm: the partition (default: Slurm's)")
    p.add_argument("--slurm-time", type=positive_int, default=60, help="with --executor slurm: minutes per run")
    p.add_argument("--slurm-gpus", type=non_negative_int, default=1, help="with --executor slurm: GPUs per run")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides applied to every run")

    p = sub.add_parser("tune", help="choose every term's weight of a grid on the validation split; write the "
                                    "test table at the chosen weights beside the default weights'")
    p.add_argument("--grid", required=True, help="clipkd, cliprd, core (every term's weight) or comkd (IFAlign's "
                                                 "weight beside the refinement's)")
    p.add_argument("--seeds", type=positive_int, default=1, help="seeds 0 … K-1 whose mean validation score decides")
    p.add_argument("--scale", default="full", help="full (default), demo or fast")
    p.add_argument("--rows", default="", help="only these rows (labels or slugs, ';'-separated; default: every "
                                               "distillation row); earlier rows' choices are used when present")
    p.add_argument("--jobs", type=positive_int, default=1, help="runs trained at once (as for sweep)")
    p.add_argument("--extend", type=non_negative_int, default=2,
                   help="when the best weight is at an end of the grid, search one step further that way, at most "
                        "this many times (default 2; 0: the grid only)")
    p.add_argument("--runs-dir", default=os.environ.get("LAB_RUNS_DIR", "runs"), help="where runs are written")

    p = sub.add_parser("bench", help="time a training step per loss term (cached and online teacher) vs no KD")
    p.add_argument("--terms", default="", help="terms or recipes to time, e.g. fd,gd,clipkd,mfd(both) (default: all)")
    p.add_argument("--batch-size", type=positive_int, default=128)
    p.add_argument("--rounds", type=positive_int, default=5, help="interleaved rounds; the median is kept")
    p.add_argument("--steps", type=positive_int, default=3, help="steps per configuration and round")
    p.add_argument("--device", default="auto")
    p.add_argument("--student", default="shapes-student", help="student model spec (real scale: ViT-B-16)")
    p.add_argument("--teacher", default="shipped", help="teacher model spec (real scale: ViT-L-14)")
    p.add_argument("--precision", default="fp32", help="fp32 or bf16 (autocast)")
    p.add_argument("--prompt", action="store_true",
                   help="time the prompt-distillation stage-2 step (PromptKD, ComKD-CLIP) instead")
    p.add_argument("--scaling", action="store_true",
                   help="time the loss terms alone over batch sizes and widths, and the data generation, instead")
    p.add_argument("--curation", action="store_true",
                   help="time ACID's scoring forwards: no KD, KD alone, ACID, ACED (super-batch 5x), instead")
    p.add_argument("--dashboard", action="store_true",
                   help="time switching the dashboard's pages and runs in headless Chromium (runs of 5,120 "
                        "embedded items), instead")
    p.add_argument("--sweep", action="store_true",
                   help="profile the CPU training step, time AdamW's implementations, a grid's runs per "
                        "configuration (extrapolated to the full budget) and sequential vs --jobs, instead")
    p.add_argument("--grid", default="clipkd", help="with --sweep: the grid whose runs are timed")
    p.add_argument("--jobs", type=positive_int, default=2, help="with --sweep: runs at once in the --jobs comparison")
    p.add_argument("--demo-start", metavar="CHECKOUT", default="",
                   help="time `make demo` in CHECKOUT (a fresh clone) until the Overview shows progress and then "
                        "its first finished run, instead")
    p.add_argument("--venv", default="", help="with --demo-start: an installed .venv to use (make's VENV=)")
    p.add_argument("--cache-key", action="store_true",
                   help="time computing the teacher cache's content key on the default 8,192 pairs (and as a CSV)")
    p.add_argument("--shards", action="store_true",
                   help="time augmented training on webdataset shards (augmentation cache vs online teacher vs no "
                        "KD) and cache-teacher's throughput vs the teacher's bare forward, instead")
    p.add_argument("--cache-teachers", default="ViT-B-32",
                   help="with --shards: more teachers (comma-separated) whose cache-teacher throughput is measured "
                        "after --teacher's; the default, open_clip's ViT-B-32 at 224 px (random weights: the cost "
                        "does not depend on them), shows a teacher of real size; '' for none")
    p.add_argument("--accumulate", type=positive_int, default=0, metavar="N",
                   help="time a GradCache step of N chunks (train.accumulate=N) against the full-batch step, instead")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")

    p = sub.add_parser("cost", help="teacher vs student parameters, FLOPs, latency and throughput beside each "
                                    "run's accuracy; optionally the best student exported to ONNX")
    p.add_argument("--runs-dir", default=os.environ.get("LAB_RUNS_DIR", "runs"), help="where the runs are")
    p.add_argument("--teacher", default="shipped", help="teacher model spec (default: the shipped teacher)")
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=positive_int, default=256, help="images / captions per timed call")
    p.add_argument("--rounds", type=positive_int, default=5, help="interleaved rounds; the median is kept")
    p.add_argument("--onnx", default="", metavar="DIR",
                   help="also export the student with the best HM to ONNX in DIR and check it against PyTorch")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")

    p = sub.add_parser("screenshots", help="a PNG of every dashboard page, taken in headless Chromium")
    p.add_argument("--runs-dir", default=os.environ.get("LAB_RUNS_DIR", "runs"), help="the runs the dashboard shows")
    p.add_argument("--out", default="docs/screenshots", help="where the PNG files go")

    p = sub.add_parser("cache-teacher", help="store a teacher's embeddings of K crops per image beside each "
                                             "webdataset shard (runs under torchrun; resumable shard by shard)")
    p.add_argument("--teacher", default="shipped", help="teacher model spec (real scale: ViT-L-14:TAG)")
    p.add_argument("--data", required=True, help="the shards: a brace pattern, a folder of .tar files or a list file")
    p.add_argument("--augmentations", type=int, default=4,
                   help="K crops per image (open_clip's RandomResizedCrop); 0: one centre crop, no augmentation")
    p.add_argument("--layout", choices=("lab", "datacompdr"), default="lab",
                   help="lab: a .safetensors file beside each shard; datacompdr: new shards in DataCompDR's layout "
                        "(MobileCLIP's reinforced data; --teacher may be an ensemble A,B) written to --out")
    p.add_argument("--out", default="", help="with --layout datacompdr: the folder for the reinforced shards")
    p.add_argument("--synthetic", type=int, default=1,
                   help="with --layout datacompdr: synthetic captions per image (ShapesWorld's captioner)")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="e.g. data.image_size=224 data.crop_scale=0.9,1.0 data.flip=true data.workers=4 batch_size=256")

    p = sub.add_parser("export", help="write a run's student in open_clip's hub layout (local-dir: loadable) "
                                      "with a model card; --onnx adds the ONNX encoders")
    p.add_argument("run", help="run directory")
    p.add_argument("out_dir", help="folder for open_clip_config.json, open_clip_model.safetensors and the card")
    p.add_argument("--onnx", action="store_true", help="also export the ONNX image and text encoders (checked)")
    p.add_argument("--overwrite", action="store_true", help="write into a folder that already holds files")

    sub.add_parser("presets", help="list the pretraining presets and model presets")

    p = sub.add_parser("demo", help="one seed of every grid at the demo budget, for the dashboard (skips finished runs)")
    p.add_argument("--fast", action="store_true", help="the seconds-long budget instead (tests)")
    p.add_argument("--runs-dir", default=os.environ.get("LAB_RUNS_DIR", "runs"), help="where runs are written")
    p.add_argument("--serve", action="store_true",
                   help="start the dashboard first and train behind it (what make demo runs)")
    p.add_argument("--port", type=int, default=8501, help="the dashboard's port with --serve")
    lesson_commands.add_commands(sub)  # lessons, grade
    return parser


def _run_id(args, prefix: str, seed: int) -> str:
    """The run's name, with the name and the runs folder checked before any model is loaded."""
    from lab.runs import check_run_name, check_runs_dir

    if args.resume and not args.name:
        raise LabError("--resume needs --name, the run to continue.")
    if args.name:
        check_run_name(args.name)
    check_runs_dir(args.runs_dir)
    return args.name or f"{prefix}-seed{seed}-{time.strftime('%Y%m%d-%H%M%S')}"


def _writable_runs_dir(runs_dir: str) -> None:
    """A sweep writes runs and then its tables: both folders are checked before the first run."""
    from lab.runs import check_runs_dir
    from lab.experiments.tables import TABLES_DIR

    check_runs_dir(runs_dir)
    check_runs_dir(Path(runs_dir) / TABLES_DIR)


def _main_process() -> bool:
    """False on every torchrun process but rank 0 (they train and write nothing)."""
    from lab.train import dist

    return dist.from_env().is_main


def _cmd_pretrain(args) -> int:
    from lab.train import dist
    from lab.train.pretrain import pretrain, preset_config

    if dist.from_env().enabled:
        raise LabError("pretrain runs in one process; launch it without torchrun (distill and promptkd run "
                       "under torchrun).")
    cfg = preset_config(args.preset, args.overrides)
    run_id = _run_id(args, args.preset, cfg.train.seed)
    if args.export:
        from lab.runs import check_runs_dir

        check_runs_dir(Path(args.export).parent, "export folder")  # before the training, not after
    path = pretrain(cfg, run_id, args.runs_dir, overwrite=args.overwrite, resume=args.resume)
    summary = json.loads((path / "summary.json").read_text())
    print(f"run written to {path}")
    print(format_metrics(summary))
    if args.export:
        from lab.models.export import export_with_card

        recipe = "python -m lab pretrain --preset " + args.preset + "".join(f" {o}" for o in args.overrides)
        card = export_with_card(path, args.export, recipe)
        print(f"weights exported to {args.export} (sha256 {card['sha256'][:12]}…, card beside it)")
    return 0


def _cmd_distill(args) -> int:
    from lab.config import apply_overrides
    from lab.train.distill import default_config, distill

    overrides = {"teacher": args.teacher, "student": args.student, "loss": args.loss, "weights": args.weight,
                 "variant": args.variant}
    cfg = apply_overrides(default_config(overrides), args.overrides)
    run_id = _run_id(args, f"distill-{args.loss.replace('+', '-')}", cfg.train.seed)
    path = distill(cfg, run_id, args.runs_dir, overwrite=args.overwrite, resume=args.resume)
    if not _main_process():
        return 0
    print(f"run written to {path}")
    print(format_metrics(json.loads((path / "summary.json").read_text())))
    return 0


def _cmd_promptkd(args) -> int:
    from lab.config import apply_overrides
    from lab.train import dist
    from lab.train.prompt_distill import default_config, prompt_distill

    from lab.runs import claim_run
    from lab.train.prompt_distill import protocol_setup

    cfg = apply_overrides(default_config({"method": args.method, "protocol": args.protocol}), args.overrides)
    protocol_setup(cfg)  # an unknown method, protocol or refinement: before the no-KD student trains
    run_id = _run_id(args, f"{args.method}-{args.protocol}", cfg.train.seed)
    if _main_process():  # this run's lock and folder checks, also before the no-KD student trains
        claim_run(args.runs_dir, run_id, args.overwrite, args.resume)
    # The no-KD student of the same seed is trained first when missing; under torchrun (pretraining runs in
    # one process) the trainer names the missing run instead.
    if cfg.student == "nokd" and not dist.from_env().enabled:
        from lab.experiments.grids import NO_KD
        from lab.experiments.sweep import train_row

        cfg.student = str(train_row(NO_KD, cfg.train.seed, Path(args.runs_dir)))
    path = prompt_distill(cfg, run_id, args.runs_dir, overwrite=args.overwrite, resume=args.resume)
    if not _main_process():
        return 0
    summary = json.loads((path / "summary.json").read_text())
    print(f"run written to {path}\n{summary['protocol']}")
    keys = {"base2novel": ("base", "novel", "hm"), "cross": ("top1",), "domain": ("top1", "target_top1")}[cfg.protocol]
    for who in ("teacher_zeroshot", "teacher", "student_zeroshot", "student"):
        print(f"{who:<17}" + "  ".join(f"{k} {summary[f'{who}/{k}']:.1f}" for k in keys))
    return 0


def _cmd_eval(args) -> int:
    from lab.config import apply_overrides
    from lab.eval.suite import EvalConfig, evaluate
    from lab.models import zoo

    # eval takes the trainers' form (eval.per_style=64) and the short one (per_style=64)
    cfg = apply_overrides(EvalConfig(), [o.removeprefix("eval.") for o in args.overrides])
    clip = zoo.load(args.model)
    if args.benchmark:
        from lab.eval.benchmarks import run_benchmark

        records = [run_benchmark(clip, spec, args.classnames, args.templates, args.split, workers=args.workers)
                   for spec in args.benchmark]
        if args.output:
            from lab.runs import atomic_write_json

            atomic_write_json(Path(args.output), records)
        print(json.dumps(records, indent=2) if args.json else "\n".join(
            f"{r['dataset']} ({r['task']}): " + "  ".join(f"{k} {v:.4f}" for k, v in r["metrics"].items())
            for r in records))
        return 0
    teacher = None
    if args.teacher != "none":
        teacher = zoo.shipped_teacher() if args.teacher == "shipped" else zoo.load(args.teacher)
    metrics, _ = evaluate(clip, cfg, teacher=teacher)
    metrics["params"] = clip.num_parameters()
    print(json.dumps(metrics, indent=2) if args.json else format_metrics(metrics))
    return 0


def _cmd_sweep(args) -> int:
    from lab.experiments.grids import check_scale, grid_rows
    from lab.experiments.sweep import sweep

    grid_rows(args.grid)  # an unknown grid or scale fails before any work
    scale = "fast" if args.fast else args.scale
    check_scale(scale)
    _writable_runs_dir(args.runs_dir)
    slurm = {"partition": args.slurm_partition, "time": args.slurm_time, "gpus": args.slurm_gpus}
    table = sweep(args.grid, args.seeds, args.runs_dir, scale, args.overrides, jobs=args.jobs, executor=args.executor,
                  slurm=slurm)
    print(table.read_text())
    print(f"tables written to {table} and {table.with_suffix('.csv')}")
    return 0


def _cmd_tune(args) -> int:
    from lab.experiments.grids import check_scale, grid_rows
    from lab.experiments.tune import tune

    grid_rows(args.grid)
    check_scale(args.scale)
    _writable_runs_dir(args.runs_dir)
    rows = [r.strip() for r in args.rows.split(";") if r.strip()]
    table = tune(args.grid, args.seeds, args.runs_dir, args.scale, rows=rows, jobs=args.jobs, extend=args.extend,
                 progress=lambda msg: print(msg, file=sys.stderr))
    print(f"tuning table written to {table} (every candidate's validation score: {table.with_suffix('.json')})")
    return 0


def _cmd_bench(args) -> int:
    """The measurements' own messages (the trainers' lines) go to stderr, so stdout holds only the result
    (the table, or valid JSON with --json)."""
    import contextlib
    import functools

    emit = functools.partial(print, file=sys.stdout)
    with contextlib.redirect_stdout(sys.stderr):
        return _bench(args, emit)


def _bench(args, emit) -> int:
    from lab.bench.step import MFD_BOTH, format_costs, prompt_step_costs, step_costs
    from lab.losses.objective import RECIPES, parse_terms
    from lab.runs import machine_description

    names = [n.strip() for n in args.terms.split(",") if n.strip()]
    for name in names:
        if name not in RECIPES and name != MFD_BOTH:
            parse_terms(name)  # unknown names fail with the valid list
    progress = lambda msg: print(msg, file=sys.stderr)  # noqa: E731
    if args.curation:
        from lab.bench.curation import curation_costs, format_curation

        batch = args.batch_size
        median = curation_costs(batch, rounds=args.rounds, steps=args.steps, device=args.device, progress=progress)
        emit(format_curation(median, batch, 0.8, machine_description()))
        return 0
    if args.scaling:
        from lab.bench.scaling import data_throughput, format_scaling, loss_scaling

        scaling, items_per_s = loss_scaling(device=args.device), data_throughput()
        if args.json:
            emit(json.dumps({"device": machine_description(), "data_items_per_s": items_per_s,
                              "loss_scaling": [{**vars(c), "ratio": c.ratio} for c in scaling]}, indent=2))
        else:
            emit(format_scaling(scaling, items_per_s, machine_description()))
        return 0
    if args.accumulate:
        from lab.bench.accumulate import accumulate_costs, format_accumulate

        row = accumulate_costs(args.accumulate, (names or ["clipkd"])[0], args.batch_size, args.rounds, args.steps,
                               args.student, args.device)
        emit(json.dumps({"device": machine_description(), "accumulate": row}, indent=2) if args.json
             else format_accumulate(row, machine_description()))
        return 0
    if args.cache_key:
        from lab.bench.cache import cache_key_times, format_key_times

        times = cache_key_times(args.rounds, progress)
        emit(json.dumps({"device": machine_description(), "cache_key": times}, indent=2) if args.json
              else format_key_times(times, machine_description()))
        return 0
    if args.shards:
        from lab.bench.shards import augmented_step_costs, cache_teacher_throughputs, format_shard_bench

        step = augmented_step_costs(names[0] if names else "clipkd", args.batch_size, args.rounds, args.steps,
                                    args.device, args.student, args.teacher, progress=progress)
        throughputs = cache_teacher_throughputs([args.teacher, *[t for t in args.cache_teachers.split(",") if t]],
                                                rounds=args.rounds, device=args.device, progress=progress)
        emit(json.dumps({"device": machine_description(), "augmented_step": step.as_dict(),
                          "cache_teacher": [t.as_dict() for t in throughputs]}, indent=2) if args.json
              else format_shard_bench(step, throughputs, machine_description()))
        return 0
    if args.sweep:
        from lab.bench.sweep import format_profile, format_sweep, jobs_times, optimizer_times, profile_step, \
            sweep_times

        profile = profile_step(batch_size=args.batch_size)
        adamw = optimizer_times(args.batch_size, args.rounds, args.steps, progress)
        bench = sweep_times(args.grid, progress=progress)
        bench.jobs = jobs_times(args.grid, jobs=args.jobs, progress=progress)
        if args.json:
            emit(json.dumps({"device": machine_description(), "profile": {k: v for k, v in profile.items()
                                                                            if k != "table"},
                              "adamw_s": adamw, "sweep": bench.as_dict()}, indent=2))
        else:
            emit(format_profile(profile, adamw) + "\n\n" + format_sweep(bench, machine_description()))
        return 0
    if args.demo_start:
        from lab.bench.demo_start import demo_start_times, format_demo_start

        times = demo_start_times(Path(args.demo_start), args.venv, progress=progress)
        emit(json.dumps({"device": machine_description(), "demo_start": times}, indent=2) if args.json
              else format_demo_start(times, machine_description()))
        return 0
    if args.dashboard:
        from lab.bench.dashboard import dashboard_times, format_times

        times = dashboard_times(args.rounds, progress=progress)
        emit(json.dumps({"device": machine_description(), "dashboard": times}, indent=2) if args.json
              else format_times(times, machine_description()))
        return 0
    if args.prompt:
        costs = prompt_step_costs(args.batch_size, args.rounds, args.steps, args.device, progress)
        setting = "prompt distillation stage 2 vs the prompted student without KD"
    else:
        costs = step_costs(names or None, args.batch_size, args.rounds, args.steps, args.device, progress,
                           student=args.student, teacher=args.teacher, precision=args.precision)
        setting = f"{args.teacher} -> {args.student}, {args.precision}"
    device = machine_description()
    if args.json:
        emit(json.dumps({"batch_size": args.batch_size, "device": device, "teacher": args.teacher,
                          "student": args.student, "precision": args.precision,
                          "step_costs": [c.as_dict() for c in costs]}, indent=2))
    else:
        emit(format_costs(costs, args.batch_size, device, setting))
    return 0


def _cmd_cost(args) -> int:
    from lab.bench.cost import cost_table
    from lab.models.onnx import check_writable, export_onnx
    from lab.models import zoo
    from lab.runs import machine_description

    if args.onnx:
        check_writable(args.onnx)  # fail before minutes of measuring, not after
    progress = lambda msg: print(msg, file=sys.stderr)  # noqa: E731
    rows, table = cost_table(args.runs_dir, args.teacher, args.device, args.batch_size, args.rounds, progress)
    onnx = None
    if args.onnx:
        students = [r for r in rows if r["kind"] != "teacher"]
        best = max(students, key=lambda r: -1.0 if r["hm"] is None else r["hm"])
        progress(f"exporting {best['run']} (HM {best['hm']}) to ONNX")
        onnx = {"run": best["run"], **export_onnx(zoo.load(Path(args.runs_dir) / best["run"]), args.onnx)}
    if args.json:
        print(json.dumps({"batch_size": args.batch_size, "rounds": args.rounds, "device": machine_description(),
                          "rows": rows, "onnx": onnx}, indent=2))
        return 0
    print(table)
    if onnx:
        print(f"\nONNX: {onnx['run']} exported to {onnx['dir']} (image_encoder.onnx, text_encoder.onnx); "
              f"ONNX Runtime vs PyTorch on {onnx['items']} test images/captions: max |diff| "
              f"{onnx['max_abs_diff']:.1e} (tolerance {onnx['tolerance']:.0e}) ok")
    return 0


def _cmd_cache_teacher(args) -> int:
    from lab.config import apply_overrides
    from lab.train.reinforced_cache import CacheTeacherConfig, run

    if args.augmentations < 0:
        raise LabError(f"--augmentations must be 0 or more, got {args.augmentations}.")
    crops = {"data.augment": "crop", "data.augmentations": args.augmentations} if args.augmentations else {}
    cfg = apply_overrides(apply_overrides(CacheTeacherConfig(), {"teacher": args.teacher, "data.source": args.data,
                                                                 **crops}), args.overrides)
    if args.layout == "datacompdr":
        from lab.train import dr_cache

        stats = dr_cache.run(cfg, args.out, args.synthetic, progress=lambda msg: print(msg, file=sys.stderr))
        print(f"reinforced {stats['samples']} samples ({stats['crops']} crops, {args.synthetic} synthetic captions "
              f"each) of {stats['shards']} shards into {args.out} (DataCompDR layout)")
        return 0
    stats = run(cfg, progress=lambda msg: print(msg, file=sys.stderr))
    if _main_process():
        print(f"cached {stats['samples']} samples ({stats['crops']} crops) of {stats['shards']} shards "
              f"({stats['cached_before']} already cached) in {stats['seconds']:.1f} s"
              + (f", {stats['crops_per_s']:.1f} crops/s" if stats["crops"] else "")
              + (f"; {len(stats['problems'])} damaged samples left out, first: {stats['problems'][0]}"
                 if stats["problems"] else ""))
    return 0


def _cmd_export(args) -> int:
    from lab.models.export import export_open_clip

    card = export_open_clip(args.run, args.out_dir, onnx=args.onnx, overwrite=args.overwrite)
    print(f"{card['arch']} written to {args.out_dir} (open_clip_config.json, {card['weights']}, MODEL_CARD.md); "
          f"load it with {card['load']}")
    return 0


def _cmd_presets(args) -> int:
    from lab.models.zoo import PRESETS as MODEL_PRESETS
    from lab.train.presets import PRESETS

    print("pretraining presets:")
    for name, overrides in PRESETS.items():
        print(f"  {name}: " + " ".join(f"{k}={v}" for k, v in overrides.items()))
    print("model presets: " + ", ".join(MODEL_PRESETS))
    return 0


def _cmd_demo(args) -> int:
    from lab.experiments.demo import make_demo_runs, serve_and_train

    _writable_runs_dir(args.runs_dir)
    if args.serve:
        return serve_and_train(Path(args.runs_dir), "fast" if args.fast else "demo", args.port)
    for table in make_demo_runs(args.runs_dir, "fast" if args.fast else "demo"):
        print(table.read_text())
    print(f"runs ready in {args.runs_dir}; explore them with: streamlit run app.py")
    return 0


def format_metrics(m: dict) -> str:
    """A compact, readable block of the headline metrics."""
    lines = []
    styles = sorted({k.split("/")[1] for k in m if k.startswith("zeroshot/")},
                    key=lambda s: ["plain", "textured", "sketch", "noisy"].index(s) if s in
                    ("plain", "textured", "sketch", "noisy") else 9)
    if styles:
        lines.append(f"{'zero-shot':<12}{'top1':>8}{'base':>8}{'novel':>8}{'HM':>8}")
        for s in styles:
            lines.append(f"{s:<12}" + "".join(f"{m[f'zeroshot/{s}/{k}']:>8.1f}" for k in ("top1", "base", "novel", "hm")))
    if "retrieval/i2t_r1" in m:
        lines.append("retrieval   " + "  ".join(f"{k.split('/')[1]} {v:.1f}" for k, v in m.items()
                                              if k.startswith("retrieval/")))
    geometry = {k.split("/")[1]: v for k, v in m.items() if k.startswith("geometry/")}
    if geometry:
        lines.append("geometry    " + "  ".join(f"{k} {v:.3f}" for k, v in geometry.items()))
    for key in ("teacher/hm", "params", "wall_time_s", "mean_step_s"):
        if key in m:
            lines.append(f"{key:<12}{m[key]:.4g}" if isinstance(m[key], float) else f"{key:<12}{m[key]}")
    return "\n".join(lines)


def _cmd_screenshots(args) -> int:
    from lab.app.browser import screenshots

    for path in screenshots(args.runs_dir, args.out):
        print(path)
    return 0


COMMANDS = {"pretrain": _cmd_pretrain, "distill": _cmd_distill, "promptkd": _cmd_promptkd, "eval": _cmd_eval,
            "sweep": _cmd_sweep, "tune": _cmd_tune, "bench": _cmd_bench, "cost": _cmd_cost, "cache-teacher": _cmd_cache_teacher, "export": _cmd_export,
            "presets": _cmd_presets,
            "demo": _cmd_demo, "screenshots": _cmd_screenshots}
COMMANDS.update(lesson_commands.COMMANDS)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # key=value overrides may follow options (argparse stops collecting positionals at the first option).
    unknown = [a for a in extra if "=" not in a or a.startswith("-") or not hasattr(args, "overrides")]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    if not args.command:
        parser.print_help()
        return 0
    try:
        return COMMANDS[args.command](args)
    except LabError as err:
        print(f"error: {sentence(err)}", file=sys.stderr)
        return 2
    except OSError as err:
        if err.errno not in FILE_SYSTEM_ERRORS:
            raise
        print(f"error: Cannot use {err.filename or 'a file'}: {(err.strerror or str(err)).lower()}; check the path "
              f"and its permissions, or free disk space.", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; finished runs and the last checkpoint are kept (continue with --resume --name RUN).",
              file=sys.stderr)
        return 130
    finally:
        if "lab.runs" in sys.modules:  # an --overwrite that did not finish leaves the old run as it was
            sys.modules["lab.runs"].discard_unfinished()


# What the file system can refuse a user: a missing or wrong kind of path, permissions, a full disk.
FILE_SYSTEM_ERRORS = (errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.EACCES, errno.EPERM, errno.EROFS,
                      errno.ENOSPC, errno.EDQUOT)


def sentence(err: LabError) -> str:
    """The error's sentence; a LabError raised in a DataLoader worker comes back wrapped in the worker's
    traceback ("Caught LabError in DataLoader worker process 0 ..."), and only its own last line is kept."""
    text = str(err)
    if "Original Traceback" in text:
        last = text.strip().splitlines()[-1]
        text = last.split("LabError: ", 1)[1] if "LabError: " in last else last
    return text


if __name__ == "__main__":
    sys.exit(main())
