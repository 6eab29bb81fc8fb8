"""How far post-training quantization moves the embedded Real-ESRGAN x4plus from its fp32 output, per recipe:
int8 everywhere vs the published mixed recipe (int16 feature extraction + reconstruction) and other per-layer
choices, all from one shared calibration (bits change without re-calibrating).

    python benchmarks/bench_fidelity.py --out benchmarks/results

Fidelity = PSNR-Y (4 px border crop) of the quantized torch model's output against the fp32 output on centre
64x64 LR crops of the 8 offline eval photos.

    python benchmarks/bench_fidelity.py --calibration-study --out benchmarks/results

adds what calibration itself costs and gives: NNCF's bias correction on/off x 16/32 calibration crops, with the
calibration time and the int8 / mixed fidelity of each (results/calibration.json).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

RECIPES = {
    "int8": {},
    "mixed (paper: fe + rec int16)": {"stages": {"feature_extraction": {"bits": "int16"},
                                                 "reconstruction": {"bits": "int16"}}},
    "int8 + conv_first/conv_last int16": {"scope_overrides": {"conv_first": {"bits": "int16"},
                                                              "conv_last": {"bits": "int16"}}},
    "int8, body w4a8": {"stages": {"body": {"weights": "int4"}}},
}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", default="realesrgan_x4plus", help="preset with embedded weights (default: %(default)s)")
    p.add_argument("--calibration", type=int, default=32, help="calibration LR crops of 64 px (default: 32)")
    p.add_argument("--out", default="benchmarks/results", help="folder for fidelity.json")
    p.add_argument("--calibration-study", action="store_true",
                   help="instead: bias correction on/off x 16/32 crops, timed (writes calibration.json)")
    args = p.parse_args(argv)
    if args.calibration_study:
        return calibration_study(args.arch, Path(args.out))

    from mixq_nncf.config.schema import parse_config
    from mixq_nncf.data.datasets import calibration_inputs
    from mixq_nncf.io_utils import atomic_write_json
    from mixq_nncf.pipeline import torch_fidelity
    from mixq_nncf.quant.nncf_adapter import apply_plan
    from mixq_nncf.config.plan import as_int8, resolve_plan
    from mixq_nncf.quant.table import layer_bits, quantizer_table
    from mixq_nncf.quant.ptq import quantize

    fp32, ref, probe = _model_and_probe(args.arch)
    scale = int(fp32.scale)
    calib = calibration_inputs("offline", args.calibration, 64, scale)
    base_cfg = parse_config({"compression": {"overflow_fix": "auto"}})
    plan8 = resolve_plan(fp32, base_cfg.compression)
    print("calibrating ...", file=sys.stderr, flush=True)
    q = quantize(fp32, as_int8(plan8), calib, compression=base_cfg.compression)
    rows = {}
    for name, comp in RECIPES.items():
        cfg = parse_config({"compression": {"overflow_fix": "auto", **comp}})
        plan = resolve_plan(fp32, cfg.compression)
        apply_plan(q, plan)
        bits = layer_bits(quantizer_table(q, plan))
        counts: dict[str, int] = {}
        for lp in bits.values():
            key = f"w{lp.weight_bits}a{lp.act_bits}"
            counts[key] = counts.get(key, 0) + 1
        rows[name] = {"fidelity_psnr": torch_fidelity(q, ref, probe, scale), "layers": counts}
        print(f"{name:40s} {rows[name]['fidelity_psnr']:.2f} dB  {counts}", file=sys.stderr, flush=True)
    atomic_write_json(Path(args.out) / "fidelity.json", {"arch": args.arch, "images": len(probe),
                                                          "calibration": args.calibration, "recipes": rows})
    return 0


def _model_and_probe(arch: str):
    """The embedded fp32 model, its outputs cached, and centre 64x64 LR crops of every offline eval photo."""
    from mixq_nncf.data.datasets import EvalPairs, offline_photos
    from mixq_nncf.models import load_generator
    from mixq_nncf.pipeline import CachedOutputs, probe_inputs

    fp32 = load_generator(arch, None, "embedded")
    pairs = list(EvalPairs(offline_photos("eval"), int(fp32.scale)))
    return fp32, CachedOutputs(fp32), probe_inputs(pairs, 64, n=len(pairs))


def calibration_study(arch: str, out: Path) -> int:
    import time

    from mixq_nncf.config.schema import parse_config
    from mixq_nncf.data.datasets import calibration_inputs
    from mixq_nncf.io_utils import atomic_write_json
    from mixq_nncf.pipeline import torch_fidelity
    from mixq_nncf.quant.nncf_adapter import apply_plan
    from mixq_nncf.config.plan import as_int8, resolve_plan
    from mixq_nncf.quant.ptq import quantize

    fp32, ref, probe = _model_and_probe(arch)
    scale = int(fp32.scale)
    rows = []
    for samples in (16, 32):
        calib = calibration_inputs("offline", samples, 64, scale)
        for bias_correction in (True, False):
            base = {"overflow_fix": "auto", "initializer": {"fast_bias_correction": bias_correction}}
            cfg = parse_config({"compression": base})
            plan8 = resolve_plan(fp32, cfg.compression)
            t0 = time.perf_counter()
            q = quantize(fp32, as_int8(plan8), calib, compression=cfg.compression)
            row = {"samples": samples, "bias_correction": bias_correction,
                   "calibration_s": round(time.perf_counter() - t0, 1)}
            for name in ("int8", "mixed (paper: fe + rec int16)"):
                apply_plan(q, resolve_plan(fp32, parse_config({"compression": {**base, **RECIPES[name]}}).compression))
                row[name.split(" ")[0]] = torch_fidelity(q, ref, probe, scale)
            rows.append(row)
            print(row, file=sys.stderr, flush=True)
    atomic_write_json(out / "calibration.json", {"arch": arch, "images": len(probe), "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
