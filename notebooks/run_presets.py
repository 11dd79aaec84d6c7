"""Execute the lesson notebooks headless in one preset and print each one's wall time.

    python notebooks/run_presets.py --preset cpu [--runs-dir DIR] [--out DIR] [NOTEBOOK ...]

The notebooks run in order with nbclient, sharing one runs folder (as in a course, where the no-KD
student trained in lesson 00 is reused by the later lessons); ``--fresh`` gives each notebook its own
empty runs folder instead (the worst case). Executed copies, with their outputs, go to ``--out``
(default ``runs/lessons/executed-<preset>``; git-ignored). Exits non-zero if a cell fails.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="cpu", choices=("fast", "cpu", "gpu"))
    parser.add_argument("--runs-dir", default=str(HERE.parent / "runs" / "lessons"))
    parser.add_argument("--out", default="")
    parser.add_argument("--fresh", action="store_true", help="an empty runs folder per notebook")
    parser.add_argument("--timeout", type=int, default=3600, help="seconds per cell (a loaded machine is slow)")
    parser.add_argument("notebooks", nargs="*")
    args = parser.parse_args()
    paths = [Path(p) for p in args.notebooks] or sorted(HERE.glob("[0-9][0-9]_*.ipynb"))
    out = Path(args.out or HERE.parent / "runs" / "lessons" / f"executed-{args.preset}")
    out.mkdir(parents=True, exist_ok=True)
    os.environ.update(LAB_PRESET=args.preset, LAB_HEADLESS="1", TQDM_DISABLE="1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    print(f"preset {args.preset} on {platform.node()} ({os.cpu_count()} CPUs), {time.strftime('%Y-%m-%d %H:%M')}")
    failed, total = 0, time.perf_counter()
    for path in paths:
        os.environ["LAB_RUNS_DIR"] = tempfile.mkdtemp(prefix="lesson-runs-") if args.fresh else args.runs_dir
        nb = nbformat.read(path, as_version=4)
        start = time.perf_counter()
        try:
            NotebookClient(nb, timeout=args.timeout, kernel_name="python3",
                           resources={"metadata": {"path": str(HERE)}}).execute()
            status = "ok"
        except Exception as err:  # report every notebook, then fail
            failed += 1
            status = f"FAILED: {type(err).__name__}: {str(err).strip().splitlines()[-1] if str(err).strip() else ''}"
        nbformat.write(nb, out / path.name)
        print(f"{path.name:<32} {time.perf_counter() - start:7.1f} s  {status}", flush=True)
    print(f"{'total':<32} {time.perf_counter() - total:7.1f} s; executed copies in {out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
