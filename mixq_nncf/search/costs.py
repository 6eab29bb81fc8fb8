"""What keeping a layer high costs on the CPU, measured on real OpenVINO IRs at the user's input size.

Per-layer time comes from OpenVINO's performance counters of an all-int8 and an all-fp32 IR, and of the fp32 IR
compiled with the bf16 hint where the CPU has bf16 units (elsewhere bf16 runs f32, so its time is the f32 time and
is not measured twice); the precision-boundary nodes (Reorder / Convert) a mixed model adds are measured on the paper-recipe IR and shared
out per layer by the elements crossing them; the counters are scaled to the interleaved wall-clock median; size
is the IR's bytes. A bf16 layer is stored unquantized in the IR (f32 constants, converted to bf16 when compiled),
so it adds 3 bytes per weight over int8 to the .bin a size budget is checked on.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch import nn

from mixq_nncf.config.plan import PrecisionPlan
from mixq_nncf.cpu import has_bf16
from mixq_nncf.ir.audit import audit_runtime, module_name
from mixq_nncf.ir.bench import Target, benchmark, machine_info
from mixq_nncf.ir.export import compile_ir, export_ir, ir_size
from mixq_nncf.search.context import Context
from mixq_nncf.search.fidelity import ir_fidelity
from mixq_nncf.search.spec import paper_plan

COUNTER_WARMUP = 2  # inferences before the counted runs
NO_BF16_NOTE = "no bf16 units on this CPU: bf16 runs f32"
BF16_IR_BYTES = 4  # an unquantized layer's weights in the .bin (f32; the plugin converts them to bf16 at compile)


def export_plan(ctx: Context, plan: Optional[PrecisionPlan], xml: Path) -> Path:
    """The calibrated model under ``plan`` (None: the fp32 model) as an IR; an IR already there is kept."""
    if xml.is_file():
        return xml
    model = ctx.fp32 if plan is None else ctx.apply(plan)
    ex = ctx.ranking[0][:1]
    return export_ir(model, xml, example_input=ex, compact_16bit=ctx.cfg.export.compact_16bit)


def conv_times(xml: Path, shape: tuple, runs: int, precision: str = "auto") -> dict:
    """Per-conv and other time (ms) from OpenVINO's performance counters, median over runs:
    {"convs": {module name: {"ms", "exec"}}, "other_ms", "total_ms"}. ``precision``: compile_ir's (as deployed,
    or a hint such as "bf16")."""
    compiled = compile_ir(xml, shape=shape, config={"PERF_COUNT": "YES", "PERFORMANCE_HINT": "LATENCY"},
                          precision=precision)
    request = compiled.create_infer_request()
    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    for _ in range(COUNTER_WARMUP):
        request.infer({0: x})
    per_run: list[dict[tuple[str, str, str], float]] = []
    for _ in range(runs):
        request.infer({0: x})
        per_run.append({(i.node_name, i.node_type, i.exec_type): i.real_time.total_seconds() * 1e3
                        for i in request.get_profiling_info()})
    keys = set().union(*per_run)
    med = {k: float(np.median([r.get(k, 0.0) for r in per_run])) for k in keys}
    convs: dict[str, dict] = {}
    other = 0.0
    for (name, node_type, exec_type), ms in med.items():
        if node_type == "Convolution":
            convs[module_name([name])] = {"ms": ms, "exec": exec_type}
        else:
            other += ms
    return {"convs": convs, "other_ms": other, "total_ms": other + sum(c["ms"] for c in convs.values())}


def conv_io_elements(model: nn.Module, shape: tuple) -> dict[str, int]:
    """Input + output elements of each conv at an input shape: what a precision boundary around it converts."""
    elems: dict[str, int] = {}
    hooks = [m.register_forward_hook(lambda mod, i, o, n=n: elems.__setitem__(n, i[0][0].numel() + o[0].numel()))
             for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    try:
        with torch.no_grad():
            model(torch.zeros(shape))
    finally:
        for hk in hooks:
            hk.remove()
    return elems


def boundary_cost(times: dict[str, dict], high: list[str], elems: dict[str, int]) -> tuple[float, float]:
    """(ms, ms per converted element) the paper-recipe IR spends beyond its convs' own fp32 - int8 difference."""
    t8, t32 = times["int8"]["convs"], times["fp32"]["convs"]
    predicted_paper = times["int8"]["total_ms"] + sum(t32.get(n, {}).get("ms", 0) - t8.get(n, {}).get("ms", 0)
                                                      for n in high)
    total = max(0.0, times["paper"]["total_ms"] - predicted_paper)
    return total, total / max(1, sum(elems.get(n, 0) for n in high))


