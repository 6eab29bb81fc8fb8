"""`mixq bench IR... [--baseline IR]`: OpenVINO CPU latency, interleaved, with fp32 peers."""
from __future__ import annotations

import argparse


def _size(text: str) -> tuple[int, int]:
    """'HxW' in LR pixels, each side at least 1."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected HxW in LR pixels, e.g. 64x64") from None
    if h < 1 or w < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: both sides must be at least 1 pixel")
    return h, w


def _count(minimum: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r}: expected a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{text!r}: must be at least {minimum}")
        return value
    return parse


def add_parser(p: argparse.ArgumentParser, name: str) -> None:
    p.description = ("Time OpenVINO IRs on this CPU in one interleaved run (every round runs each target once, so "
                     "noise hits all alike). Reports median / p90 latency, speed-up against --baseline, GMAC per "
                     "image and achieved GMAC/s against this CPU's int8 peak. --torch-fp32 adds PyTorch eager fp32 "
                     "(rebuilt from the IR's sidecar .json) as a peer.")
    p.add_argument("irs", nargs="+", help="IR .xml files")
    p.add_argument("--baseline", help="IR whose latency is 1.00x (default: the first)")
    p.add_argument("--torch-fp32", action="store_true", help="also time the PyTorch eager fp32 model")
    p.add_argument("--input-size", type=_size, default=(64, 64), metavar="HxW", help="LR input HxW (default 64x64)")
    p.add_argument("--threads", type=_count(0), default=0, help="inference threads (0 = OpenVINO's latency default)")
    p.add_argument("--streams", type=_count(1), default=1, help="streams (with --threads)")
    p.add_argument("--iterations", type=_count(1), default=100, help="timed rounds (default 100)")
    p.add_argument("--warmup", type=_count(0), default=10)
    p.add_argument("--throughput", action="store_true", help="also measure async throughput (frames/s)")
    p.add_argument("--default-precision", action="store_true",
                   help="also time each IR as plain OpenVINO compiles it (no precision hint: bf16 on CPUs with "
                        "AVX512-BF16/AMX), beside the f32 hint mixq measures with; see README 'Deploying an IR'")
    p.add_argument("--out", help="folder for bench.json and bench.md")


def conv_precisions(xml, shape: tuple, precision: str) -> dict[str, int]:
    """Convolutions per runtime precision in the compiled model (f32 hint, or the plugin's default)."""
    from mixq_nncf.ir.export import compile_ir

    compiled = compile_ir(xml, shape=shape, precision=precision)
    counts: dict[str, int] = {}
    for op in compiled.get_runtime_model().get_ordered_ops():
        rt = op.get_rt_info()
        if rt["layerType"].astype(str) == "Convolution":
            k = rt["runtimePrecision"].astype(str)
            counts[k] = counts.get(k, 0) + 1
    return counts


def run(args) -> int:
    from pathlib import Path

    from mixq_nncf.ir.bench import Target, benchmark, machine_info, stats_markdown
    from mixq_nncf.config.schema import to_dict
    from mixq_nncf.ir.export import read_meta
    from mixq_nncf.io_utils import atomic_write_json, atomic_write_text

    h, w = args.input_size
    paths = [Path(p) for p in args.irs]
    if args.baseline and Path(args.baseline) not in paths:
        paths.insert(0, Path(args.baseline))
    for pth in paths:
        if not pth.is_file():
            from mixq_nncf.cli import UserError

            raise UserError(f"IR not found: {pth}")
    names = [f"{p.parent.name}/{p.stem}" for p in paths]
    targets = [Target(n, "openvino", p) for n, p in zip(names, paths)]
    if args.default_precision:
        targets += [Target(f"{n} [default hint]", "openvino", p, precision="default") for n, p in zip(names, paths)]
    if args.torch_fp32:
        from mixq_nncf.models import load_generator

        meta = read_meta(paths[0])
        if not isinstance(meta.get("arch"), str):
            from mixq_nncf.cli import UserError

            raise UserError(f"--torch-fp32: {paths[0].with_suffix('.json')} does not name the model's arch (an IR "
                            "exported elsewhere); drop --torch-fp32 or re-export the IR with mixq")
        targets.append(Target("torch_fp32", "torch", model=load_generator(meta["arch"], meta.get("args"),
                                                                           meta.get("weights"))))
    stats = benchmark(targets, input_size=(h, w), threads=args.threads, streams=args.streams,
                      iterations=args.iterations, warmup=args.warmup, throughput=args.throughput)
    machine = machine_info()
    baseline = f"{Path(args.baseline).parent.name}/{Path(args.baseline).stem}" if args.baseline else names[0]
    md = stats_markdown(stats, baseline, machine)
    if args.default_precision:
        lines = ["", "", "Runtime precision of the convolutions (what runs, per compile setting):", "",
                 "| IR | f32 hint (as measured) | default hint (plain OpenVINO) |", "|---|---|---|"]
        for n, p in zip(names, paths):
            cells = []
            for prec in ("f32", "default"):
                counts = conv_precisions(p, (1, 3, h, w), prec)
                cells.append(", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
            lines.append(f"| {n} | {cells[0]} | {cells[1]} |")
        md += "\n".join(lines)
    print(md)
    if args.out:
        out = Path(args.out)
        atomic_write_json(out / "bench.json", {"machine": to_dict(machine), "baseline": baseline,
                                               "input_size": [h, w], "stats": [to_dict(s) for s in stats]})
        atomic_write_text(out / "bench.md", md + "\n")
    return 0
