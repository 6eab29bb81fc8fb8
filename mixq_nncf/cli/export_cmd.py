"""`mixq export (CKPT | CONFIG) --out DIR`: OpenVINO IR + parity check + runtime precision audit + size."""
from __future__ import annotations

import argparse


def add_parser(p: argparse.ArgumentParser, name: str) -> None:
    p.description = ("Export an OpenVINO IR (dynamic height/width) from a quantized or trained checkpoint (.pt from "
                     "`mixq quantize` / `mixq train`) or straight from a JSON config (quantized on the fly). After "
                     "export the IR is checked against the torch model (tensors for fp32, fidelity to fp32 for "
                     "quantized IRs) and exits non-zero if they disagree. Also writes the runtime precision audit "
                     "(which convolutions really run int8 on this CPU) and the size report.")
    p.add_argument("source", help="quantized checkpoint (.pt) or JSON config")
    p.add_argument("--out", required=True, help="output folder (model.xml/.bin, export.json, export.md)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="config override when SOURCE is a config")
    p.add_argument("--no-compact-16bit", action="store_true", help="keep 16-bit weights as fp32 constants")
    p.add_argument("--static", nargs=2, type=int, metavar=("H", "W"), help="static LR input size instead of dynamic")
    p.add_argument("--images", default="offline", help="images for the parity check (default: offline eval photos)")


def run(args) -> int:
    import json
    from pathlib import Path

    import torch

    from mixq_nncf.ir.audit import audit_markdown, audit_runtime
    from mixq_nncf.config.schema import to_dict
    from mixq_nncf.cli.common import load_checked
    from mixq_nncf.cli import UserError
    from mixq_nncf.ir.export import check_parity, export_ir, ir_size
    from mixq_nncf.io_utils import atomic_write_json, atomic_write_text
    from mixq_nncf.models import load_generator
    from mixq_nncf.quant.checkpoint import load_quantized
    from mixq_nncf.quant.ptq import int8_weights_report, quantize_from_config

    out = Path(args.out)
    src = Path(args.source)
    if args.static and min(args.static) < 1:
        raise UserError(f"--static {args.static[0]} {args.static[1]}: both sides must be at least 1 LR pixel")
    if src.suffix == ".json":
        cfg = load_checked(src, args.overrides)
        res = quantize_from_config(cfg)
        model, fp32, arch, margs, weights = res.model, res.fp32_model, cfg.model.arch, cfg.model.args, cfg.model.weights
        quantized = res.plan is not None
        safe = int8_weights_report(model, cfg.compression)  # the PTQ fitted them
    else:
        ck = load_quantized(src)
        model, arch, margs = ck.model, ck.arch, ck.args
        weights = ck.meta.get("weights") or (ck.meta.get("config", {}).get("model", {}).get("weights"))
        fp32 = load_generator(arch, margs, weights)
        quantized = ck.plan is not None
        safe = None
    h, w = args.static or (64, 64)
    images = _parity_images(args.images, int(fp32.scale), h, w, static=args.static is not None)
    example = torch.rand(1, 3, h, w)
    xml = export_ir(model, out / "model.xml", example_input=example, dynamic=args.static is None,
                    compact_16bit=not args.no_compact_16bit, meta={"arch": arch, "args": margs, "weights": weights})
    parity = check_parity(xml, model, images, reference_model=fp32 if quantized else None, raise_on_failure=False)
    audit = audit_runtime(xml, (1, 3, h, w))
    size = ir_size(xml)
    audit_d = to_dict(audit)
    audit_d.pop("ops")
    report = {"ir": str(xml), "parity": to_dict(parity), "audit": audit_d, "size": to_dict(size),
              "int8_weights": to_dict(safe) if safe is not None else None}
    atomic_write_json(out / "export.json", report)
    md = [f"# Export of {src}", "", f"IR: {xml} ({size.bin_bytes / 1e6:.3f} MB .bin; by precision: "
          + ", ".join(f"{k} {v / 1e6:.3f} MB" for k, v in size.bytes_by_precision.items()) + ")", "",
          f"Parity ({parity.mode}): {'passed' if parity.passed else 'FAILED'}; max |torch - IR| "
          f"{parity.max_abs_diff:.3g}" + (f", fidelity torch {parity.torch_fidelity_db:.2f} dB vs IR "
                                         f"{parity.ir_fidelity_db:.2f} dB" if parity.ir_fidelity_db else ""),
          "", audit_markdown(audit)] + (["", safe.summary() + "."] if safe is not None else [])
    atomic_write_text(out / "export.md", "\n".join(md) + "\n")
    print("\n".join(md))
    print(json.dumps({"ir": str(xml), "parity_passed": parity.passed}))
    if not parity.passed:
        raise UserError("parity check failed: " + "; ".join(parity.problems))
    return 0


def _parity_images(spec: str, scale: int, h: int, w: int, *, static: bool) -> list:
    """Up to four LR images for the parity check, at the IR's input size when it is static."""
    from mixq_nncf.data.datasets import EvalPairs, resolve_images
    from mixq_nncf.errors import DataError

    pairs = EvalPairs(resolve_images(spec, "eval")[:4], scale, crop=max(64, h, w) * scale)
    try:
        return [pairs[i]["lr"].unsqueeze(0)[:, :, :h, :w] if static else pairs[i]["lr"].unsqueeze(0)
                for i in range(len(pairs))]
    except DataError as exc:
        if not static:
            raise
        raise DataError(f"{exc}: the parity check runs the static IR at {h}x{w} LR pixels ({h * scale}x{w * scale} "
                        "HR); use a smaller --static or --images with larger photos") from None
