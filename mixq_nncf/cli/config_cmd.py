"""`mixq config convert NNCF.json`: how an NNCF 2.x quantization config is understood, as a mixq config."""
from __future__ import annotations

import argparse
import json
import sys


def add_parser(p: argparse.ArgumentParser, name: str) -> None:
    p.description = ("Work with config files. `convert` reads an NNCF 2.x quantization config (the JSON files of "
                     "NNCF's sample scripts, // comments allowed) and prints the equivalent mixq config, the keys it "
                     "ignores and why, and how it read the rest. quantize / train / run / export take the NNCF file "
                     "directly; convert shows what they will do with it.")
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    c = sub.add_parser("convert", help="print the mixq config equivalent to an NNCF 2.x config",
                       description="Print the mixq config equivalent to an NNCF 2.x quantization config, then the "
                                   "ignored keys and notes. For hawq / autoq precision search it prints the "
                                   "equivalent `mixq sweep` + `mixq allocate` commands with the budget translated.")
    c.add_argument("config", help="an NNCF 2.x JSON config (or a mixq config: printed as resolved)")
    c.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a value; name the SR model here, e.g. --set model.arch=msrresnet_x4 "
                        "--set model.weights=path.pth (repeatable)")
    c.add_argument("--json", action="store_true",
                   help="print one JSON object {config, ignored, notes, commands} instead of the readable form")
    c.add_argument("--out", help="also write the mixq config to this file (usable by every mixq verb)")


def run(args) -> int:
    from pathlib import Path

    from mixq_nncf.config.files import load_config, read_json

    from mixq_nncf.config.schema import to_dict
    from mixq_nncf.io_utils import atomic_write_text
    from mixq_nncf.config.nncf2 import conversion, is_nncf_config

    path = Path(args.config)
    data = read_json(path)
    if is_nncf_config(data):
        report = conversion(data, args.overrides, name=path.stem, source=str(path))
    else:
        report = {"config": to_dict(load_config(path, args.overrides)), "ignored": [],
                  "notes": ["already a mixq config: printed as resolved, with every default"], "commands": [],
                  "layers": {}}
    text = json.dumps(report["config"], indent=2)
    if args.out:
        atomic_write_text(Path(args.out), text + "\n")
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(text)
    print()
    print("Ignored keys:" if report["ignored"] else "Ignored keys: none")
    for line in report["ignored"]:
        print(f"  - {line}")
    for line in report["notes"]:
        print(f"Note: {line}")
    if report["layers"]:
        from mixq_nncf.config.schema import bits_name

        counts: dict[str, list[str]] = {}
        for layer, (w, a) in report["layers"].items():
            counts.setdefault(f"w:{bits_name(w)} a:{bits_name(a)}", []).append(layer)
        print("Layer bits:")
        for key, layers in counts.items():
            print(f"  {key}: {', '.join(layers)}")
    if report["commands"]:
        print("Equivalent commands:")
        for line in report["commands"]:
            print(f"  {line}")
    if args.out:
        print(f"Written: {args.out}", file=sys.stderr)
    return 0
