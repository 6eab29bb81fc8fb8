"""A precision plan applied to a calibrated model: each quantizer's bits, signedness and the input range.

Setting ``num_bits`` changes a quantizer's levels; its stored scale is the calibrated range, so no
re-calibration is needed and one calibration serves every plan.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from mixq_nncf.config.plan import PrecisionPlan
from mixq_nncf.config.schema import bits_name
from mixq_nncf.errors import ScopeError
from mixq_nncf.quant.quantizers import make_signed, pin_input_range, quantizer_state, set_bits
from mixq_nncf.quant.sites import (QuantizerSite, example_input, is_quantized, is_weight_key, quantizer_modules,
                                   quantizer_sites)


@dataclass
class ApplyResult:
    """What apply_plan did: the sites it used and the layers whose wish a shared quantizer overruled."""
    sites: dict[str, QuantizerSite]
    conflicts: list[str] = field(default_factory=list)


def _apply_layer_bits(q: nn.Module, key: str, site: QuantizerSite, plan: PrecisionPlan) -> list[str]:
    """Set one quantizer from the plan's layers; returns the conflicts (fp32 wishes it overrules)."""
    wanted = {}
    for layer in site.layers:
        p = plan.layers.get(layer)
        if p is not None:
            wanted[layer] = p.weight_bits if site.kind == "weight" else p.act_bits
    quantized = [b for b in wanted.values() if b is not None]
    if wanted and not quantized and len(site.ops) == len(site.layers):
        q.disable_quantization()
        return []
    if not q.is_enabled_quantization():
        q.enable_quantization()
    bits = max(quantized) if quantized else 8
    conflicts = []
    for layer, b in wanted.items():
        if b is None:
            conflicts.append(f"{layer}: asked for an fp32 {site.kind} input, but quantizer {key} is shared with "
                             f"{', '.join(l for l, v in wanted.items() if v is not None) or 'other ops'} "
                             f"and stays {bits_name(bits)}")
    if q.num_bits != bits:
        set_bits(q, bits)
    return conflicts


def apply_plan(qmodel: nn.Module, plan: PrecisionPlan, *, example: torch.Tensor | None = None,
               input_range: tuple[float, float] | None = None,
               sites: dict[str, QuantizerSite] | None = None) -> ApplyResult:
    """Set every quantizer's bits from the plan, in place.

    A quantizer shared by several layers takes the highest bits any of them asks for; one whose every consumer
    asks for fp32 is switched off. Where a shared quantizer overrules a layer's fp32 wish the layer is named in
    ``conflicts``. The image-input quantizer is pinned to the true data range.
    """
    if sites is None:
        sites = quantizer_sites(qmodel, example)
    unserved = unserved_layers(plan, sites)
    if unserved:
        raise ScopeError(
            f"the plan quantizes {', '.join(unserved[:6])}{' ...' if len(unserved) > 6 else ''} but no NNCF weight "
            "quantizer of this model is attributed to them, so their bits cannot be set; the model calls these "
            "convs from outside the module that holds them (e.g. a ModuleList iterated in forward): call them "
            "through an nn.Sequential or their parent module")
    modules = quantizer_modules(qmodel)
    conflicts: list[str] = []
    for key, site in sites.items():
        conflicts += _apply_layer_bits(modules[key], key, site, plan)
    if plan.adds:
        apply_skip_bits(qmodel, plan, sites)
    lo, hi = input_range or plan.input_range
    inputs = [modules[k] for k, site in sites.items() if site.is_model_input]
    if inputs:
        ex = example if example is not None else example_input()
        for q, (q_lo, q_hi) in zip(inputs, input_extremes(qmodel, inputs, ex, lo, hi)):
            pin_input_range(q, q_lo, q_hi)
    return ApplyResult(sites, conflicts)


def unserved_layers(plan: PrecisionPlan, sites: dict[str, QuantizerSite]) -> list[str]:
    """Layers the plan quantizes that no weight quantizer site names: NNCF found no module name for their op,
    so every per-layer precision would silently miss them."""
    served = {layer for site in sites.values() if site.kind == "weight" for layer in site.layers}
    return [n for n, p in plan.layers.items() if p.weight_bits is not None and n not in served]


