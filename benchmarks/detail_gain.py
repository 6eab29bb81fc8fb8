"""Per-band detail gain and noise of quantized models against the fp32 output: does QAT shrink detail or remove grain?

    python benchmarks/detail_gain.py runs/tex2/ptq_int8/quantized.pt runs/tex2/train/*/final.pt --images 3

For each model and eval photo the luma of its output and of the fp32 output are split into bands by differences of
Gaussian blurs (sigmas 0-1, 1-2, 2-4 px). In each band the model's detail is written as gain x fp32's detail +
noise: gain = <s, t> / <t, t> (1 = fp32's detail kept, below 1 = shrunk) and noise = |s - gain t|^2 / |t|^2 (what
is left, relative to fp32's band energy: grain and misplaced texture). Checkpoints are the PTQ start
(`quantized.pt`) and training outputs (`final.pt`) of the demo config; a `final.pt` whose own file lacks the NNCF
layout is loaded into the first checkpoint's model. Prints a Markdown table; --json writes the figures.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

BANDS = ((0.0, 1.0), (1.0, 2.0), (2.0, 4.0))


def band_gain_noise(out, ref) -> list[tuple[float, float]]:
    """(gain, relative noise) per band of two (1, 3, H, W) images in [0, 1]."""
    from mixq_nncf.losses import luma_bands

    sigmas = [BANDS[0][0]] + [hi for _, hi in BANDS]
    rows = []
    for bs, bt in zip(luma_bands(out, sigmas), luma_bands(ref, sigmas)):
        energy = float((bt * bt).sum())
        gain = float((bs * bt).sum()) / energy
        rows.append((gain, float(((bs - gain * bt) ** 2).sum()) / energy))
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoints", nargs="+", help="quantized.pt / final.pt files; the first is the PTQ start")
    p.add_argument("--config", default=None, help="mixq config of the model and eval photos (default: the demo)")
    p.add_argument("--images", type=int, default=3, help="whole eval photos scored (default: 3)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: all)")
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = p.parse_args(argv)

    from importlib.resources import files

    import torch

    from mixq_nncf import data as D
    from mixq_nncf.config import load_config
    from mixq_nncf.errors import CheckpointError
    from mixq_nncf.io_utils import atomic_write_json
    from mixq_nncf.models import load_generator
    from mixq_nncf.qcheckpoint import load_quantized

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = load_config(args.config or str(files("mixq_nncf") / "data_files" / "demo.json"))
    fp32 = load_generator(cfg.model.arch, cfg.model.args, cfg.model.weights).eval()
    pairs = list(D.EvalPairs(D.resolve_images(cfg.data.eval, "eval")[: args.images], int(fp32.scale)))
    inputs = [pair["lr"].unsqueeze(0) for pair in pairs]
    results = {}
    with torch.no_grad():
        refs = [fp32(x).clamp(0, 1) for x in inputs]
        for path in args.checkpoints:
            try:
                model = load_quantized(path).model.eval()
            except CheckpointError:  # older training outputs: state only, in the start's NNCF layout
                model = load_quantized(args.checkpoints[0]).model.eval()
                model.load_state_dict(torch.load(path, weights_only=True)["state_dict"])
            per_image = [band_gain_noise(model(x).clamp(0, 1), r) for x, r in zip(inputs, refs)]
            name = Path(path).parent.name
            results[name] = {"checkpoint": path, "bands_sigma_px": [list(b) for b in BANDS], "per_image": per_image,
                             "mean": [[sum(im[b][k] for im in per_image) / len(per_image) for k in (0, 1)]
                                      for b in range(len(BANDS))]}
            print(f"{name}: done", file=sys.stderr, flush=True)
    head = " | ".join(f"gain {lo:g}-{hi:g} px | noise {lo:g}-{hi:g} px" for lo, hi in BANDS)
    print(f"| model | {head} |\n|---|" + "---|" * (2 * len(BANDS)))
    for name, r in results.items():
        print(f"| {name} | " + " | ".join(f"{g:.3f} | {n:.3f}" for g, n in r["mean"]) + " |")
    if args.json:
        atomic_write_json(Path(args.json), {"images": len(inputs), "models": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
