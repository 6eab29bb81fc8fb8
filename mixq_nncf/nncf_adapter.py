"""The one module that touches NNCF 3.4 internals: where quantizers sit, setting their bits, pinning input ranges.

NNCF 3.x has no per-layer bit width API. After nncf.quantize the quantizers live in the model's hook storage;
the NNCF graph tells which conv layer (weight pre-hook, port 1) and which ops (activation quantizers feeding
port 0, possibly through pixel_shuffle / concat / interpolate) each one serves. Setting ``num_bits`` changes
a quantizer's levels; its stored scale is the calibrated range, so no re-calibration is needed.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Optional

import torch
from torch import nn

from .config import bits_name
from .models import conv_layers
from .plan import PrecisionPlan


@dataclass(frozen=True)
class QuantizerSite:
    key: str  # hook storage path, e.g. "pre_hooks.conv_first/conv2d/0__1.0"
    kind: str  # weight | activation
    layers: tuple[str, ...]  # conv layers served
    ops: tuple[str, ...]  # every consumer op (convs, adds, interpolate ...)
    is_model_input: bool = False


@dataclass
class ApplyResult:
    """What apply_plan did: the sites it used and the layers whose wish a shared quantizer overruled."""
    sites: dict[str, QuantizerSite]
    conflicts: list[str] = field(default_factory=list)


_TRANSPARENT = {"cat", "pixel_shuffle", "pixel_unshuffle", "interpolate", "reshape", "view", "flatten", "permute",
                "contiguous", "max_pool2d", "avg_pool2d", "__getitem__", "chunk", "split", "clone", "dropout"}
_INPUT_AFFINE = {"sub", "mul", "add", "div", "__sub__", "__mul__", "__add__", "__truediv__", "rsub"}


def example_input(size: int = 16) -> torch.Tensor:
    return torch.rand(1, 3, size, size)


def hook_storage(qmodel: nn.Module) -> nn.Module:
    from nncf.torch.function_hook.wrapper import get_hook_storage

    return get_hook_storage(qmodel)


def quantizer_modules(qmodel: nn.Module) -> dict[str, nn.Module]:
    """Hook key -> quantizer module (a quantizer shared by several hooks appears under each key)."""
    from nncf.torch.quantization.layers import BaseQuantizer

    return {n: m for n, m in hook_storage(qmodel).named_modules(remove_duplicate=False)
            if isinstance(m, BaseQuantizer)}


def is_quantized(model: nn.Module) -> bool:
    try:
        return bool(quantizer_modules(model))
    except Exception:  # noqa: BLE001 - a plain torch model has no hook storage
        return False


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


def quantizer_sites(qmodel: nn.Module, example: torch.Tensor | None = None) -> dict[str, QuantizerSite]:
    """Map every quantizer to the layers and ops it serves, from the NNCF graph (one trace of the model).

    The result depends only on the architecture and where NNCF put quantizers, so it can be computed once per
    calibration and passed to apply_plan for every candidate plan."""
    from nncf.torch.function_hook.nncf_graph.nncf_graph_builder import build_nncf_graph

    graph = build_nncf_graph(qmodel, example if example is not None else example_input())
    modules = quantizer_modules(qmodel)
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


def set_bits(q: nn.Module, bits: int) -> None:
    q.num_bits = bits
    q._qspec.num_bits = bits  # get_config/load_from_config read the spec
    q.set_levels()


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
    modules = quantizer_modules(qmodel)
    conflicts: list[str] = []
    for key, site in sites.items():
        q = modules[key]
        wanted = {}
        for layer in site.layers:
            p = plan.layers.get(layer)
            if p is not None:
                wanted[layer] = p.weight_bits if site.kind == "weight" else p.act_bits
        quantized = [b for b in wanted.values() if b is not None]
        if wanted and not quantized and len(site.ops) == len(site.layers):
            q.disable_quantization()
            continue
        if not q.is_enabled_quantization():
            q.enable_quantization()
        bits = max(quantized) if quantized else 8
        for layer, b in wanted.items():
            if b is None:
                conflicts.append(f"{layer}: asked for an fp32 {site.kind} input, but quantizer {key} is shared with "
                                 f"{', '.join(l for l, v in wanted.items() if v is not None) or 'other ops'} "
                                 f"and stays {bits_name(bits)}")
        if q.num_bits != bits:
            set_bits(q, bits)
    if plan.adds:
        apply_skip_bits(qmodel, plan, sites)
    lo, hi = input_range or plan.input_range
    inputs = [modules[k] for k, site in sites.items() if site.is_model_input]
    if inputs:
        ex = example if example is not None else example_input()
        for q, (q_lo, q_hi) in zip(inputs, input_extremes(qmodel, inputs, ex, lo, hi)):
            pin_input_range(q, q_lo, q_hi)
    return ApplyResult(sites, conflicts)


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


@dataclass(frozen=True)
class QuantizerState:
    """A quantizer's settings as plain values (for the table and for checks)."""
    enabled: bool
    bits: Optional[int]
    levels: Optional[int]
    mode: str
    per_channel: bool
    signed: bool
    range_low: float
    range_high: float


