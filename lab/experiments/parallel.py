"""Running a grid's runs N at a time (``sweep --jobs N``, ``tune --jobs N``).

Each run is its own process (``spawn``: a fresh interpreter, no state shared with the parent), so
what a run computes does not depend on how many ran beside it — only on its config and seed; a
finished run is skipped by the job itself, so an interrupted grid resumes. With several CUDA GPUs the
workers are spread over them round-robin (``CUDA_VISIBLE_DEVICES``); with one, they share it; on a
CPU they share its cores (``--jobs 1``, the default, is usually fastest there).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed

from tqdm.auto import tqdm

from lab.errors import LabError


def _init_worker(counter, gpus: int) -> None:
    with counter.get_lock():
        index = counter.value
        counter.value += 1
    if gpus > 1:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(index % gpus)
    os.environ["TQDM_DISABLE"] = "1"  # one bar for the grid (the parent's), not one per worker


def _gpu_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def run_jobs(work: Callable, jobs: Sequence, n: int = 1, desc: str = "runs") -> list:
    """``work(job)`` for every job, ``n`` at a time in worker processes (in this process when ``n`` is 1);
    results in the jobs' order. ``work`` must be a module-level function and each job picklable."""
    if n < 1:
        raise LabError(f"--jobs must be at least 1, got {n}.")
    if n == 1 or len(jobs) <= 1:
        return [work(job) for job in jobs]
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    counter = context.Value("i", 0)
    results: list = [None] * len(jobs)
    with ProcessPoolExecutor(max_workers=min(n, len(jobs)), mp_context=context, initializer=_init_worker,
                             initargs=(counter, _gpu_count())) as pool:
        futures = {pool.submit(work, job): i for i, job in enumerate(jobs)}
        for future in tqdm(as_completed(futures), total=len(futures), desc=f"{desc} ({n} at a time)", unit="run"):
            results[futures[future]] = future.result()  # a failed run fails the grid, with its own error
    return results
