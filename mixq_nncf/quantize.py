"""Per-layer bit widths on NNCF 3.4: plan resolution, PTQ, bit assignment, quantizer table, save/restore.

NNCF 3.x has no per-layer bit width API, so the flow is: nncf.quantize with 8-bit quantizers (calibrated
ranges), then set each quantizer's bit width from the per-layer plan. The stored range is the calibrated range,
so no re-calibration is needed. A layer is a Conv2d module addressed by its BasicSR name.
"""
from __future__ import annotations

import copy
import enum
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Optional

import torch
from torch import nn

from .config import CompressionSection, Config, ConfigError, bits_name, to_dict
from .errors import CheckpointError, ScopeError
from .io_utils import atomic_torch_save
from .models import build_generator, conv_layers, layer_stages

FORMAT = "mixq-nncf/quantized-v1"


# ----------------------------------------------------------------------------------------------
# the plan

@dataclass(frozen=True)
class LayerPrecision:
    """Bits of a layer's weights and of its input activations; None = fp32 (not quantized)."""
    weight_bits: Optional[int] = 8
    act_bits: Optional[int] = 8


@dataclass(frozen=True)
class PrecisionPlan:
    """Per-layer precision. ``adds`` is reserved for quantizers on additions / skip connections
    (fully quantized mode): op name -> bits, carried through save/restore."""
    layers: dict[str, LayerPrecision]
    stage_of: dict[str, str]
    input_range: tuple[float, float] = (0.0, 1.0)
    adds: dict[str, Optional[int]] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"layers": {n: asdict(p) for n, p in self.layers.items()}, "stage_of": dict(self.stage_of),
                "input_range": list(self.input_range), "adds": dict(self.adds)}

    @classmethod
    def from_dict(cls, d: dict) -> "PrecisionPlan":
        return cls(layers={n: LayerPrecision(**p) for n, p in d["layers"].items()}, stage_of=dict(d["stage_of"]),
                   input_range=tuple(d.get("input_range", (0.0, 1.0))), adds=dict(d.get("adds", {})))

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for p in self.layers.values():
            key = f"w:{bits_name(p.weight_bits)} a:{bits_name(p.act_bits)}"
            out[key] = out.get(key, 0) + 1
        return out


def match_scope(pattern: str, layers: Iterable[str]) -> list[str]:
    """'{re}<regex>' full-matches module names; a plain name matches exactly or as a dotted prefix."""
    layers = list(layers)
    if pattern.startswith("{re}"):
        try:
            rx = re.compile(pattern[4:])
        except re.error as exc:
            raise ScopeError(f"scope '{pattern}': invalid regular expression ({exc})") from None
        return [n for n in layers if rx.fullmatch(n)]
    return [n for n in layers if n == pattern or n.startswith(pattern + ".")]


def _matched(pattern: str, layers: list[str], where: str) -> list[str]:
    hits = match_scope(pattern, layers)
    if not hits:
        sample = ", ".join(layers[:6] + (["..."] if len(layers) > 6 else []))
        raise ScopeError(f"{where} '{pattern}' matches no layer of this model. Layers are module names such as: "
                         f"{sample}. Use an exact name, a dotted prefix ('body.0'), or '{{re}}' + a regex "
                         f"('{{re}}body\\.\\d+\\.conv1').")
    return hits


def resolve_plan(model: nn.Module, compression: CompressionSection,
                 input_range: tuple[float, float] = (0.0, 1.0)) -> PrecisionPlan:
    """Defaults < stages < scope_overrides (first matching pattern wins) < ignored_scopes (fp32)."""
    from .config import parse_bits

    stages = layer_stages(model)
    layers = conv_layers(model)
    w_default = parse_bits(compression.weights.bits, "compression.weights.bits")
    a_default = parse_bits(compression.activations.bits, "compression.activations.bits")
    plan = {n: LayerPrecision(w_default, a_default) for n in layers}
    for stage, override in compression.stages.items():
        for n in layers:
            if stages[n] == stage:
                plan[n] = LayerPrecision(override.weight_bits(plan[n].weight_bits),
                                         override.activation_bits(plan[n].act_bits))
    claimed: set[str] = set()
    for pattern, override in compression.scope_overrides.items():
        for n in _matched(pattern, layers, "compression.scope_overrides pattern"):
            if n in claimed:
                continue
            claimed.add(n)
            plan[n] = LayerPrecision(override.weight_bits(plan[n].weight_bits),
                                     override.activation_bits(plan[n].act_bits))
    for pattern in compression.ignored_scopes:
        for n in _matched(pattern, layers, "compression.ignored_scopes pattern"):
            plan[n] = LayerPrecision(None, None)
    return PrecisionPlan(layers=plan, stage_of=stages, input_range=tuple(input_range))