def quantizer_state(q: nn.Module) -> QuantizerState:
    from nncf.torch.quantization.layers import AsymmetricQuantizer

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
    return QuantizerState(enabled, q.num_bits if enabled else None, q.levels if enabled else None, mode,
                          bool(q.per_channel), bool(q.signed), float(low.min()), float(high.max()))


def refresh_levels(qmodel: nn.Module) -> None:
    """Asymmetric quantizers do not recompute their levels after load_state_dict."""
    for q in quantizer_modules(qmodel).values():
        q.set_levels()


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


# ----------------------------------------------------------------------------------------------
# fully quantized mode (FQSR): quantizers on the inputs of additions, concatenations and the upsampling path

_ADD_OPS = {"add", "__add__", "__iadd__", "add_", "__radd__", "sub", "__sub__", "__rsub__"}
_DATA_MOVE_OPS = {"cat", "interpolate", "pixel_shuffle"}


@dataclass(frozen=True)
class TensorInput:
    """One tensor input of an addition / concat / upsampling op and the quantizer right before it (None: fp32)."""
    op: str  # NNCF graph node, e.g. 'body/0/add/0'
    op_type: str
    port: int
    producer: str
    quantizer: Optional[str]  # canonical hook key


def skip_inputs(qmodel: nn.Module, example: torch.Tensor | None = None) -> list[TensorInput]:
    """Every tensor input of an addition of two tensors (residual, long skip, output skip) and of every concat,
    interpolate and pixel_shuffle, with the quantizer feeding it. Additions of a constant (EDSR's mean shift,
    RRDBNet's 0.2 residual scaling as a mul) are affine maps, not skips, and are left out."""
    from nncf.torch.function_hook.nncf_graph.nncf_graph_builder import build_nncf_graph

    graph = build_nncf_graph(qmodel, example if example is not None else example_input())
    modules = quantizer_modules(qmodel)
    canonical = _canonical_keys(modules)
    keys = list(modules)
    out = []
    for node in graph.get_all_nodes():
        if node.node_type not in _ADD_OPS | _DATA_MOVE_OPS:
            continue
        edges = [e for e in graph.get_input_edges(node) if e.from_node.node_type != "nncf_model_const"]
        if node.node_type in _ADD_OPS and len(edges) < 2:
            continue
        for e in sorted(edges, key=lambda e: e.input_port_id):
            src = e.from_node
            key = _node_to_key(src.node_name, keys) if src.node_type.endswith("quantize") else None
            out.append(TensorInput(node.node_name, node.node_type, e.input_port_id, src.node_name,
                                   canonical[key] if key else None))
    return out


def plan_with_skips(qmodel: nn.Module, plan: PrecisionPlan, bits: int,
                    example: torch.Tensor | None = None) -> PrecisionPlan:
    """The plan with ``adds`` naming every addition of two tensors at ``bits`` (their input quantizers are then set
    by apply_plan). Raises when an input of an addition, concat or upsampling op has no quantizer: the fully
    quantized mode promises that none stays fp32.

    NNCF 3.4's CPU hardware config already puts quantizers on both inputs of every tensor addition, on concat
    inputs (one shared scale) and before interpolate / pixel_shuffle, so this finds them rather than adding any."""
    from dataclasses import replace

    from .errors import MixqError

    inputs = skip_inputs(qmodel, example)
    missing = [f"{t.op} input {t.port} (from {t.producer})" for t in inputs if t.quantizer is None]
    if missing:
        raise MixqError(f"fully quantized mode: {len(missing)} skip/upsampling inputs have no quantizer, e.g. "
                        f"{missing[0]}; NNCF did not place one there (check compression.preset and that no scope is "
                        "ignored)")
    adds = {t.op: bits for t in inputs if t.op_type in _ADD_OPS}
    return replace(plan, adds=adds)


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