def measure_costs(ctx: Context) -> dict:
    """Latency and size of keeping each layer high, at the sweep's input size, from real IRs."""
    h, w = ctx.spec.input_size
    shape = (1, 3, h, w)
    irs = ctx.out / "irs"
    xml = {"int8": export_plan(ctx, ctx.base_plan, irs / "int8.xml"),
           "fp32": export_plan(ctx, None, irs / "fp32.xml"),
           "paper": export_plan(ctx, paper_plan(ctx.base_plan), irs / "paper.xml")}
    ctx.log("performance counters of the int8, fp32 and paper-recipe IRs")
    times = {k: conv_times(v, shape, ctx.spec.latency_runs) for k, v in xml.items()}
    bf16 = {"native": has_bf16(), "timed": has_bf16(), "note": None if has_bf16() else NO_BF16_NOTE}
    if bf16["timed"]:
        ctx.log("performance counters of the fp32 IR compiled with the bf16 hint")
        times["bf16"] = conv_times(xml["fp32"], shape, ctx.spec.latency_runs, precision="bf16")
    audits = {k: audit_runtime(v, shape) for k, v in xml.items()}
    stats = benchmark([Target(k, "openvino", v) for k, v in xml.items()], input_size=(h, w),
                      iterations=ctx.spec.bench_iterations, warmup=2, progress=False)
    wall = {s.name: s.median_ms for s in stats}
    elems = conv_io_elements(ctx.fp32, shape)
    high = paper_plan(ctx.base_plan).high_precision_layers()
    boundary_total, per_elem = boundary_cost(times, high, elems)
    # counters sum to a little less than the wall-clock median (dispatch between nodes): scale to the median
    scale = wall["int8"] / times["int8"]["total_ms"] if times["int8"]["total_ms"] else 1.0
    bytes_high = 2 if ctx.cfg.export.compact_16bit else 4
    t8, t32 = times["int8"]["convs"], times["fp32"]["convs"]
    t16 = times["bf16"]["convs"] if "bf16" in times else t32  # no bf16 units: bf16 runs f32, in f32 time
    layers = {}
    for n, m in ctx.fp32.named_modules():
        if not isinstance(m, nn.Conv2d):
            continue
        a, b, c = (t.get(n, {}).get("ms", 0.0) for t in (t8, t32, t16))
        layers[n] = {"int8_ms": a * scale, "fp32_ms": b * scale, "bf16_ms": c * scale,
                     "boundary_ms": per_elem * elems.get(n, 0) * scale,
                     "int8_exec": t8.get(n, {}).get("exec", ""), "fp32_exec": t32.get(n, {}).get("exec", ""),
                     "bf16_exec": t16.get(n, {}).get("exec", ""),
                     "size_bytes": m.weight.numel() * (bytes_high - 1),
                     "bf16_size_bytes": m.weight.numel() * (BF16_IR_BYTES - 1)}
    pairs = ctx.eval_pairs()
    fid = {k: ir_fidelity(xml[k], xml["fp32"], pairs, ctx.crop_border) for k in ("int8", "paper")}
    mi = machine_info()
    return {"input_size": [h, w], "wall_ms": wall, "counter_total_ms": {k: v["total_ms"] for k, v in times.items()},
            "counter_other_ms": {k: v["other_ms"] for k, v in times.items()}, "counter_scale": scale,
            "boundary_ms_paper": boundary_total * scale, "boundary_ms_per_elem": per_elem * scale,
            "paper_layers": high, "layers": layers,
            "size_bytes": {k: ir_size(v).bin_bytes for k, v in xml.items()},
            "runtime_convs": {k: {"int8": a.conv_int8, "fp32": a.conv_fp32} for k, a in audits.items()},
            "ir_fidelity": fid, "eval_images": len(pairs), "bf16": bf16,
            "machine": {"cpu": mi.cpu, "cores": mi.cores, "openvino": mi.openvino}}
