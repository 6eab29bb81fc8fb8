"""The per-variant steps of `mixq run`: quantize, train, export, audit. Each reuses its saved result when the
content key of its inputs still matches, so an interrupted run resumes where it stopped."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from mixq_nncf.config.plan import PrecisionPlan, as_int8, resolve_plan
from mixq_nncf.config.schema import Config, RangeInit, bits_name, to_dict
from mixq_nncf.io_utils import atomic_write_json, cached_json, content_key, file_hash
from mixq_nncf.pipeline.artifacts import INT8_WEIGHTS_FILE, ir_matches, ptq_key, quantized_key, training_key
from mixq_nncf.pipeline.probe import CachedOutputs, torch_fidelity
from mixq_nncf.quant.apply import apply_plan
from mixq_nncf.quant.checkpoint import load_quantized, save_quantized
from mixq_nncf.quant.ptq import (complete_plan, init_weight_ranges, int8_weights_report, overflow_safe, quantize,
                                 round_low_bit_weights)
from mixq_nncf.train.loop import train

Log = Callable[[str], None]


def recipe_of(cfg: Config, plan: PrecisionPlan | None) -> str:
    """Short words for a variant: 'fp32', 'PTQ int8', 'QAT int8 + int16 x3', 'QAT int8, ranges p0.01-p99.99'."""
    if cfg.compression is None or plan is None:
        return "fp32"
    counts: dict[str, int] = {}
    for prec in plan.layers.values():
        w, a = bits_name(prec.weight_bits, prec.float_kind), bits_name(prec.act_bits, prec.float_kind)
        key = w if w == a else f"w{w}/a{a}"
        counts[key] = counts.get(key, 0) + 1
    main = max(counts, key=counts.get)
    rest = ", ".join(f"{k} x{n}" for k, n in counts.items() if k != main)
    kind = "QAT" if cfg.training.iterations > 0 else "PTQ"
    if cfg.compression.fully_quantized is not None:
        kind += f" fully quantized (skips int{cfg.compression.fully_quantized.bits()[2]})"
    rng = cfg.compression.initializer.range
    default = RangeInit()
    ranges = "" if (rng.type, rng.percentiles()) == (default.type, default.percentiles()) else \
        f", ranges {_range_words(rng)}"
    return f"{kind} {main}" + (f" + {rest}" if rest else "") + ranges


def _range_words(rng: RangeInit) -> str:
    """A non-default activation range initialiser, so a report row says what its ranges started from."""
    if rng.type != "mean_percentile":
        return rng.type.replace("_", "-")
    low, high = rng.percentiles()
    return f"p{low:g}-p{high:g}"


def with_conflicts(plan: PrecisionPlan | None, conflicts: list[str] | None) -> PrecisionPlan | None:
    """The plan, carrying the layers whose fp32 wish a shared quantizer overruled (for the run's warning)."""
    if plan is not None:
        object.__setattr__(plan, "conflicts", list(conflicts or []))
    return plan


def quantized_model(cfg: Config, fp32: nn.Module, folder: Path, cache: Path,
                    calibration: Callable[[], list[torch.Tensor]],
                    log: Log) -> tuple[nn.Module, PrecisionPlan | None]:
    """PTQ (or fp32) model of a variant; shares calibration across variants that differ only in bits."""
    ckpt = folder / "quantized.pt"
    key = quantized_key(cfg)
    if ckpt.exists():
        loaded = load_quantized(ckpt)
        if loaded.meta.get("key") == key:
            log(f"      quantized model found: {ckpt}")
            return loaded.model, with_conflicts(loaded.plan, loaded.meta.get("conflicts"))
        log(f"      {ckpt} was made from other inputs: quantizing again")
    if cfg.compression is None:
        save_quantized(fp32, ckpt, arch=cfg.model.arch, args=cfg.model.args, plan=None,
                       meta={"variant": cfg.name, "weights": cfg.model.weights, "key": key})
        return fp32, None
    input_range = tuple(cfg.input_info.range)
    plan = resolve_plan(fp32, cfg.compression, input_range)
    base_ckpt = cache / f"ptq_{ptq_key(cfg, plan)}.pt"
    if base_ckpt.exists():
        log(f"      reusing calibration {base_ckpt.name}")
        model = load_quantized(base_ckpt).model
    else:
        log(f"      calibrating ({cfg.data.calibration_samples} LR crops of {cfg.data.calibration_patch} px)")
        t0 = time.perf_counter()
        int8_plan = as_int8(plan)
        model = quantize(fp32, int8_plan, calibration(), compression=cfg.compression, input_range=input_range)
        save_quantized(model, base_ckpt, arch=cfg.model.arch, args=cfg.model.args, plan=int8_plan,
                       meta={"calibration_s": time.perf_counter() - t0})
    plan = complete_plan(model, plan, cfg.compression)
    applied = apply_plan(model, plan, input_range=input_range)
    conflicts = applied.conflicts
    fitted = {} if cfg.compression.initializer.weight_range == "min_max" else \
        init_weight_ranges(model, cfg.compression, applied.sites, calibration())
    if fitted:
        log(f"      weight ranges fitted (least output error) in {len(fitted)} quantizers, mean clipping ratio "
            f"{sum(fitted.values()) / len(fitted):.2f}")
    if cfg.compression.initializer.weight_rounding is not None:
        overflow_safe(model, cfg.compression, applied.sites)  # so 8-bit weights are rounded on the grid they keep
        round_low_bit_weights(model, fp32, cfg.compression, applied.sites, calibration(),
                              state_path=folder / "weight_rounding.state.pt", log=log)
    record_int8_weights(overflow_safe(model, cfg.compression, applied.sites), folder, log)
    save_quantized(model, ckpt, arch=cfg.model.arch, args=cfg.model.args, plan=plan,
                   meta={"variant": cfg.name, "weights": cfg.model.weights, "key": key, "conflicts": conflicts})
    return model, with_conflicts(plan, conflicts)


def record_int8_weights(report, folder: Path, log: Log) -> None:
    """Say what the 8-bit weights keep where the overflow fix fitted them (int8_weights.json, read by the report)."""
    if report is None:
        return
    log(f"      {report.summary()}")
    atomic_write_json(folder / INT8_WEIGHTS_FILE, to_dict(report))


def train_variant(cfg: Config, model: nn.Module, plan: PrecisionPlan | None, fp32: nn.Module, folder: Path,
                  probe: list[torch.Tensor], probe_ref: CachedOutputs, crop_border: int,
                  log: Log) -> tuple[nn.Module, dict]:
    """QAT of a quantized variant (resumes from its own checkpoint); returns the trained model and a summary."""
    info_path = folder / "training.json"
    final = folder / "train" / "final.pt"
    key = training_key(cfg, folder / "quantized.pt")

    def _final_matches(info: dict) -> bool:
        return final.is_file() and info.get("final_sha256") == file_hash(final)

    def _compute() -> dict:
        return _run_training(cfg, model, plan, probe, probe_ref, crop_border, fp32, folder, final, log)

    info, reused = cached_json(info_path, key, _compute, valid=_final_matches)
    if reused:
        log(f"      trained model found: {final}")
    return load_quantized(final).model, info


def _run_training(cfg: Config, model: nn.Module, plan: PrecisionPlan | None, probe: list[torch.Tensor],
                  probe_ref: CachedOutputs, crop_border: int, fp32: nn.Module, folder: Path, final: Path,
                  log: Log) -> dict:
    before = torch_fidelity(model, probe_ref, probe, crop_border)
    log(f"      QAT: {cfg.training.iterations} steps (fidelity before {before:.2f} dB)")
    t0 = time.perf_counter()
    result = train(cfg, model=model, teacher=fp32, out_dir=folder / "train", resume=True, plan=plan)
    trained = load_quantized(final).model
    record_int8_weights(int8_weights_report(trained, cfg.compression), folder, log)  # train() fitted them again
    after = torch_fidelity(trained, probe_ref, probe, crop_border)
    info = {"steps": cfg.training.iterations, "fidelity_before": before, "fidelity_after": after,
            "wall_s": time.perf_counter() - t0, "probe": f"{len(probe)} centre LR crops of the eval images, torch",
            "result": to_dict(result) if hasattr(result, "__dataclass_fields__") else str(result),
            "final_sha256": file_hash(final)}
    log(f"      QAT done: fidelity {before:.2f} -> {after:.2f} dB")
    return info


def float_precision_of(cfg: Config, plan: PrecisionPlan | None) -> dict[str, str] | None:
    """export_ir's float_precision for a variant: the plan's f32 / bf16 layers where the IR carries them, None
    (whole-model f32 hint) for the fp32 reference and where export.float_deployment says "f32"."""
    if plan is None or cfg.compression is None or cfg.export.float_deployment == "f32":
        return None
    return plan.float_kinds()


def export_variant(cfg: Config, model: nn.Module, probe_ref: CachedOutputs, folder: Path,
                   probe: list[torch.Tensor], log: Log, checkpoint: Path,
                   plan: PrecisionPlan | None = None) -> tuple[Path, dict]:
    """The variant's OpenVINO IR (re-exported only when its checkpoint or export settings changed) and its
    torch-vs-OpenVINO parity."""
    from mixq_nncf.ir.export import EXPORT_FORMAT, check_parity, export_ir, ir_fingerprint

    xml = folder / "model.xml"
    source = checkpoint if checkpoint.is_file() else None
    floats = float_precision_of(cfg, plan)
    key = content_key(file_hash(source) if source else None, to_dict(cfg.export), list(probe[0].shape), floats,
                      EXPORT_FORMAT)
    if ir_matches(xml, key):
        log(f"      IR found: {xml}")
    else:
        log("      exporting OpenVINO IR")
        meta = {"arch": cfg.model.arch, "args": cfg.model.args, "weights": cfg.model.weights, "variant": cfg.name,
                "source_key": key}
        export_ir(model, xml, example_input=probe[0], dynamic=cfg.export.dynamic_shape,
                  compact_16bit=cfg.export.compact_16bit, meta=meta, int4_weights=cfg.export.int4_weights,
                  float_precision=floats)

    def _parity() -> dict:
        images = [p for p in probe[: max(1, cfg.export.parity_images)]]
        return to_dict(check_parity(xml, model, images,
                                    reference_model=probe_ref if cfg.compression is not None else None,
                                    tolerance_db=cfg.export.parity_tolerance_db,
                                    max_gain_db=cfg.export.parity_max_gain_db,
                                    fp32_tolerance=cfg.export.fp32_tolerance))

    parity, _ = cached_json(folder / "parity.json", content_key(ir_fingerprint(xml), to_dict(cfg.export)), _parity)
    return xml, parity


def audit_variant(cfg: Config, xml: Path, folder: Path, log: Log,
                  plan: PrecisionPlan | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Which convs the CPU plugin really runs in int8 / bf16 / f32, each checked against what the plan asked, and
    the IR's bytes by precision."""
    from mixq_nncf.ir.audit import audit_runtime
    from mixq_nncf.ir.export import ir_fingerprint, ir_size

    shape = tuple(cfg.input_info.sample_size)
    requested = None if plan is None else \
        {n: "int8" if p.runs_int8 else p.float_kind for n, p in plan.layers.items()}

    def _compute() -> dict:
        audit = to_dict(audit_runtime(xml, input_shape=shape, requested=requested))
        audit.pop("ops", None)
        return {"audit": audit, "size": to_dict(ir_size(xml))}

    saved, _ = cached_json(folder / "audit.json", content_key(ir_fingerprint(xml), list(shape), requested), _compute)
    for mismatch in saved["audit"].get("mismatches") or []:
        log(f"      warning: {mismatch}")
    return saved["audit"], saved["size"]
