"""What a sweep measures and how that work is cut into jobs.

A job is named by a hash of everything its number depends on (model, data, quantization, sweep settings, unit),
so re-runs and shards agree on which jobs exist and which are finished without talking to each other; ``shard``
(or torchrun's RANK/WORLD_SIZE) picks every N-th job by that hash.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from typing import Any, Optional

from mixq_nncf.config.plan import LayerPrecision, PrecisionPlan
from mixq_nncf.config.schema import Config, compression_key, data_key, to_dict
from mixq_nncf.errors import MixqError

GRANULARITIES = ("stage", "block", "layer")
MODES = ("ptq", "qat")
ACTIVATION_CHOICES = ("auto", "configured")
# an activation scheme may cost this much more all-int8 latency than the configured one and still be chosen
SCHEME_LATENCY_TOLERANCE = 1.02
HIGH_BITS = 16


class SweepError(MixqError):
    """A sweep that cannot run as asked."""


@dataclass(frozen=True)
class SweepSpec:
    granularity: str = "layer"
    mode: str = "ptq"
    input_size: tuple[int, int] = (64, 64)  # LR H, W for the latency costs
    top_k: int = 24  # layer units measured, by proxy gain
    top_k_cheap: int = 12  # further layer units measured, by proxy gain per MAC
    rank_images: int = 6  # crops in the ranking subset (half of them the worst under all-int8)
    rank_crop: int = 40  # LR pixels
    qat_top: int = 3  # units refined by QAT in --mode qat
    qat_steps: int = 20
    latency_runs: int = 10  # performance-counter runs per IR
    bench_iterations: int = 20  # interleaved wall-clock rounds
    niqe: bool = False
    activations: str = "auto"  # auto: also calibrate the other activation scheme and sweep on the better one

    def __post_init__(self):
        if self.granularity not in GRANULARITIES:
            raise SweepError(f"--granularity {self.granularity!r}: choose one of {', '.join(GRANULARITIES)}")
        if self.mode not in MODES:
            raise SweepError(f"--mode {self.mode!r}: choose one of {', '.join(MODES)}")
        if self.activations not in ACTIVATION_CHOICES:
            raise SweepError(f"--activations {self.activations!r}: choose one of {', '.join(ACTIVATION_CHOICES)}")
        if self.rank_images < 1 or self.rank_crop < 8:
            raise SweepError("the ranking subset needs >= 1 image and crops of >= 8 LR pixels")

    def key(self) -> dict:
        """What the measured numbers depend on (not the shard, not the output folder)."""
        d = asdict(self)
        d["input_size"] = list(self.input_size)
        return d


@dataclass(frozen=True)
class Unit:
    name: str
    kind: str  # stage | block | layer
    layers: tuple[str, ...]
    override: str = "bits"  # "bits": weights and input activations int16; "weights": weights only (shared input)

    def high(self, base: PrecisionPlan) -> dict[str, LayerPrecision]:
        return {n: LayerPrecision(HIGH_BITS, HIGH_BITS if self.override == "bits" else base.layers[n].act_bits)
                for n in self.layers}

    def bf16(self, base: PrecisionPlan) -> dict[str, LayerPrecision]:
        """The unit unquantized and run bf16: weights and input ("bits") or the weights only ("weights": the
        shared input quantizer stays as the base has it)."""
        return {n: LayerPrecision(None, None if self.override == "bits" else base.layers[n].act_bits, "bf16")
                for n in self.layers}

    def low(self, base: PrecisionPlan, all_high: PrecisionPlan) -> dict[str, LayerPrecision]:
        return {n: LayerPrecision(base.layers[n].weight_bits,
                                  base.layers[n].act_bits if self.override == "bits" else all_high.layers[n].act_bits)
                for n in self.layers}


@dataclass(frozen=True)
class Job:
    id: str
    kind: str  # schemes | base | costs | proxy | gain | loss | qat
    unit: Optional[Unit] = None

    def label(self) -> str:
        return f"{self.kind}:{self.unit.name}" if self.unit else self.kind


# ----------------------------------------------------------------------------------------------
# plans every sweep compares against

def all_high_plan(base: PrecisionPlan) -> PrecisionPlan:
    """Every quantized layer at 16 bits, weights and input: the base the loss of dropping a unit is measured on."""
    return base.with_layers({n: LayerPrecision(HIGH_BITS, HIGH_BITS)
                             for n, p in base.layers.items() if p.weight_bits is not None})


def paper_plan(base: PrecisionPlan) -> PrecisionPlan:
    """The mixed-quantization paper's recipe: feature extraction and reconstruction at 16 bits."""
    return base.with_layers({n: LayerPrecision(HIGH_BITS, HIGH_BITS) for n, s in base.stage_of.items()
                             if s in ("feature_extraction", "reconstruction") and base.layers[n].weight_bits})


# ----------------------------------------------------------------------------------------------
# units

def block_of(layer: str) -> str:
    parts = layer.split(".")
    return ".".join(parts[:2]) if parts[0] == "body" and len(parts) > 2 else layer


