"""Post-training quantization with per-layer bit widths on NNCF 3.4.

The flow: nncf.quantize with 8-bit quantizers (calibrated ranges), then apply.apply_plan sets each
quantizer's bit width from the plan (plan.py). The stored range is the calibrated range, so no re-calibration
is needed and one calibration serves every plan (sweeps, variants).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import nncf
import torch
from nncf.common.quantization.structs import QuantizationScheme
from nncf.quantization.advanced_parameters import (AdvancedQuantizationParameters, OverflowFix,
                                                   QuantizationParameters)
from nncf.quantization.range_estimator import (AggregatorType, RangeEstimatorParameters, RangeEstimatorParametersSet,
                                               StatisticsCollectorParameters, StatisticsType)
from torch import nn

from mixq_nncf.config.plan import PrecisionPlan, resolve_plan
from mixq_nncf.config.schema import CompressionSection, Config, bits_name
from mixq_nncf.cpu import resolve_overflow_fix
from mixq_nncf.data.datasets import calibration_inputs
from mixq_nncf.errors import ConfigError
from mixq_nncf.models import load_generator
from mixq_nncf.quant.apply import apply_plan, force_signed
from mixq_nncf.quant.memory import release_freed_memory, trimmed
from mixq_nncf.quant.pair_safe import PairSafeReport, fit_pair_safe_ranges, pair_safe_report
from mixq_nncf.quant.quantizers import is_asymmetric, write_range
from mixq_nncf.quant.rounding import RoundingResult, round_weights
from mixq_nncf.quant.sites import QuantizerSite, quantizer_modules, quantizer_sites
from mixq_nncf.quant.skips import plan_with_skips
from mixq_nncf.quant.weight_ranges import fit_weight_ranges


def _ignored_scope(plan: PrecisionPlan):
    names = [f"{n.replace('.', '/')}/conv2d/0" for n, p in plan.layers.items()
             if p.weight_bits is None and p.act_bits is None]
    return nncf.IgnoredScope(names=names, validate=False) if names else None


def _nncf_qparams(spec):
    """The config's mode / per-channel choice for NNCF (bits are applied per layer afterwards)."""
    if spec.mode is None and spec.per_channel is None:
        return None
    mode = None if spec.mode is None else (QuantizationScheme.SYMMETRIC if spec.mode == "symmetric"
                                           else QuantizationScheme.ASYMMETRIC)
    return QuantizationParameters(mode=mode, per_channel=spec.per_channel)


def _range_estimator(rng):
    """The config's range type on NNCF 3.4's estimators; mean_percentile with explicit percentiles takes the
    mean over samples of each sample's quantiles (NNCF 2.x's mean_percentile)."""
    if rng.type == "mean_percentile" and (rng.min_percentile is not None or rng.max_percentile is not None):
        low, high = rng.percentiles()
        return RangeEstimatorParameters(
            min=StatisticsCollectorParameters(StatisticsType.QUANTILE, AggregatorType.MEAN,
                                              quantile_outlier_prob=low / 100.0),
            max=StatisticsCollectorParameters(StatisticsType.QUANTILE, AggregatorType.MEAN,
                                              quantile_outlier_prob=(100.0 - high) / 100.0))
    return {"mean_min_max": RangeEstimatorParametersSet.MEAN_MINMAX,
            "min_max": RangeEstimatorParametersSet.MINMAX,
            "mean_percentile": RangeEstimatorParametersSet.MEAN_QUANTILE}[rng.type]


def quantize(model: nn.Module, plan: PrecisionPlan, calibration: list[torch.Tensor], *,
             compression: CompressionSection, input_range: tuple[float, float] | None = None) -> nn.Module:
    """NNCF PTQ of a copy of ``model`` (calibrated 8-bit ranges), then the plan's bits applied per layer."""
    return quantize_with_conflicts(model, plan, calibration, compression=compression, input_range=input_range)[0]


