"""Bit-width sweep per stage, weights vs activations: fidelity to fp32 when one stage's weights (or input
activations) run at 4, 8 or 16 bits and everything else stays int8. Fake-quant in torch on the sweep's ranking
crops, one calibration for every cell. Writes OUT/bitwidth.md, bitwidth.json, bitwidth.png.

On the OpenVINO CPU plugin 16-bit runs as fp32 and 4-bit weights on the int8 grid; this measures quality only.

    python tools/bitwidth_sweep.py configs/sweep/sweep_x4plus.json --out runs/bits_x4plus
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tqdm import tqdm

from mixq_nncf.config.files import load_config
from mixq_nncf.config.plan import LayerPrecision
from mixq_nncf.io_utils import atomic_write_json, atomic_write_text
from mixq_nncf.search.context import Context
from mixq_nncf.search.measure import ranking_quality
from mixq_nncf.search.spec import SweepSpec

SIDES = ("weights", "activations")


def measure_cells(ctx: Context, bits: list[int]) -> tuple[float, list[str], list[dict]]:
    """(all-int8 PSNR, stages, one row per stage x side x bit width) on the ranking crops."""
    base = ctx.base_plan
    int8 = ranking_quality(ctx.apply(base), ctx)["psnr"]
    rows = []
    stages = list(dict.fromkeys(base.stage_of.values()))
    for stage in tqdm(stages, desc="stages"):
        layers = [n for n, s in base.stage_of.items() if s == stage]
        for side in SIDES:
            for b in bits:
                change = {n: LayerPrecision(b if side == "weights" else base.layers[n].weight_bits,
                                            b if side == "activations" else base.layers[n].act_bits) for n in layers}
                q = ranking_quality(ctx.apply(base.with_layers(change)), ctx)
                rows.append({"stage": stage, "side": side, "bits": b, "psnr": q["psnr"], "ssim": q["ssim"],
                             "delta_db": q["psnr"] - int8})
    return int8, stages, rows


def _delta(rows: list[dict], stage: str, side: str, b: int) -> float:
    return next(r["delta_db"] for r in rows if r["stage"] == stage and r["side"] == side and r["bits"] == b)


def markdown(int8: float, stages: list[str], rows: list[dict], bits: list[int]) -> str:
    lines = [f"All-int8 fidelity on the ranking crops: {int8:.2f} dB. Change vs all-int8 (dB):", "",
             "| stage | side | " + " | ".join(f"{b}-bit" for b in bits) + " |", "|---|---|" + "---|" * len(bits)]
    for stage in stages:
        for side in SIDES:
            lines.append(f"| {stage} | {side} | " + " | ".join(f"{_delta(rows, stage, side, b):+.3f}" for b in bits)
                         + " |")
    return "\n".join(lines)


def plot(stages: list[str], rows: list[dict], bits: list[int], path: Path) -> None:
    import matplotlib  # optional: the photos extra

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    for ax, side in zip(axes, SIDES):
        for stage in stages:
            ax.plot(bits, [_delta(rows, stage, side, b) for b in bits], marker="o", label=stage)
        ax.set_xscale("log", base=2)
        ax.set_xticks(bits, [str(b) for b in bits])
        ax.set_yscale("symlog", linthresh=0.05)
        ax.set_title(f"{side} of one stage at N bits, rest int8", fontsize=9)
        ax.set_xlabel("bits")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("fidelity change vs all-int8, dB")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config")
    p.add_argument("--out", required=True)
    p.add_argument("--bits", default="4,8,16", help="comma-separated bit widths (default 4,8,16)")
    p.add_argument("--rank-images", type=int, default=6)
    p.add_argument("--rank-crop", type=int, default=40)
    args = p.parse_args(argv)

    cfg = load_config(args.config)
    bits = [int(b) for b in args.bits.split(",")]
    out = Path(args.out)
    ctx = Context(cfg, SweepSpec(rank_images=args.rank_images, rank_crop=args.rank_crop), out, print)
    int8, stages, rows = measure_cells(ctx, bits)
    atomic_write_json(out / "bitwidth.json", {"int8_psnr": int8, "rows": rows, "crops": ctx.ranking[2]})
    text = markdown(int8, stages, rows, bits)
    atomic_write_text(out / "bitwidth.md", text + "\n")
    plot(stages, rows, bits, out / "bitwidth.png")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
