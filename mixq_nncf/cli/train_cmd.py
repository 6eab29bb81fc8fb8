"""`mixq train CONFIG --out DIR [--resume]`: quantization-aware training with the GAN losses."""
from __future__ import annotations

import argparse


def add_parser(p: argparse.ArgumentParser, name: str) -> None:
    p.description = ("Quantization-aware training: quantize the config's model (or start from a `mixq quantize` "
                     "checkpoint with --from), then train it with pixel / VGG perceptual / GAN / distillation losses "
                     "as the training section says. Checkpoints go to DIR/checkpoints/last.pt every "
                     "training.checkpoint_every steps; --resume continues exactly where it stopped. Under "
                     "`torchrun --nproc_per_node=N -m mixq_nncf.cli train ...` it trains on N GPUs (or CPU "
                     "processes) with DistributedDataParallel.")
    p.add_argument("config", help="JSON config, or an NNCF 2.x quantization config as it is")
    p.add_argument("--out", required=True, help="output folder (final.pt, train_log.csv, checkpoints/)")
    p.add_argument("--resume", action="store_true", help="continue from DIR/checkpoints/last.pt")
    p.add_argument("--from", dest="from_ckpt", help="start from this quantized checkpoint instead of quantizing")
    p.add_argument("--device", help="cpu, cuda, cuda:1 (default: training.device, 'auto')")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a config value, e.g. --set training.iterations=1000 (repeatable)")


def run(args) -> int:
    import json
    import os
    from pathlib import Path

    from mixq_nncf.config.schema import to_dict
    from mixq_nncf.cli.common import load_checked
    from mixq_nncf.models import load_generator
    from mixq_nncf.quant.checkpoint import load_quantized
    from mixq_nncf.quant.ptq import quantize_from_config
    from mixq_nncf.train.loop import check_out_dir, train

    overrides = list(args.overrides) + ([f"training.device={args.device}"] if args.device else [])
    cfg = load_checked(args.config, overrides)
    out = Path(args.out)
    if int(os.environ.get("RANK", "0")) == 0:
        check_out_dir(out, args.resume)  # before quantizing: a refused folder must not cost the calibration
    teacher = load_generator(cfg.model.arch, cfg.model.args, cfg.model.weights)
    if args.from_ckpt:
        ck = load_quantized(args.from_ckpt)
        model, plan = ck.model, ck.plan
    else:
        res = quantize_from_config(cfg, fp32_model=teacher)
        model, plan = res.model, res.plan
        if plan is None:
            import copy

            model = copy.deepcopy(teacher)
    result = train(cfg, model=model, teacher=teacher, out_dir=out, resume=args.resume, plan=plan)
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(to_dict(result), indent=2))
    return 0
