"""The resumable store of a sweep's finished jobs: DIR/results*.jsonl, one JSON line per finished (or crashed) job.

Lines are appended with one write and an fsync, so a crash loses at most the job it interrupted; a line cut by a
crash is skipped and that job runs again. Shards write their own files, which merge by concatenation.
"""
from __future__ import annotations

import json
import os
import traceback
from dataclasses import asdict
from pathlib import Path
from typing import Optional

from mixq_nncf.search.spec import Job


class ResultStore:
    """DIR/results*.jsonl: one JSON line per finished (or crashed) job; a finished line of a job id wins over a
    crashed one, else the last line wins."""

    def __init__(self, out_dir: Path, shard: tuple[int, int] = (0, 1)):
        self.dir = Path(out_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        i, n = shard
        self.path = self.dir / ("results.jsonl" if n == 1 else f"results.shard{i}of{n}.jsonl")

    def load(self) -> dict[str, dict]:
        """Every shard's records in the folder, by job id."""
        out: dict[str, dict] = {}
        for path in sorted(self.dir.glob("results*.jsonl")):
            for line in path.read_text().splitlines():
                line = line.strip()
                if not line:
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut by a crash: that job runs again
                if isinstance(rec, dict) and isinstance(rec.get("id"), str):
                    if rec.get("ok") or rec["id"] not in out or not out[rec["id"]].get("ok"):
                        out[rec["id"]] = rec
        return out

    def append(self, rec: dict) -> None:
        line = json.dumps(rec, default=float, sort_keys=True) + "\n"
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
            os.fsync(fd)
        finally:
            os.close(fd)


def finished_record(job: Job, result: dict, wall_s: float) -> dict:
    return {"id": job.id, "kind": job.kind, "unit": asdict(job.unit) if job.unit else None, "ok": True,
            "result": result, "wall_s": round(wall_s, 2)}


def crashed_record(job: Job, exc: BaseException, wall_s: float) -> dict:
    """Called inside the ``except`` block: the record keeps the last frames of the traceback."""
    return {"id": job.id, "kind": job.kind, "unit": asdict(job.unit) if job.unit else None, "ok": False,
            "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc(limit=6),
            "wall_s": round(wall_s, 2)}


def is_finished(done: dict[str, dict], job: Job) -> bool:
    """Whether the loaded records hold a finished run of the job (from any shard)."""
    return bool(done.get(job.id, {}).get("ok"))


def finished_result(done: dict[str, dict], job: Job) -> Optional[dict]:
    """The job's result if it finished, else None."""
    return done[job.id].get("result") if is_finished(done, job) else None
