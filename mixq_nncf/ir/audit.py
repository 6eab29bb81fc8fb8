"""What the CPU really runs: per-layer precision from the compiled model's runtime graph.

OpenVINO's CPU plugin drops every 65536-level (16-bit) FakeQuantize at compile time, so a layer quantized to
16 bits runs as an fp32 convolution. This module reads the truth from compiled_model.get_runtime_model().
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from mixq_nncf.ir.kernels import KernelGroup, kernel_groups, kernel_summary, precision_kind
from mixq_nncf.ir.precision import LayerCheck, check_layers

INT16_NOTE = ("16-bit layers run as fp32 on the OpenVINO CPU plugin (it removes 65536-level FakeQuantize ops "
              "when compiling), so they cost fp32 time.")
_OPS = {"Convolution": "conv", "Eltwise": "eltwise", "DepthToSpace": "pixel_shuffle", "Interpolate": "interpolate",
        "Concatenation": "concat", "Subgraph": "fused_eltwise"}


@dataclass
class RuntimeOp:
    name: str
    layer_type: str
    precision: str
    primitive: str
    original: list[str]
    module: str


@dataclass
class AddInput:
    """One input of a runtime addition. kind: 'int8' (an i8/u8 tensor), 'int8_grid' (an f32 tensor whose producer
    applies the input's FakeQuantize as a fused post-op, or a Reorder made from an i8/u8 tensor, so its values lie
    on the 8-bit grid), 'fp32' (nothing rounded it: an unquantized skip)."""
    add: str  # the addition's original name, e.g. '__module.body.0/aten::add/Add'
    where: str  # eltwise | fused_into_conv (the conv adds it as a sum post-op)
    precision: str
    kind: str
    producer: str


@dataclass
class PrecisionAudit:
    conv_int8: int
    conv_fp32: int
    conv_other: int
    int8_convs: list[str]
    fp32_convs: list[str]
    by_type: dict[str, dict[str, int]]
    ops: list[RuntimeOp] = field(default_factory=list)
    note: str = INT16_NOTE
    # precision changes between ops: 'Reorder u8->f32' -> count (Reorder / Convert nodes)
    conversions: dict[str, int] = field(default_factory=dict)
    precision_conversions: int = 0  # Reorder / Convert nodes whose input and output precisions differ
    add_inputs: list[AddInput] = field(default_factory=list)
    adds: int = 0  # additions of two tensors at runtime (Eltwise adds + sums fused into convolutions)
    add_inputs_int8: int = 0
    add_inputs_int8_grid: int = 0
    add_inputs_fp32: int = 0
    add_note: str = ""
    hint: Optional[str] = None  # the compile's INFERENCE_PRECISION_HINT; None = the plugin's default
    default_precision: str = ""  # what the plugin's default is on this CPU (bf16 or f32)
    conv_bf16: int = 0
    kernels: list[KernelGroup] = field(default_factory=list)  # convolutions grouped by ISA, precision, kernel
    kernel_text: str = ""  # e.g. "348 conv AMX int8 (brgconv_avx512_amx_i8), 3 conv AVX-512 f32 (...)"
    marked_f32: list[str] = field(default_factory=list)  # convs read back with the per-layer f32 mark
    layers: list[LayerCheck] = field(default_factory=list)  # requested vs what ran, one row per conv
    mismatches: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def module_name(original: list[str]) -> str:
    """'__module.body.0.conv1/aten::_convolution/Convolution' -> 'body.0.conv1'."""
    for name in original:
        m = re.search(r"__module\.([\w.]+?)/aten::_?convolution", name)
        if m:
            return m.group(1)
    return original[0] if original else ""


_module_name = module_name


def _is_int8(precision: str, primitive: str) -> bool:
    return precision.lower() in ("i8", "u8") or "_i8" in primitive.lower() or "int8" in primitive.lower()


def audit_runtime(xml_path: str | Path, input_shape: tuple = (1, 3, 64, 64), config: dict | None = None, *,
                  precision: str = "auto", requested: Optional[dict[str, str]] = None) -> PrecisionAudit:
    """What each layer runs once compiled as deployed (precision "auto"; "default" = no hint, or a hint).
    requested: conv module name -> "int8" / "bf16" / "f32" (ir.precision.requested_precisions builds it from a
    plan); each conv is then checked against what this CPU should run for it, mismatches listed."""
    from mixq_nncf.cpu import has_bf16
    from mixq_nncf.ir.export import compile_ir, precision_config, read_ir
    from mixq_nncf.ir.precision import marked_in_model

    hint = {**precision_config(xml_path, precision), **(config or {})}.get("INFERENCE_PRECISION_HINT")
    compiled = compile_ir(xml_path, shape=input_shape, config=config, precision=precision)
    ops = []
    for op in compiled.get_runtime_model().get_ordered_ops():
        layer_type = _rt(op, "layerType")
        if layer_type not in _OPS:
            continue
        original = [s for s in _rt(op, "originalLayersNames").split(",") if s]
        ops.append(RuntimeOp(op.get_friendly_name(), layer_type, _rt(op, "runtimePrecision"),
                             _rt(op, "primitiveType"), original,
                             _module_name(original) if layer_type == "Convolution" else ""))
    convs = [o for o in ops if o.layer_type == "Convolution"]
    int8 = [o.module for o in convs if _is_int8(o.precision, o.primitive)]
    fp32 = [o.module for o in convs if not _is_int8(o.precision, o.primitive) and o.precision.lower() in ("f32", "fp32")]
    by_type: dict[str, dict[str, int]] = {}
    for o in ops:
        entry = by_type.setdefault(_OPS[o.layer_type], {})
        entry[o.precision or "?"] = entry.get(o.precision or "?", 0) + 1
    audit = PrecisionAudit(len(int8), len(fp32), len(convs) - len(int8) - len(fp32), int8, fp32, by_type, ops)
    audit.conv_bf16 = sum(o.precision.lower() == "bf16" for o in convs)
    audit.hint = hint
    audit.default_precision = "bf16" if has_bf16() else "f32"
    audit.kernels = kernel_groups([(o.precision, o.primitive) for o in convs])
    audit.kernel_text = kernel_summary(audit.kernels)
    audit.marked_f32 = marked_in_model(read_ir(xml_path))
    if requested is not None:
        ran = {o.module: (precision_kind(o.precision, o.primitive), o.primitive) for o in convs}
        audit.layers = check_layers(requested, ran, hint=hint, marked=audit.marked_f32, bf16_cpu=has_bf16())
        audit.mismatches = [f"{r.module}: {r.requested} requested, {r.expected} expected on this CPU, runs {r.ran}"
                            + (f" ({r.note})" if r.note else "") for r in audit.layers if r.mismatch]
        audit.notes = sorted({r.note for r in audit.layers if r.note and not r.mismatch})
    _audit_adds_and_conversions(compiled.get_runtime_model(), audit)
    return audit


ADD_NOTE = ("Additions: OpenVINO's low-precision transformations keep one input of an Eltwise add in u8/i8 and hand "
            "it the other as f32 whose values the producing int8 conv already rounded to the 8-bit grid (its "
            "FakeQuantize runs as a fused post-op); an addition right before a conv is fused into it as a sum "
            "post-op that reads u8/i8, or f32 converted from u8 by a Reorder when the conv's output is f32.")


def _rt(op, key: str) -> str:
    rt = op.get_rt_info()
    return str(rt[key].astype(str)) if key in rt else ""


def _is_low(precision: str) -> bool:
    return precision.lower() in ("i8", "u8", "i4", "u4")


def _audit_adds_and_conversions(runtime_model, audit: PrecisionAudit) -> None:
    """Fill the conversion counts and classify every input of every runtime addition."""
    for op in runtime_model.get_ordered_ops():
        layer_type = _rt(op, "layerType")
        if layer_type in ("Reorder", "Convert"):
            src = op.input(0).get_element_type().get_type_name() if op.get_input_size() else "?"
            dst = op.get_output_element_type(0).get_type_name()
            key = f"{layer_type} {src}->{dst}"
            audit.conversions[key] = audit.conversions.get(key, 0) + 1
            audit.precision_conversions += src != dst
            continue
        names = [n for n in _rt(op, "originalLayersNames").split(",") if n]
        add_names = [n for n in names if re.search(r"aten::add/Add", n)]
        if not add_names:
            continue
        if layer_type == "Eltwise" and names[0] in add_names:
            where, ports = "eltwise", range(op.get_input_size())
        elif layer_type == "Convolution" and op.get_input_size() > 3:
            where, ports = "fused_into_conv", range(3, op.get_input_size())
        else:
            continue  # e.g. a constant added into a conv's bias
        audit.adds += 1
        for port in ports:
            precision = op.input(port).get_element_type().get_type_name()
            producer = op.input(port).get_source_output().get_node()
            from_low = False
            while _rt(producer, "layerType") == "Reorder" and producer.get_input_size():
                from_low = from_low or _is_low(producer.input(0).get_element_type().get_type_name())
                producer = producer.input(0).get_source_output().get_node()
            fused_fq = any("FakeQuantize" in n for n in _rt(producer, "originalLayersNames").split(","))
            kind = "int8" if _is_low(precision) else ("int8_grid" if fused_fq or from_low else "fp32")
            audit.add_inputs.append(AddInput(add_names[0], where, precision, kind, producer.get_friendly_name()))
    audit.add_inputs_int8 = sum(a.kind == "int8" for a in audit.add_inputs)
    audit.add_inputs_int8_grid = sum(a.kind == "int8_grid" for a in audit.add_inputs)
    audit.add_inputs_fp32 = sum(a.kind == "fp32" for a in audit.add_inputs)
    audit.add_note = ADD_NOTE if audit.adds else ""


def audit_markdown(audit: PrecisionAudit) -> str:
    lines = [f"Convolutions at runtime: {audit.conv_int8} int8, {audit.conv_fp32} fp32"
             + (f", {audit.conv_bf16} bf16" if audit.conv_bf16 else "")
             + (f", {audit.conv_other - audit.conv_bf16} other" if audit.conv_other > audit.conv_bf16 else "") + ".",
             ""]
    if audit.kernel_text:
        hint = f"INFERENCE_PRECISION_HINT={audit.hint}" if audit.hint else \
            f"no precision hint (the plugin's default on this CPU: {audit.default_precision or '?'})"
        lines += [f"Kernels ({hint}): {audit.kernel_text}.", ""]
    lines += _layer_check_lines(audit)
    if audit.fp32_convs:
        shown = ", ".join(audit.fp32_convs[:12]) + (" ..." if len(audit.fp32_convs) > 12 else "")
        lines += [f"fp32 convolutions: {shown}", ""]
    lines += ["| op | " + " | ".join(["precision: count"]) + " |", "|---|---|"]
    for kind, counts in audit.by_type.items():
        lines.append(f"| {kind} | " + ", ".join(f"{p}: {n}" for p, n in counts.items()) + " |")
    if audit.adds:
        lines += ["", f"Additions at runtime: {audit.adds}; their inputs: {audit.add_inputs_int8} int8, "
                  f"{audit.add_inputs_int8_grid} f32 on the 8-bit grid, {audit.add_inputs_fp32} fp32."]
    if audit.conversions:
        lines += ["", f"Precision conversions (Reorder/Convert between precisions): {audit.precision_conversions} "
                  "(" + ", ".join(f"{k}: {n}" for k, n in sorted(audit.conversions.items())) + ")."]
    lines += ["", audit.note] + ([audit.add_note] if audit.add_note else [])
    return "\n".join(lines)


def _layer_check_lines(audit: PrecisionAudit) -> list[str]:
    if not audit.layers:
        return []
    lines = [f"Requested vs run ({len(audit.marked_f32)} convs carry the per-layer f32 mark; "
             f"{len(audit.mismatches)} mismatches):", "", "| conv | requested | expected here | runs | kernel | note |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r.module} | {r.requested} | {r.expected} | {r.ran} | {r.kernel} | {r.note} |" for r in audit.layers]
    lines.append("")
    if audit.mismatches:
        lines += ["Mismatches: " + "; ".join(audit.mismatches) + ".", ""]
    return lines


@dataclass
class LayerTimeShares:
    total_ms: float
    int8_ms: float
    fp32_ms: float
    other_ms: float
    fp32_share: float
    fp32_layers_ms: dict[str, float]


def layer_time_shares(xml_path: str | Path, input_shape: tuple = (1, 3, 64, 64), runs: int = 10) -> LayerTimeShares:
    """Per-layer time from OpenVINO's performance counters: how much goes to convs that run fp32."""
    import numpy as np

    from mixq_nncf.ir.export import compile_ir

    compiled = compile_ir(xml_path, shape=input_shape, config={"PERF_COUNT": "YES"})
    request = compiled.create_infer_request()
    x = np.random.rand(*input_shape).astype(np.float32)
    totals: dict[tuple[str, str, str], float] = {}
    for _ in range(runs + 2):
        request.infer({0: x})
    for _ in range(runs):
        request.infer({0: x})
        for info in request.get_profiling_info():
            key = (info.node_name, info.node_type, info.exec_type)
            totals[key] = totals.get(key, 0.0) + info.real_time.total_seconds() * 1e3 / runs
    int8 = fp32 = other = 0.0
    fp32_layers: dict[str, float] = {}
    for (name, node_type, exec_type), ms in totals.items():
        if node_type == "Convolution" and ("I8" in exec_type or "i8" in exec_type.lower()):
            int8 += ms
        elif node_type == "Convolution" and "f32" in exec_type.lower():
            fp32 += ms
            fp32_layers[_module_name([name])] = round(ms, 3)
        else:
            other += ms
    total = int8 + fp32 + other
    return LayerTimeShares(total, int8, fp32, other, fp32 / total if total else 0.0, fp32_layers)
