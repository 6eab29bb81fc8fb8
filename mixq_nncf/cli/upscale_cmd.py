"""`mixq upscale IR IMAGE... --out DIR`: super-resolve images with an OpenVINO IR, tile by tile."""
from __future__ import annotations

import argparse


def add_parser(p: argparse.ArgumentParser, name: str) -> None:
    p.description = ("Upscale images with an exported IR on the CPU. Large images are processed in overlapping "
                     "tiles so memory stays bounded; the result is seamless. Writes DIR/<name>_x<scale>.png.")
    p.add_argument("ir", help="IR .xml (from `mixq export` or `mixq run`)")
    p.add_argument("images", nargs="+", help="input images")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--tile", type=int, default=128, help="LR tile size (0 = whole image)")
    p.add_argument("--overlap", type=int, default=16, help="LR context pixels around each tile")
    p.add_argument("--scale", type=int, help="upscale factor (default: from the IR's sidecar json or 4)")


def run(args) -> int:
    import json
    from pathlib import Path

    from tqdm import tqdm

    from ..data import load_image, save_image
    from ..export import compile_ir, read_meta
    from ..models import PRESETS
    from ..upscale import upscale_image

    meta = read_meta(args.ir)
    scale = args.scale or (PRESETS[meta["arch"]].scale if meta.get("arch") in PRESETS else 4)
    compiled = compile_ir(args.ir)
    written = []
    for path in tqdm(args.images, desc="upscale"):
        img = load_image(path)
        sr = upscale_image(compiled, img, scale, tile=args.tile, overlap=args.overlap)
        written.append(str(save_image(sr, Path(args.out) / f"{Path(path).stem}_x{scale}.png")))
    print(json.dumps({"written": written}, indent=2))
    return 0
