"""The `mixq` command. Each subcommand lives in its own module with ``add_parser`` and ``run``;
modules are imported only when their subcommand runs, so `mixq train` never imports OpenVINO or pyiqa."""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

# subcommand -> (module, one-line help)
COMMANDS = {
    "models": ("mixq_nncf.cli.models_cmd", "list model presets: parameters, scale, stage map"),
    "quantize": ("mixq_nncf.cli.quantize_cmd", "post-training quantize a model with per-layer bit widths"),
    "train": ("mixq_nncf.cli.train_cmd", "quantization-aware training with GAN losses"),
    "export": ("mixq_nncf.cli.export_cmd", "export an OpenVINO IR, check parity, audit runtime precision"),
    "bench": ("mixq_nncf.cli.bench_cmd", "OpenVINO CPU latency/throughput against fp32 peers"),
    "eval": ("mixq_nncf.cli.eval_cmd", "score a model or images: PSNR/SSIM, fidelity, NIQE, NRQM, PI, LPIPS"),
    "upscale": ("mixq_nncf.cli.upscale_cmd", "upscale images with an OpenVINO IR (tiled)"),
    "sweep": ("mixq_nncf.cli.sweep_cmd", "per-stage/block/layer sensitivity with measured CPU latency and size"),
    "allocate": ("mixq_nncf.cli.allocate_cmd", "choose the layers to keep high under a latency/size/fidelity budget"),
    "config": ("mixq_nncf.cli.config_cmd", "show how an NNCF 2.x config is understood (config convert)"),
    "run": ("mixq_nncf.cli.run_cmd", "config -> quantize -> train -> export -> benchmark -> report"),
    "demo": ("mixq_nncf.cli.run_cmd", "the embedded offline demo: four variants of Real-ESRGAN x4plus"),
}


class UserError(Exception):
    """An error the user can fix; printed without a traceback."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mixq",
        description="Mixed-precision quantization of super-resolution GAN generators with NNCF, "
                    "exported to OpenVINO and measured on the CPU.",
    )
    parser.add_argument("--debug", action="store_true",
                        help="show the full Python traceback when a command fails (for bug reports)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module, _name=name)
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="show the full Python traceback when the command fails")
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
            p.set_defaults(_missing=True)
            continue
        mod.add_parser(p, name)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    if getattr(args, "_missing", False):
        print(f"mixq {args.command}: not available in this build", file=sys.stderr)
        return 2
    # torch's extension builder warns about a missing CUDA runtime when NNCF loads its CPU kernels: noise on CPU
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    mod = importlib.import_module(args._module)
    from mixq_nncf.errors import ConfigError
    from mixq_nncf.errors import MixqError

    from mixq_nncf.cli.common import output_guard

    try:
        with output_guard(args._name, args):
            return int(mod.run(args) or 0)
    except (ConfigError, MixqError, UserError) as exc:
        if args.debug:
            raise
        print(f"mixq {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"mixq {args.command}: interrupted; finished outputs are kept, re-run to resume", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the one place that turns an unexpected failure into one line
        if args.debug:
            raise
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        print(f"mixq {args.command}: unexpected error: {type(exc).__name__}: {first} "
              f"(run `mixq --debug {args.command} ...` for the traceback and report it)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
