"""Sensitivity sweeps: what each unit (stage, block or layer) costs and gains when kept high on the CPU.

Quality is fidelity (PSNR-Y / SSIM-Y) to the fp32 model on a batched ranking subset of eval crops that includes
the worst ones (measure.py); cost is per-layer CPU time and IR bytes from real IRs (costs.py). For layer
granularity a cheap proxy (quantization noise at each layer x a Hutchinson estimate of how much output noise it
causes) ranks all layers and the top contenders are measured.

This module runs the jobs: first the ones that need nothing (references, costs, proxy, stages), then the ones
the proxy's ranking chooses. Jobs are resumable: each finished job is one line in DIR/results*.jsonl keyed by a
hash of what it measures (store.py); a crashed job is recorded with its error and retried on the next run.
``shard`` (or torchrun's RANK/WORLD_SIZE) picks every N-th job; shard files merge by concatenation.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from tqdm import tqdm

from mixq_nncf.config.files import dump_config
from mixq_nncf.config.schema import Config
from mixq_nncf.errors import ConfigError
from mixq_nncf.search.context import Context
from mixq_nncf.search.costs import measure_costs
from mixq_nncf.search.measure import measure_base, measure_gain, measure_loss, measure_proxy, measure_qat
from mixq_nncf.search.schemes import choose_scheme
from mixq_nncf.search.spec import Job, SweepError, SweepSpec, first_jobs, owns, unit_jobs
from mixq_nncf.search.store import ResultStore, crashed_record, finished_record, finished_result, is_finished
from mixq_nncf.search.sweep_report import summarize, write_outputs


@dataclass
class SweepOutcome:
    complete: bool
    failed: int
    jobs: int
    summary: Optional[dict] = None
    wall_s: float = 0.0
    notes: list[str] = field(default_factory=list)


def run_job(job: Job, ctx: Context) -> dict:
    """The measurement a job names."""
    if job.kind == "base":
        return measure_base(ctx)
    if job.kind == "costs":
        return measure_costs(ctx)
    if job.kind == "proxy":
        return measure_proxy(ctx)
    if job.kind == "gain":
        return measure_gain(ctx, job.unit)
    if job.kind == "loss":
        return measure_loss(ctx, job.unit)
    if job.kind == "qat":
        return measure_qat(ctx, job.unit)
    raise SweepError(f"unknown job kind {job.kind!r}")


def execute(jobs: list[Job], ctx: Context, store: ResultStore, done: dict[str, dict], shard: tuple[int, int],
            progress: bool) -> int:
    """Run this shard's unfinished jobs, recording each (finished or crashed) in the store and in ``done``;
    returns how many crashed."""
    todo = [j for j in jobs if owns(j, shard) and not is_finished(done, j)]
    failed = 0
    for job in tqdm(todo, desc=f"sweep jobs (shard {shard[0]}/{shard[1]})", disable=not progress):
        t0 = time.perf_counter()
        try:
            rec = finished_record(job, run_job(job, ctx), time.perf_counter() - t0)
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:  # noqa: BLE001 - a crashed job is recorded and the sweep goes on
            failed += 1
            rec = crashed_record(job, exc, time.perf_counter() - t0)
            ctx.log(f"job {job.label()} failed: {rec['error']}")
        store.append(rec)
        done[job.id] = rec
    return failed


def _check_sweepable(cfg: Config) -> None:
    if cfg.compression is None:
        raise SweepError("the config has compression: null (fp32); a sweep needs a quantization section")
    if cfg.variants:
        raise ConfigError(f"the config defines variants ({', '.join(cfg.variants)}); sweep one: write a "
                          "single-variant config, or sweep its base settings with --set 'variants={}'")


def _effective_config(cfg: Config, spec: SweepSpec, out: Path, log: Callable[[str], None],
                      shard: tuple[int, int]) -> tuple[Config, Optional[dict]]:
    """The config the sweep measures on, written to DIR/effective_config.json, and the activation-scheme
    measurement that chose it (None with --activations configured)."""
    scheme = None
    if spec.activations == "auto":
        cfg, scheme = choose_scheme(cfg, spec, out, log, shard)
        if scheme["chosen"] != scheme["configured"]:
            log(f"activations: {scheme['chosen']} (closer to fp32 than the configured {scheme['configured']} at "
                f"{scheme['schemes'][scheme['chosen']]['int8_ratio']:.3f}x its latency); the sweep measures on it")
    dump_config(cfg, out / "effective_config.json")
    return cfg, scheme


def _missing_notes(missing: list[Job], shard: tuple[int, int], out: Path) -> list[str]:
    """Why the report cannot be written yet, and what to do."""
    notes = []
    others = [j for j in missing if not owns(j, shard)]
    if others:
        notes.append(f"{len(others)} jobs belong to other shards: concatenate their results*.jsonl into "
                     f"{out} and re-run this command (finished jobs are skipped) to write the report")
    crashed = len(missing) - len(others)
    if crashed:
        notes.append(f"{crashed} jobs crashed (errors in results.jsonl); re-run to retry them")
    return notes


def run_sweep(cfg: Config, out_dir: str | Path, spec: SweepSpec, *, shard: tuple[int, int] = (0, 1),
              log: Callable[[str], None] = print, progress: bool = True) -> SweepOutcome:
    """Run this shard's jobs (skipping finished ones); when every job is finished, write the outputs."""
    t0 = time.perf_counter()
    _check_sweepable(cfg)
    out = Path(out_dir)
    store = ResultStore(out, shard)
    dump_config(cfg, out / "config.json", check_unchanged=True, ignore=("name", "benchmark", "eval", "variants"))
    cfg, scheme = _effective_config(cfg, spec, out, log, shard)
    ctx = Context(cfg, spec, out, log)
    done = store.load()

    # 1. jobs that need nothing measured first
    first = first_jobs(cfg, spec, ctx.base_plan)
    failed = execute(first, ctx, store, done, shard, progress)

    # 2. jobs the proxy's ranking chooses (any shard may need the proxy before the shard that owns it records it)
    proxy = finished_result(done, next(j for j in first if j.kind == "proxy"))
    if proxy is None and (spec.granularity == "layer" or spec.mode == "qat"):
        log("computing the proxy ranking locally (another shard records it)")
        proxy = measure_proxy(ctx)
    second = unit_jobs(cfg, spec, ctx.base_plan, proxy or {"layers": {}}) \
        if proxy is not None or spec.granularity == "block" else []
    failed += execute(second, ctx, store, done, shard, progress)

    # 3. the report, once every shard's jobs are in the folder
    jobs = first + second
    missing = [j for j in jobs if not is_finished(done, j)]
    outcome = SweepOutcome(not missing, failed, len(jobs), wall_s=time.perf_counter() - t0)
    if missing:
        outcome.notes += _missing_notes(missing, shard, out)
        return outcome
    outcome.summary = summarize(cfg, spec, ctx.base_plan.stage_of, jobs, done)
    outcome.summary["activation_scheme"] = scheme
    write_outputs(outcome.summary, out)
    return outcome
