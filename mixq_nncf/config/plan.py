"""Precision plans: which bits each conv layer's weights and input activations get. Pure data, no NNCF.

A plan is resolved once from the config (defaults < stages < scope_overrides < ignored_scopes) and can then be
applied to any calibrated model of the same architecture (nncf_adapter.apply_plan): one calibration, many plans.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, replace
from typing import Iterable, Optional

from torch import nn

from mixq_nncf.config.schema import CompressionSection, bits_name, parse_bits
from mixq_nncf.config.scopes import normalized, trace_scopes

from mixq_nncf.errors import ConfigError
from mixq_nncf.errors import ScopeError
from mixq_nncf.models import conv_layers, layer_stages


@dataclass(frozen=True)
class LayerPrecision:
    """Bits of a layer's weights and of its input activations; None = fp32 (not quantized)."""
    weight_bits: Optional[int] = 8
    act_bits: Optional[int] = 8

    def __post_init__(self):
        for name in ("weight_bits", "act_bits"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not 2 <= value <= 16):
                raise ConfigError(f"LayerPrecision.{name}: {value!r} is not a bit width (2..16 or None)")


@dataclass(frozen=True)
class PrecisionPlan:
    """Per-layer precision. ``adds`` holds quantizers on additions / skip connections (fully quantized mode):
    op name -> bits, carried through save/restore."""
    layers: dict[str, LayerPrecision]
    stage_of: dict[str, str]
    input_range: tuple[float, float] = (0.0, 1.0)
    adds: dict[str, Optional[int]] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"layers": {n: asdict(p) for n, p in self.layers.items()}, "stage_of": dict(self.stage_of),
                "input_range": list(self.input_range), "adds": dict(self.adds)}

    @classmethod
    def from_dict(cls, d: dict) -> "PrecisionPlan":
        """Plain data only: every field is type-checked, nothing is looked up by name."""
        if not isinstance(d, dict) or not isinstance(d.get("layers"), dict) or not isinstance(d.get("stage_of"), dict):
            raise ConfigError("precision plan: expected an object with 'layers' and 'stage_of'")
        layers = {}
        for n, p in d["layers"].items():
            if not isinstance(p, dict) or set(p) - {"weight_bits", "act_bits"}:
                raise ConfigError(f"precision plan: layer {n!r} must be {{'weight_bits': .., 'act_bits': ..}}")
            layers[str(n)] = LayerPrecision(**p)
        rng = d.get("input_range", (0.0, 1.0))
        if not (isinstance(rng, (list, tuple)) and len(rng) == 2 and all(isinstance(v, (int, float)) for v in rng)):
            raise ConfigError(f"precision plan: input_range must be [low, high], got {rng!r}")
        adds = d.get("adds", {}) or {}
        if not isinstance(adds, dict) or not all(v is None or isinstance(v, int) for v in adds.values()):
            raise ConfigError("precision plan: adds must map op names to bits or null")
        return cls(layers=layers, stage_of={str(k): str(v) for k, v in d["stage_of"].items()},
                   input_range=(float(rng[0]), float(rng[1])), adds=dict(adds))

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for p in self.layers.values():
            key = f"w:{bits_name(p.weight_bits)} a:{bits_name(p.act_bits)}"
            out[key] = out.get(key, 0) + 1
        return out

    def with_layers(self, changes: dict[str, LayerPrecision]) -> "PrecisionPlan":
        """A copy with some layers changed (the sweep and the allocator build candidates this way)."""
        unknown = [n for n in changes if n not in self.layers]
        if unknown:
            raise ScopeError(f"precision plan has no layer {unknown[0]!r}")
        return replace(self, layers={**self.layers, **changes})

    def high_precision_layers(self) -> list[str]:
        """Layers not at 8 bits or below on both sides: they run fp32 on the CPU plugin."""
        return [n for n, p in self.layers.items() if not (p.weight_bits and p.weight_bits <= 8 and
                                                             p.act_bits and p.act_bits <= 8)]


def match_scope(pattern: str, layers: Iterable[str], *, search: bool = False,
                aliases: dict[str, str] | None = None) -> list[str]:
    """'{re}<regex>' full-matches module names; a plain name matches exactly or as a dotted prefix.

    With ``search`` (NNCF 2.x semantics) a regex matches anywhere (re.search) in the module name or in the
    layer's alias (its NNCF 2.x scope name, e.g. 'MSRResNet/NNCFConv2d[conv_first]/conv2d_0')."""
    layers = list(layers)
    aliases = aliases or {}
    if pattern.startswith("{re}"):
        try:
            rx = re.compile(pattern[4:])
        except re.error as exc:
            raise ScopeError(f"scope '{pattern}': invalid regular expression ({exc})") from None
        if search:
            return [n for n in layers if rx.search(n) or (n in aliases and rx.search(aliases[n]))]
        return [n for n in layers if rx.fullmatch(n)]
    return [n for n in layers if n == pattern or n.startswith(pattern + ".") or aliases.get(n) == pattern]


