"""`mixq run` as numbered steps: 1 config and data, then per variant 2 quantize, 3 train, 4 export and audit,
then 5 benchmark, 6 evaluate, 7 report."""
from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from mixq_nncf.config.files import dump_config
from mixq_nncf.config.schema import SCORING_ONLY_DATA, Config
from mixq_nncf.data.datasets import EvalPairs, calibration_inputs, resolve_images
from mixq_nncf.io_utils import atomic_write_json, atomic_write_text, content_key, ensure_writable, file_hash, \
    remove_stale_temp
from mixq_nncf.models import load_generator
from mixq_nncf.pipeline.artifacts import VariantArtifacts, weights_key
from mixq_nncf.pipeline.figures import add_figures
from mixq_nncf.pipeline.measure import ImageSet, add_niqe_gap, benchmark_variants, evaluate_variants
from mixq_nncf.pipeline.probe import CachedOutputs, probe_inputs
from mixq_nncf.pipeline.report import add_heldout, assemble_report
from mixq_nncf.pipeline.stages import audit_variant, export_variant, quantized_model, recipe_of, train_variant
from mixq_nncf.quant.memory import release_freed_memory

Log = Callable[[str], None]


@dataclass
class RunInputs:
    """What every variant shares: the fp32 model, the eval images and the probe crops cut from them, the
    held-out photos."""
    fp32: nn.Module
    scale: int
    crop_border: int
    eval_paths: list[Path]
    eval_set: ImageSet
    probe: list[torch.Tensor]
    probe_ref: CachedOutputs
    calibration: Callable[[], list[torch.Tensor]]  # read on first use: fp32-only runs never need it
    heldout_set: ImageSet | None = None


def load_inputs(cfg: Config, log: Log) -> RunInputs:
    """Step 1: the fp32 model and the images."""
    log(f"[1/7] loading {cfg.model.arch} (weights: {cfg.model.weights})")
    fp32 = load_generator(cfg.model.arch, cfg.model.args, cfg.model.weights)
    scale = int(fp32.scale)
    crop_border = cfg.eval.crop_border if cfg.eval.crop_border is not None else scale
    eval_paths = resolve_images(cfg.data.eval, "eval")
    if cfg.data.eval_max_images:
        eval_paths = eval_paths[: cfg.data.eval_max_images]
    eval_set = _image_set(cfg, "eval", eval_paths, scale, cfg.data.eval_crop, cfg.data.eval_lr, keep_samples=True)
    probe = probe_inputs(eval_set.pairs, cfg.input_info.sample_size[-1])
    heldout = None
    if cfg.data.heldout:
        heldout = _image_set(cfg, "heldout", resolve_images(cfg.data.heldout, "heldout"), scale,
                             cfg.data.heldout_crop)

    @functools.cache
    def calibration() -> list[torch.Tensor]:
        return calibration_inputs(cfg.data.calibration or cfg.data.train, cfg.data.calibration_samples,
                                  cfg.data.calibration_patch, scale, cfg.data.seed)

    return RunInputs(fp32, scale, crop_border, eval_paths, eval_set, probe, CachedOutputs(fp32), calibration, heldout)


def _image_set(cfg: Config, folder: str, paths: list[Path], scale: int, crop: int | None, lr_spec: str | None = None,
               *, keep_samples: bool = False) -> ImageSet:
    """Photos and their LR, keyed by their contents, the crop and the fp32 model that scores them."""
    key = content_key([(p.name, file_hash(p)) for p in paths], lr_spec, crop, cfg.model.arch, cfg.model.args,
                      weights_key(cfg))
    lr_paths = resolve_images(lr_spec, folder) if lr_spec else None
    return ImageSet(folder, list(EvalPairs(paths, scale, lr_paths=lr_paths, crop=crop)), key, keep_samples)


