"""``python -m lab bench --demo-start``: how soon ``make demo`` shows something, measured as a newcomer meets it.

In a repository checkout (a fresh clone for the README's number), ``make demo`` is started and,
from that moment, timed:

* the dashboard server answering (``/_stcore/health``);
* the Overview drawn in headless Chromium with the demo's progress line ("Demo training: …");
* the first finished run written (its ``summary.json``) and shown in the Overview's table
  ("1 of 1 finished runs").

``make`` installs the requirements first when ``.venv`` is missing, so run it after the install
(``make install``) to measure what the targets are about, or pass ``venv=`` to share an installed
environment with the clone. The demo is stopped once the first run is shown; its finished runs stay in
``<checkout>/runs`` (a later ``make demo`` skips them).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from lab.errors import LabError

PROGRESS_TEXT = "Demo training:"
FIRST_RUN_TEXT = "1 of 1 finished runs"


def _first_summary(runs_dir: Path) -> Path | None:
    return next(iter(sorted(runs_dir.glob("*/summary.json"))), None)


def demo_start_times(checkout: Path, venv: str = "", port: int = 8501, timeout_s: float = 900,
                     progress: Callable[[str], None] = print) -> dict:
    """Seconds from ``make demo`` to: server up, Overview with progress drawn, first run written, first run shown."""
    from lab.app import browser

    checkout = Path(checkout).resolve()
    if (checkout / "runs").exists() and any((checkout / "runs").glob("*/summary.json")):
        raise LabError(f"{checkout / 'runs'} already holds finished runs; measure on a fresh clone "
                       f"(git clone -q . /tmp/fresh) so that the first run is trained, not skipped.")
    url = f"http://localhost:{port}"
    if browser.healthy(url):
        raise LabError(f"Something already answers on {url}; stop it or pass another port.")
    command = ["make", "demo", *([f"VENV={venv}"] if venv else [])]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("LAB_RUNS_DIR", None)
    started = time.perf_counter()
    demo = subprocess.Popen(command, cwd=checkout, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                            start_new_session=True)
    times: dict[str, float] = {}

    def elapsed() -> float:
        if demo.poll() is not None:
            raise LabError(f"`make demo` exited ({demo.returncode}) before the measurement ended.")
        if time.perf_counter() - started > timeout_s:
            raise LabError(f"Gave up after {timeout_s:.0f} s.")
        return time.perf_counter() - started

    try:
        while not browser.healthy(url):
            elapsed()
            time.sleep(0.2)
        times["server answers"] = elapsed()
        progress(f"server answers after {times['server answers']:.1f} s")
        with browser.browser_page() as tab:
            tab.goto(url)
            tab.get_by_text(PROGRESS_TEXT).first.wait_for(timeout=timeout_s * 1000)
            times["Overview drawn with its progress line"] = elapsed()
            progress(f"Overview with progress after {times['Overview drawn with its progress line']:.1f} s")
            while _first_summary(checkout / "runs") is None:
                elapsed()
                time.sleep(0.5)
            times["first run finished (summary.json written)"] = elapsed()
            progress(f"first run written after {times['first run finished (summary.json written)']:.1f} s")
            tab.get_by_text(FIRST_RUN_TEXT).first.wait_for(timeout=120_000)  # the page refreshes itself
            times["first run shown in the Overview"] = elapsed()
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGINT)
            try:
                demo.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(demo.pid, signal.SIGKILL)
    return times


def format_demo_start(times: dict, device: str) -> str:
    lines = [f"`make demo` from its start (install done), {device}"]
    lines += [f"{name:45s} {seconds:7.1f} s" for name, seconds in times.items()]
    return "\n".join(lines)
