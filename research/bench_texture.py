"""QAT loss recipes: quality vs step, from the same PTQ starts, for every metric (default: the demo's model).

    python research/bench_texture.py --out research/results/texture                 # all recipes, int8 start
    python research/bench_texture.py --recipes distill,distill_grad --starts int8,mixed --steps 90
    python research/bench_texture.py --config configs/fqsr/fqsr_compare_realesrgan_anime.json --starts fqsr_a8w4 \
        --recipes as_configured --steps 1500 --eval-every 250 --crop 0 --images 8      # any config's variant

Each recipe trains the same PTQ start (the demo's calibration: int8, or int8 + int16 feature extraction /
reconstruction) with the demo's training settings plus the recipe's terms, on the offline training photos, and is
scored every --eval-every steps in torch (NNCF fake-quant; OpenVINO int8 agrees within 0.1 dB on fidelity) on
centre LR crops of the eval photos against the fp32 output: fidelity PSNR-Y, NIQE, MS-SSIM, GMSD, NLPD, the
Laplacian energy ratio, and the energy of (student - fp32) in three frequency bands. Writes texture.json and
texture.png (one panel per metric, one line per recipe and start).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

_FAST_INTERVALS_ONLY = {"lr_g": 1e-9, "lr_quantizers": 1e-2}  # weights held, the intervals at 10x the 1e-3 rate
RECIPES: dict[str, dict] = {
    # the demo's distillation alone (L1 to the fp32 output)
    "distill": {},
    # + L1 on image gradients / FFT magnitudes / intermediate RRDB outputs, all against the fp32 teacher
    "distill_grad": {"gradient_weight": 1.0},
    "distill_fft": {"fft_weight": 1.0},
    "distill_feat": {"feature_distill_weight": 0.1},
    "distill_fft_feat": {"fft_weight": 1.0, "feature_distill_weight": 0.1},
    # + adversarial distillation: a patch discriminator, warmed up alone, tells teacher outputs from the student's
    "distill_adv": {"adv_distill_weight": 1e-2, "adv_warmup_steps": 30, "lr_d": 2e-4, "gan_type": "ragan"},
    # stronger adversarial distillation: 5x the weight, a longer discriminator warm-up and a faster discriminator
    "distill_adv_strong": {"adv_distill_weight": 5e-2, "adv_warmup_steps": 40, "lr_d": 5e-4, "gan_type": "ragan"},
    # spectrum + adversarial distillation together
    "distill_fft_adv": {"fft_weight": 1.0, "adv_distill_weight": 2e-2, "adv_warmup_steps": 40, "lr_d": 5e-4,
                        "gan_type": "ragan"},
    # + L1 on the contrast-normalised luma NIQE reads: grain in flat regions weighs as much as errors in texture
    "distill_mscn": {"mscn_weight": 0.05},
    "distill_mscn_strong": {"mscn_weight": 0.2},
    "distill_fft_mscn": {"fft_weight": 1.0, "mscn_weight": 0.05},
    # + L1 on per-tile moments of that luma and its neighbour products (NIQE's features, not its pixels)
    "distill_stats_light": {"mscn_stats_weight": 0.3},
    "distill_stats": {"mscn_stats_weight": 1.0},
    "distill_stats_strong": {"mscn_stats_weight": 3.0},
    # the quantizer intervals at their own, 50x larger step: the rounding noise they set can shrink
    "intervals": {"lr_quantizers": 1e-3},
    "intervals_mscn": {"lr_quantizers": 1e-3, "mscn_weight": 0.05},
    # a larger step for weights and intervals, cut 5x for the last third: more of the budget goes into moving
    "decay": {"lr_g": 5e-5, "lr_quantizers": 1e-3, "milestones": [90], "gamma": 0.2},
    "intervals_only": {"lr_g": 1e-9, "lr_quantizers": 1e-3},  # weights held: only the rounding grid moves
    # 10x faster intervals: the body's calibrated activation ranges are too wide for 8-bit rounding (research/NOTES.md)
    "intervals_fast": {"lr_quantizers": 1e-2},
    "intervals_fast_only": {**_FAST_INTERVALS_ONLY},
    "intervals_fast_gain": {**_FAST_INTERVALS_ONLY, "detail_gain_weight": 0.3},
    "intervals_fast_stats": {**_FAST_INTERVALS_ONLY, "mscn_stats_weight": 1.0},
    "intervals_fast_stats2": {**_FAST_INTERVALS_ONLY, "mscn_stats_weight": 2.0},
    "intervals_fast_stats3": {**_FAST_INTERVALS_ONLY, "mscn_stats_weight": 3.0},
    # from a mean-min-max start: block outputs distilled too (a denser signal per step), or slow weights beside
    "intervals_feat": {"lr_g": 1e-9, "lr_quantizers": 1e-3, "feature_distill_weight": 0.1},
    "intervals_fast_feat": {**_FAST_INTERVALS_ONLY, "feature_distill_weight": 0.1},
    "weights_slow": {"lr_g": 1e-5, "lr_quantizers": 1e-3},
    "gain": {"detail_gain_weight": 1.0},  # detail kept at the teacher's gain in 3 bands (losses.detail_gain_loss)
    "gain_light": {"detail_gain_weight": 0.3},
    "gain_mid": {"detail_gain_weight": 1.0, "detail_gain_bands": [1.0, 2.0, 4.0]},  # not the finest, noisiest band
    "gain_mid_light": {"detail_gain_weight": 0.3, "detail_gain_bands": [1.0, 2.0, 4.0]},
    # distillation on blurred outputs: the finest, hallucinated band is not regressed to its mean
    "lowpass": {"distill_lowpass_sigma": 1.0},
    "lowpass2": {"distill_lowpass_sigma": 2.0},
    # the body is where the finest detail is lost (research/detail_gain.py): distil its blocks' outputs harder
    "feat_strong": {"feature_distill_weight": 1.0},
}
RECIPES["as_configured"] = {}  # the start variant's own training section, unchanged
STARTS = {"int8": "ptq_int8", "mixed": "qat_mixed"}  # demo variant whose PTQ start is used
METRICS = ("fidelity_psnr", "niqe", "fidelity_ms_ssim", "fidelity_gmsd", "fidelity_nlpd", "laplacian_ratio",
           "err_low", "err_mid", "err_high")


def band_errors(pred, ref) -> dict[str, float]:
    """Mean energy of (pred - ref) in radial frequency bands of the luma: below 1/8, 1/8-1/2, above 1/2 Nyquist."""
    import torch

    from mixq_nncf.data.luma import luma

    diff = luma(pred - ref)[:, 0]
    spec = torch.fft.fft2(diff, norm="ortho").abs().pow(2)
    fy = torch.fft.fftfreq(diff.shape[-2]).abs().view(-1, 1) * 2
    fx = torch.fft.fftfreq(diff.shape[-1]).abs().view(1, -1) * 2
    r = torch.maximum(fy, fx)
    n = diff[0].numel()
    return {"err_low": float(spec[..., r < 0.125].sum() / n),
            "err_mid": float(spec[..., (r >= 0.125) & (r < 0.5)].sum() / n),
            "err_high": float(spec[..., r >= 0.5].sum() / n)}


def score(model, inputs, refs) -> dict[str, float]:
    import torch

    from mixq_nncf.eval.metrics import niqe, psnr_y, texture_fidelity

    rows = []
    with torch.no_grad():
        for x, ref in zip(inputs, refs):
            out = model(x).clamp(0, 1)
            row = {"fidelity_psnr": psnr_y(out, ref, 4), "niqe": niqe(out[0], 4)}
            for name in ("fidelity_ms_ssim", "fidelity_gmsd", "fidelity_nlpd", "laplacian_ratio"):
                row[name] = texture_fidelity(name, out[0], ref[0], 4)
            row.update(band_errors(out, ref))
            rows.append(row)
    return {k: sum(r[k] for r in rows) / len(rows) for k in rows[0]}


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 3, figsize=(13, 10))
    colors = {}
    for ax, metric in zip(axes.flat, METRICS):
        for key, run in result["runs"].items():
            recipe, start = run["recipe"], run["start"]
            steps = [p["step"] for p in run["curve"]]
            vals = [p[metric] for p in run["curve"]]
            c = colors.setdefault(recipe, f"C{len(colors)}")
            ax.plot(steps, vals, marker="o", ms=3, color=c, ls="-" if start == "int8" else "--", label=key)
        if metric == "niqe":
            ax.axhline(result["fp32"]["niqe"], color="k", lw=1, ls=":", label="fp32")
        if metric == "laplacian_ratio":
            ax.axhline(1.0, color="k", lw=1, ls=":", label="fp32")
        ax.set_title(metric + ("  (lower is better)" if metric in ("fidelity_gmsd", "fidelity_nlpd") or
                               metric.startswith("err_") else ""), fontsize=9)
        ax.set_xlabel("QAT step", fontsize=8)
        ax.grid(alpha=0.3)
        if metric.startswith("err_"):
            ax.set_yscale("log")
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(f"{result.get('config', 'demo')}: QAT recipes, {result['images']} eval images "
                 f"(solid: int8 start, dashed: others)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--recipes", default=",".join(RECIPES), help=f"comma-separated, from {list(RECIPES)}")
    p.add_argument("--config", default=None, help="mixq config whose model, data and variants are used "
                   "(default: the embedded demo)")
    p.add_argument("--starts", default="int8", help="comma-separated variants of the config to start from; int8 "
                   "and mixed name the demo's PTQ int8 and mixed starts (default: int8)")
    p.add_argument("--steps", type=int, default=45, help="QAT steps per recipe (default: 45, the demo's int8)")
    p.add_argument("--eval-every", type=int, default=15, help="score every K steps (default: 15)")
    p.add_argument("--images", type=int, default=4, help="eval photos scored, centre crops (default: 4)")
    p.add_argument("--crop", type=int, default=96,
                   help="LR crop size of the eval photos (default: 96; 0 = whole photos, as the demo scores them)")
    p.add_argument("--work", default="runs/bench_texture", help="folder for the PTQ starts and training runs")
    p.add_argument("--out", default="research/results/texture", help="folder for texture.json / texture.png")
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: all)")
    p.add_argument("--save-outputs", action="store_true", help="also write the scored outputs as PNGs under "
                   "OUT/outputs/{fp32,<start>_ptq,<recipe>_<start>}/ (for research/niqe_decompose.py)")
    args = p.parse_args(argv)

    from importlib.resources import files

    import torch

    from mixq_nncf.data import datasets as D
    from mixq_nncf.ir.bench import machine_info
    from mixq_nncf.config.files import load_config
    from mixq_nncf.io_utils import atomic_write_json
    from mixq_nncf.eval.metrics import niqe
    from mixq_nncf.models import load_generator
    from mixq_nncf.pipeline.stages import quantized_model
    from mixq_nncf.quant.checkpoint import load_quantized
    from mixq_nncf.train.loop import train

    if args.threads:
        torch.set_num_threads(args.threads)
    demo = load_config(args.config or str(files("mixq_nncf") / "data_files" / "demo.json"))
    fp32 = load_generator(demo.model.arch, demo.model.args, demo.model.weights).eval()
    scale = int(fp32.scale)
    work, out = Path(args.work), Path(args.out)
    pairs = list(D.EvalPairs(D.resolve_images(demo.data.eval, "eval")[: args.images], scale))
    inputs = []
    for pair in pairs:
        lr = pair["lr"]
        h, w = lr.shape[-2:]
        if args.crop <= 0:
            inputs.append(lr.unsqueeze(0))
            continue
        s = min(args.crop, h, w)
        inputs.append(lr[:, (h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s].unsqueeze(0))
    with torch.no_grad():
        refs = [fp32(x).clamp(0, 1) for x in inputs]

    def save_outputs(model, name: str) -> None:
        if not args.save_outputs:
            return
        from mixq_nncf.data.datasets import save_image

        with torch.no_grad():
            for i, x in enumerate(inputs):
                save_image(model(x).clamp(0, 1)[0], out / "outputs" / name / f"{i:02d}.png")

    save_outputs(fp32, "fp32")
    result = {"config": demo.name, "machine": machine_info().cpu, "torch": torch.__version__, "images": len(inputs),
              "crop_lr": args.crop, "steps": args.steps, "eval_every": args.eval_every, "recipes": {},
              "fp32": {"niqe": sum(niqe(r[0], 4) for r in refs) / len(refs)}, "runs": {}}
    json_path = out / "texture.json"
    if json_path.is_file():  # resume: keep finished runs
        result["runs"] = json.loads(json_path.read_text()).get("runs", {})

    def calib():
        return D.calibration_inputs(demo.data.calibration or demo.data.train, demo.data.calibration_samples,
                                    demo.data.calibration_patch, scale, demo.data.seed)

    for start in args.starts.split(","):
        variant = demo.variant(STARTS.get(start, start))
        folder = work / f"ptq_{start}"
        folder.mkdir(parents=True, exist_ok=True)
        _, plan = quantized_model(variant, fp32, folder, work / "cache", calib, lambda m: print(m, file=sys.stderr))
        if args.save_outputs:  # a second load of the PTQ start only when its outputs are asked for
            save_outputs(load_quantized(folder / "quantized.pt").model.eval(), f"{start}_ptq")
        for recipe in args.recipes.split(","):
            key = f"{recipe}/{start}"
            result["recipes"][recipe] = RECIPES[recipe]
            if key in result["runs"] and result["runs"][key]["curve"][-1]["step"] >= args.steps:
                continue
            model = load_quantized(folder / "quantized.pt").model
            train_cfg = {**_training_dict(variant), **RECIPES[recipe],
                         "iterations": args.steps, "checkpoint_every": 10 ** 6, "log_every": 1}
            vcfg = _with_training(variant, train_cfg)
            curve = [{"step": 0, **score(model.eval(), inputs, refs)}]
            print(f"{key} step 0: {curve[-1]}", file=sys.stderr, flush=True)
            t0 = time.perf_counter()

            def on_step(step, losses, model=model, curve=curve, key=key):
                if step % args.eval_every == 0 or step == args.steps:
                    model.eval()
                    curve.append({"step": step, **score(model, inputs, refs), "losses": losses})
                    model.train()
                    print(f"{key} step {step}: {curve[-1]}", file=sys.stderr, flush=True)

            train(vcfg, model=model, teacher=fp32, out_dir=work / "train" / key.replace("/", "_"), plan=plan,
                  progress=False, on_step=on_step)
            save_outputs(model.eval(), f"{recipe}_{start}")
            result["runs"][key] = {"recipe": recipe, "start": start, "curve": curve,
                                   "wall_s": time.perf_counter() - t0}
            if json_path.is_file():  # another process may have finished other recipes meanwhile
                saved = json.loads(json_path.read_text())
                result["runs"] = {**saved.get("runs", {}), **result["runs"]}
                result["recipes"] = {**saved.get("recipes", {}), **result["recipes"]}
            atomic_write_json(json_path, result)
            plot(result, out / "texture.png")
    atomic_write_json(json_path, result)
    plot(result, out / "texture.png")
    print(json.dumps({k: {m: round(v["curve"][-1][m], 4) for m in METRICS} for k, v in result["runs"].items()},
                     indent=1))
    return 0


def _training_dict(cfg) -> dict:
    from mixq_nncf.config.schema import to_dict

    return to_dict(cfg.training)


def _with_training(cfg, training: dict):
    from mixq_nncf.config.schema import parse_config, to_dict

    data = to_dict(cfg)
    data["training"] = training
    return parse_config(data)


if __name__ == "__main__":
    sys.exit(main())
