"""`mixq run CONFIG --out DIR` and `mixq demo`: the whole path from a config to a measured report."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

DEMO_CONFIG = "demo.json"  # mixq_nncf/data_files/demo.json: a link to configs/demo/demo.json, shipped in the wheel


def add_parser(p: argparse.ArgumentParser, name: str) -> None:
    if name == "demo":
        p.description = (
            "Run the embedded offline demo: Real-ESRGAN x4plus (bundled weights) on the bundled photo set in four "
            "variants (fp32, PTQ int8, QAT int8, QAT mixed int16/int8), exported to OpenVINO, benchmarked on this "
            "CPU and scored. Takes 13-17 minutes on 2 cores after set-up; re-running resumes.")
        p.add_argument("--out", default="runs/demo", help="run folder (default: runs/demo)")
    else:
        p.description = (
            "Run a config end to end: quantize -> train (QAT variants) -> export OpenVINO IR -> audit runtime "
            "precision -> benchmark on this CPU -> evaluate quality -> report.json / report.md / PNGs in --out. "
            "A config with 'variants' produces one row per variant. Re-running the same command resumes: finished "
            "steps are skipped and training continues from its last checkpoint.")
        p.add_argument("config", help="JSON config (see configs/), or an NNCF 2.x quantization config as it is")
        p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a config value, e.g. --set training.iterations=50 (repeatable)")
    p.add_argument("--variant", action="append", default=None,
                   help="run only this variant (repeatable; default: all)")
    p.add_argument("--json", action="store_true", help="print report.json to stdout instead of the summary")


def demo_config_path() -> Path:
    return Path(__file__).resolve().parent.parent / "data_files" / DEMO_CONFIG


def run(args) -> int:
    from mixq_nncf.cli.common import load_checked
    from mixq_nncf.pipeline import run as run_pipeline
    from mixq_nncf.eval.report import variant_table

    config_path = demo_config_path() if args._name == "demo" else Path(args.config)
    cfg = load_checked(config_path, args.overrides)
    out = Path(args.out)
    t0 = time.perf_counter()

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    report = run_pipeline(cfg, out, variants=args.variant, log=log)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print()
    print(variant_table(report))
    print()
    print(f"Finished in {time.perf_counter() - t0:.0f} s. Report: {out / 'report.md'} "
          f"(machine-readable: {out / 'report.json'}; figures in {out / 'figures'}).")
    return 0
