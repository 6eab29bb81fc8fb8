"""`mixq models`: the generator presets, their sizes and stage maps."""
from __future__ import annotations

import argparse
import json
import re


def add_parser(p: argparse.ArgumentParser, name: str) -> None:
    p.description = ("List every generator preset: parameter count, upscale factor, whether weights are bundled, and "
                     "its stage map (stage -> conv layers). Stage names are what a config's compression.stages uses.")
    p.add_argument("--json", action="store_true", help="machine-readable output (full layer lists)")


def _compress(names: list[str]) -> str:
    """body.0.conv1 ... body.15.conv2 -> body.{0..15}.conv{1,2} (for the table only)."""
    if len(names) <= 3:
        return ", ".join(names)
    shapes: dict[str, set[str]] = {}
    for n in names:
        shape = re.sub(r"\d+", "#", n)
        shapes.setdefault(shape, set()).add(n)
    return "; ".join(f"{shape.replace('#', 'N')} x{len(items)}" for shape, items in shapes.items())


def run(args) -> int:
    from mixq_nncf.models import PRESETS, build_generator, count_parameters, stage_map

    rows = []
    for name, preset in PRESETS.items():
        model = build_generator(name)
        rows.append({"name": name, "description": preset.description, "arch": preset.arch.__name__,
                     "parameters": count_parameters(model), "scale": preset.scale,
                     "embedded_weights": preset.embedded_weights, "stages": stage_map(model)})
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print("| preset | parameters | scale | weights | feature_extraction | body | upsampling | reconstruction |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        s = r["stages"]
        print(f"| {r['name']} | {r['parameters']:,} | x{r['scale']} | {r['embedded_weights'] or '-'} | "
              f"{_compress(s['feature_extraction'])} | {_compress(s['body'])} | {_compress(s['upsampling'])} | "
              f"{_compress(s['reconstruction'])} |")
    return 0
