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


EXECUTORS = ("local", "slurm")


def check_executor(executor: str) -> None:
    if executor not in EXECUTORS:
        raise LabError(f"Unknown --executor '{executor}'; choose one of: {', '.join(EXECUTORS)}.")


def submitit_cluster() -> str:
    """The cluster ``--executor slurm`` submits to: Slurm, or ``LAB_SUBMITIT_CLUSTER=local`` — submitit's local
    executor, the same jobs as local processes (to try a sweep's submission on a machine without Slurm)."""
    return os.environ.get("LAB_SUBMITIT_CLUSTER", "slurm")


def check_submitit() -> None:
    """``--executor slurm``'s refusals, before any run: submitit installed, and Slurm's ``sbatch`` reachable."""
    import shutil

    try:
        import submitit  # noqa: F401
    except ImportError as err:
        raise LabError("sweep --executor slurm needs the submitit package; install it with "
                       "`pip install -r requirements.txt`.") from err
    if submitit_cluster() == "slurm" and shutil.which("sbatch") is None:
        raise LabError("sweep --executor slurm needs Slurm's sbatch on PATH; run it on the cluster's login node "
                       "(or use --executor local --jobs N on one machine).")


def run_submitit(work: Callable, jobs: Sequence, folder, slurm: dict | None = None, desc: str = "runs") -> list:
    """``work(job)`` for every job, each a Slurm job submitted through submitit's ``AutoExecutor`` (one job array);
    results in the jobs' order. ``slurm``: ``partition``, ``time`` (minutes), ``gpus`` (per job); a job's logs and
    pickles are in ``folder/<job id>_…``."""
    import submitit

    if not jobs:
        return []
    slurm = slurm or {}
    executor = submitit.AutoExecutor(folder=str(folder), cluster=submitit_cluster())
    params = {"timeout_min": int(slurm.get("time") or 60), "gpus_per_node": int(slurm.get("gpus") or 0),
              "name": desc.split(" ")[0]}
    if slurm.get("partition"):
        params["slurm_partition"] = slurm["partition"]
    executor.update_parameters(**params)
    with executor.batch():
        submitted = [executor.submit(work, job) for job in jobs]
    results = []
    for job in tqdm(submitted, desc=f"{desc} (submitit, {executor.cluster})", unit="run"):
        try:
            results.append(job.result())
        except Exception as err:  # the job's own error is in its log; name it
            raise LabError(f"Job {job.job_id} failed ({str(err).strip().splitlines()[-1][:200]}); its log is "
                           f"{job.paths.stderr}.") from err
    return results
