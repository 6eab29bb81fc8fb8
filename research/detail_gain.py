"""Per-band detail gain and noise of quantized models against the fp32 output: does QAT shrink detail or remove grain?

    python research/detail_gain.py runs/tex2/ptq_int8/quantized.pt runs/tex2/train/*/final.pt --images 3

For each model and eval photo the luma of its output and of the fp32 output are split into bands by differences of
Gaussian blurs (sigmas 0-1, 1-2, 2-4 px). In each band the model's detail is written as gain x fp32's detail +
noise: gain = <s, t> / <t, t> (1 = fp32's detail kept, below 1 = shrunk) and noise = |s - gain t|^2 / |t|^2 (what
is left, relative to fp32's band energy: grain and misplaced texture). Checkpoints are the PTQ start
(`quantized.pt`) and training outputs (`final.pt`) of the demo config; a `final.pt` whose own file lacks the NNCF
layout is loaded into the first checkpoint's model. Prints a Markdown table; --json writes the figures.

    python research/detail_gain.py runs/tex2/ptq_int8/quantized.pt --fp32-at body --fp32-at leaky_relu/2

`--fp32-at S` adds a row per checkpoint with every quantizer whose NNCF name contains S switched off (that part of
the model at fp32), to find where the detail is lost and where the noise enters. `--scale-ranges S:F` adds a row
with those quantizers' intervals multiplied by F (0.7 = 30% narrower ranges, finer 8-bit steps, more clipping).
Each row also gives the fidelity (PSNR-Y to fp32) and, with --niqe, NIQE.
"""
from __future__ import annotations

import argparse
import math
import sys
from contextlib import contextmanager
from pathlib import Path

BANDS = ((0.0, 1.0), (1.0, 2.0), (2.0, 4.0))


def band_gain_noise(out, ref) -> list[tuple[float, float]]:
    """(gain, relative noise) per band of two (1, 3, H, W) images in [0, 1]."""
    from mixq_nncf.train.losses import luma_bands

    sigmas = [BANDS[0][0]] + [hi for _, hi in BANDS]
    rows = []
    for bs, bt in zip(luma_bands(out, sigmas), luma_bands(ref, sigmas)):
        energy = float((bt * bt).sum())
        gain = float((bs * bt).sum()) / energy
        rows.append((gain, float(((bs - gain * bt) ** 2).sum()) / energy))
    return rows


def _parse_scale(spec: str) -> tuple[str, float]:
    part, sep, factor = spec.rpartition(":")
    try:
        value = float(factor)
    except ValueError:
        value = -1.0
    if not sep or not part or value <= 0:
        raise SystemExit(f"--scale-ranges {spec!r}: expected NAME_PART:FACTOR with FACTOR > 0, e.g. "
                         "post_hooks.body:0.7")
    return part, value