def quantize_with_conflicts(model: nn.Module, plan: PrecisionPlan, calibration: list[torch.Tensor], *,
                            compression: CompressionSection,
                            input_range: tuple[float, float] | None = None) -> tuple[nn.Module, list[str]]:
    """quantize(), also returning the layers whose fp32 wish a shared activation quantizer overruled."""
    if not calibration:
        raise ConfigError("quantization needs calibration images; data.calibration_samples must be >= 1")
    for n, p in plan.layers.items():
        if (p.weight_bits is None) != (p.act_bits is None):
            raise ConfigError(f"layer {n}: weights {bits_name(p.weight_bits)} with activations "
                              f"{bits_name(p.act_bits)} — set both sides to fp32 (ignored_scopes) or both quantized")
    fix = _overflow_fix(compression)
    # pairs: NNCF quantizes full-range 8-bit weights, whose ranges are then widened per channel (quant.pair_safe)
    overflow = {"disable": OverflowFix.DISABLE, "enable": OverflowFix.ENABLE, "pairs": OverflowFix.DISABLE,
                "first_layer_only": OverflowFix.FIRST_LAYER}[fix]
    estimator = _range_estimator(compression.initializer.range)
    # NNCF's torch backend has only the fast bias correction; false in the config turns bias correction off
    advanced = AdvancedQuantizationParameters(
        overflow_fix=overflow, activations_range_estimator_params=estimator,
        disable_bias_correction=not compression.initializer.fast_bias_correction,
        weights_quantization_params=_nncf_qparams(compression.weights),
        activations_quantization_params=_nncf_qparams(compression.activations))
    preset = nncf.QuantizationPreset.MIXED if compression.preset == "mixed" else nncf.QuantizationPreset.PERFORMANCE
    work = copy.deepcopy(model).eval()
    kwargs = {}
    ignored = _ignored_scope(plan)
    if ignored is not None:
        kwargs["ignored_scope"] = ignored
    # the heap is trimmed before each sample: without it resident memory grows with every one (quant.memory)
    qmodel = nncf.quantize(work, nncf.Dataset(calibration, trimmed), preset=preset,
                           subset_size=min(len(calibration), compression.initializer.range.num_init_samples),
                           advanced_parameters=advanced, **kwargs)
    if compression.weights.signed or compression.activations.signed:
        # signed: false needs nothing: NNCF 3.4 already picks unsigned levels where calibration saw one sign only
        force_signed(qmodel, weights=bool(compression.weights.signed), activations=bool(compression.activations.signed))
    plan = complete_plan(qmodel, plan, compression, example=calibration[0])
    sites = quantizer_sites(qmodel, calibration[0])
    if overflow is OverflowFix.ENABLE:
        undo_overflow_fix_off_8bit(qmodel, plan, sites)
    applied = apply_plan(qmodel, plan, example=calibration[0], input_range=input_range or plan.input_range,
                         sites=sites)
    init_weight_ranges(qmodel, compression, applied.sites, calibration)
    if compression.initializer.weight_rounding is not None:
        overflow_safe(qmodel, compression, applied.sites)  # so 8-bit weights are rounded on the grid they keep
    round_low_bit_weights(qmodel, model, compression, applied.sites, calibration)
    overflow_safe(qmodel, compression, applied.sites)
    release_freed_memory(collect=True)
    return qmodel, list(applied.conflicts)


def round_low_bit_weights(qmodel: nn.Module, fp32: nn.Module, compression: CompressionSection,
                          sites: dict[str, QuantizerSite], calibration: list[torch.Tensor], *,
                          state_path: Path | None = None, log=None) -> RoundingResult | None:
    """compression.initializer.weight_rounding, when set: the low-bit weights rounded block by block on centre
    crops of the calibration images (after their ranges were fitted)."""
    settings = compression.initializer.weight_rounding
    if settings is None:
        return None
    samples = [_centre_crop(x, settings.patch) for x in calibration[: settings.samples]]
    result = round_weights(qmodel, fp32, sites, samples, settings, state_path=state_path, progress=log)
    if log and (result.blocks or result.resumed):
        gain = [b.gain_db for b in result.blocks] or [0.0]
        log(f"      low-bit weights rounded in {len(result.blocks)} blocks in {result.wall_s:.0f} s (block output "
            f"error {sum(gain) / len(gain):+.1f} dB on average against nearest rounding; {result.resumed} resumed)")
    return result