# ----------------------------------------------------------------------------------------------
# NNCF graph -> which quantizer serves which layer

@dataclass(frozen=True)
class QuantizerSite:
    key: str  # hook storage path, e.g. "pre_hooks.conv_first/conv2d/0__1.0"
    kind: str  # weight | activation
    layers: tuple[str, ...]  # conv layers served
    ops: tuple[str, ...]  # every consumer op (convs, adds, interpolate ...)
    is_model_input: bool = False


_TRANSPARENT = {"cat", "pixel_shuffle", "pixel_unshuffle", "interpolate", "reshape", "view", "flatten", "permute",
                "contiguous", "max_pool2d", "avg_pool2d", "__getitem__", "chunk", "split", "clone", "dropout"}


_INPUT_AFFINE = {"sub", "mul", "add", "div", "__sub__", "__mul__", "__add__", "__truediv__", "rsub"}


def _hook_storage(qmodel: nn.Module) -> nn.Module:
    from nncf.torch.function_hook.wrapper import get_hook_storage

    return get_hook_storage(qmodel)


def _quantizer_modules(qmodel: nn.Module) -> dict[str, nn.Module]:
    from nncf.torch.quantization.layers import BaseQuantizer

    return {n: m for n, m in _hook_storage(qmodel).named_modules(remove_duplicate=False)
            if isinstance(m, BaseQuantizer)}


def _canonical_keys(modules: dict[str, nn.Module]) -> dict[str, str]:
    """Hook key -> the first key of the same quantizer instance (NNCF shares one quantizer across a
    unified-scale group, e.g. all inputs of a concat)."""
    first: dict[int, str] = {}
    return {k: first.setdefault(id(m), k) for k, m in modules.items()}


def _node_to_key(node_name: str, keys: Iterable[str]) -> Optional[str]:
    """Quantize-op node name (e.g. 'lrelu/post_hook__lrelu-leaky_relu-1__0[0]/symmetric_quantize/0') -> hook key."""
    m = re.search(r"(pre|post)_hook__(.+?)__(\d+)\[(\d+)\]", node_name)
    if not m:
        return None
    kind, op, port, idx = m.groups()
    for key in keys:
        km = re.fullmatch(rf"{kind}_hooks\.(.+)__{port}\.{idx}", key)
        if km and km.group(1).replace("/", "-") == op:
            return key
    return None


def quantizer_sites(qmodel: nn.Module, example_input: torch.Tensor) -> dict[str, QuantizerSite]:
    """Map every quantizer to the layers and ops it serves, from the NNCF graph."""
    from nncf.torch.function_hook.nncf_graph.nncf_graph_builder import build_nncf_graph

    graph = build_nncf_graph(qmodel, example_input)
    modules = _quantizer_modules(qmodel)
    canonical = _canonical_keys(modules)
    keys = list(modules)
    layer_of_node = {}
    for layer in conv_layers(qmodel):
        prefix = layer.replace(".", "/") + "/conv2d/"
        for node in graph.get_all_nodes():
            if node.node_name.startswith(prefix) and node.node_type == "conv2d":
                layer_of_node[node.node_name] = layer
    serves: dict[str, dict[str, Any]] = {k: {"layers": [], "ops": [], "input": False}
                                         for k in dict.fromkeys(canonical.values())}

    def is_quant(node) -> bool:
        return node.node_type.endswith("quantize")

    def upstream_quantizers(node, seen) -> list:
        found = []
        for edge in graph.get_input_edges(node):
            src = edge.from_node
            if src.node_name in seen:
                continue
            seen.add(src.node_name)
            if is_quant(src):
                found.append(src)
            elif src.node_type in _TRANSPARENT:
                found += upstream_quantizers(src, seen)
        return found

    for node in graph.get_all_nodes():
        if is_quant(node) or node.node_type in ("nncf_model_const", "nncf_model_input", "nncf_model_output"):
            continue
        if node.node_type in _TRANSPARENT:
            continue
        layer = layer_of_node.get(node.node_name)
        for q in upstream_quantizers(node, set()):
            key = _node_to_key(q.node_name, keys)
            if key is None:
                continue
            entry = serves[canonical[key]]
            entry["ops"].append(node.node_name)
            if layer:
                entry["layers"].append(layer)
    # quantizers that see the image input through data-independent ops only (mean shift, pixel_unshuffle)
    frontier = [n for n in graph.get_all_nodes() if n.node_type == "nncf_model_input"]
    seen: set[str] = set()
    while frontier:
        node = frontier.pop()
        for edge in graph.get_output_edges(node):
            nxt = edge.to_node
            if nxt.node_name in seen:
                continue
            seen.add(nxt.node_name)
            if is_quant(nxt):
                key = _node_to_key(nxt.node_name, keys)
                if key:
                    serves[canonical[key]]["input"] = True
            elif nxt.node_type in _TRANSPARENT or nxt.node_type in _INPUT_AFFINE:
                frontier.append(nxt)
    sites = {}
    for key, entry in serves.items():
        kind = "weight" if key.startswith("pre_hooks") and key.endswith("__1.0") else "activation"
        sites[key] = QuantizerSite(key, kind, tuple(dict.fromkeys(entry["layers"])), tuple(dict.fromkeys(entry["ops"])),
                                   entry["input"])
    return sites


