"""What the CPU really runs: per-layer precision from the compiled model's runtime graph.

OpenVINO's CPU plugin drops every 65536-level (16-bit) FakeQuantize at compile time, so a layer quantized to
16 bits runs as an fp32 convolution. This module reads the truth from compiled_model.get_runtime_model().
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

INT16_NOTE = ("16-bit layers run as fp32 on the OpenVINO CPU plugin (it removes 65536-level FakeQuantize ops "
              "when compiling), so they cost fp32 time.")
_OPS = {"Convolution": "conv", "Eltwise": "eltwise", "DepthToSpace": "pixel_shuffle", "Interpolate": "interpolate",
        "Concatenation": "concat"}


@dataclass
class RuntimeOp:
    name: str
    layer_type: str
    precision: str
    primitive: str
    original: list[str]
    module: str


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


def _module_name(original: list[str]) -> str:
    """'__module.body.0.conv1/aten::_convolution/Convolution' -> 'body.0.conv1'."""
    for name in original:
        m = re.search(r"__module\.([\w.]+?)/aten::_?convolution", name)
        if m:
            return m.group(1)
    return original[0] if original else ""


def _is_int8(precision: str, primitive: str) -> bool:
    return precision.lower() in ("i8", "u8") or "_i8" in primitive.lower() or "int8" in primitive.lower()


def audit_runtime(xml_path: str | Path, input_shape: tuple = (1, 3, 64, 64), config: dict | None = None) -> PrecisionAudit:
    from .export import compile_ir

    compiled = compile_ir(xml_path, shape=input_shape, config=config)
    ops = []
    for op in compiled.get_runtime_model().get_ordered_ops():
        rt = op.get_rt_info()

        def get(key: str) -> str:
            return str(rt[key].astype(str)) if key in rt else ""

        layer_type = get("layerType")
        if layer_type not in _OPS:
            continue
        original = [s for s in get("originalLayersNames").split(",") if s]
        ops.append(RuntimeOp(op.get_friendly_name(), layer_type, get("runtimePrecision"), get("primitiveType"),
                             original, _module_name(original) if layer_type == "Convolution" else ""))
    convs = [o for o in ops if o.layer_type == "Convolution"]
    int8 = [o.module for o in convs if _is_int8(o.precision, o.primitive)]
    fp32 = [o.module for o in convs if not _is_int8(o.precision, o.primitive) and o.precision.lower() in ("f32", "fp32")]
    by_type: dict[str, dict[str, int]] = {}
    for o in ops:
        entry = by_type.setdefault(_OPS[o.layer_type], {})
        entry[o.precision or "?"] = entry.get(o.precision or "?", 0) + 1
    return PrecisionAudit(len(int8), len(fp32), len(convs) - len(int8) - len(fp32), int8, fp32, by_type, ops)


def audit_markdown(audit: PrecisionAudit) -> str:
    lines = [f"Convolutions at runtime: {audit.conv_int8} int8, {audit.conv_fp32} fp32"
             + (f", {audit.conv_other} other" if audit.conv_other else "") + ".", ""]
    if audit.fp32_convs:
        shown = ", ".join(audit.fp32_convs[:12]) + (" ..." if len(audit.fp32_convs) > 12 else "")
        lines += [f"fp32 convolutions: {shown}", ""]
    lines += ["| op | " + " | ".join(["precision: count"]) + " |", "|---|---|"]
    for kind, counts in audit.by_type.items():
        lines.append(f"| {kind} | " + ", ".join(f"{p}: {n}" for p, n in counts.items()) + " |")
    lines += ["", audit.note]
    return "\n".join(lines)


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

    from .export import compile_ir

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
