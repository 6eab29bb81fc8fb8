"""CPU latency of OpenVINO IRs and PyTorch eager peers, timed interleaved in one run so ratios are fair.

Each round runs every target once, in turn, so machine noise lands on all of them alike. IRs are reshaped to the
static benchmark size (what a deployment at a fixed size compiles) and compiled as they are deployed (precision
"auto": no hint for IRs that carry per-layer precision, the f32 hint for the others).

The baseline a user of a CPU already has is the fp32 IR compiled with OpenVINO's defaults: bf16 for every layer on
CPUs with AVX512-BF16/AMX (several times faster than f32 there), f32 elsewhere. Speed-ups lead with the ratio to
that baseline and show the ratio to the fp32 IR under the f32 hint beside it (baseline_targets, speedups).
"""
from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from mixq_nncf.cpu import cpu_flags, has_bf16, has_int8_dot_product
from mixq_nncf.ir.kernels import kernel_groups, kernel_summary

BASELINE_DEFAULT = "fp32 IR [defaults]"
BASELINE_F32 = "fp32 IR [f32 hint]"


@dataclass
class Target:
    name: str
    kind: str  # openvino | torch
    path: Optional[Path] = None
    model: object = None
    # OpenVINO inference precision: "auto" = as the IR is deployed (its sidecar), "default" = the plugin's own
    # (bf16 on AVX512-BF16/AMX CPUs), or a hint ("f32", "bf16")
    precision: str = "auto"


@dataclass
class LatencyStats:
    name: str
    kind: str
    median_ms: float
    p90_ms: float
    mean_ms: float
    min_ms: float
    n: int
    gmac: Optional[float] = None
    gmac_per_s: Optional[float] = None
    throughput_fps: Optional[float] = None
    kernels: str = ""  # convolutions grouped by ISA / precision / primitive, from the runtime graph


@dataclass
class MachineInfo:
    cpu: str
    cores: int
    max_ghz: Optional[float]
    flags: list[str]
    openvino: str
    torch: str
    int8_peak_gmacs: Optional[float]
    fp32_peak_gmacs: Optional[float]
    peak_assumption: str = ""
    platform: str = field(default_factory=platform.platform)
    amx: bool = False
    avx512_bf16: bool = False
    vnni: bool = False  # an int8 dot product (AVX512-VNNI, AVX-VNNI or AMX): int8 sums do not saturate at int16
    default_precision: str = ""  # OpenVINO's default INFERENCE_PRECISION_HINT on this CPU
    bf16_peak_gmacs: Optional[float] = None
    units: str = ""  # the units in words, e.g. "AMX: yes, AVX512-BF16: yes, VNNI: yes"


