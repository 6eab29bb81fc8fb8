"""CPU latency at a 64x64 LR input: OpenVINO int8 and mixed (int16 first/last stages) IRs against OpenVINO fp32
and PyTorch eager fp32, timed interleaved in one run, plus the mixed IR's time share in layers that run fp32.

    python benchmarks/bench_latency.py --out benchmarks/results

SRResNet-size runs with random weights (no SRGAN weights exist offline; latency does not depend on weight values);
RRDBNet-size uses the embedded Real-ESRGAN x4plus weights.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

MIXED_STAGES = {"feature_extraction": {"bits": "int16"}, "reconstruction": {"bits": "int16"}}
MODELS = {"msrresnet_x4": None, "realesrgan_x4plus": "embedded"}


def _irs(arch: str, weights, out: Path, size: int, calib_n: int) -> tuple[dict[str, Path], object]:
    import torch

    from mixq_nncf.config.schema import parse_config
    from mixq_nncf.data.datasets import calibration_inputs
    from mixq_nncf.ir.export import export_ir
    from mixq_nncf.models import load_generator
    from mixq_nncf.quant.nncf_adapter import apply_plan
    from mixq_nncf.config.plan import resolve_plan
    from mixq_nncf.quant.ptq import quantize

    torch.manual_seed(0)
    fp32 = load_generator(arch, None, weights)
    sample = torch.rand(1, 3, size, size)
    paths = {"ov_fp32": out / arch / "fp32.xml"}
    if not paths["ov_fp32"].exists():
        export_ir(fp32, paths["ov_fp32"], example_input=sample, compact_16bit=False)
    int8_xml, mixed_xml = out / arch / "int8.xml", out / arch / "mixed.xml"
    paths["ov_int8"], paths["ov_mixed"] = int8_xml, mixed_xml
    if not (int8_xml.exists() and mixed_xml.exists()):
        # one calibration serves both IRs: bits change per layer without re-calibrating (as `mixq run` does)
        calib = calibration_inputs("offline", calib_n, size, int(fp32.scale))
        base = parse_config({}).compression
        q = quantize(fp32, resolve_plan(fp32, base), calib, compression=base)
        export_ir(q, int8_xml, example_input=sample)
        mixed = parse_config({"compression": {"stages": MIXED_STAGES}}).compression
        apply_plan(q, resolve_plan(fp32, mixed))
        export_ir(q, mixed_xml, example_input=sample)
    return paths, fp32


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--models", nargs="+", default=list(MODELS), help="presets to time (default: %(default)s)")
    p.add_argument("--size", type=int, default=64, help="LR input side in pixels (default: 64)")
    p.add_argument("--threads", type=int, default=0, help="inference threads; 0 = all cores (default)")
    p.add_argument("--iterations", type=int, default=30, help="interleaved timing rounds (default: 30)")
    p.add_argument("--calibration", type=int, default=16, help="calibration crops for the int8 IRs (default: 16)")
    p.add_argument("--out", default="benchmarks/results", help="folder for IRs and latency.json")
    args = p.parse_args(argv)

    from mixq_nncf.ir.audit import audit_runtime, layer_time_shares
    from mixq_nncf.ir.bench import Target, benchmark, machine_info, stats_markdown
    from mixq_nncf.config.schema import to_dict
    from mixq_nncf.io_utils import atomic_write_json

    out = Path(args.out)
    machine = machine_info()
    shape = (1, 3, args.size, args.size)
    result = {"machine": to_dict(machine), "input": list(shape), "threads": args.threads,
              "iterations": args.iterations, "models": {}}
    md = [f"## CPU latency at {args.size}x{args.size} (x4)", ""]
    for arch in args.models:
        print(f"== {arch}: exporting / quantizing", file=sys.stderr, flush=True)
        paths, fp32 = _irs(arch, MODELS.get(arch, "embedded"), out / "irs", args.size, args.calibration)
        targets = [Target(n, "openvino", path=x) for n, x in paths.items()] + [Target("torch_fp32", "torch", model=fp32)]
        stats = benchmark(targets, input_size=(args.size, args.size), threads=args.threads,
                          iterations=args.iterations, warmup=3)
        by = {s.name: s for s in stats}
        audits = {n: to_dict(audit_runtime(x, input_shape=shape)) for n, x in paths.items()}
        for a in audits.values():
            a.pop("ops", None)
        shares = to_dict(layer_time_shares(paths["ov_mixed"], shape))
        base = by["ov_fp32"].median_ms
        entry = {"stats": {n: to_dict(s) for n, s in by.items()},
                 "speedup_vs_ov_fp32": {n: base / s.median_ms for n, s in by.items()},
                 "int8_share_of_peak": (by["ov_int8"].gmac_per_s / machine.int8_peak_gmacs
                                        if machine.int8_peak_gmacs else None),
                 "runtime_precision": {n: {k: v for k, v in a.items() if isinstance(v, int)} for n, a in audits.items()},
                 "mixed_fp32_time": shares}
        result["models"][arch] = entry
        md += [f"### {arch}", "", stats_markdown(stats, "ov_fp32", machine), "",
               f"int8 reaches {entry['int8_share_of_peak']:.2f} of the int8 peak. Mixed IR: "
               f"{audits['ov_mixed']['conv_int8']} int8 + {audits['ov_mixed']['conv_fp32']} fp32 convolutions at "
               f"runtime; {shares['fp32_share'] * 100:.1f}% of its time is in the fp32 convolutions "
               f"({', '.join(f'{k} {v:.1f} ms' for k, v in shares['fp32_layers_ms'].items())}).", ""]
        print("\n".join(md[-4:]), flush=True)
    atomic_write_json(out / "latency.json", result)
    from mixq_nncf.io_utils import atomic_write_text

    atomic_write_text(out / "latency.md", "\n".join(md) + "\n")
    print(f"wrote {out / 'latency.json'} and {out / 'latency.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
