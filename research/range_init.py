"""Activation range initialisers for PTQ int8, and where NIQE's distance comes from: flat-region grain.

    python research/range_init.py --range '{}' \
        --range '{"type": "mean_percentile", "min_percentile": 0.01, "max_percentile": 99.99}' \
        --json research/results/texture_percentile/range_init.json
    python research/range_init.py runs/x/ptq_int8/quantized.pt runs/x/train/final.pt     # checkpoints too

Each `--range` is a `compression.initializer.range` override of the config's `ptq_int8` variant (default: the
embedded demo); the model is calibrated with it (one NNCF calibration each, about 2 minutes on x4plus) and scored
on the whole eval photos in torch. Positional checkpoints (quantized.pt / final.pt) are scored as they are.

Per model and photo: fidelity (PSNR-Y to the fp32 output), NIQE (and the per-photo NIQE gap to fp32, as the
report's `niqe_gap`), and the grain in flat regions: the mean local
standard deviation (7x7, luma on the 0-255 scale) of the output where fp32's own is below 2 grey levels (sky,
walls), relative to fp32's there. NIQE normalises by the local contrast plus 1 grey level, so a grain of one or two
grey levels in those regions weighs as much there as texture does elsewhere, while PSNR hardly sees it.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

FLAT_SD = 2.0  # grey levels (0-255): fp32's local deviation below this marks a flat region


def local_sd(y):
    """7x7 box local standard deviation of a (H, W) luma map."""
    import torch.nn.functional as F

    x = y[None, None]
    mu = F.avg_pool2d(x, 7, 1, 3, count_include_pad=False)
    return (F.avg_pool2d(x * x, 7, 1, 3, count_include_pad=False) - mu * mu).clamp_min(0).sqrt()[0, 0]


def luma255(img):
    """BT.601 luma on the 0-255 scale of a (1, 3, H, W) image in [0, 1] (the Y NIQE and PSNR-Y read)."""
    return 16.0 + 65.481 * img[0, 0] + 128.553 * img[0, 1] + 24.966 * img[0, 2]


def score(model, inputs, refs) -> dict:
    import torch

    from mixq_nncf.eval.metrics import niqe, psnr_y

    rows = []
    with torch.no_grad():
        for x, ref in zip(inputs, refs):
            out = model(x).clamp(0, 1)
            sd_ref, sd_out = local_sd(luma255(ref)), local_sd(luma255(out))
            flat = sd_ref < FLAT_SD
            grain = float(sd_out[flat].mean() / sd_ref[flat].mean()) if flat.any() else float("nan")
            rows.append({"fidelity_psnr": psnr_y(out, ref, 4), "niqe": niqe(out[0], 4), "flat_grain": grain,
                         "flat_fraction": float(flat.float().mean())})
    mean = {k: sum(r[k] for r in rows) / len(rows) for k in ("fidelity_psnr", "niqe")}
    flat = [r["flat_grain"] for r in rows if r["flat_fraction"] > 0]  # texture photos may have no flat region
    mean["flat_grain"] = sum(flat) / len(flat) if flat else float("nan")
    return {**mean, "per_image": rows}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("checkpoints", nargs="*", help="quantized.pt / final.pt files scored as they are")
    p.add_argument("--range", action="append", default=[], metavar="JSON",
                   help="an initializer.range override to calibrate PTQ int8 with; '{}' = the config's own "
                        "(repeatable)")
    p.add_argument("--config", default=None, help="mixq config (default: the embedded demo)")
    p.add_argument("--variant", default="ptq_int8", help="the config's variant calibrated (default: ptq_int8)")
    p.add_argument("--images", type=int, default=8, help="whole eval photos scored (default: 8)")
    p.add_argument("--eval", default=None, metavar="DIR",
                   help="score the photos of this folder instead of the config's data.eval (held-out photos)")
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = p.parse_args(argv)
    if not args.checkpoints and not args.range:
        p.error("give checkpoints, --range overrides, or both")
    ranges = []
    for text in args.range:
        try:
            ranges.append(json.loads(text))
        except json.JSONDecodeError as e:
            p.error(f"--range {text!r} is not JSON ({e}); e.g. '{{\"type\": \"mean_percentile\"}}'")

    from importlib.resources import files

    import torch
    from tqdm import tqdm

    from mixq_nncf.data import datasets as D
    from mixq_nncf.ir.bench import machine_info
    from mixq_nncf.config.files import load_config
    from mixq_nncf.config.schema import parse_config, to_dict
    from mixq_nncf.io_utils import atomic_write_json
    from mixq_nncf.eval.metrics import niqe
    from mixq_nncf.models import load_generator
    from mixq_nncf.quant.checkpoint import load_quantized
    from mixq_nncf.quant.ptq import quantize, resolve_plan

    cfg = load_config(args.config or str(files("mixq_nncf") / "data_files" / "demo.json"))
    fp32 = load_generator(cfg.model.arch, cfg.model.args, cfg.model.weights).eval()
    scale = int(fp32.scale)
    images = D.resolve_images(args.eval or cfg.data.eval, "eval")[: args.images]
    inputs = [pair["lr"].unsqueeze(0) for pair in D.EvalPairs(images, scale)]
    with torch.no_grad():
        refs = [fp32(x).clamp(0, 1) for x in inputs]
    result = {"config": cfg.name, "machine": machine_info().cpu, "images": [Path(str(i)).name for i in images],
              "fp32_niqe": [niqe(r[0], 4) for r in refs], "models": []}
    calibration = None
    for rng in tqdm(ranges, desc="range initialisers", disable=not ranges):
        data = to_dict(cfg.variant(args.variant))
        data["compression"]["initializer"]["range"].update(rng)
        vcfg = parse_config(data)
        if calibration is None:
            calibration = D.calibration_inputs(cfg.data.calibration or cfg.data.train, cfg.data.calibration_samples,
                                               cfg.data.calibration_patch, scale, cfg.data.seed)
        t0 = time.perf_counter()
        plan = resolve_plan(fp32, vcfg.compression, tuple(vcfg.input_info.range))
        model = quantize(fp32, plan, calibration, compression=vcfg.compression,
                         input_range=tuple(vcfg.input_info.range)).eval()
        result["models"].append({"name": f"{args.variant} range {json.dumps(rng)}",
                                 "calibration_s": time.perf_counter() - t0, **score(model, inputs, refs)})
    for path in args.checkpoints:
        result["models"].append({"name": path, **score(load_quantized(path).model.eval(), inputs, refs)})

    fp32_niqe = sum(result["fp32_niqe"]) / len(refs)
    print(f"{cfg.name}, {len(refs)} whole photos, fp32 NIQE {fp32_niqe:.3f}\n")
    print("| model | fidelity dB | NIQE (\\|- fp32\\|) | NIQE gap per photo | flat-region grain / fp32 |\n"
          "|---|---|---|---|---|")
    for m in result["models"]:
        m["niqe_gap"] = sum(abs(r["niqe"] - f) for r, f in zip(m["per_image"], result["fp32_niqe"])) / len(refs)
        print(f"| {m['name']} | {m['fidelity_psnr']:.3f} | {m['niqe']:.3f} ({abs(m['niqe'] - fp32_niqe):.3f}) "
              f"| {m['niqe_gap']:.3f} | {m['flat_grain']:.3f} |")
    print("\nNIQE per photo (" + ", ".join(result["images"]) + ")")
    print("fp32: " + " ".join(f"{v:.2f}" for v in result["fp32_niqe"]))
    for m in result["models"]:
        print(f"{m['name']}: " + " ".join(f"{r['niqe']:.2f}" for r in m["per_image"]))
    if args.json:
        atomic_write_json(Path(args.json), result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