# ----------------------------------------------------------------------------------------------
# quantize and assign bits

def _example_input(plan_or_model: Any = None, size: int = 16) -> torch.Tensor:
    return torch.rand(1, 3, size, size)


def _ignored_scope(model: nn.Module, plan: PrecisionPlan):
    import nncf

    names = [f"{n.replace('.', '/')}/conv2d/0" for n, p in plan.layers.items()
             if p.weight_bits is None and p.act_bits is None]
    return nncf.IgnoredScope(names=names, validate=False) if names else None


def quantize(model: nn.Module, plan: PrecisionPlan, calibration: list[torch.Tensor], *,
             compression: CompressionSection, input_range: tuple[float, float] | None = None) -> nn.Module:
    """NNCF PTQ of a copy of ``model`` (calibrated 8-bit ranges), then the plan's bits applied per layer."""
    import nncf
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    if not calibration:
        raise ConfigError("quantization needs calibration images; data.calibration_samples must be >= 1")
    for n, p in plan.layers.items():
        if (p.weight_bits is None) != (p.act_bits is None):
            raise ConfigError(f"layer {n}: weights {bits_name(p.weight_bits)} with activations "
                              f"{bits_name(p.act_bits)} — set both sides to fp32 (ignored_scopes) or both quantized")
    overflow = {"disable": OverflowFix.DISABLE, "enable": OverflowFix.ENABLE,
                "first_layer_only": OverflowFix.FIRST_LAYER}[compression.overflow_fix]
    estimator = {"mean_min_max": RangeEstimatorParametersSet.MEAN_MINMAX,
                 "min_max": RangeEstimatorParametersSet.MINMAX,
                 "mean_percentile": RangeEstimatorParametersSet.MEAN_QUANTILE}[compression.initializer.range.type]
    # NNCF's torch backend has only the fast bias correction; false in the config turns bias correction off
    advanced = AdvancedQuantizationParameters(
        overflow_fix=overflow, activations_range_estimator_params=estimator,
        disable_bias_correction=not compression.initializer.fast_bias_correction,
        weights_quantization_params=_nncf_qparams(compression.weights),
        activations_quantization_params=_nncf_qparams(compression.activations))
    preset = nncf.QuantizationPreset.MIXED if compression.preset == "mixed" else nncf.QuantizationPreset.PERFORMANCE
    work = copy.deepcopy(model).eval()
    kwargs = {}
    ignored = _ignored_scope(work, plan)
    if ignored is not None:
        kwargs["ignored_scope"] = ignored
    qmodel = nncf.quantize(work, nncf.Dataset(calibration), preset=preset,
                           subset_size=min(len(calibration), compression.initializer.range.num_init_samples),
                           advanced_parameters=advanced, **kwargs)
    apply_plan(qmodel, plan, example_input=calibration[0], input_range=input_range or plan.input_range)
    return qmodel


