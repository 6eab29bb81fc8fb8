"""`mixq quantize CONFIG --out DIR`: PTQ with per-layer bit widths and the quantizer table."""
from __future__ import annotations

import argparse
import sys


def add_parser(p: argparse.ArgumentParser, name: str) -> None:
    p.description = ("Post-training quantize the config's model with NNCF: calibrate 8-bit ranges on the config's "
                     "data, then give every layer the bits its stage / scope asks for. Writes DIR/quantized.pt (load "
                     "it with `mixq train --from` or `mixq export`), the quantizer table (quantizers.md / .json), "
                     "plan.json and the resolved config.json.")
    p.add_argument("config", help="JSON config (see configs/), or an NNCF 2.x quantization config as it is")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a config value, e.g. --set model.weights=path.pth (repeatable)")


def run(args) -> int:
    from pathlib import Path

    from mixq_nncf.config.files import dump_config

    from mixq_nncf.config.schema import to_dict
    from mixq_nncf.cli.common import load_checked
    from mixq_nncf.io_utils import atomic_write_json, atomic_write_text
    from mixq_nncf.quant.checkpoint import save_quantized
    from mixq_nncf.quant.table import layer_bits, quantizer_table, table_markdown
    from mixq_nncf.quant.ptq import int8_weights_report, quantize_from_config

    cfg = load_checked(args.config, args.overrides)
    if cfg.variants:
        from mixq_nncf.cli import UserError

        raise UserError(f"{args.config} defines variants ({', '.join(cfg.variants)}); quantize one with "
                        "`mixq run CONFIG --variant NAME` or a single-variant config")
    out = Path(args.out)
    result = quantize_from_config(cfg)
    dump_config(cfg, out / "config.json")
    save_quantized(result.model, out / "quantized.pt", arch=cfg.model.arch, args=cfg.model.args, plan=result.plan,
                   meta={"config": to_dict(cfg)})
    if result.plan is None:
        print("compression is null: the model stays fp32", file=sys.stderr)
        return 0
    atomic_write_json(out / "plan.json", result.plan.to_dict())
    rows = quantizer_table(result.model, result.plan)
    atomic_write_json(out / "quantizers.json", [to_dict(r) for r in rows])
    md = table_markdown(rows)
    atomic_write_text(out / "quantizers.md", md + "\n")
    effective = layer_bits(rows)
    raised = [f"{n} (asked {p}, runs {effective.get(n)})" for n, p in result.plan.layers.items()
              if effective.get(n) and effective[n] != p]
    print(md)
    print()
    for conflict in result.conflicts:
        print(f"warning: {conflict}", file=sys.stderr)
    print("Layers per precision: " + ", ".join(f"{k}: {v}" for k, v in result.plan.counts().items()))
    safe = int8_weights_report(result.model, cfg.compression)  # the PTQ fitted them
    if safe is not None:
        print(safe.summary())
    if raised:
        print("Shared quantizers raised these layers to the highest bits any consumer asked for: "
              + "; ".join(raised[:10]))
    print(f"Written: {out / 'quantized.pt'}, {out / 'quantizers.md'}")
    return 0