def interval_parameters(qmodel: nn.Module) -> dict[str, nn.Parameter]:
    """The quantizer intervals QAT learns: NNCF stores a symmetric quantizer's scale and an asymmetric one's
    input_low / input_range as nn.Parameters (requires_grad=True) whose gradients come from NNCF's fake-quantize
    backward (LSQ-style, straight-through inside the range); model.parameters() includes them, so the
    training optimizer updates them with the weights."""
    out = {}
    for key, q in quantizer_modules(qmodel).items():
        for name, p in q.named_parameters(recurse=False):
            if p.requires_grad and p.dtype.is_floating_point:
                out[f"{key}.{name}"] = p
    return out


class QuantErrorProbe:
    """FQSR's quantization-aware calibration term: forward hooks on every enabled quantizer record
    mean |q(x) - x| of its input; ``take()`` returns their mean since the last call (a differentiable tensor).

    Gradients reach the intervals through NNCF's fake-quantize backward, so minimizing this term alone moves the
    scales toward the rounding / clipping trade-off of each tensor."""

    def __init__(self, qmodel: nn.Module):
        self._errors: list[torch.Tensor] = []
        self._handles = []
        seen: set[int] = set()
        for q in quantizer_modules(qmodel).values():
            if id(q) in seen:
                continue
            seen.add(id(q))
            self._handles.append(q.register_forward_hook(self._hook))

    def _hook(self, module, args, output):
        if module.is_enabled_quantization() and torch.is_tensor(output) and output.is_floating_point():
            self._errors.append((output - args[0]).abs().mean())

    def take(self) -> torch.Tensor:
        errors, self._errors = self._errors, []
        if not errors:
            return torch.zeros(())
        return torch.stack(errors).mean()

    def close(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []


def force_signed(qmodel: nn.Module, *, weights: bool = False, activations: bool = False) -> int:
    """NNCF 2.x ``signed: true``: symmetric quantizers of the chosen kind take signed levels even where the
    calibration saw one sign only (the range stays [-scale, scale]). NNCF 3.4's PTQ rejects signedness_to_force
    against its hardware config, so it is set after quantization; returns how many quantizers changed."""
    from nncf.torch.quantization.layers import SymmetricQuantizer

    changed = 0
    for key, q in quantizer_modules(qmodel).items():
        is_weight = key.startswith("pre_hooks") and key.endswith("__1.0")
        if (weights if is_weight else activations) and isinstance(q, SymmetricQuantizer) and not q.signed:
            q.signed = True
            q._qspec.signedness_to_force = True
            changed += 1
    return changed


def _channel_dims(w: torch.Tensor, scale_shape: tuple[int, ...]) -> tuple[int, ...]:
    """The dims of ``w`` one scale value covers (all of them for a per-tensor quantizer)."""
    if len(scale_shape) != w.dim():
        return tuple(range(w.dim()))
    return tuple(d for d in range(w.dim()) if scale_shape[d] == 1)


def _write_range(q: nn.Module, low: torch.Tensor, high: torch.Tensor) -> None:
    """Store a range in a quantizer's own parameters (symmetric: scale = high; asymmetric: low and width)."""
    from nncf.torch.quantization.layers import AsymmetricQuantizer

    with torch.no_grad():
        if isinstance(q, AsymmetricQuantizer):
            q.input_low.data.copy_(low.reshape(q.input_low.shape))
            width = (high - low).reshape(q._input_range_param_storage.shape)
            q._input_range_param_storage.data.copy_(width.log() if q.is_using_log_scale_storage else width)
        else:
            scale = high.reshape(q._scale_param_storage.shape)
            q._scale_param_storage.data.copy_(scale.log() if q.is_using_log_scale_storage else scale)


def _input_moments(conv: nn.Module, x: torch.Tensor, max_cols: int = 16384) -> Optional[torch.Tensor]:
    """E[p p^T] over the conv's input patches p (one column of unfold per output pixel), or None where the conv
    is not a plain 2-D one. A weight error dW then costs dW H dW^T in output squared error, per output channel."""
    if not isinstance(conv, nn.Conv2d) or conv.groups != 1 or isinstance(conv.padding, str):
        return None
    cols = torch.nn.functional.unfold(x.float(), conv.kernel_size, dilation=conv.dilation, padding=conv.padding,
                                      stride=conv.stride)  # N, C*k*k, L
    cols = cols.transpose(0, 1).reshape(cols.shape[1], -1)
    if cols.shape[1] > max_cols:
        g = torch.Generator().manual_seed(0)
        cols = cols[:, torch.randperm(cols.shape[1], generator=g)[:max_cols]]
    return cols @ cols.T / cols.shape[1]


def _fit_one(q: nn.Module, w: torch.Tensor, ratios: list[float], moments: Optional[torch.Tensor]) -> torch.Tensor:
    """Write the best per-channel clipping ratio of one weight quantizer; returns the ratios chosen."""
    from nncf.torch.quantization.layers import AsymmetricQuantizer

    asym = isinstance(q, AsymmetricQuantizer)
    shape = tuple((q.input_low if asym else q.scale).shape)
    dims = _channel_dims(w, shape)
    w_min, w_max = w.amin(dim=dims, keepdim=True), w.amax(dim=dims, keepdim=True)
    if asym:
        base_low, base_high = w_min, w_max
    else:
        base_high = torch.maximum(w_max.abs(), w_min.abs())
        base_low = -base_high
    base_high = torch.where(base_high > base_low, base_high, base_low + 1e-8)
    per_out = moments is not None and dims == tuple(range(1, w.dim()))
    best_err = torch.full_like(base_high, float("inf"))
    best_ratio = torch.ones_like(base_high)
    for r in ratios:
        _write_range(q, base_low * r, base_high * r)
        dw = q(w) - w
        if per_out:
            flat = dw.reshape(dw.shape[0], -1)
            err = ((flat @ moments) * flat).sum(dim=1).reshape(best_err.shape)
        else:
            err = dw.pow(2).sum(dim=dims, keepdim=True)
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best_ratio = torch.where(better, torch.full_like(best_ratio, r), best_ratio)
    _write_range(q, base_low * best_ratio, base_high * best_ratio)
    return best_ratio


def fit_weight_ranges(qmodel: nn.Module, sites: dict[str, QuantizerSite], *, max_bits: Optional[int] = None,
                      examples: Optional[list[torch.Tensor]] = None,
                      ratios: Optional[list[float]] = None) -> dict[str, float]:
    """Per output channel, the weight clipping range with the least quantization error.

    Min-max ranges clip nothing: at 4 bits a single outlier weight then leaves most of a channel on two or three of
    its 16 levels. For every enabled per-layer weight quantizer (with at most ``max_bits`` bits, all when None) this
    tries ranges ``ratio * [min, max]`` of each channel's weights through the quantizer itself (any bit width, mode
    and narrow-range setting is honoured) and keeps each channel's best ratio; ratio 1 (min-max) is a candidate,
    so no channel gets worse by the measure used. With ``examples`` (model inputs) the measure is the conv's
    output squared error on them (weight error weighted by the second moments of the conv's real input patches,
    fitted layer by layer in one forward, each layer seeing the already fitted ones before it); without, the
    weights' squared error. Squared weight error alone can make the output worse: clipping shrinks a channel's
    largest weights together, an error smooth image content does not average out. Returns quantizer key -> mean
    chosen ratio."""
    if ratios is None:
        ratios = [round(0.2 + 0.01 * i, 2) for i in range(81)]  # 0.20 .. 1.00
    if 1.0 not in ratios:
        ratios = list(ratios) + [1.0]
    modules = quantizer_modules(qmodel)
    todo: dict[str, tuple[nn.Module, nn.Module]] = {}  # layer -> (conv module, quantizer)
    keys: dict[str, str] = {}
    seen: set[int] = set()
    for key, site in sites.items():
        q = modules.get(key)
        if site.kind != "weight" or len(site.layers) != 1 or q is None or id(q) in seen:
            continue
        if not q.is_enabled_quantization() or (max_bits is not None and q.num_bits > max_bits):
            continue
        conv = qmodel.get_submodule(site.layers[0])
        if not isinstance(getattr(conv, "weight", None), torch.Tensor):
            continue
        seen.add(id(q))
        todo[site.layers[0]] = (conv, q)
        keys[site.layers[0]] = key
    fitted: dict[str, float] = {}

    def fit(layer: str, moments: Optional[torch.Tensor]) -> None:
        conv, q = todo[layer]
        with torch.no_grad():
            fitted[keys[layer]] = float(_fit_one(q, conv.weight.detach().float(), ratios, moments).mean())

    if examples:
        handles = []
        for layer, (conv, _q) in todo.items():
            def hook(_m, args, layer=layer, conv=conv):
                if keys[layer] not in fitted:
                    fit(layer, _input_moments(conv, args[0].detach()))
            handles.append(conv.register_forward_pre_hook(hook))
        try:
            with torch.no_grad():
                qmodel(torch.cat([e[:1] for e in examples[:4] if e.shape[1:] == examples[0].shape[1:]]))
        finally:
            for h in handles:
                h.remove()
    for layer in todo:
        if keys[layer] not in fitted:
            fit(layer, None)
    return fitted
