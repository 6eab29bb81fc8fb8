"""`mixq eval`: score a model on a dataset, or existing images against ground truth."""
from __future__ import annotations

import argparse


def add_parser(p: argparse.ArgumentParser, name: str) -> None:
    p.description = ("Score super-resolution quality. Either a model (--model: an OpenVINO .xml, a mixq .pt "
                     "checkpoint, or an fp32 checkpoint with --arch) on a dataset (--data offline|FOLDER; LR made by "
                     "MATLAB bicubic), optionally against a --reference model for fidelity; or existing images "
                     "(--pred DIR --gt DIR, matched by file name). Metrics: psnr, ssim (Y, border crop = scale), "
                     "fidelity_psnr, fidelity_ssim, the texture fidelities fidelity_ms_ssim, fidelity_gmsd, fidelity_nlpd, "
                     "laplacian_ratio (all against --reference, offline), niqe, nrqm, pi, lpips. Writes "
                     "per_image.csv and summary.json.")
    p.add_argument("--model", help="model to run: .xml IR, mixq .pt, or fp32 weights with --arch")
    p.add_argument("--arch", help="preset for an fp32 weights file (see `mixq models`; default: read from the file)")
    p.add_argument("--reference", help="fp32 model for fidelity metrics (.xml or .pt or weights with --arch)")
    p.add_argument("--data", default="offline", help="dataset: 'offline' or an HR folder / dataset root")
    p.add_argument("--split", default="eval", choices=["train", "eval", "heldout"],
                   help="which offline photos with --data offline: eval (default), train, or heldout (8 photos "
                        "nothing was tuned on)")
    p.add_argument("--centre-crop", type=int, metavar="PX", help="score an HR centre crop of PX x PX of each photo")
    p.add_argument("--pred", help="folder of super-resolved images")
    p.add_argument("--gt", help="folder of ground-truth images (with --pred)")
    p.add_argument("--scale", type=int, default=4)
    p.add_argument("--metrics", default="psnr,ssim,niqe", help="comma-separated list")
    p.add_argument("--crop-border", type=int, help="border crop (default: the scale)")
    p.add_argument("--max-images", type=int)
    p.add_argument("--out", required=True, help="output folder")


def _runner(spec: str, arch: str | None):
    from pathlib import Path

    import torch

    if spec.endswith(".xml"):
        from mixq_nncf.ir.export import compile_ir, run_ir

        compiled = compile_ir(spec)
        return lambda x: run_ir(compiled, x)
    from mixq_nncf.errors import CheckpointError
    from mixq_nncf.models import load_generator
    from mixq_nncf.quant.checkpoint import load_quantized

    try:
        model = load_quantized(spec).model
    except CheckpointError:  # fp32 weights: --arch, or the generator read from the file
        model = load_generator(arch or None, None, str(Path(spec)))

    def run(x):
        with torch.no_grad():
            return model(x.unsqueeze(0))[0]
    return run


def run(args) -> int:
    import csv
    import io
    import json
    from pathlib import Path

    from tqdm import tqdm

    from mixq_nncf.data.datasets import EvalPairs, list_images, load_image, resolve_images
    from mixq_nncf.errors import DataError
    from mixq_nncf.io_utils import atomic_write_json, atomic_write_text
    from mixq_nncf.eval.metrics import MetricSuite
    from mixq_nncf.cli import UserError

    names = [m.strip() for m in args.metrics.split(",") if m.strip()]
    crop = args.crop_border if args.crop_border is not None else args.scale
    suite = MetricSuite(names, crop)
    rows = []
    if args.pred:
        if not args.gt and any(n in ("psnr", "ssim", "lpips") for n in names):
            raise UserError("--pred needs --gt for psnr/ssim/lpips")
        preds = list_images(args.pred)
        gts = {p.stem: p for p in list_images(args.gt)} if args.gt else {}
        for p in tqdm(preds[: args.max_images], desc="eval"):
            gt = load_image(gts[p.stem]) if p.stem in gts else None
            if args.gt and gt is None:
                raise UserError(f"no ground truth for {p.name} in {args.gt}")
            try:
                rows.append({"image": p.stem, **suite.score(load_image(p).clamp(0, 1), gt=gt)})
            except DataError as exc:
                raise DataError(f"{p} vs {gts[p.stem]}: {exc}" if gt is not None else f"{p}: {exc}") from None
    else:
        if not args.model:
            raise UserError("give --model (to run a model) or --pred/--gt (to score images)")
        model = _runner(args.model, args.arch)
        reference = _runner(args.reference, args.arch) if args.reference else None
        pairs = EvalPairs(resolve_images(args.data, args.split)[: args.max_images], args.scale, crop=args.centre_crop)
        for i, pair in enumerate(tqdm(pairs, desc="eval", total=len(pairs))):
            if min(pair["lr"].shape[-2:]) < 1:
                raise DataError(f"{pairs.hr_paths[i]} is too small for x{args.scale}: a side under {args.scale} "
                                "pixels leaves no LR pixel; remove it from --data")
            pred = model(pair["lr"]).clamp(0, 1)
            ref = reference(pair["lr"]).clamp(0, 1) if reference else None
            try:
                rows.append({"image": pair["name"], **suite.score(pred, reference=ref, gt=pair["hr"])})
            except DataError as exc:
                raise DataError(f"{pairs.hr_paths[i]}: {exc}") from None
    if not rows:
        raise UserError("nothing to evaluate")
    summary = suite.summarize(rows)
    out = Path(args.out)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out / "per_image.csv", buf.getvalue())
    atomic_write_json(out / "summary.json", {"metrics": names, "crop_border": crop, "images": len(rows),
                                             "mean": summary})
    print("| metric | mean |\n|---|---|\n" + "\n".join(f"| {k} | {v:.4f} |" for k, v in summary.items()))
    print(json.dumps({"summary": str(out / "summary.json")}))
    return 0
