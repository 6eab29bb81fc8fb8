"""Speed-up of IRs over the baseline a user of this CPU already has: the fp32 IR under OpenVINO's defaults.

    flock /work/cpu.lock python benchmarks/bench_baseline.py --fp32 FP32.xml INT8.xml MIXED.xml --out DIR

The default (no INFERENCE_PRECISION_HINT) is bf16 on CPUs with AVX512-BF16/AMX and f32 elsewhere; the ratio to
the fp32 IR under the f32 hint is shown beside it (measured separately where the two differ, the same figure where
they compile alike). Each figure is the median of pairwise ratios: only the two compiled models are loaded, they
run alternately image by image over many rounds (mixq_nncf.ir.paired). LATENCY: one image at a time; THROUGHPUT:
a batch of images through two requests in flight. Each IR is compiled as deployed (its sidecar: no hint for IRs
with per-layer precision, the f32 hint for the others). GMAC/s and the share of this CPU's int8 and f32 peaks
come from the IR's convolution arithmetic and the median time per image.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import asdict
from pathlib import Path


def _row(name: str, mode: str, vs_default, vs_f32, gmac: float, machine) -> dict:
    per_s = gmac / (vs_default.other_ms / 1e3)
    return {"ir": name, "mode": mode, "vs_default": asdict(vs_default), "vs_f32": asdict(vs_f32) if vs_f32 else None,
            "gmac": gmac, "gmac_per_s": per_s,
            "share_int8_peak": per_s / machine.int8_peak_gmacs if machine.int8_peak_gmacs else None,
            "share_f32_peak": per_s / machine.fp32_peak_gmacs if machine.fp32_peak_gmacs else None}


def _markdown(rows: list[dict], machine, default_precision: str, size: int, args) -> str:
    from mixq_nncf.ir.bench import baseline_label, machine_line

    same = default_precision == "f32"
    lines = [machine_line(machine), "",
             f"Baseline: {baseline_label(default_precision)}. Input 1x3x{size}x{size}; median [quartiles] of "
             f"{args.rounds} pairwise ratios per cell, two models loaded at a time; THROUGHPUT: batches of "
             f"{args.batch} images, 2 requests." + (" The f32 hint compiles like the default on this CPU: one "
                                                    "measurement serves both columns." if same else ""), "",
             "| IR | mode | speed-up vs fp32 IR (defaults) | vs fp32 IR (f32 hint) | ms/image | baseline ms/image | "
             "GMAC/s | share of int8 / f32 peak | kernels |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        d, f = r["vs_default"], r["vs_f32"]
        beside = f"{f['ratio_median']:.2f}x" if f else (f"{d['ratio_median']:.2f}x" if same else "1.00x (itself)")
        peak = f"{r['share_int8_peak'] or 0:.2f} / {r['share_f32_peak'] or 0:.2f}"
        spread = f"[{d['ratio_q1']:.2f}-{d['ratio_q3']:.2f}]"
        lines.append(f"| {r['ir']} | {r['mode']} | {d['ratio_median']:.2f}x {spread} | "
                     f"{beside} | {d['other_ms']:.2f} | {d['base_ms']:.2f} | {r['gmac_per_s']:.0f} | "
                     f"{peak} | {d['other_kernels']} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("irs", nargs="+", help="IR .xml files to compare with the fp32 IR")
    p.add_argument("--fp32", required=True, help="the fp32 IR (exported without quantization)")
    p.add_argument("--size", type=int, default=64, help="LR input side in pixels (default: 64)")
    p.add_argument("--rounds", type=int, default=40, help="pairwise rounds per cell (default: 40)")
    p.add_argument("--batch", type=int, default=4, help="images per THROUGHPUT round (default: 4)")
    p.add_argument("--threads", type=int, default=0, help="inference threads; 0 = OpenVINO's choice (default)")
    p.add_argument("--modes", nargs="+", default=["latency", "throughput"], choices=["latency", "throughput"])
    p.add_argument("--out", help="folder for baseline.json and baseline.md")
    args = p.parse_args(argv)

    from mixq_nncf.ir.bench import ir_gmac, machine_info
    from mixq_nncf.ir.export import verify_ir
    from mixq_nncf.ir.paired import paired_ratio

    fp32 = Path(args.fp32)
    irs = [Path(x) for x in args.irs]
    for xml in [fp32] + irs:
        verify_ir(xml)
    machine = machine_info()
    shape = (1, 3, args.size, args.size)
    common = {"shape": shape, "rounds": args.rounds, "batch": args.batch, "threads": args.threads}
    # the f32-hint figure of the fp32 IR itself first, then every IR against both baselines
    targets = [("fp32 IR [f32 hint]", fp32, "f32")] + [(f"{x.parent.name}/{x.stem}", x, "auto") for x in irs]
    rows = []
    for mode in args.modes:
        for name, xml, precision in targets:
            print(f"{mode}: {name}", file=sys.stderr, flush=True)
            vs_default = paired_ratio(fp32, xml, mode=mode, base_precision="default", other_precision=precision,
                                      base_name="fp32 IR [defaults]", other_name=name, **common)
            vs_f32 = None
            if machine.default_precision != "f32" and precision != "f32":
                vs_f32 = paired_ratio(fp32, xml, mode=mode, base_precision="f32", other_precision=precision,
                                      base_name="fp32 IR [f32 hint]", other_name=name, **common)
            rows.append(_row(name, mode, vs_default, vs_f32, ir_gmac(xml, shape), machine))
    md = _markdown(rows, machine, machine.default_precision, args.size, args)
    print(md)
    if args.out:
        from mixq_nncf.io_utils import atomic_write_json, atomic_write_text

        out = Path(args.out)
        atomic_write_json(out / "baseline.json", {"machine": asdict(machine), "input": list(shape),
                                                  "settings": vars(args), "rows": rows})
        atomic_write_text(out / "baseline.md", md + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
