"""The paper's Figure 7 for any config: fidelity gained / lost per stage when kept high / dropped to int8.

A thin wrapper over `mixq sweep --granularity stage` (same resumable jobs, same outputs: sweep.md, stages.png).

    python tools/sweep_stages.py configs/sweep/sweep_x4plus.json --out runs/fig7_x4plus
"""
from __future__ import annotations

import argparse
import sys

from mixq_nncf.cli import main as mixq


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", help="single-variant config with a compression section")
    p.add_argument("--out", required=True, help="sweep folder (resumable)")
    p.add_argument("--input-size", default=None, metavar="HxW", help="LR size for latency costs")
    args = p.parse_args(argv)
    extra = ["--input-size", args.input_size] if args.input_size else []
    return mixq(["sweep", args.config, "--out", args.out, "--granularity", "stage", *extra])


if __name__ == "__main__":
    sys.exit(main())