def _nncf_qparams(spec):
    """The config's mode / per-channel choice for NNCF (bits are applied per layer afterwards)."""
    if spec.mode is None and spec.per_channel is None:
        return None
    from nncf.common.quantization.structs import QuantizationScheme
    from nncf.quantization.advanced_parameters import QuantizationParameters

    mode = None if spec.mode is None else (QuantizationScheme.SYMMETRIC if spec.mode == "symmetric"
                                           else QuantizationScheme.ASYMMETRIC)
    return QuantizationParameters(mode=mode, per_channel=spec.per_channel)


def as_int8(plan: PrecisionPlan) -> PrecisionPlan:
    """The same plan with every quantized layer at 8 bits.

    Variants that differ only in bit widths share one calibration made at 8 bits; apply_plan then sets each
    quantizer's real width, re-deriving its range from the calibrated statistics.
    """
    layers = {n: LayerPrecision(None if p.weight_bits is None else 8, None if p.act_bits is None else 8)
              for n, p in plan.layers.items()}
    return replace(plan, layers=layers)


def _set_bits(q: nn.Module, bits: int) -> None:
    q.num_bits = bits
    q._qspec.num_bits = bits  # get_config/load_from_config read the spec
    q.set_levels()


def apply_plan(qmodel: nn.Module, plan: PrecisionPlan, *, example_input: torch.Tensor | None = None,
               input_range: tuple[float, float] | None = None) -> dict[str, QuantizerSite]:
    """Set bits in place. A quantizer shared by several layers takes the highest bits any of them asks for;
    the image-input quantizer is pinned to the true data range."""
    sites = quantizer_sites(qmodel, example_input if example_input is not None else _example_input())
    modules = _quantizer_modules(qmodel)
    for key, site in sites.items():
        q = modules[key]
        wanted = []
        for layer in site.layers:
            p = plan.layers.get(layer)
            if p is None:
                continue
            wanted.append(p.weight_bits if site.kind == "weight" else p.act_bits)
        quantized = [b for b in wanted if b is not None]
        if site.kind == "weight" and wanted and not quantized:
            q.disable_quantization()
            continue
        bits = max(quantized) if quantized else 8
        if q.num_bits != bits:
            _set_bits(q, bits)
    lo, hi = input_range or plan.input_range
    inputs = [modules[k] for k, site in sites.items() if site.is_model_input]
    if inputs:
        example = example_input if example_input is not None else _example_input()
        for q, (q_lo, q_hi) in zip(inputs, _input_extremes(qmodel, inputs, example, lo, hi)):
            pin_input_range(q, q_lo, q_hi)
    return sites


