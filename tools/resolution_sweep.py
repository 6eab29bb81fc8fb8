"""Latency cost of keeping each stage high, across input sizes: OpenVINO performance counters of the sweep's
all-int8 and all-fp32 IRs (dynamic shape) compiled at each LR size. Writes OUT/resolution.md, .json, .png.

    python tools/resolution_sweep.py runs/sweep_x4plus --sizes 32,64,128 --out runs/res_x4plus
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mixq_nncf.io_utils import atomic_write_json, atomic_write_text
from mixq_nncf.search.costs import conv_times


def stage_costs(sweep_dir: Path, size: int, runs: int, stage_of: dict[str, str]) -> dict:
    """All-int8 and all-fp32 counter totals at a square LR size, and what keeping each stage fp32 adds."""
    shape = (1, 3, size, size)
    t8 = conv_times(sweep_dir / "irs" / "int8.xml", shape, runs)
    t32 = conv_times(sweep_dir / "irs" / "fp32.xml", shape, runs)
    per_stage: dict[str, float] = {}
    for n, st in stage_of.items():
        per_stage[st] = per_stage.get(st, 0.0) + t32["convs"].get(n, {}).get("ms", 0) - t8["convs"].get(n, {}).get("ms", 0)
    return {"size": size, "int8_ms": t8["total_ms"], "fp32_ms": t32["total_ms"], "stage_cost_ms": per_stage,
            "stage_cost_share": {k: v / t8["total_ms"] for k, v in per_stage.items()}}


def markdown(rows: list[dict]) -> str:
    stages = list(rows[0]["stage_cost_ms"])
    lines = ["Extra ms (and share of the all-int8 time) for keeping a whole stage fp32, from performance counters:",
             "", "| LR size | int8 ms | fp32 ms | " + " | ".join(stages) + " |", "|---|---|---|" + "---|" * len(stages)]
    for r in rows:
        lines.append(f"| {r['size']} | {r['int8_ms']:.1f} | {r['fp32_ms']:.1f} | " + " | ".join(
            f"{r['stage_cost_ms'][s]:.1f} ({100 * r['stage_cost_share'][s]:.0f}%)" for s in stages) + " |")
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib  # optional: the photos extra

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.8))
    for s in rows[0]["stage_cost_ms"]:
        ax.plot([r["size"] for r in rows], [100 * r["stage_cost_share"][s] for r in rows], marker="o", label=s)
    ax.set_xlabel("LR input size (square)")
    ax.set_ylabel("cost of keeping the stage fp32, % of int8 time")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sweep_dir", help="a `mixq sweep` folder (uses irs/int8.xml, irs/fp32.xml, sweep.json)")
    p.add_argument("--sizes", default="32,64,128", help="square LR sizes, comma-separated")
    p.add_argument("--runs", type=int, default=5, help="counter runs per IR and size (median)")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)

    d, out = Path(args.sweep_dir), Path(args.out)
    stage_of = {n: v["stage"] for n, v in json.loads((d / "sweep.json").read_text())["proxy_layers"].items()}
    rows = []
    for s in (int(s) for s in args.sizes.split(",")):
        rows.append(stage_costs(d, s, args.runs, stage_of))
        print(f"{s}x{s}: int8 {rows[-1]['int8_ms']:.1f} ms, fp32 {rows[-1]['fp32_ms']:.1f} ms")
    atomic_write_json(out / "resolution.json", rows)
    text = markdown(rows)
    atomic_write_text(out / "resolution.md", text + "\n")
    plot(rows, out / "resolution.png")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