def make_units(plan: PrecisionPlan, sites: dict, granularity: str) -> list[Unit]:
    """Units at a granularity. A layer whose input quantizer is shared (RRDBNet's dense-block concatenations)
    cannot raise its input alone without raising its neighbours': its unit keeps only the weights high."""
    layers = [n for n, p in plan.layers.items() if p.weight_bits is not None]
    if granularity in ("stage", "block"):
        groups: dict[str, list[str]] = {}
        for n in layers:
            groups.setdefault(plan.stage_of[n] if granularity == "stage" else block_of(n), []).append(n)
        return [Unit(g, granularity, tuple(ls)) for g, ls in groups.items()]
    shared = set()
    for site in sites.values():
        if site.kind == "activation" and len(site.layers) > 1:
            shared.update(site.layers)
    return [Unit(n, "layer", (n,), "weights" if n in shared else "bits") for n in layers]


def contenders(proxy: dict, units: list[Unit], spec: SweepSpec) -> list[Unit]:
    """Layer units worth measuring: the top by proxy gain, then the top by proxy gain per MAC."""
    rows = proxy["layers"]
    score = {u.name: sum(rows[n]["gain_mse"] for n in u.layers) for u in units}
    macs = {u.name: sum(rows[n]["macs"] for n in u.layers) for u in units}
    by_gain = sorted(units, key=lambda u: -score[u.name])[: spec.top_k]
    by_eff = sorted(units, key=lambda u: -score[u.name] / max(macs[u.name], 1.0))
    picked = {u.name for u in by_gain}
    extra = [u for u in by_eff if u.name not in picked][: spec.top_k_cheap]
    return by_gain + extra


# ----------------------------------------------------------------------------------------------
# jobs and shards

def content_hash(obj: Any) -> str:
    """A short stable name for JSON-able content."""
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def context_key(cfg: Config, spec: SweepSpec) -> dict:
    """What every measurement depends on: the model, data, quantization and the sweep settings."""
    comp = compression_key(cfg)
    # the sweep re-plans one calibration with apply_plan, which never fits weight ranges: not part of its key
    (comp.get("initializer") or {}).pop("weight_range", None)
    return {"model": to_dict(cfg.model), "data": data_key(cfg), "input": to_dict(cfg.input_info),
            "compression": comp, "export": to_dict(cfg.export),
            "training": to_dict(cfg.training) if spec.mode == "qat" else None, "sweep": spec.key()}


def make_job(ctx_key: dict, kind: str, unit: Optional[Unit] = None) -> Job:
    return Job(content_hash({"ctx": ctx_key, "kind": kind, "unit": asdict(unit) if unit else None}), kind, unit)


def first_jobs(cfg: Config, spec: SweepSpec, base_plan: PrecisionPlan) -> list[Job]:
    """Jobs that need nothing measured first: the references, the costs, the proxy and every stage's gain and loss."""
    key = context_key(cfg, spec)
    jobs = [make_job(key, "base"), make_job(key, "costs"), make_job(key, "proxy")]
    for u in make_units(base_plan, {}, "stage"):
        jobs += [make_job(key, "gain", u), make_job(key, "loss", u)]
    return jobs


def unit_jobs(cfg: Config, spec: SweepSpec, base_plan: PrecisionPlan, proxy: dict) -> list[Job]:
    """Jobs that need the proxy's ranking: the finer units' gain and loss, and in --mode qat the QAT refinements."""
    key = context_key(cfg, spec)
    if spec.granularity == "stage":
        units: list[Unit] = []
    elif spec.granularity == "block":
        units = make_units(base_plan, {}, "block")
    else:  # the proxy job recorded which layers share an input quantizer: no calibration needed to plan
        units = contenders(proxy, [Unit(n, "layer", (n,), o) for n, o in proxy["units"].items()], spec)
    jobs = []
    for u in units:
        jobs += [make_job(key, "gain", u), make_job(key, "loss", u)]
    if spec.mode == "qat":
        pool = units or make_units(base_plan, {}, "stage")
        rows = proxy["layers"]
        top = sorted(pool, key=lambda u: -sum(rows[n]["gain_mse"] for n in u.layers))[: spec.qat_top]
        jobs += [make_job(key, "qat")] + [make_job(key, "qat", u) for u in top]
    return jobs


def parse_shard(text: Optional[str]) -> tuple[int, int]:
    """'I/N' (0-based I), else torchrun's RANK/WORLD_SIZE, else (0, 1)."""
    if text:
        try:
            i, n = (int(v) for v in text.split("/"))
        except ValueError:
            raise SweepError(f"--shard {text!r}: expected I/N with 0 <= I < N, e.g. 0/2") from None
        if not 0 <= i < n:
            raise SweepError(f"--shard {text!r}: expected I/N with 0 <= I < N, e.g. 0/2")
        return i, n
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return (int(os.environ.get("RANK", "0")), world) if world > 1 else (0, 1)


def owns(job: Job, shard: tuple[int, int]) -> bool:
    """Whether this shard runs the job (every N-th job by its hash)."""
    return int(job.id, 16) % shard[1] == shard[0]
