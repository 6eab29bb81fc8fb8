"""`mixq sweep CONFIG --out DIR`: per-stage / block / layer sensitivity with measured CPU costs."""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path


def _size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected HxW in LR pixels, e.g. 64x64") from None
    if h < 8 or w < 8:
        raise argparse.ArgumentTypeError(f"{text!r}: at least 8x8")
    return h, w


def add_parser(p: argparse.ArgumentParser, name: str) -> None:
    p.description = (
        "Measure what each unit of the model (a stage, a residual block, or one conv layer) gains in fidelity to "
        "fp32 when kept at high precision on an all-int8 model, what it loses when dropped to int8 on an all-high "
        "model, and what it costs in CPU milliseconds (OpenVINO performance counters at --input-size) and IR bytes. "
        "One calibration serves every candidate. For --granularity layer a cheap noise x sensitivity proxy ranks "
        "all layers and the top contenders are measured. Resumable: finished jobs are lines in DIR/results.jsonl "
        "and are skipped on re-run. Writes DIR/sweep.md, sweep.json, stages.png, layers.png, pareto.png; then "
        "`mixq allocate DIR` picks the layers to keep high under a budget.")
    p.add_argument("config", help="single-variant JSON config with a compression section (see configs/)")
    p.add_argument("--out", required=True, help="sweep folder (re-use it to resume)")
    p.add_argument("--granularity", choices=["stage", "block", "layer"], default="layer",
                   help="finest unit measured (stages are always measured); default layer")
    p.add_argument("--mode", choices=["ptq", "qat"], default="ptq",
                   help="qat: also refine the top candidates with a short distillation QAT")
    p.add_argument("--input-size", type=_size, default=None, metavar="HxW",
                   help="LR input size the latency costs are measured at (default: the config's benchmark size)")
    p.add_argument("--shard", default=None, metavar="I/N",
                   help="run every N-th job only (0-based I); under torchrun RANK/WORLD_SIZE choose it")
    p.add_argument("--jobs", type=int, default=1, metavar="N",
                   help="run N shards as parallel processes on this machine, then write the report")
    p.add_argument("--top-k", type=int, default=24, help="layer units measured by proxy gain (default 24)")
    p.add_argument("--top-k-cheap", type=int, default=12,
                   help="further layer units measured by proxy gain per MAC (default 12)")
    p.add_argument("--rank-images", type=int, default=6, help="crops in the ranking subset (default 6)")
    p.add_argument("--rank-crop", type=int, default=40, help="LR size of the ranking crops (default 40)")
    p.add_argument("--qat-steps", type=int, default=20, help="QAT steps per candidate in --mode qat")
    p.add_argument("--qat-top", type=int, default=3, help="candidates refined by QAT in --mode qat")
    p.add_argument("--niqe", action="store_true", help="also score NIQE on the ranking subset (slow, noisy)")
    p.add_argument("--activations", choices=["auto", "configured"], default="auto",
                   help="auto (default): also calibrate the other activation scheme (symmetric / asymmetric), "
                        "measure both all-int8 IRs and sweep on the one closer to fp32 unless it is over 2%% slower; "
                        "configured: keep the config's scheme")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a config value (repeatable)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _spec(args: argparse.Namespace, cfg):
    from mixq_nncf.search.spec import SweepSpec

    size = tuple(args.input_size or cfg.benchmark.input_size)
    return SweepSpec(granularity=args.granularity, mode=args.mode, input_size=size, top_k=args.top_k,
                     top_k_cheap=args.top_k_cheap, rank_images=args.rank_images, rank_crop=args.rank_crop,
                     qat_steps=args.qat_steps, qat_top=args.qat_top, niqe=args.niqe, activations=args.activations)


def _run_shard_processes(args: argparse.Namespace, cfg, spec, out: Path) -> None:
    """--jobs N: choose the activation scheme once, then run N shard processes of this same command."""
    from mixq_nncf.config.files import dump_config
    from mixq_nncf.search.schemes import choose_scheme

    if spec.activations == "auto":  # once, before the shards: they all sweep on the chosen scheme
        out.mkdir(parents=True, exist_ok=True)
        dump_config(cfg, out / "config.json", check_unchanged=True, ignore=("name", "benchmark", "eval", "variants"))
        choose_scheme(cfg, spec, out)
    argv = list(sys.argv[1:])
    i = argv.index("--jobs") if "--jobs" in argv else None
    if i is not None:
        del argv[i:i + 2]
    argv = [a for a in argv if not a.startswith("--jobs=")]
    threads = str(max(1, (os.cpu_count() or 1) // args.jobs))
    env = {**os.environ, "OMP_NUM_THREADS": threads}
    procs = [subprocess.Popen([sys.executable, "-m", "mixq_nncf.cli", *argv, "--shard", f"{k}/{args.jobs}",
                               "--quiet"], env=env) for k in range(args.jobs)]
    codes = [p.wait() for p in procs]
    if any(codes):
        print(f"mixq sweep: shard processes exited with {codes}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    # the sweep's imports stay here: the CLI imports every command module to build its parser
    from mixq_nncf.config.files import load_config
    from mixq_nncf.search.spec import parse_shard
    from mixq_nncf.search.sweep import run_sweep

    cfg = load_config(args.config, args.overrides)
    spec = _spec(args, cfg)
    out = Path(args.out)
    if args.jobs > 1 and not args.shard:
        _run_shard_processes(args, cfg, spec, out)
        shard = (0, 1)  # finishes whatever the shard processes left, then writes the report
    else:
        shard = parse_shard(args.shard)
    outcome = run_sweep(cfg, out, spec, shard=shard, progress=not args.quiet)
    for note in outcome.notes:
        print(note)
    if outcome.summary:
        print((out / "sweep.md").read_text())
        print(f"Written: {out / 'sweep.md'}, {out / 'sweep.json'}, stages.png, layers.png, pareto.png "
              f"({outcome.jobs} jobs, {outcome.failed} failed this run, {outcome.wall_s:.0f} s)")
        return 0 if not outcome.summary["failed_jobs"] else 1
    return 0 if outcome.failed == 0 else 1
