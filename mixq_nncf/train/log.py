"""The training log: train_log.csv, rewritten atomically at each checkpoint, and optional TensorBoard scalars."""
from __future__ import annotations

import csv
from pathlib import Path

from mixq_nncf.errors import MixqError
from mixq_nncf.io_utils import atomic_write_text


class TrainLog:
    """Rows of {'step': n, name: value, ...}. A resumed run keeps the rows up to its checkpoint and drops the
    ones an interrupted run logged after it, so the file reads as one uninterrupted run."""

    def __init__(self, path: Path, enabled: bool, resume_step: int, tensorboard: bool = False):
        self.path, self.enabled = path, enabled
        self.rows: list[dict] = []
        if enabled and resume_step and path.is_file():
            with path.open() as f:
                self.rows = [r for r in csv.DictReader(f) if int(r["step"]) <= resume_step]
        self.tb = None
        if enabled and tensorboard:
            try:  # optional dependency: only runs that ask for TensorBoard need it
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise MixqError("training.tensorboard is true but the tensorboard package is not installed: "
                                "pip install tensorboard, or set training.tensorboard to false") from None
            self.tb = SummaryWriter(str(path.parent / "tensorboard"),
                                    purge_step=resume_step + 1 if resume_step else None)

    def add(self, row: dict) -> None:
        if self.enabled:
            self.rows.append({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
        if self.tb is not None:
            for k, v in row.items():
                if k != "step" and isinstance(v, (int, float)):
                    self.tb.add_scalar(k, v, row["step"])

    def flush(self) -> None:
        if not self.enabled or not self.rows:
            return
        keys = list(dict.fromkeys(k for r in self.rows for k in r))
        lines = [",".join(keys)] + [",".join(str(r.get(k, "")) for k in keys) for r in self.rows]
        atomic_write_text(self.path, "\n".join(lines) + "\n")
        if self.tb is not None:
            self.tb.flush()
