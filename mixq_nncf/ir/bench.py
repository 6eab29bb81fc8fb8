"""CPU latency of OpenVINO IRs and PyTorch eager peers, timed interleaved in one run so ratios are fair.

Each round runs every target once, in turn, so machine noise lands on all of them alike. IRs are reshaped to the
static benchmark size (what a deployment at a fixed size compiles) and run with f32 inference precision for
their non-int8 layers.
"""
from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np


@dataclass
class Target:
    name: str
    kind: str  # openvino | torch
    path: Optional[Path] = None
    model: object = None
    precision: str = "f32"  # OpenVINO inference precision hint; "default" = the plugin's own (bf16 on BF16 CPUs)


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


def _cpu_model_and_ghz() -> tuple[str, Optional[float], list[str]]:
    name, mhz, flags = platform.processor() or "unknown CPU", None, []
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
            elif key == "flags" and not flags:
                flags = value.split()
            elif key == "vendor_id" and not vendor:
                vendor = value.strip()
            elif key == "cpu family" and family is None:
                family = int(value)
    except OSError:
        pass
    wanted = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_int8") if f in flags]
    if vendor == "AuthenticAMD" and family == 25 and "avx512f" in wanted:
        wanted.append("zen4")  # AVX-512 executes on 256-bit units: half the Intel per-cycle rate
        if "Zen" not in name:
            name += " (Zen 4)"
    return name, (mhz / 1000.0 if mhz else None), wanted


def _peaks_per_cycle(flags: list[str]) -> tuple[Optional[int], Optional[int], str]:
    """int8 MACs and fp32 FMAs per core per cycle, and the assumption in words."""
    if "zen4" in flags:
        return 64, 16, ("per core and cycle (Zen 4, 512-bit ops on two 256-bit pipes): 2 x 32 int8 MACs "
                        "(AVX512-VNNI vpdpbusd) = 64, 2 x 8 fp32 FMAs = 16")
    if "avx512_vnni" in flags:
        return 128, 32, ("per core and cycle: 2 FMA ports x 64 int8 MACs (AVX512-VNNI vpdpbusd) = 128, "
                         "2 x 16 fp32 FMAs (AVX-512) = 32")
    if "avx2" in flags:
        return 64, 16, "per core and cycle (AVX2): 2 x 32 int8 MACs, 2 x 8 fp32 FMAs"
    return None, None, "unknown vector units"


def machine_info() -> MachineInfo:
    import openvino as ov
    import torch

    name, ghz, flags = _cpu_model_and_ghz()
    cores = os.cpu_count() or 1
    int8_per_cycle, fp32_per_cycle, assumption = _peaks_per_cycle(flags)
    int8 = cores * int8_per_cycle * ghz if ghz and int8_per_cycle else None
    fp32 = cores * fp32_per_cycle * ghz if ghz and fp32_per_cycle else None
    return MachineInfo(name, cores, ghz, flags, ov.get_version(), torch.__version__, int8, fp32,
                       assumption + f", at the {ghz or 0:.2f} GHz /proc/cpuinfo reports")


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


def _ov_runner(path: Path, shape: tuple, threads: int, streams: int, precision: str = "f32"):
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
        stats.append(LatencyStats(t.name, t.kind, med, float(np.percentile(arr, 90)), float(arr.mean()),
                                  float(arr.min()), len(arr), g, g / (med / 1e3) if g else None, fps))
    return stats


def stats_markdown(stats: list[LatencyStats], baseline: Optional[str], machine: MachineInfo) -> str:
    base = next((s for s in stats if s.name == baseline), None)
    lines = [f"Machine: {machine.cpu}, {machine.cores} cores, OpenVINO {machine.openvino}, torch {machine.torch}. "
             f"Peaks: int8 {machine.int8_peak_gmacs or 0:.0f} GMAC/s, fp32 {machine.fp32_peak_gmacs or 0:.0f} GMAC/s "
             f"({machine.peak_assumption}).", "",
             "| target | median ms | p90 ms | speed-up vs baseline | GMAC | GMAC/s | share of int8 peak |",
             "|---|---|---|---|---|---|---|"]
    for s in stats:
        speed = f"{base.median_ms / s.median_ms:.2f}x" if base else "-"
        share = f"{s.gmac_per_s / machine.int8_peak_gmacs:.2f}" if s.gmac_per_s and machine.int8_peak_gmacs else "-"
        lines.append(f"| {s.name} | {s.median_ms:.2f} | {s.p90_ms:.2f} | {speed} | {s.gmac or 0:.2f} | "
                     f"{s.gmac_per_s or 0:.0f} | {share} |")
    return "\n".join(lines)
