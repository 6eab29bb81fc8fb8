"""`mixq allocate DIR --out CONFIG.json`: the layers to keep high under one budget, verified on the real IR."""
from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(p: argparse.ArgumentParser, name: str) -> None:
    p.description = (
        "Choose a precision for each unit of a finished `mixq sweep` under one budget: int8, bf16 (where the "
        "sweep's CPU has AVX512-BF16/AMX; elsewhere bf16 runs f32 and is not offered) or f32 (written as int16, "
        "which runs fp32 on the CPU), with an exact multiple-choice knapsack over the measured gains and costs; "
        "then build that config, export and measure its IR, and step back if the budget is missed. Writes an "
        "ordinary config (scope_overrides with 'bits': 'int16' / 'bf16') that `mixq quantize / train / run / "
        "export` accept, with the predicted and verified figures in its description, and CONFIG.allocation.json "
        "beside it, which lists per unit the precision chosen and why.")
    p.add_argument("sweep_dir", metavar="DIR", help="a finished sweep folder (holds sweep.json)")
    p.add_argument("--out", required=True, metavar="CONFIG.json", help="config to write")
    budget = p.add_mutually_exclusive_group(required=True)
    budget.add_argument("--max-latency-ratio", type=float, metavar="R",
                        help="latency at most R x the all-int8 model's (e.g. 1.05)")
    budget.add_argument("--max-latency-ms", type=float, metavar="MS", help="latency at most MS at the sweep's size")
    budget.add_argument("--max-size-mb", type=float, metavar="MB", help="IR weights file at most MB")
    budget.add_argument("--min-fidelity-db", type=float, metavar="DB",
                        help="fidelity to fp32 (PSNR-Y on the eval photos) at least DB, at the least latency")
    budget.add_argument("--max-drop-db", type=float, metavar="DB",
                        help="fidelity at most DB below the 50 dB lossless ceiling (= --min-fidelity-db 50-DB)")
    p.add_argument("--no-verify", action="store_true", help="write the predicted allocation without building its IR")
    p.add_argument("--rounds", type=int, default=4,
                   help="verify rounds at most (default 4); after a miss the chosen units' costs are corrected by the "
                        "measurement and the budget is solved again; a cost budget ends at all-int8 if nothing met it")
    p.add_argument("--bench-iterations", type=int, default=30, help="interleaved latency rounds when verifying")


def run(args: argparse.Namespace) -> int:
    from mixq_nncf.search.allocate import Budget
    from mixq_nncf.search.verify import allocate_and_verify

    kinds = {"max_latency_ratio": "latency_ratio", "max_latency_ms": "latency_ms", "max_size_mb": "size_mb",
             "min_fidelity_db": "min_fidelity_db", "max_drop_db": "max_drop_db"}
    kind, value = next((k, getattr(args, a)) for a, k in kinds.items() if getattr(args, a) is not None)
    result = allocate_and_verify(Path(args.sweep_dir), Budget(kind, value), Path(args.out), verify=not args.no_verify,
                                 rounds=args.rounds, bench_iterations=args.bench_iterations)
    print(result["markdown"])
    print(f"Written: {args.out} and {Path(args.out).with_suffix('.allocation.json')}")
    return 0 if result.get("budget_met", True) else 1