def build_variant(name: str, vcfg: Config, index: str, out_dir: Path, inputs: RunInputs,
                  log: Log) -> VariantArtifacts:
    """Steps 2-4 for one variant; the variant's models are dropped when it returns."""
    folder = out_dir / "variants" / name
    folder.mkdir(parents=True, exist_ok=True)
    # benchmark / eval results live outside the variant folder and are checked on their own
    unused = ("name", "description", "variants", "benchmark", "eval") + \
        tuple(f"data.{k}" for k in SCORING_ONLY_DATA) + \
        (("training",) if vcfg.compression is None or vcfg.training.iterations == 0 else ())
    dump_config(vcfg, folder / "config.json", check_unchanged=True, ignore=unused)
    art = VariantArtifacts(name=name, folder=folder, recipe="fp32")
    log(f"[2/7] variant {index} '{name}'")
    # 2. quantize
    model, plan = quantized_model(vcfg, inputs.fp32, folder, out_dir / "cache", inputs.calibration, log)
    art.recipe = recipe_of(vcfg, plan)
    for conflict in getattr(plan, "conflicts", None) or []:
        log(f"      warning: {conflict}")
    # 3. train
    if vcfg.compression is not None and vcfg.training.iterations > 0:
        model, art.training = train_variant(vcfg, model, plan, inputs.fp32, folder, inputs.probe, inputs.probe_ref,
                                            inputs.crop_border, log)
    art.checkpoint = folder / ("train/final.pt" if art.training else "quantized.pt")
    # 4. export and audit
    art.ir, art.parity = export_variant(vcfg, model, inputs.probe_ref, folder, inputs.probe, log, art.checkpoint,
                                        plan)
    art.audit, art.size = audit_variant(vcfg, art.ir, folder, log, plan)
    return art


def run(cfg: Config, out_dir: Path, *, variants: list[str] | None = None, log: Log = print,
        progress: bool = True) -> dict:
    """Run every variant of ``cfg`` into ``out_dir`` and write report.json / report.md; returns the report dict."""
    from mixq_nncf.eval.report import render_markdown

    out_dir = Path(out_dir)
    ensure_writable(out_dir)
    remove_stale_temp(out_dir)  # what a killed run was writing; its finished outputs stay
    dump_config(cfg, out_dir / "config.json")
    names = variants or cfg.variant_names()
    vcfgs = {n: cfg.variant(n) for n in names}
    t_start = time.perf_counter()

    # 1. the fp32 model and the images
    inputs = load_inputs(cfg, log)

    # 2-4. per variant: quantize, train, export, audit
    arts: dict[str, VariantArtifacts] = {}
    for i, name in enumerate(names):
        arts[name] = build_variant(name, vcfgs[name], f"{i + 1}/{len(names)}", out_dir, inputs, log)
        release_freed_memory(collect=True)  # the variant's models (NNCF hooks hold reference cycles)

    # 5. benchmark
    baseline = next((n for n in names if vcfgs[n].compression is None), None)
    bench = benchmark_variants(cfg, arts, inputs.fp32, baseline, out_dir, log, progress)

    # 6. evaluate
    quality, per_image = evaluate_variants(cfg, arts, inputs.fp32, inputs.eval_set, inputs.crop_border, out_dir,
                                           log, progress, baseline)
    add_niqe_gap(quality, per_image, baseline)
    heldout_quality = None
    if inputs.heldout_set is not None:
        heldout_quality, heldout_rows = evaluate_variants(cfg, arts, inputs.fp32, inputs.heldout_set,
                                                          inputs.crop_border, out_dir, log, progress, baseline)
        add_niqe_gap(heldout_quality, heldout_rows, baseline)

    # 7. report
    report = assemble_report(cfg, arts, bench, quality, baseline, inputs.scale, inputs.eval_paths, out_dir)
    if heldout_quality is not None:
        add_heldout(report, cfg, heldout_quality, len(inputs.heldout_set.pairs))
    report["wall_s"] = round(time.perf_counter() - t_start, 1)
    add_figures(report, arts, inputs.eval_set.pairs, out_dir)
    atomic_write_json(out_dir / "report.json", report)
    atomic_write_text(out_dir / "report.md", render_markdown(report))
    log(f"[7/7] report written: {out_dir / 'report.md'}")
    return report