def _centre_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    if h <= size and w <= size:
        return x
    top, left = max(0, (h - size) // 2), max(0, (w - size) // 2)
    return x[..., top: top + size, left: left + size]


def init_weight_ranges(qmodel: nn.Module, compression: CompressionSection, sites: dict[str, QuantizerSite],
                       calibration: list[torch.Tensor] | None = None) -> dict[str, float]:
    """Start the weight quantizers' ranges as compression.initializer.weight_range says, after the plan set their
    bits (auto: clipping fitted to the least output error on the calibration images, below 8 bits only).
    Returns quantizer key -> mean clipping ratio of those fitted."""
    mode = compression.initializer.weight_range
    if mode == "min_max":
        return {}
    return fit_weight_ranges(qmodel, sites, max_bits=7 if mode == "auto" else None, examples=calibration)


def complete_plan(qmodel: nn.Module, plan: PrecisionPlan, compression: CompressionSection, *,
                  example: torch.Tensor | None = None) -> PrecisionPlan:
    """The plan with what only the quantized graph knows: in fully quantized mode, every addition's inputs at the
    skip bit width (plan.adds). Other modes return the plan unchanged."""
    if compression.fully_quantized is None:
        return plan
    return plan_with_skips(qmodel, plan, compression.fully_quantized.bits()[2], example)


@dataclass
class QuantizeResult:
    fp32_model: nn.Module
    model: nn.Module
    plan: Optional[PrecisionPlan]
    conflicts: list[str] = field(default_factory=list)  # fp32 wishes a shared quantizer overruled


def quantize_from_config(cfg: Config, *, calibration: list[torch.Tensor] | None = None,
                         fp32_model: nn.Module | None = None) -> QuantizeResult:
    fp32 = fp32_model if fp32_model is not None else load_generator(cfg.model.arch, cfg.model.args, cfg.model.weights)
    if cfg.compression is None:
        return QuantizeResult(fp32, fp32, None)
    plan = resolve_plan(fp32, cfg.compression, tuple(cfg.input_info.range))
    if calibration is None:
        calibration = calibration_inputs(cfg.data.calibration or cfg.data.train, cfg.data.calibration_samples,
                                         cfg.data.calibration_patch, int(fp32.scale), cfg.data.seed)
    model, conflicts = quantize_with_conflicts(fp32, plan, calibration, compression=cfg.compression,
                                               input_range=tuple(cfg.input_info.range))
    return QuantizeResult(fp32, model, complete_plan(model, plan, cfg.compression, example=calibration[0]),
                          conflicts)


def _overflow_fix(compression: CompressionSection) -> str:
    """The NNCF overflow fix for this CPU; NNCF applies it to symmetric weights only (asymmetric weights run fp32
    on the CPU plugin anyway, so 'auto' leaves them alone)."""
    fix = resolve_overflow_fix(compression.overflow_fix)
    if fix != "disable" and compression.weights.mode == "asymmetric":
        if compression.overflow_fix != "auto":
            raise ConfigError(f"compression.overflow_fix: {compression.overflow_fix!r} needs symmetric weights "
                              "(NNCF halves symmetric weight ranges only); set compression.weights.mode to "
                              "symmetric or overflow_fix to auto")
        return "disable"
    return fix


def overflow_safe(qmodel: nn.Module, compression: CompressionSection | None,
                  sites: dict[str, QuantizerSite] | None = None) -> PairSafeReport | None:
    """Where compression.overflow_fix resolves to "pairs" (auto on CPUs without VNNI/AMX): the 8-bit weight ranges
    widened per channel just enough that no u8 x s8 pair saturates int16 (quant.pair_safe). Idempotent; called
    after anything that moves weights or ranges (PTQ, weight rounding, QAT) so the IR always runs what torch does."""
    if compression is None or _overflow_fix(compression) != "pairs":
        return None
    return fit_pair_safe_ranges(qmodel, sites if sites is not None else quantizer_sites(qmodel))


def int8_weights_report(qmodel: nn.Module, compression: CompressionSection | None,
                        sites: dict[str, QuantizerSite] | None = None) -> PairSafeReport | None:
    """What overflow_safe left the 8-bit weights (channels widened, bits kept), read without fitting again; None
    where compression.overflow_fix does not resolve to "pairs"."""
    if compression is None or _overflow_fix(compression) != "pairs":
        return None
    return pair_safe_report(qmodel, sites if sites is not None else quantizer_sites(qmodel))


def undo_overflow_fix_off_8bit(qmodel: nn.Module, plan: PrecisionPlan, sites: dict[str, QuantizerSite]) -> list[str]:
    """NNCF's overflow fix doubles every symmetric 8-bit weight range so the values use 7 bits (no int16 saturation
    on CPUs without VNNI). Only 8-bit weights need that: a weight the plan gives other bits (4-bit values cannot
    saturate; 16-bit ones run in float) gets its calibrated range back. Returns the quantizer keys restored."""
    modules = quantizer_modules(qmodel)
    restored = []
    for key, site in sites.items():
        bits = [plan.layers[l].weight_bits for l in site.layers if l in plan.layers]
        bits = [b for b in bits if b is not None]
        q = modules[key]
        if site.kind != "weight" or not bits or max(bits) == 8 or is_asymmetric(q):
            continue
        write_range(q, -q.scale.detach() / 2, q.scale.detach() / 2)
        restored.append(key)
    return restored
