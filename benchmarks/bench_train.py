"""Training step time of QAT (NNCF int8 fake-quantizers) against the same fp32 model, same batch, same losses.

    python benchmarks/bench_train.py --out benchmarks/results            # CPU
    python benchmarks/bench_train.py --device cuda --batch 16 --patch 128  # on a GPU host

The step is the full ESRGAN-style generator + discriminator step: pixel L1, VGG19 conv5_4 perceptual loss,
relativistic GAN loss, and the discriminator update. The VGG19 here has random weights (timing does not depend on
them; the ImageNet weights are not available offline).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path


def _random_vgg(folder: Path) -> str:
    import torch

    from mixq_nncf.train.vgg import vgg19_layers

    path = folder / "vgg19-random.pth"
    torch.save({f"features.{k}": v for k, v in vgg19_layers(37).state_dict().items()}, path)
    return str(path)


def _time(cfg, model, teacher, plan, device: str, out: Path) -> list[float]:
    import time

    import torch

    from mixq_nncf.train.loop import train

    stamps: list[float] = []

    def on_step(step, losses):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        stamps.append(time.perf_counter())

    train(cfg, model=model, teacher=teacher, out_dir=out, plan=plan, progress=True, on_step=on_step)
    return [b - a for a, b in zip(stamps, stamps[1:])]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", default="msrresnet_x4", help="generator preset (default: msrresnet_x4)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    p.add_argument("--batch", type=int, default=4, help="batch size (default: 4)")
    p.add_argument("--patch", type=int, default=96, help="HR patch size, multiple of 32 (default: 96)")
    p.add_argument("--steps", type=int, default=12, help="timed steps per model, after 2 warm-up steps")
    p.add_argument("--out", default="benchmarks/results", help="folder for train_step.json")
    args = p.parse_args(argv)

    import torch

    from mixq_nncf.ir.bench import machine_info
    from mixq_nncf.config.schema import parse_config
    from mixq_nncf.data.datasets import calibration_inputs
    from mixq_nncf.io_utils import atomic_write_json
    from mixq_nncf.models import load_generator
    from mixq_nncf.config.plan import resolve_plan
    from mixq_nncf.quant.ptq import quantize

    tmp = Path(tempfile.mkdtemp())
    cfg = parse_config({
        "model": {"arch": args.arch, "weights": None},
        "training": {"iterations": args.steps + 2, "batch_size": args.batch, "patch_size": args.patch,
                     "pixel_weight": 1e-2, "perceptual_weight": 1.0, "gan_weight": 5e-3, "gan_type": "ragan",
                     "vgg_weights": _random_vgg(tmp), "checkpoint_every": 10 ** 6, "log_every": 10 ** 6,
                     "device": args.device, "amp": False}})
    torch.manual_seed(0)
    fp32 = load_generator(args.arch, None, None)
    plan = resolve_plan(fp32, cfg.compression)
    qat = quantize(fp32, plan, calibration_inputs("offline", 8, 32, int(fp32.scale)), compression=cfg.compression)
    rows = {}
    for name, model, pl in (("fp32", fp32, None), ("qat_int8", qat, plan)):
        steps = _time(cfg, model, None, pl, args.device, tmp / name)[1:]
        med = statistics.median(steps)
        rows[name] = {"median_step_s": med, "images_per_s": args.batch / med, "steps_timed": len(steps)}
        print(f"{name}: median step {med * 1e3:.0f} ms, {args.batch / med:.2f} images/s", file=sys.stderr)
    ratio = rows["qat_int8"]["median_step_s"] / rows["fp32"]["median_step_s"]
    device_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else machine_info().cpu
    result = {"arch": args.arch, "device": args.device, "device_name": device_name, "batch": args.batch,
              "patch": args.patch, "threads": torch.get_num_threads(), "torch": torch.__version__,
              "rows": rows, "qat_over_fp32": ratio}
    out = Path(args.out)
    atomic_write_json(out / f"train_step_{args.device.split(':')[0]}.json", result)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