def _input_extremes(qmodel: nn.Module, quantizers: list[nn.Module], example: torch.Tensor, lo: float,
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


def pin_input_range(q: nn.Module, lo: float, hi: float) -> None:
    """Make the image-input quantizer cover exactly [lo, hi]: torch clamps to its range, OpenVINO (which strips
    16-bit FakeQuantize) does not, so a narrower calibrated range would make them disagree."""
    from nncf.torch.quantization.layers import AsymmetricQuantizer

    with torch.no_grad():
        if isinstance(q, AsymmetricQuantizer):
            q.input_low.data.fill_(lo)
            q._input_range_param_storage.data.fill_(hi - lo)
            if q.is_using_log_scale_storage:
                q._input_range_param_storage.data.log_()
        else:
            signed = lo < 0
            if q.signed != signed:
                q.signed = signed
                q._qspec.signedness_to_force = signed
            scale = max(abs(lo), abs(hi))
            q._scale_param_storage.data.fill_(scale)
            if q.is_using_log_scale_storage:
                q._scale_param_storage.data.log_()


# ----------------------------------------------------------------------------------------------
# the quantizer table

@dataclass(frozen=True)
class QuantizerRow:
    quantizer: str
    kind: str
    layers: list[str]
    ops: list[str]
    stages: list[str]
    bits: Optional[int]
    levels: Optional[int]
    mode: str
    per_channel: bool
    signed: bool
    range_low: float
    range_high: float
    model_input: bool


def quantizer_table(qmodel: nn.Module, plan: PrecisionPlan | None = None,
                    example_input: torch.Tensor | None = None) -> list[QuantizerRow]:
    from nncf.torch.quantization.layers import AsymmetricQuantizer

    sites = quantizer_sites(qmodel, example_input if example_input is not None else _example_input())
    modules = _quantizer_modules(qmodel)
    stage_of = plan.stage_of if plan else layer_stages(qmodel)
    rows = []
    for key, site in sites.items():
        q = modules[key]
        enabled = q.is_enabled_quantization()
        with torch.no_grad():
            if isinstance(q, AsymmetricQuantizer):
                low = q.input_low.detach()
                high = low + q.input_range.detach()
                mode = "asymmetric"
            else:
                scale = q.scale.detach().abs()
                high = scale
                low = -scale if q.signed else torch.zeros_like(scale)
                mode = "symmetric"
        rows.append(QuantizerRow(
            quantizer=key, kind=site.kind, layers=list(site.layers), ops=list(site.ops),
            stages=sorted({stage_of[l] for l in site.layers if l in stage_of}),
            bits=q.num_bits if enabled else None, levels=q.levels if enabled else None, mode=mode,
            per_channel=bool(q.per_channel), signed=bool(q.signed),
            range_low=float(low.min()), range_high=float(high.max()), model_input=site.is_model_input))
    return rows


def table_markdown(rows: list[QuantizerRow]) -> str:
    def short(names: list[str]) -> str:
        return ", ".join(names[:3]) + (f" (+{len(names) - 3})" if len(names) > 3 else "")

    lines = ["| quantizer | kind | layers | stage | bits | mode | per-channel | range |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        target = short(r.layers) if r.layers else short(r.ops)
        if r.model_input:
            target = "model input -> " + target
        lines.append(f"| `{r.quantizer}` | {r.kind} | {target} | {', '.join(r.stages) or '-'} | "
                     f"{bits_name(r.bits)} | {r.mode}{' signed' if r.signed else ''} | {'yes' if r.per_channel else 'no'}"
                     f" | [{r.range_low:.4g}, {r.range_high:.4g}] |")
    return "\n".join(lines)


def layer_bits(rows: list[QuantizerRow]) -> dict[str, LayerPrecision]:
    """What the quantizers really hold, per layer (for checking a plan against a model)."""
    w: dict[str, Optional[int]] = {}
    a: dict[str, Optional[int]] = {}
    for r in rows:
        for layer in r.layers:
            if r.kind == "weight":
                w[layer] = r.bits
            else:
                a[layer] = max(filter(None, [a.get(layer), r.bits]), default=None)
    return {l: LayerPrecision(w.get(l), a.get(l)) for l in set(w) | set(a)}


# ----------------------------------------------------------------------------------------------
# save / restore

@dataclass
class QuantizedCheckpoint:
    model: nn.Module
    plan: Optional[PrecisionPlan]
    arch: str
    args: dict
    meta: dict


def save_quantized(model: nn.Module, path: str | Path, *, arch: str, args: dict | None,
                   plan: PrecisionPlan | None, meta: dict | None = None) -> Path:
    """One file for every stage: arch + args + plan + NNCF config (None for fp32) + state_dict."""
    nncf_config = None
    if plan is not None:
        import nncf.torch

        nncf_config = nncf.torch.get_config(model)
    payload = {"format": FORMAT, "arch": arch, "args": dict(args or {}), "plan": plan.to_dict() if plan else None,
               "nncf_config": _to_plain(nncf_config), "state_dict": model.state_dict(), "meta": _to_plain(meta or {})}
    return atomic_torch_save(Path(path), payload)


def _to_plain(obj: Any) -> Any:
    """Make an object loadable with torch.load(weights_only=True)."""
    if isinstance(obj, dict):
        return {str(k): _to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_to_plain(v) for v in obj]
    if isinstance(obj, enum.Enum):
        return {"__enum__": f"{type(obj).__module__}:{type(obj).__qualname__}", "value": obj.value}
    if isinstance(obj, (str, int, float, bool)) or obj is None or isinstance(obj, torch.Tensor):
        return obj
    if hasattr(obj, "__dataclass_fields__"):
        return _to_plain(asdict(obj))
    return str(obj)


def _from_plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        if set(obj) == {"__enum__", "value"}:
            import importlib

            mod, qual = obj["__enum__"].split(":")
            cls = importlib.import_module(mod)
            for part in qual.split("."):
                cls = getattr(cls, part)
            return cls(obj["value"])
        return {k: _from_plain(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_from_plain(v) for v in obj]
    return obj


def load_quantized(path: str | Path, map_location: str = "cpu") -> QuantizedCheckpoint:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"quantized checkpoint not found: {path}; create one with `mixq quantize CONFIG --out DIR`")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user problem
        raise CheckpointError(f"{path}: not a readable torch checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a mixq-nncf quantized checkpoint (format {FORMAT!r}); plain fp32 "
                              "weights load through the config's model.weights instead")
    model = build_generator(payload["arch"], **payload["args"]).eval()
    plan = PrecisionPlan.from_dict(payload["plan"]) if payload["plan"] else None
    if payload["nncf_config"] is not None:
        import nncf.torch

        model = nncf.torch.load_from_config(model, _from_plain(payload["nncf_config"]))
    missing, unexpected = model.load_state_dict(payload["state_dict"], strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{path}: state does not fit {payload['arch']}: missing {missing[:8]}, "
                              f"unexpected {unexpected[:8]}")
    if payload["nncf_config"] is not None:
        for q in _quantizer_modules(model).values():
            q.set_levels()  # asymmetric quantizers do not recompute levels after load_state_dict
    return QuantizedCheckpoint(model.eval(), plan, payload["arch"], payload["args"], payload.get("meta", {}))


# ----------------------------------------------------------------------------------------------
# from a config

@dataclass
class QuantizeResult:
    fp32_model: nn.Module
    model: nn.Module
    plan: Optional[PrecisionPlan]


def quantize_from_config(cfg: Config, *, calibration: list[torch.Tensor] | None = None,
                         fp32_model: nn.Module | None = None) -> QuantizeResult:
    from .models import load_generator

    fp32 = fp32_model if fp32_model is not None else load_generator(cfg.model.arch, cfg.model.args, cfg.model.weights)
    if cfg.compression is None:
        return QuantizeResult(fp32, fp32, None)
    plan = resolve_plan(fp32, cfg.compression, tuple(cfg.input_info.range))
    if calibration is None:
        from .data import calibration_inputs

        calibration = calibration_inputs(cfg.data.calibration or cfg.data.train, cfg.data.calibration_samples,
                                         cfg.data.calibration_patch, int(fp32.scale), cfg.data.seed)
    model = quantize(fp32, plan, calibration, compression=cfg.compression, input_range=tuple(cfg.input_info.range))
    return QuantizeResult(fp32, model, plan)


def plan_summary(plan: PrecisionPlan | None) -> dict:
    return {"fp32": True} if plan is None else {"counts": plan.counts(), "layers": len(plan.layers)}


__all__ = ["LayerPrecision", "PrecisionPlan", "resolve_plan", "quantize", "apply_plan", "quantizer_table",
           "table_markdown", "save_quantized", "load_quantized", "QuantizedCheckpoint", "quantize_from_config",
           "QuantizeResult", "QuantizerRow", "match_scope", "quantizer_sites", "layer_bits", "to_dict"]


def is_quantized(model: nn.Module) -> bool:
    try:
        return bool(_quantizer_modules(model))
    except Exception:  # noqa: BLE001 - a plain torch model has no hook storage
        return False


def input_range_problems(qmodel: nn.Module, lo: float = 0.0, hi: float = 1.0,
                         example_input: torch.Tensor | None = None) -> list[str]:
    """Quantizers on the image input whose range is narrower than what images in [lo, hi] produce there.
    Torch clamps to that range but OpenVINO drops 16-bit FakeQuantize, so such a model cannot match its IR."""
    if not is_quantized(qmodel):
        return []
    example = example_input if example_input is not None else _example_input()
    rows = [r for r in quantizer_table(qmodel, None, example) if r.model_input and r.bits is not None]
    if not rows:
        return []
    modules = _quantizer_modules(qmodel)
    extremes = _input_extremes(qmodel, [modules[r.quantizer] for r in rows], example, lo, hi)
    problems = []
    for r, (need_lo, need_hi) in zip(rows, extremes):
        slack = 1e-4 * max(1.0, abs(need_hi - need_lo))
        if r.range_low > need_lo + slack or r.range_high < need_hi - slack:
            problems.append(f"input quantizer {r.quantizer} ({r.bits} bits) covers [{r.range_low:.4g}, "
                            f"{r.range_high:.4g}] but images in [{lo}, {hi}] reach [{need_lo:.4g}, {need_hi:.4g}]; "
                            "re-quantize with mixq (it pins this range) or fix input_info.range")
    return problems
