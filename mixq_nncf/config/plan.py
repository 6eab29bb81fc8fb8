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
from mixq_nncf.config.values import FLOAT_KINDS, is_bf16
from mixq_nncf.config.scopes import normalized, trace_scopes

from mixq_nncf.errors import ConfigError
from mixq_nncf.errors import ScopeError
from mixq_nncf.models import conv_layers, layer_stages


@dataclass(frozen=True)
class LayerPrecision:
    """Bits of a layer's weights and of its input activations; None = not quantized. ``float_kind`` is what a
    layer that does not run on int8 kernels (unquantized or 16-bit weights) runs at: "f32", or "bf16" where the
    CPU has bf16 units (f32 elsewhere)."""
    weight_bits: Optional[int] = 8
    act_bits: Optional[int] = 8
    float_kind: str = "f32"

    def __post_init__(self):
        for name in ("weight_bits", "act_bits"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not 2 <= value <= 16):
                raise ConfigError(f"LayerPrecision.{name}: {value!r} is not a bit width (2..16 or None)")
        if self.float_kind not in FLOAT_KINDS:
            raise ConfigError(f"LayerPrecision.float_kind: {self.float_kind!r} is not one of {', '.join(FLOAT_KINDS)}")
        if self.float_kind == "bf16" and self.weight_bits is not None:
            raise ConfigError(f"LayerPrecision: bf16 leaves a layer's weights unquantized, but weight_bits is "
                              f"{self.weight_bits}; use weight_bits None with bf16")

    @property
    def runs_int8(self) -> bool:
        """Both sides at 8 bits or fewer: the CPU plugin runs the conv on its int8 kernels."""
        return bool(self.weight_bits and self.weight_bits <= 8 and self.act_bits and self.act_bits <= 8)

    @property
    def name(self) -> str:
        """'int8', 'bf16', 'fp32', or 'w4a8' style where the two sides differ."""
        w, a = bits_name(self.weight_bits, self.float_kind), bits_name(self.act_bits, self.float_kind)
        return w if w == a else f"w{w.removeprefix('int')}a{a.removeprefix('int')}"


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
            if not isinstance(p, dict) or set(p) - {"weight_bits", "act_bits", "float_kind"}:
                raise ConfigError(f"precision plan: layer {n!r} must be {{'weight_bits': .., 'act_bits': .., "
                                  "'float_kind': 'f32' | 'bf16'}}")
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
            key = f"w:{bits_name(p.weight_bits, p.float_kind)} a:{bits_name(p.act_bits, p.float_kind)}"
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
        return [n for n, p in self.layers.items() if not p.runs_int8]

    def float_kinds(self) -> dict[str, str]:
        """Layer -> "f32" / "bf16" for every layer whose weights are not 8-bit or narrower (unquantized or 16-bit:
        the CPU plugin runs those convs in floating point); export_ir's float_precision, so that the IR carries
        each layer's precision itself."""
        return {n: p.float_kind for n, p in self.layers.items() if p.weight_bits is None or p.weight_bits > 8}


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
    f_default = "bf16" if is_bf16(compression.weights.bits) else "f32"
    plan = {n: LayerPrecision(w_default, a_default, f_default) for n in layers}
    for stage, override in compression.stages.items():
        for n in layers:
            if stages[n] == stage:
                plan[n] = _overridden(plan[n], override, f"compression.stages.{stage}")
    claimed: set[str] = set()
    for pattern, override in compression.scope_overrides.items():
        for n in matched(pattern, layers, "compression.scope_overrides pattern", **opts):
            if n in claimed:
                continue
            claimed.add(n)
            plan[n] = _overridden(plan[n], override, f"compression.scope_overrides.{pattern}")
    if compression.activation_outputs:
        for n, act_bits in _output_bits(compression.activation_outputs, trace).items():
            plan[n] = replace(plan[n], act_bits=act_bits)
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


def _overridden(current: LayerPrecision, override, where: str) -> LayerPrecision:
    weight_bits = override.weight_bits(current.weight_bits)
    float_kind = override.float_kind(current.float_kind if weight_bits is None else "f32")
    if float_kind == "bf16" and weight_bits is not None:
        raise ConfigError(f"{where}: bf16 weights with {bits_name(weight_bits)} given elsewhere; bf16 leaves the "
                          "layer unquantized, so give it 'bits': 'bf16'")
    return LayerPrecision(weight_bits, override.activation_bits(current.act_bits), float_kind)


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
    layers = {n: LayerPrecision(None if p.weight_bits is None else 8, None if p.act_bits is None else 8,
                                p.float_kind) for n, p in plan.layers.items()}
    return replace(plan, layers=layers)


def fp32_layers(plan: PrecisionPlan) -> list[str]:
    """Layers left unquantized on both sides (NNCF's ignored scope): they change what calibration produces."""
    return sorted(n for n, p in plan.layers.items() if p.weight_bits is None and p.act_bits is None)


def plan_summary(plan: PrecisionPlan | None) -> dict:
    return {"fp32": True} if plan is None else {"counts": plan.counts(), "layers": len(plan.layers)}