def matched(pattern: str, layers: list[str], where: str, *, search: bool = False,
            aliases: dict[str, str] | None = None, validate: bool = True) -> list[str]:
    """match_scope, but a pattern that matches nothing is an error naming the layers there are."""
    hits = match_scope(pattern, layers, search=search, aliases=aliases)
    if not hits and validate:
        sample = ", ".join(layers[:6] + (["..."] if len(layers) > 6 else []))
        raise ScopeError(f"{where} '{pattern}' matches no layer of this model. Layers are module names such as: "
                         f"{sample}. Use an exact name, a dotted prefix ('body.0'), or '{{re}}' + a regex "
                         f"('{{re}}body\\.\\d+\\.conv1').")
    return hits


def resolve_plan(model: nn.Module, compression: CompressionSection,
                 input_range: tuple[float, float] = (0.0, 1.0)) -> PrecisionPlan:
    """Defaults < stages < scope_overrides (first matching pattern wins) < activation_outputs < target_scopes
    (others fp32) < ignored_scopes (fp32)."""
    stages = layer_stages(model)
    layers = conv_layers(model)
    trace = None
    if compression.regex_search or compression.activation_outputs:
        trace = trace_scopes(model)
    opts = {"search": compression.regex_search, "aliases": trace.layer_scopes if trace else None,
            "validate": compression.validate_scopes}
    w_default = parse_bits(compression.weights.bits, "compression.weights.bits")
    a_default = parse_bits(compression.activations.bits, "compression.activations.bits")
    if compression.fully_quantized is not None:
        w_default, a_default, _ = compression.fully_quantized.bits()
    plan = {n: LayerPrecision(w_default, a_default) for n in layers}
    for stage, override in compression.stages.items():
        for n in layers:
            if stages[n] == stage:
                plan[n] = LayerPrecision(override.weight_bits(plan[n].weight_bits),
                                         override.activation_bits(plan[n].act_bits))
    claimed: set[str] = set()
    for pattern, override in compression.scope_overrides.items():
        for n in matched(pattern, layers, "compression.scope_overrides pattern", **opts):
            if n in claimed:
                continue
            claimed.add(n)
            plan[n] = LayerPrecision(override.weight_bits(plan[n].weight_bits),
                                     override.activation_bits(plan[n].act_bits))
    if compression.activation_outputs:
        for n, act_bits in _output_bits(compression.activation_outputs, trace).items():
            plan[n] = LayerPrecision(plan[n].weight_bits, act_bits)
    if compression.target_scopes:
        targeted = {n for pattern in compression.target_scopes
                    for n in matched(pattern, layers, "compression.target_scopes pattern", **opts)}
        for n in layers:
            if n not in targeted:
                plan[n] = LayerPrecision(None, None)
    for pattern in compression.ignored_scopes:
        for n in matched(pattern, layers, "compression.ignored_scopes pattern", **opts):
            plan[n] = LayerPrecision(None, None)
    if compression.fully_quantized is not None:
        left = [n for n, p in plan.items() if p.weight_bits is None or p.act_bits is None]
        if left:
            raise ConfigError(f"compression.fully_quantized: layer {left[0]} is set to fp32 by stages or "
                              "scope_overrides; the fully quantized mode leaves no layer fp32")
    return PrecisionPlan(layers=plan, stage_of=stages, input_range=tuple(input_range))


def _output_bits(outputs: dict, trace) -> dict[str, Optional[int]]:
    """NNCF 2.x '<op>|OUTPUT' bits -> activation bits of the conv layers reading that op's output (through
    data-movement ops). A conv fed by several named outputs (a concat) takes the highest bits."""
    by_norm: dict[str, tuple[str, ...]] = {}
    for op, consumers in trace.output_consumers.items():
        by_norm.setdefault(normalized(op), consumers)
    out: dict[str, Optional[int]] = {}
    for op, value in outputs.items():
        bits = parse_bits(value, f"compression.activation_outputs.{op}")
        consumers = trace.output_consumers.get(op) or by_norm.get(normalized(op))
        if not consumers:
            known = ", ".join(list(trace.output_consumers)[:5])
            raise ScopeError(f"compression.activation_outputs: no conv layer reads the output of op '{op}'. Ops "
                             f"whose outputs convs read are named like: {known} ...; `mixq config convert` on the "
                             "config lists them all for this model")
        for layer in consumers:
            both = [b for b in (out.get(layer), bits) if b is not None]
            out[layer] = max(both) if both else None
    return out


def as_int8(plan: PrecisionPlan) -> PrecisionPlan:
    """The same plan with every quantized layer at 8 bits.

    Variants that differ only in bit widths share one calibration made at 8 bits; apply_plan then sets each
    quantizer's real width, re-deriving its range from the calibrated statistics.
    """
    layers = {n: LayerPrecision(None if p.weight_bits is None else 8, None if p.act_bits is None else 8)
              for n, p in plan.layers.items()}
    return replace(plan, layers=layers)


def fp32_layers(plan: PrecisionPlan) -> list[str]:
    """Layers left unquantized on both sides (NNCF's ignored scope): they change what calibration produces."""
    return sorted(n for n, p in plan.layers.items() if p.weight_bits is None and p.act_bits is None)


def plan_summary(plan: PrecisionPlan | None) -> dict:
    return {"fp32": True} if plan is None else {"counts": plan.counts(), "layers": len(plan.layers)}