def apply_skip_bits(qmodel: nn.Module, plan: PrecisionPlan, sites: dict[str, QuantizerSite]) -> list[str]:
    """Set the quantizers feeding the additions in ``plan.adds``: each takes the larger of the addition's bits and
    the bits its conv consumers ask for (a quantizer shared by a conv and a skip serves both). Returns the keys."""
    modules = quantizer_modules(qmodel)
    changed = []
    for key, site in sites.items():
        wants = [plan.adds[op] for op in site.ops if op in plan.adds and plan.adds[op] is not None]
        if not wants:
            continue
        layer_bits = [b for b in ((plan.layers[l].weight_bits if site.kind == "weight" else plan.layers[l].act_bits)
                                  for l in site.layers if l in plan.layers) if b is not None]
        bits = max(wants + layer_bits)
        q = modules[key]
        if not q.is_enabled_quantization():
            q.enable_quantization()
        if q.num_bits != bits:
            set_bits(q, bits)
        changed.append(key)
    return changed


def force_signed(qmodel: nn.Module, *, weights: bool = False, activations: bool = False) -> int:
    """NNCF 2.x ``signed: true``: symmetric quantizers of the chosen kind take signed levels even where the
    calibration saw one sign only (the range stays [-scale, scale]). NNCF 3.4's PTQ rejects signedness_to_force
    against its hardware config, so it is set after quantization; returns how many quantizers changed."""
    changed = 0
    for key, q in quantizer_modules(qmodel).items():
        if (weights if is_weight_key(key) else activations) and make_signed(q):
            changed += 1
    return changed


def refresh_levels(qmodel: nn.Module) -> None:
    """Asymmetric quantizers do not recompute their levels after load_state_dict."""
    for q in quantizer_modules(qmodel).values():
        q.set_levels()


def input_extremes(qmodel: nn.Module, quantizers: list[nn.Module], example: torch.Tensor, lo: float,
                   hi: float) -> list[tuple[float, float]]:
    """Range each input quantizer sees over images in [lo, hi]: the ops before it are per-channel affine
    (e.g. EDSR's mean shift), so constant lo / hi images give the extremes."""
    seen = [[float("inf"), float("-inf")] for _ in quantizers]
    handles = []
    for i, q in enumerate(quantizers):
        def hook(_m, args, i=i):
            x = args[0].detach()
            seen[i][0] = min(seen[i][0], float(x.min()))
            seen[i][1] = max(seen[i][1], float(x.max()))
        handles.append(q.register_forward_pre_hook(hook))
    try:
        with torch.no_grad():
            for value in (lo, hi):
                qmodel(torch.full_like(example[:1], value))
    finally:
        for h in handles:
            h.remove()
    return [(a, b) if a <= b else (lo, hi) for a, b in seen]


def input_range_problems(qmodel: nn.Module, lo: float = 0.0, hi: float = 1.0,
                         example: torch.Tensor | None = None) -> list[str]:
    """Quantizers on the image input whose range is narrower than what images in [lo, hi] produce there.
    Torch clamps to that range but OpenVINO drops 16-bit FakeQuantize, so such a model cannot match its IR."""
    if not is_quantized(qmodel):
        return []
    ex = example if example is not None else example_input()
    modules = quantizer_modules(qmodel)
    keys = [k for k, s in quantizer_sites(qmodel, ex).items()
            if s.is_model_input and modules[k].is_enabled_quantization()]
    if not keys:
        return []
    extremes = input_extremes(qmodel, [modules[k] for k in keys], ex, lo, hi)
    problems = []
    for key, (need_lo, need_hi) in zip(keys, extremes):
        st = quantizer_state(modules[key])
        slack = 1e-4 * max(1.0, abs(need_hi - need_lo))
        if st.range_low > need_lo + slack or st.range_high < need_hi - slack:
            problems.append(f"input quantizer {key} ({st.bits} bits) covers [{st.range_low:.4g}, "
                            f"{st.range_high:.4g}] but images in [{lo}, {hi}] reach [{need_lo:.4g}, {need_hi:.4g}]; "
                            "re-quantize with mixq (it pins this range) or fix input_info.range")
    return problems
