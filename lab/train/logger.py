"""Where a run's logged records go: ``metrics.jsonl`` always (the contract), TensorBoard on request.

``train.logger=tensorboard`` also writes TensorBoard event files to ``<run>/tensorboard/``: every
numeric key of every record (each loss term, ``lr``, ``images_per_s``, ``eval/…``) as a scalar at
its step, and the final metrics of the summary at the last step. Read them with
``tensorboard --logdir runs``. Only rank 0 writes, as for ``metrics.jsonl``.
"""

from __future__ import annotations

import numbers
from pathlib import Path

from lab.errors import LabError

LOGGERS = ("jsonl", "tensorboard")
TENSORBOARD_DIR = "tensorboard"


def check_logger(kind: str) -> None:
    if kind not in LOGGERS:
        raise LabError(f"Unknown train.logger '{kind}'; choose one of: {', '.join(LOGGERS)}.")


class RunLogger:
    """``log(record)`` appends to ``metrics.jsonl`` through the run writer and mirrors numbers to TensorBoard."""

    def __init__(self, writer, kind: str = "jsonl", is_main: bool = True):
        check_logger(kind)
        self.writer, self.board, self.last_step = writer, None, 0
        if kind == "tensorboard" and is_main:
            from torch.utils.tensorboard import SummaryWriter

            self.board = SummaryWriter(log_dir=str(Path(writer.path) / TENSORBOARD_DIR))

    def log(self, record: dict) -> None:
        self.writer.log(record)
        self.last_step = int(record.get("step", self.last_step))
        self._scalars(record, self.last_step)

    def _scalars(self, values: dict, step: int) -> None:
        if self.board is None:
            return
        for key, value in values.items():
            if key != "step" and isinstance(value, numbers.Real) and not isinstance(value, bool):
                self.board.add_scalar(key, float(value), step)
        self.board.flush()

    def close(self, final_metrics: dict | None = None) -> None:
        """Write the final metrics (``final/<key>``) at the last step and close the event file."""
        if self.board is None:
            return
        self._scalars({f"final/{k}": v for k, v in (final_metrics or {}).items()}, self.last_step)
        self.board.close()
        self.board = None
