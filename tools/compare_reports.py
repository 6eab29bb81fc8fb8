"""Put the variants of several `mixq run` reports side by side (e.g. two machines, or two QAT budgets).

    python tools/compare_reports.py runs/demo/report.json other/report.json [--json]

Latency ratios are shown only within a report (against that report's own fp32 baseline): absolute times from
different runs are not comparable.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def rows(report: dict, label: str) -> list[dict]:
    base = report["variants"].get(report.get("baseline", "fp32"), {})
    out = []
    for name, v in report["variants"].items():
        base_ms, ms = base.get("latency_median_ms"), v.get("latency_median_ms")
        out.append({"report": label, "variant": name, "recipe": v.get("recipe"),
                    "machine": report.get("machine", {}).get("cpu"),
                    "bin_mb": (v.get("bin_bytes") or 0) / 1e6,
                    "speedup_vs_own_fp32": base_ms / ms if base_ms and ms else None,
                    **{k: val for k, val in v.get("quality", {}).items() if isinstance(val, (int, float))}})
    return out


def markdown(table: list[dict]) -> str:
    keys = list(dict.fromkeys(k for r in table for k in r))
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for r in table:
        cells = [f"{r[k]:.3f}" if isinstance(r.get(k), float) else str(r.get(k, "-")) for k in keys]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("reports", nargs="+", help="report.json files written by `mixq run` / `mixq demo`")
    p.add_argument("--json", action="store_true", help="print JSON instead of a Markdown table")
    args = p.parse_args(argv)
    table = []
    for path in args.reports:
        try:
            report = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            print(f"compare_reports: cannot read {path}: {exc}", file=sys.stderr)
            return 2
        if "variants" not in report:
            print(f"compare_reports: {path} is not a mixq report (no 'variants')", file=sys.stderr)
            return 2
        table += rows(report, str(path))
    print(json.dumps(table, indent=2) if args.json else markdown(table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
