"""Speed ratios of two IRs measured as pairs: the figure that survives a noisy, shared CPU.

Absolute times on a VM swing up to 2x within an hour, and loading several compiled models at once skews ratios
(int8 vs the fp32 IR under defaults read 1.32x with six models loaded, 1.89x with only the pair). So: only the two
compiled models are loaded, they run alternately image by image (the order flips every round), and the figure is
the median over rounds of the per-round ratio. LATENCY mode times one image at a time; THROUGHPUT mode pushes a
batch of images through two requests in flight and times the batch.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mixq_nncf.ir.bench import runtime_kernels

MODES = ("latency", "throughput")


@dataclass
class PairedRatio:
    base: str
    other: str
    mode: str  # latency | throughput
    ratio_median: float  # base time / other time: the speed-up of ``other`` over ``base``
    ratio_q1: float
    ratio_q3: float
    rounds: int
    base_ms: float  # median ms per image
    other_ms: float
    images_per_round: int
    base_precision: str
    other_precision: str
    base_kernels: str = ""
    other_kernels: str = ""


def _compile(xml: Path, shape: tuple, mode: str, precision: str, threads: int):
    from mixq_nncf.ir.export import compile_ir

    config: dict = {"PERFORMANCE_HINT": "LATENCY"} if mode == "latency" else \
        {"PERFORMANCE_HINT": "THROUGHPUT", "PERFORMANCE_HINT_NUM_REQUESTS": 2}
    if threads:
        config["INFERENCE_NUM_THREADS"] = int(threads)
    return compile_ir(xml, shape=shape, config=config, precision=precision)


def _runner(compiled, mode: str, images: list[np.ndarray]):
    """A function that runs one round (one image, or the whole batch through 2 requests) and returns seconds."""
    if mode == "latency":
        request = compiled.create_infer_request()
        state = {"i": 0}

        def one() -> float:
            x = images[state["i"] % len(images)]
            state["i"] += 1
            t0 = time.perf_counter()
            request.infer({0: x})
            return time.perf_counter() - t0
        return one
    import openvino as ov

    queue = ov.AsyncInferQueue(compiled, 2)

    def batch() -> float:
        t0 = time.perf_counter()
        for x in images:
            queue.start_async({0: x})
        queue.wait_all()
        return time.perf_counter() - t0
    return batch


def paired_ratio(base_xml: str | Path, other_xml: str | Path, *, shape: tuple, mode: str = "latency",
                 rounds: int = 40, warmup: int = 3, batch: int = 4, threads: int = 0,
                 base_precision: str = "default", other_precision: str = "auto",
                 base_name: str = "", other_name: str = "") -> PairedRatio:
    """Median over ``rounds`` of base time / other time, the two run alternately; see the module docstring.
    base_precision "default" = the fp32 IR as a user of this CPU compiles it (no hint); "auto" = as deployed."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    rng = np.random.default_rng(0)
    images = [rng.random(shape, dtype=np.float32) for _ in range(batch if mode == "throughput" else 4)]
    per_round = len(images) if mode == "throughput" else 1
    compiled = [_compile(Path(base_xml), shape, mode, base_precision, threads),
                _compile(Path(other_xml), shape, mode, other_precision, threads)]
    kernels = [runtime_kernels(c) for c in compiled]
    runs = [_runner(c, mode, images) for c in compiled]
    for _ in range(warmup):
        runs[0](), runs[1]()
    times = np.zeros((rounds, 2))
    for r in range(rounds):
        order = (0, 1) if r % 2 == 0 else (1, 0)
        for k in order:
            times[r, k] = runs[k]()
    del runs, compiled
    ratios = times[:, 0] / times[:, 1]
    q1, med, q3 = (float(v) for v in np.percentile(ratios, [25, 50, 75]))
    ms = np.median(times, axis=0) * 1e3 / per_round
    return PairedRatio(base_name or str(base_xml), other_name or str(other_xml), mode, med, q1, q3, rounds,
                       float(ms[0]), float(ms[1]), per_round, base_precision, other_precision, *kernels)