@contextmanager
def _probe(quantizers, factor):
    """Switch the quantizers off (factor None) or scale their intervals, and put them back afterwards."""
    import torch

    saved = []
    with torch.no_grad():
        for m in quantizers:
            if factor is None:
                m.disable_quantization()
            else:
                params = [p for name, p in m.named_parameters()
                          if name in ("_scale_param_storage", "_input_range_param_storage")]
                if not params:  # another NNCF layout: scaling nothing would report the unscaled model as scaled
                    raise SystemExit(f"--scale-ranges: {type(m).__name__} has no interval parameter this script knows "
                                     f"({[name for name, _ in m.named_parameters()]})")
                saved.append([(p, p.detach().clone()) for p in params])
                log_storage = getattr(m, "_is_using_log_scale_storage", False)  # NNCF may keep log(interval)
                for p in params:
                    if log_storage:
                        p.add_(math.log(factor))
                    else:
                        p.mul_(factor)
    try:
        yield
    finally:
        with torch.no_grad():
            for m in quantizers:
                if factor is None:
                    m.enable_quantization()
            for pairs in saved:
                for p, value in pairs:
                    p.copy_(value)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoints", nargs="+", help="quantized.pt / final.pt files; the first is the PTQ start")
    p.add_argument("--config", default=None, help="mixq config of the model and eval photos (default: the demo)")
    p.add_argument("--images", type=int, default=3, help="whole eval photos scored (default: 3)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: all)")
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    p.add_argument("--fp32-at", action="append", default=[], metavar="S",
                   help="also score each model with the quantizers whose name contains S switched off (repeatable; "
                        "e.g. body, conv_last, leaky_relu/2)")
    p.add_argument("--scale-ranges", action="append", default=[], metavar="S:F",
                   help="also score each model with the intervals of the quantizers whose name contains S scaled by F "
                        "(repeatable; e.g. post_hooks.body:0.7)")
    p.add_argument("--niqe", action="store_true", help="also compute NIQE per row (slower)")
    args = p.parse_args(argv)

    from importlib.resources import files

    import torch

    from mixq_nncf.data import datasets as D
    from mixq_nncf.config.files import load_config
    from mixq_nncf.errors import CheckpointError
    from mixq_nncf.io_utils import atomic_write_json
    from mixq_nncf.eval.metrics import niqe, psnr_y
    from mixq_nncf.models import load_generator
    from mixq_nncf.quant.checkpoint import load_quantized

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = load_config(args.config or str(files("mixq_nncf") / "data_files" / "demo.json"))
    fp32 = load_generator(cfg.model.arch, cfg.model.args, cfg.model.weights).eval()
    pairs = list(D.EvalPairs(D.resolve_images(cfg.data.eval, "eval")[: args.images], int(fp32.scale)))
    inputs = [pair["lr"].unsqueeze(0) for pair in pairs]
    results = {}
    with torch.no_grad():
        refs = [fp32(x).clamp(0, 1) for x in inputs]
        if args.niqe:
            print(f"fp32 NIQE: {sum(niqe(r[0], 4) for r in refs) / len(refs):.3f}")
        for path in args.checkpoints:
            try:
                model = load_quantized(path).model.eval()
            except CheckpointError:  # older training outputs: state only, in the start's NNCF layout
                model = load_quantized(args.checkpoints[0]).model.eval()
                model.load_state_dict(torch.load(path, weights_only=True)["state_dict"])
            quantizers = [(n, m) for n, m in model.named_modules() if type(m).__name__.endswith("Quantizer")]
            probes = [(None, None)] + [(part, None) for part in args.fp32_at] + \
                [_parse_scale(spec) for spec in args.scale_ranges]
            base = Path(path).parent.name
            if base == "train":  # mixq train / demo outputs: name the variant, not the folder
                base = str(Path(path).parent)
            for part, factor in probes:
                chosen = [m for n, m in quantizers if part is not None and part in n]
                if part is not None and not chosen:
                    raise SystemExit(f"{part}: no quantizer name contains it; names look like {quantizers[-1][0]!r}")
                with _probe(chosen, factor):
                    outs = [model(x).clamp(0, 1) for x in inputs]
                per_image = [band_gain_noise(o, r) for o, r in zip(outs, refs)]
                name = base
                if part is not None:
                    name += (f", fp32 at {part}" if factor is None else f", ranges of {part} x{factor:g}") + \
                        f" ({len(chosen)} quantizers)"
                results[name] = {"checkpoint": path, "probe": part, "range_factor": factor, "quantizers": len(chosen),
                                 "bands_sigma_px": [list(b) for b in BANDS], "per_image": per_image,
                                 "mean": [[sum(im[b][k] for im in per_image) / len(per_image) for k in (0, 1)]
                                          for b in range(len(BANDS))],
                                 "fidelity_psnr": sum(psnr_y(o, r, 4) for o, r in zip(outs, refs)) / len(outs)}
                if args.niqe:
                    results[name]["niqe"] = sum(niqe(o[0], 4) for o in outs) / len(outs)
                print(f"{name}: done", file=sys.stderr, flush=True)
    head = " | ".join(f"gain {lo:g}-{hi:g} px | noise {lo:g}-{hi:g} px" for lo, hi in BANDS)
    extra = " | NIQE" if args.niqe else ""
    print(f"| model | {head} | fidelity dB{extra} |\n|---|" + "---|" * (2 * len(BANDS) + 1 + bool(args.niqe)))
    for name, r in results.items():
        cells = " | ".join(f"{g:.3f} | {n:.3f}" for g, n in r["mean"])
        tail = f" | {r['niqe']:.3f}" if args.niqe else ""
        print(f"| {name} | {cells} | {r['fidelity_psnr']:.3f}{tail} |")
    if args.json:
        atomic_write_json(Path(args.json), {"images": len(inputs), "models": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
