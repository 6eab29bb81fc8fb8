"""NNCF quantize_with_accuracy_control on the fp32 IR vs `mixq allocate`, one run, same fidelity target.

NNCF's accuracy control quantizes the OpenVINO model, then greedily reverts the quantizer groups that cost the
most metric to fp32 until the drop is met. Its metric here is fidelity to the fp32 output (PSNR-Y, capped at the
50 dB lossless ceiling, so the fp32 model scores 50 and a drop D means fidelity >= 50 - D), on the same eval
photos mixq verifies on. In the same run `mixq allocate` gets the same target (its wall time counted from the
finished sweep), and the latency of both IRs is measured interleaved with the sweep's all-int8 and paper-recipe IRs.
NNCF's preset follows the activation scheme the sweep chose (asymmetric activations = NNCF's MIXED preset), so both
tools start from the same kind of int8 model.

    python research/bench_accuracy_control.py runs/sweep_x4plus_anime --min-fidelity-db 36 \
        --out research/results/accuracy_control
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sweep_dir", help="a finished `mixq sweep` folder (its irs/fp32.xml and config are used)")
    p.add_argument("--min-fidelity-db", type=float, required=True, help="fidelity target, dB (drop = 50 - target)")
    p.add_argument("--val-crop", type=int, default=48, help="LR centre crop of each eval photo for validation")
    p.add_argument("--bench-iterations", type=int, default=30)
    p.add_argument("--ranking-subset", type=int, default=4)
    p.add_argument("--out", default=None, help="also copy result.json / result.md here")
    p.add_argument("--no-allocate", action="store_true", help="only NNCF accuracy control")
    args = p.parse_args(argv)

    import nncf
    import numpy as np
    import openvino as ov
    import torch
    from nncf.quantization.advanced_parameters import (AdvancedAccuracyRestorerParameters,
                                                       AdvancedQuantizationParameters, OverflowFix)

    from mixq_nncf.search.allocate import CEILING_DB
    from mixq_nncf.ir.audit import audit_runtime
    from mixq_nncf.ir.bench import Target, benchmark, machine_info
    from mixq_nncf.config.schema import parse_config
    from mixq_nncf.data.datasets import calibration_inputs
    from mixq_nncf.ir.export import compile_ir, ir_size, run_ir
    from mixq_nncf.io_utils import atomic_write_json
    from mixq_nncf.eval.metrics import psnr_y
    from mixq_nncf.search.context import Context
    from mixq_nncf.search.fidelity import ir_fidelity
    from mixq_nncf.search.spec import SweepSpec
    from mixq_nncf.search.sweep_report import plot_pareto

    d = Path(args.sweep_dir)
    summary = json.loads((d / "sweep.json").read_text())
    from mixq_nncf.search.allocate import Budget
    from mixq_nncf.search.verify import allocate_and_verify, sweep_config

    cfg = parse_config(sweep_config(d))
    asym = (cfg.compression.activations.mode or ("asymmetric" if cfg.compression.preset == "mixed" else
                                                 "symmetric")) == "asymmetric"
    ctx = Context(cfg, SweepSpec(), d, print)
    fp32_xml = d / "irs" / "fp32.xml"
    scale, border = ctx.scale, ctx.crop_border
    calib = [c.numpy() for c in calibration_inputs(cfg.data.calibration or cfg.data.train, cfg.data.calibration_samples,
                                                   cfg.data.calibration_patch, scale, cfg.data.seed)]
    c = args.val_crop
    val = []
    for pair in ctx.eval_pairs():
        lr = pair["lr"]
        h, w = lr.shape[-2:]
        top, left = (h - c) // 2, (w - c) // 2
        val.append(lr[None, :, top:top + c, left:left + c].contiguous())
    ref_model = compile_ir(fp32_xml)
    refs = [run_ir(ref_model, x).clamp(0, 1) for x in val]

    def validate(compiled, items):
        vals = []
        for i, x in items:
            out = torch.from_numpy(np.asarray(compiled(x.numpy())[compiled.output(0)])).clamp(0, 1)
            vals.append(min(CEILING_DB, psnr_y(out, refs[i], border)))
        return float(np.mean(vals)), vals

    target = args.min_fidelity_db
    t0 = time.perf_counter()
    core = ov.Core()
    model = core.read_model(str(fp32_xml))
    quantized = nncf.quantize_with_accuracy_control(
        model, nncf.Dataset(calib), nncf.Dataset(list(enumerate(val)), lambda item: item[1].numpy()), validate,
        max_drop=CEILING_DB - target,
        preset=nncf.QuantizationPreset.MIXED if asym else nncf.QuantizationPreset.PERFORMANCE, subset_size=len(calib),
        fast_bias_correction=True,
        advanced_quantization_parameters=AdvancedQuantizationParameters(overflow_fix=OverflowFix.DISABLE,
                                                                         disable_bias_correction=True),
        advanced_accuracy_restorer_parameters=AdvancedAccuracyRestorerParameters(
            ranking_subset_size=args.ranking_subset))
    wall = time.perf_counter() - t0
    xml = d / "nncf_ac" / "model.xml"
    xml.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(quantized, str(xml), compress_to_fp16=False)
    alloc = None
    if not args.no_allocate:
        t1 = time.perf_counter()
        alloc = allocate_and_verify(d, Budget("min_fidelity_db", target), d / "nncf_ac" / "allocated.json", log=print)
        alloc_wall = time.perf_counter() - t1
    h, w = summary["input_size"]
    irs = d / "irs"
    targets = [Target("int8", "openvino", irs / "int8.xml"), Target("nncf_ac", "openvino", xml),
               Target("paper", "openvino", irs / "paper.xml")]
    if alloc and alloc["verified"]:
        targets.append(Target("mixq", "openvino", Path(alloc["verified"]["xml"])))
    stats = {s.name: s.median_ms for s in benchmark(targets, input_size=(h, w), iterations=args.bench_iterations,
                                                      warmup=2, progress=False)}
    mi = machine_info()
    rows = {}
    for name, tool, path, wall_s in (("nncf_ac", "NNCF quantize_with_accuracy_control", xml, wall),
                                     ("mixq", "mixq allocate (on the finished sweep)",
                                      Path(alloc["verified"]["xml"]) if alloc and alloc["verified"] else None,
                                      alloc_wall if alloc else None)):
        if path is None:
            continue
        fid = ir_fidelity(path, fp32_xml, ctx.eval_pairs(), border)
        audit = audit_runtime(path, (1, 3, h, w))
        rows[name] = {"tool": tool, "wall_s": round(wall_s, 1), "latency_ms": stats[name],
                      "latency_ratio": stats[name] / stats["int8"], "fidelity_db": fid["psnr"],
                      "fidelity_ssim": fid["ssim"], "eval_images": fid["images"], "size_bytes": ir_size(path).bin_bytes,
                      "runtime_convs": {"int8": audit.conv_int8, "fp32": audit.conv_fp32},
                      "fp32_convs": audit.fp32_convs}
    result = {"nncf": nncf.__version__, "target_fidelity_db": target, "max_drop": CEILING_DB - target,
              "preset": "mixed" if asym else "performance", "input_size": [h, w],
              "paper_ratio": stats["paper"] / stats["int8"], "int8_ms": stats["int8"],
              "int8_fidelity_db": summary["ir_fidelity"]["int8"]["psnr"],
              "paper_fidelity_db": summary["ir_fidelity"]["paper"]["psnr"],
              "sweep_job_wall_s": summary.get("job_wall_s"), "rows": rows, "validation": {"crops": len(val), "crop": c},
              "allocation": alloc and {k: alloc[k] for k in ("chosen", "budget_met", "rounds")},
              "machine": {"cpu": mi.cpu, "cores": mi.cores, "openvino": mi.openvino}}
    lines = [f"Target: fidelity >= {target:g} dB on the {rows['nncf_ac']['eval_images']} eval photos (NNCF max_drop "
             f"{CEILING_DB - target:g} on a 50 dB-capped PSNR-Y to fp32). {mi.cpu}, {mi.cores} cores, LR {h}x{w}, "
             "latency interleaved in one run.", "",
             "| tool | wall s | latency vs all-int8 | fidelity dB (eval photos) | convs int8/fp32 at runtime | IR MB |",
             "|---|---|---|---|---|---|",
             f"| all-int8 (sweep) | - | 1.000 | {result['int8_fidelity_db']:.2f} | - | - |",
             f"| paper recipe (sweep) | - | {result['paper_ratio']:.3f} | {result['paper_fidelity_db']:.2f} | - | - |"]
    for r in rows.values():
        lines.append(f"| {r['tool']} | {r['wall_s']:.0f} | {r['latency_ratio']:.3f} | {r['fidelity_db']:.2f} | "
                     f"{r['runtime_convs']['int8']}/{r['runtime_convs']['fp32']} | {r['size_bytes'] / 1e6:.2f} |")
    result["markdown"] = "\n".join(lines)
    atomic_write_json(d / "nncf_ac" / "result.json", result)
    if args.out:
        atomic_write_json(Path(args.out) / "result.json", result)
        (Path(args.out) / "result.md").write_text(result["markdown"] + "\n")
    ac = rows["nncf_ac"]
    atomic_write_json(d / "point_nncf_ac.json", {"name": f"NNCF accuracy control (>= {target:g} dB)",
                                                 "latency_ms": ac["latency_ratio"] * summary["latency_ms"]["int8"],
                                                 "size_bytes": ac["size_bytes"], "fidelity_db": ac["fidelity_db"]})
    plot_pareto(summary, d / "pareto.png")
    print(result["markdown"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