def _cpu_model_and_ghz() -> tuple[str, Optional[float], list[str]]:
    name, mhz = platform.processor() or "unknown CPU", None
    vendor, family = "", None
    try:
        text = Path("/proc/cpuinfo").read_text()
        for line in text.splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "model name":
                name = value.strip()
            elif key == "cpu MHz" and mhz is None:
                mhz = float(value)
            elif key == "vendor_id" and not vendor:
                vendor = value.strip()
            elif key == "cpu family" and family is None:
                family = int(value)
    except OSError:
        pass
    flags = cpu_flags()
    wanted = [f for f in ("avx2", "avx512f", "avx_vnni", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
              if f in flags]
    if vendor == "AuthenticAMD" and family == 25 and "avx512f" in wanted:
        wanted.append("zen4")  # AVX-512 executes on 256-bit units: half the Intel per-cycle rate
        if "Zen" not in name:
            name += " (Zen 4)"
    elif vendor == "AuthenticAMD" and family == 25 and "Zen" not in name:
        name += " (Zen 3)"
    return name, (mhz / 1000.0 if mhz else None), wanted


def _peaks_per_cycle(flags: list[str]) -> tuple[Optional[int], Optional[int], Optional[int], str]:
    """int8 MACs, fp32 FMAs and bf16 MACs per core per cycle, and the assumption in words."""
    if "amx_int8" in flags:
        return 1024, 32, 512, ("per core and cycle: AMX 1024 int8 MACs, AMX 512 bf16 MACs, 2 x 16 fp32 FMAs "
                               "(AVX-512)")
    if "zen4" in flags:
        return 64, 16, 32, ("per core and cycle (Zen 4, 512-bit ops on two 256-bit pipes): 2 x 32 int8 MACs "
                            "(AVX512-VNNI vpdpbusd) = 64, 2 x 8 fp32 FMAs = 16, 2 x 16 bf16 MACs (vdpbf16ps) = 32")
    if "avx512_vnni" in flags:
        bf16 = 64 if "avx512_bf16" in flags else None
        return 128, 32, bf16, ("per core and cycle: 2 FMA ports x 64 int8 MACs (AVX512-VNNI vpdpbusd) = 128, "
                               "2 x 16 fp32 FMAs (AVX-512) = 32" + (", 2 x 32 bf16 MACs = 64" if bf16 else ""))
    if "avx2" in flags:
        vnni = "AVX-VNNI vpdpbusd" if "avx_vnni" in flags else "vpmaddubsw, int16 sums: no VNNI"
        return 64, 16, None, f"per core and cycle (AVX2): 2 x 32 int8 MACs ({vnni}), 2 x 8 fp32 FMAs"
    return None, None, None, "unknown vector units"


def plugin_default_precision() -> str:
    """OpenVINO's default INFERENCE_PRECISION_HINT on this CPU, asked of the plugin ('bf16' or 'f32')."""
    import openvino as ov

    value = ov.Core().get_property("CPU", "INFERENCE_PRECISION_HINT")
    name = value.get_type_name() if hasattr(value, "get_type_name") else str(value)
    return {"float32": "f32", "bfloat16": "bf16", "float16": "f16"}.get(name, name)


def machine_info() -> MachineInfo:
    import openvino as ov
    import torch

    name, ghz, flags = _cpu_model_and_ghz()
    cores = os.cpu_count() or 1
    int8_per_cycle, fp32_per_cycle, bf16_per_cycle, assumption = _peaks_per_cycle(flags)

    def peak(per_cycle: Optional[int]) -> Optional[float]:
        return cores * per_cycle * ghz if ghz and per_cycle else None

    amx, bf16, vnni = "amx_bf16" in flags or "amx_int8" in flags, "avx512_bf16" in flags, has_int8_dot_product()
    units = (f"AMX: {'yes' if amx else 'no'}, AVX512-BF16: {'yes' if bf16 else 'no'}, "
             f"VNNI: {'yes' if vnni else 'no'}, bf16 kernels: {'yes' if has_bf16() else 'no'}")
    return MachineInfo(name, cores, ghz, flags, ov.get_version(), torch.__version__, peak(int8_per_cycle),
                       peak(fp32_per_cycle), assumption + f", at the {ghz or 0:.2f} GHz /proc/cpuinfo reports",
                       amx=amx, avx512_bf16=bf16, vnni=vnni, default_precision=plugin_default_precision(),
                       bf16_peak_gmacs=peak(bf16_per_cycle), units=units)


def baseline_targets(fp32_xml: str | Path) -> list[Target]:
    """The baseline a user of this machine already has, and the figure beside it: the fp32 IR compiled with
    OpenVINO's defaults (no INFERENCE_PRECISION_HINT: bf16 on AVX512-BF16/AMX CPUs, f32 elsewhere), and the same IR
    under the f32 hint. On CPUs without bf16 units both compile to the same f32 graph; `mixq run` then times it once
    and reports that timing for both."""
    return [Target(BASELINE_DEFAULT, "openvino", Path(fp32_xml), precision="default"),
            Target(BASELINE_F32, "openvino", Path(fp32_xml), precision="f32")]


def baseline_label(default_precision: str) -> str:
    """'fp32 IR under OpenVINO defaults (bf16 on this CPU)' etc."""
    why = "AVX512-BF16/AMX" if default_precision == "bf16" else "no AVX512-BF16/AMX"
    return f"fp32 IR under OpenVINO defaults ({default_precision} on this CPU: {why})"


def speedups(stats: list[LatencyStats], default: str = BASELINE_DEFAULT,
             f32: str = BASELINE_F32) -> dict[str, tuple[Optional[float], Optional[float]]]:
    """name -> (speed-up over the fp32 IR under defaults, over the fp32 IR under the f32 hint), by median."""
    by = {s.name: s.median_ms for s in stats}
    return {s.name: (by[default] / s.median_ms if default in by else None,
                     by[f32] / s.median_ms if f32 in by else None) for s in stats}


def runtime_kernels(compiled) -> str:
    """The compiled model's convolutions, grouped: '7 conv AVX2 int8 (jit_avx2_I8), 2 conv AVX2 f32 (...)'."""
    convs = []
    for op in compiled.get_runtime_model().get_ordered_ops():
        rt = op.get_rt_info()
        if "layerType" in rt and rt["layerType"].astype(str) == "Convolution":
            convs.append((rt["runtimePrecision"].astype(str), rt["primitiveType"].astype(str)))
    return kernel_summary(kernel_groups(convs))


def ir_gmac(xml_path: str | Path, input_shape: tuple) -> float:
    """Multiply-accumulates of all convolutions (and matmuls) at this input size, in GMAC."""
    import openvino as ov

    from mixq_nncf.ir.export import read_ir

    model = read_ir(xml_path)
    model.reshape({model.input(0).get_any_name(): ov.PartialShape(list(input_shape))})
    macs = 0
    for op in model.get_ordered_ops():
        if op.get_type_name() in ("Convolution", "GroupConvolution"):
            w = list(op.input(1).get_shape())
            out = list(op.output(0).get_shape())
            per_out = int(np.prod(w[1:])) if op.get_type_name() == "Convolution" else int(np.prod(w[2:]))
            macs += int(np.prod(out)) * per_out
    return macs / 1e9


def _ov_runner(path: Path, shape: tuple, threads: int, streams: int, precision: str = "auto"):
    from mixq_nncf.ir.export import compile_ir

    config = {"PERFORMANCE_HINT": "LATENCY"}
    if threads > 0:
        config = {"PERFORMANCE_HINT": "NONE", "INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": streams}
    compiled = compile_ir(path, shape=shape, config=config, precision=precision)
    request = compiled.create_infer_request()
    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    return lambda: request.infer({0: x}), compiled


def _torch_runner(model, shape: tuple, threads: int):
    import torch

    if threads > 0:
        torch.set_num_threads(threads)
    model = model.eval()
    x = torch.rand(*shape)

    def step():
        with torch.inference_mode():
            model(x)
    return step


def _throughput(compiled, shape: tuple, seconds: float = 3.0) -> float:
    import openvino as ov

    queue = ov.AsyncInferQueue(compiled)
    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    done = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(len(queue)):
            queue.start_async({0: x})
        queue.wait_all()
        done += len(queue)
    return done / (time.perf_counter() - start)


def benchmark(targets: list[Target], *, input_size: tuple = (64, 64), threads: int = 0, streams: int = 1,
              iterations: int = 100, warmup: int = 10, throughput: bool = False,
              progress: bool = True) -> list[LatencyStats]:
    """Median / p90 latency of every target, timed in interleaved rounds."""
    from tqdm import tqdm

    shape = (1, 3, int(input_size[0]), int(input_size[1]))
    runners, compiled = {}, {}
    gmac: dict[str, Optional[float]] = {}
    for t in targets:
        if t.kind == "openvino":
            runners[t.name], compiled[t.name] = _ov_runner(Path(t.path), shape, threads, streams, t.precision)
            gmac[t.name] = ir_gmac(t.path, shape)
        elif t.kind == "torch":
            runners[t.name] = _torch_runner(t.model, shape, threads)
            gmac[t.name] = None
        else:
            raise ValueError(f"unknown target kind {t.kind!r}")
    for _ in range(warmup):
        for run in runners.values():
            run()
    times: dict[str, list[float]] = {t.name: [] for t in targets}
    for _ in tqdm(range(iterations), desc="benchmark rounds", disable=not progress):
        for name, run in runners.items():
            t0 = time.perf_counter()
            run()
            times[name].append((time.perf_counter() - t0) * 1e3)
    known = next((g for g in gmac.values() if g), None)
    stats = []
    for t in targets:
        arr = np.array(times[t.name])
        g = gmac[t.name] if gmac[t.name] is not None else known
        med = float(np.median(arr))
        fps = _throughput(compiled[t.name], shape) if throughput and t.name in compiled else None
        kernels = runtime_kernels(compiled[t.name]) if t.name in compiled else ""
        stats.append(LatencyStats(t.name, t.kind, med, float(np.percentile(arr, 90)), float(arr.mean()),
                                  float(arr.min()), len(arr), g, g / (med / 1e3) if g else None, fps, kernels))
    return stats


def machine_line(machine: MachineInfo) -> str:
    """The CPU named beside every figure: model, cores, the units that decide int8/bf16 speed, the peaks."""
    peaks = f"int8 {machine.int8_peak_gmacs or 0:.0f} GMAC/s, fp32 {machine.fp32_peak_gmacs or 0:.0f} GMAC/s" + \
        (f", bf16 {machine.bf16_peak_gmacs:.0f} GMAC/s" if machine.bf16_peak_gmacs else "")
    return (f"Machine: {machine.cpu}, {machine.cores} cores ({machine.units or 'units unknown'}; OpenVINO's default "
            f"inference precision here: {machine.default_precision or '?'}), OpenVINO {machine.openvino}, torch "
            f"{machine.torch}. Peaks: {peaks} ({machine.peak_assumption}).")


def stats_markdown(stats: list[LatencyStats], baseline: Optional[str], machine: MachineInfo) -> str:
    """The table, led by the speed-up over the fp32 IR under OpenVINO's defaults where it was timed (see
    baseline_targets), with the f32-hint ratio beside it; else by the speed-up over ``baseline``."""
    ratios = speedups(stats)
    paired = any(r[0] is not None for r in ratios.values())
    base = next((s for s in stats if s.name == baseline), None)
    lead = [f"speed-up vs {baseline_label(machine.default_precision or '?')}", "vs fp32 IR (f32 hint)"] if paired \
        else ["speed-up vs baseline"]
    head = ["target"] + lead + ["median ms", "p90 ms", "GMAC", "GMAC/s", "share of int8 peak", "kernels"]
    lines = [machine_line(machine), "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s in stats:
        if paired:
            cells = [f"{r:.2f}x" if r else "-" for r in ratios[s.name]]
        else:
            cells = [f"{base.median_ms / s.median_ms:.2f}x" if base else "-"]
        share = f"{s.gmac_per_s / machine.int8_peak_gmacs:.2f}" if s.gmac_per_s and machine.int8_peak_gmacs else "-"
        lines.append(f"| {s.name} | " + " | ".join(cells) + f" | {s.median_ms:.2f} | {s.p90_ms:.2f} | "
                     f"{s.gmac or 0:.2f} | {s.gmac_per_s or 0:.0f} | {share} | {s.kernels or '-'} |")
    return "\n".join(lines)
