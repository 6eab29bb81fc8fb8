"""Sensitivity sweeps: what each unit (stage, block or layer) costs and gains when kept high on the CPU.

One calibration serves every candidate: the calibrated all-int8 model is re-planned in place
(nncf_adapter.apply_plan with the quantizer sites found once). Quality is fidelity (PSNR-Y / SSIM-Y) to the fp32
model on a batched ranking subset of eval crops that includes the worst ones; cost is the per-layer time from
OpenVINO's performance counters of an all-int8 and an all-fp32 IR at the user's input size, plus the
precision-boundary nodes measured on a mixed IR, and the IR bytes. For layer granularity a cheap proxy
(quantization noise at each layer x a Hutchinson estimate of how much output noise it causes) ranks all layers
and the top contenders are measured.

Jobs are resumable: each finished job is one line in DIR/results*.jsonl keyed by a hash of what it measures; a
crashed job is recorded with its error and retried on the next run. ``shard`` (or torchrun's RANK/WORLD_SIZE)
picks every N-th job; shard files merge by concatenation.
"""
from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import math
import os
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from torch import nn

from .config import Config, ConfigError, parse_config, to_dict
from .errors import MixqError
from .plan import LayerPrecision, PrecisionPlan, resolve_plan

GRANULARITIES = ("stage", "block", "layer")
MODES = ("ptq", "qat")
ACTIVATION_CHOICES = ("auto", "configured")
# an activation scheme may cost this much more all-int8 latency than the configured one and still be chosen
SCHEME_LATENCY_TOLERANCE = 1.02
HIGH_BITS = 16
_EXAMPLE = torch.zeros(1, 3, 16, 16)  # quantizer sites and input-range pinning depend on the graph, not the data


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

    def low(self, base: PrecisionPlan, all_high: PrecisionPlan) -> dict[str, LayerPrecision]:
        return {n: LayerPrecision(base.layers[n].weight_bits,
                                  base.layers[n].act_bits if self.override == "bits" else all_high.layers[n].act_bits)
                for n in self.layers}


@dataclass(frozen=True)
class Job:
    id: str
    kind: str  # proxy | costs | gain | loss | qat
    unit: Optional[Unit] = None

    def label(self) -> str:
        return f"{self.kind}:{self.unit.name}" if self.unit else self.kind


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


# ----------------------------------------------------------------------------------------------
# results store

class ResultStore:
    """DIR/results*.jsonl: one JSON line per finished (or crashed) job; the last line of a job id wins."""

    def __init__(self, out_dir: Path, shard: tuple[int, int] = (0, 1)):
        self.dir = Path(out_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        i, n = shard
        self.path = self.dir / ("results.jsonl" if n == 1 else f"results.shard{i}of{n}.jsonl")

    def load(self) -> dict[str, dict]:
        out: dict[str, dict] = {}
        for path in sorted(self.dir.glob("results*.jsonl")):
            for line in path.read_text().splitlines():
                line = line.strip()
                if not line:
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut by a crash: that job runs again
                if isinstance(rec, dict) and isinstance(rec.get("id"), str):
                    if rec.get("ok") or rec["id"] not in out or not out[rec["id"]].get("ok"):
                        out[rec["id"]] = rec
        return out

    def append(self, rec: dict) -> None:
        line = json.dumps(rec, default=float, sort_keys=True) + "\n"
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
            os.fsync(fd)
        finally:
            os.close(fd)


def _hash(obj: Any) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def context_key(cfg: Config, spec: SweepSpec) -> dict:
    """What every measurement depends on: the model, data, quantization and the sweep settings."""
    comp = to_dict(cfg.compression)
    # the sweep re-plans one calibration with apply_plan, which never fits weight ranges: not part of its key
    (comp.get("initializer") or {}).pop("weight_range", None)
    return {"model": to_dict(cfg.model), "data": to_dict(cfg.data), "input": to_dict(cfg.input_info),
            "compression": comp, "export": to_dict(cfg.export),
            "training": to_dict(cfg.training) if spec.mode == "qat" else None, "sweep": spec.key()}


def make_job(ctx_key: dict, kind: str, unit: Optional[Unit] = None) -> Job:
    return Job(_hash({"ctx": ctx_key, "kind": kind, "unit": asdict(unit) if unit else None}), kind, unit)


# ----------------------------------------------------------------------------------------------
# units

def block_of(layer: str) -> str:
    parts = layer.split(".")
    return ".".join(parts[:2]) if parts[0] == "body" and len(parts) > 2 else layer


def make_units(plan: PrecisionPlan, sites: dict, granularity: str) -> list[Unit]:
    """Units at a granularity. A layer whose input quantizer is shared (RRDBNet's dense-block concatenations)
    cannot raise its input alone without raising its neighbours': its unit keeps only the weights high."""
    layers = [n for n, p in plan.layers.items() if p.weight_bits is not None]
    if granularity == "stage":
        stages: dict[str, list[str]] = {}
        for n in layers:
            stages.setdefault(plan.stage_of[n], []).append(n)
        return [Unit(s, "stage", tuple(ls)) for s, ls in stages.items()]
    if granularity == "block":
        blocks: dict[str, list[str]] = {}
        for n in layers:
            blocks.setdefault(block_of(n), []).append(n)
        return [Unit(b, "block", tuple(ls)) for b, ls in blocks.items()]
    shared = set()
    for site in sites.values():
        if site.kind == "activation" and len(site.layers) > 1:
            shared.update(site.layers)
    return [Unit(n, "layer", (n,), "weights" if n in shared else "bits") for n in layers]


# ----------------------------------------------------------------------------------------------
# the measuring context (built lazily: a re-run with every job finished never calibrates)

@contextlib.contextmanager
def _single_process():
    """QAT inside a sharded sweep trains on one process: hide torchrun's WORLD_SIZE from train()."""
    saved = {k: os.environ.pop(k) for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK") if k in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


class Context:
    def __init__(self, cfg: Config, spec: SweepSpec, out_dir: Path, log: Callable[[str], None]):
        self.cfg, self.spec, self.out, self.log = cfg, spec, Path(out_dir), log
        self._cache: dict[str, Any] = {}

    def _get(self, name: str, make: Callable[[], Any]) -> Any:
        if name not in self._cache:
            self._cache[name] = make()
        return self._cache[name]

    @property
    def fp32(self) -> nn.Module:
        from .models import load_generator

        def make():
            torch.manual_seed(self.cfg.data.seed)  # random-init models (weights: null) must be the same in every shard
            return load_generator(self.cfg.model.arch, self.cfg.model.args, self.cfg.model.weights).eval()
        return self._get("fp32", make)

    @property
    def scale(self) -> int:
        return int(self.fp32.scale)

    @property
    def base_plan(self) -> PrecisionPlan:
        def make():
            if self.cfg.compression is None:
                raise SweepError("the config has compression: null (fp32); a sweep needs a quantization section")
            return resolve_plan(self.fp32, self.cfg.compression, tuple(self.cfg.input_info.range))
        return self._get("base_plan", make)

    @property
    def all_high(self) -> PrecisionPlan:
        base = self.base_plan
        return self._get("all_high", lambda: base.with_layers(
            {n: LayerPrecision(HIGH_BITS, HIGH_BITS) for n, p in base.layers.items() if p.weight_bits is not None}))

    @property
    def qmodel(self) -> nn.Module:
        def make():
            from .qcheckpoint import load_quantized, save_quantized
            from .quantize import quantize_from_config

            path = self.out / "calibrated.pt"
            stamp = self.out / "calibrated.json"
            key = _hash({k: v for k, v in context_key(self.cfg, self.spec).items() if k != "sweep"})
            if path.is_file() and stamp.is_file() and json.loads(stamp.read_text()).get("key") == key:
                self.log("loading the calibrated model from calibrated.pt")
                return load_quantized(path).model
            self.log("calibrating (one nncf.quantize for every candidate)")
            t0 = time.perf_counter()
            model = quantize_from_config(self.cfg, fp32_model=self.fp32).model
            save_quantized(model, path, arch=self.cfg.model.arch, args=self.cfg.model.args, plan=self.base_plan)
            from .io_utils import atomic_write_json

            atomic_write_json(stamp, {"key": key, "calibration_s": round(time.perf_counter() - t0, 1)})
            return model
        return self._get("qmodel", make)

    @property
    def sites(self) -> dict:
        from .nncf_adapter import quantizer_sites

        return self._get("sites", lambda: quantizer_sites(self.qmodel, _EXAMPLE))

    def apply(self, plan: PrecisionPlan, model: Optional[nn.Module] = None, *, scored: bool = True) -> nn.Module:
        """Re-plan the calibrated model (or ``model``) in place. ``scored=False``: the caller exports it and never
        scores it on the ranking crops, so they need not be chosen first."""
        from .nncf_adapter import apply_plan

        if scored and "ranking" not in self._cache and not self._cache.get("_building_ranking"):
            self.ranking  # choosing the ranking crops re-plans the model: do it before, never between apply and use
        model = model if model is not None else self.qmodel
        apply_plan(model, plan, example=_EXAMPLE, sites=self.sites)
        return model

    @property
    def crop_border(self) -> int:
        return self.cfg.eval.crop_border if self.cfg.eval.crop_border is not None else self.scale

    def eval_pairs(self) -> list[dict]:
        from . import data as data_mod

        def make():
            paths = data_mod.resolve_images(self.cfg.data.eval, "eval")
            if self.cfg.data.eval_max_images:
                paths = paths[: self.cfg.data.eval_max_images]
            lr_paths = data_mod.resolve_images(self.cfg.data.eval_lr, "eval") if self.cfg.data.eval_lr else None
            return list(data_mod.EvalPairs(paths, self.scale, lr_paths=lr_paths, crop=self.cfg.data.eval_crop))
        return self._get("eval_pairs", make)

    @property
    def ranking(self) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
        """(LR batch, fp32 output batch, crop names): half the crops are the worst under all-int8."""
        def make():
            c = self.spec.rank_crop
            crops, names = [], []
            for pair in self.eval_pairs():
                lr = pair["lr"]
                h, w = lr.shape[-2:]
                if h < c or w < c:
                    continue
                for tag, (top, left) in {"centre": ((h - c) // 2, (w - c) // 2), "corner": (h // 8, w // 8)}.items():
                    crops.append(lr[:, top:top + c, left:left + c])
                    names.append(f"{pair['name']}:{tag}")
            if not crops:
                raise SweepError(f"no eval image is at least {c} LR pixels on each side; lower --rank-crop")
            x = torch.stack(crops)
            ref = _forward(self.fp32, x)
            self._cache["_building_ranking"] = True
            scores = _psnr_each(_forward(self.apply(self.base_plan), x), ref, self.crop_border)
            order = sorted(range(len(scores)), key=lambda i: scores[i])
            k = min(self.spec.rank_images, len(order))
            worst = order[: (k + 1) // 2]
            rest = order[len(worst):]
            step = max(1, len(rest) // max(1, k - len(worst)))
            pick = sorted(worst + rest[::step][: k - len(worst)])
            return x[pick], ref[pick], [names[i] for i in pick]
        return self._get("ranking", make)


def _forward(model: nn.Module, x: torch.Tensor, chunk: int = 4) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model(x[i:i + chunk]) for i in range(0, len(x), chunk)]).clamp(0, 1)


def _psnr_each(pred: torch.Tensor, ref: torch.Tensor, crop: int) -> list[float]:
    from .metrics import psnr_y

    return [psnr_y(pred[i], ref[i], crop) for i in range(len(pred))]


def _quality(model: nn.Module, ctx: Context) -> dict:
    from .metrics import ssim_y

    x, ref, _ = ctx.ranking
    out = _forward(model, x)
    psnr = _psnr_each(out, ref, ctx.crop_border)
    ssim = [ssim_y(out[i], ref[i], ctx.crop_border) for i in range(len(out))]
    q = {"psnr": sum(psnr) / len(psnr), "ssim": sum(ssim) / len(ssim), "psnr_each": psnr}
    if ctx.spec.niqe:
        from .metrics import niqe

        q["niqe"] = sum(niqe(o, ctx.crop_border) for o in out) / len(out)
    return q


# ----------------------------------------------------------------------------------------------
# measurements (each returns a JSON-able dict)

def measure_proxy(ctx: Context) -> dict:
    """Per-layer quantization noise and its effect on the output, from one fp32 pass and a few backward passes.

    noise: mean squared error a layer's output gets from its own int8 weights and input (the high option's
    remaining error removed); effect: Hutchinson estimate of ||d out / d layer output||_F^2 / N_out with Gaussian
    probes. Their product predicts the output MSE the layer adds (first order, noise assumed white)."""
    from .nncf_adapter import quantizer_modules

    # a copy: the proxy calls quantizers outside their hooks; the measured model stays untouched
    qm = ctx.apply(ctx.base_plan, copy.deepcopy(ctx.apply(ctx.base_plan)))
    modules = quantizer_modules(qm)
    units = {u.name: u for u in make_units(ctx.base_plan, ctx.sites, "layer")}
    w_q, a_q = {}, {}
    for key, site in ctx.sites.items():
        for layer in site.layers:
            (w_q if site.kind == "weight" else a_q)[layer] = modules[key]
    convs = {n: m for n, m in ctx.fp32.named_modules() if n in units}
    x, _, _ = ctx.ranking
    x = x[: min(2, len(x))]
    feats: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    hooks = [m.register_forward_hook(lambda mod, inp, out, n=n: feats.__setitem__(n, (inp[0], out)))
             for n, m in convs.items()]
    try:
        model_in = x.clone().requires_grad_(False)
        out = ctx.fp32(model_in)
        n_out = out.numel()
        sens = {n: 0.0 for n in convs}
        probes = 2
        gen = torch.Generator().manual_seed(0)
        for _ in range(probes):
            r = torch.randn(out.shape, generator=gen)
            grads = torch.autograd.grad((out * r).sum(), [feats[n][1] for n in convs], retain_graph=True)
            for n, g in zip(convs, grads):
                sens[n] += float(g.pow(2).sum()) / probes / n_out
    finally:
        for h in hooks:
            h.remove()
    rows = {}
    with torch.no_grad():
        for n, conv in convs.items():
            inp, y = feats[n][0].detach(), feats[n][1].detach()
            unit = units[n]
            qa = a_q.get(n)
            qw = w_q.get(n)
            xq = qa(inp) if qa is not None and qa.is_enabled_quantization() else inp
            wq = qw(conv.weight) if qw is not None and qw.is_enabled_quantization() else conv.weight
            full = float((conv._conv_forward(xq, wq, conv.bias) - y).pow(2).mean())
            kept = 0.0 if unit.override == "bits" else float((conv._conv_forward(xq, conv.weight, conv.bias) - y)
                                                              .pow(2).mean())
            drop_high = full if unit.override == "bits" else float((conv._conv_forward(inp, wq, conv.bias) - y)
                                                                    .pow(2).mean())
            macs = y[0].numel() * conv.weight[0].numel()
            rows[n] = {"noise": full, "removed": max(0.0, full - kept), "noise_alone": drop_high,
                       "sensitivity": sens[n], "gain_mse": max(0.0, full - kept) * sens[n],
                       "loss_mse": drop_high * sens[n], "macs": macs, "weights": int(conv.weight.numel()),
                       "in_elems": int(inp[0].numel()), "out_elems": int(y[0].numel())}
    total = sum(r["noise"] * r["sensitivity"] for r in rows.values())
    return {"layers": rows, "predicted_out_mse": total, "crop": list(x.shape[-2:]),
            "units": {u.name: u.override for u in units.values()}}


def _conv_times(xml: Path, shape: tuple, runs: int) -> dict:
    """Per-conv and other time (ms) from OpenVINO's performance counters, median over runs."""
    import numpy as np

    from .audit import _module_name
    from .export import compile_ir

    compiled = compile_ir(xml, shape=shape, config={"PERF_COUNT": "YES", "PERFORMANCE_HINT": "LATENCY"})
    request = compiled.create_infer_request()
    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    for _ in range(2):
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
            convs[_module_name([name])] = {"ms": ms, "exec": exec_type}
        else:
            other += ms
    return {"convs": convs, "other_ms": other, "total_ms": other + sum(c["ms"] for c in convs.values())}


def ir_fidelity(xml: Path, ref_xml: Path, pairs: list[dict], crop_border: int) -> dict:
    """Mean PSNR-Y / SSIM-Y of an IR's outputs against the fp32 IR's on whole eval images."""
    from .export import compile_ir, run_ir
    from .metrics import psnr_y, ssim_y

    a, b = compile_ir(xml), compile_ir(ref_xml)
    ps, ss = [], []
    for pair in pairs:
        lr = pair["lr"].unsqueeze(0)
        out, ref = run_ir(a, lr).clamp(0, 1), run_ir(b, lr).clamp(0, 1)
        ps.append(psnr_y(out, ref, crop_border))
        ss.append(ssim_y(out, ref, crop_border))
    return {"psnr": sum(ps) / len(ps), "ssim": sum(ss) / len(ss), "psnr_each": ps, "images": len(pairs)}


def paper_plan(base: PrecisionPlan) -> PrecisionPlan:
    """The mixed-quantization paper's recipe: feature extraction and reconstruction at 16 bits."""
    return base.with_layers({n: LayerPrecision(HIGH_BITS, HIGH_BITS) for n, s in base.stage_of.items()
                             if s in ("feature_extraction", "reconstruction") and base.layers[n].weight_bits})


def export_plan(ctx: Context, plan: Optional[PrecisionPlan], xml: Path) -> Path:
    from .export import export_ir

    if xml.is_file():
        return xml
    model = ctx.fp32 if plan is None else ctx.apply(plan)
    ex = ctx.ranking[0][:1]
    return export_ir(model, xml, example_input=ex, compact_16bit=ctx.cfg.export.compact_16bit)


def activation_mode(cfg: Config) -> str:
    """The activation scheme nncf.quantize uses for this config: its mode, else the preset's (performance:
    symmetric, mixed: asymmetric)."""
    mode = cfg.compression.activations.mode
    return mode or ("asymmetric" if cfg.compression.preset == "mixed" else "symmetric")


def with_activation_mode(cfg: Config, mode: str) -> Config:
    d = to_dict(cfg)
    d["compression"]["activations"]["mode"] = mode
    return parse_config(d)


def measure_schemes(cfg: Config, spec: SweepSpec, out: Path, log: Callable[[str], None]) -> dict:
    """Both activation schemes, each with its own calibration: the all-int8 and paper-recipe IRs' fidelity on the
    eval photos and their latency, interleaved in one run.

    Why: a symmetric activation quantizer spends half its levels on negative values that LeakyReLU outputs barely
    use; an asymmetric one (a zero point) runs on the same int8 kernels. Which is better is measured, not assumed."""
    from .bench import Target, benchmark

    configured = activation_mode(cfg)
    modes = [configured] + [m for m in ("symmetric", "asymmetric") if m != configured]
    folder = out / "schemes"
    rows: dict[str, dict] = {}
    xml: dict[str, Path] = {}
    fp32_xml = None
    for mode in modes:
        c = cfg if mode == configured else with_activation_mode(cfg, mode)
        ctx = Context(c, spec, folder / mode, log)
        log(f"activation scheme {mode}: calibrating and exporting the all-int8 and paper-recipe IRs")
        try:
            xml[f"int8_{mode}"] = export_plan(ctx, ctx.base_plan, folder / mode / "int8.xml")
            xml[f"paper_{mode}"] = export_plan(ctx, paper_plan(ctx.base_plan), folder / mode / "paper.xml")
            fp32_xml = fp32_xml or export_plan(ctx, None, out / "irs" / "fp32.xml")
            pairs = ctx.eval_pairs()
            fid = {k: ir_fidelity(xml[f"{k}_{mode}"], fp32_xml, pairs, ctx.crop_border) for k in ("int8", "paper")}
            rows[mode] = {"int8_fidelity_db": fid["int8"]["psnr"], "paper_fidelity_db": fid["paper"]["psnr"],
                          "int8_fidelity_ssim": fid["int8"]["ssim"], "eval_images": len(pairs)}
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:  # noqa: BLE001 - the configured scheme must work; the other one is optional
            if mode == configured:
                raise
            log(f"activation scheme {mode} failed ({type(exc).__name__}: {exc}); keeping {configured}")
            rows[mode] = {"error": f"{type(exc).__name__}: {exc}"}
            xml.pop(f"int8_{mode}", None)
            xml.pop(f"paper_{mode}", None)
    h, w = spec.input_size
    wall = {s.name: s.median_ms for s in benchmark([Target(k, "openvino", v) for k, v in xml.items()],
                                                     input_size=(h, w), iterations=spec.bench_iterations, warmup=2,
                                                     progress=False)}
    base_ms = wall[f"int8_{configured}"]
    for mode, row in rows.items():
        if "error" not in row:
            row.update({"int8_ms": wall[f"int8_{mode}"], "paper_ms": wall[f"paper_{mode}"],
                        "int8_ratio": wall[f"int8_{mode}"] / base_ms, "paper_ratio": wall[f"paper_{mode}"] / base_ms})
    ok = [m for m in modes if "error" not in rows[m] and rows[m]["int8_ratio"] <= SCHEME_LATENCY_TOLERANCE]
    chosen = configured if spec.activations == "configured" else max(ok, key=lambda m: rows[m]["int8_fidelity_db"])
    return {"configured": configured, "chosen": chosen, "schemes": rows, "input_size": [h, w],
            "latency_tolerance": SCHEME_LATENCY_TOLERANCE}


def adopt_scheme(out: Path, chosen: str) -> None:
    """Make the chosen scheme's calibration and reference IRs the sweep's own (no second calibration)."""
    import shutil

    src = out / "schemes" / chosen
    (out / "irs").mkdir(parents=True, exist_ok=True)
    for name in ("calibrated.pt", "calibrated.json"):
        if (src / name).is_file():
            shutil.copyfile(src / name, out / name)
    for stem in ("int8", "paper"):
        for f in src.glob(f"{stem}.*"):
            shutil.copyfile(f, out / "irs" / f.name)


def choose_scheme(cfg: Config, spec: SweepSpec, out: Path, log: Callable[[str], None] = print,
                  shard: tuple[int, int] = (0, 1)) -> tuple[Config, dict]:
    """The config the sweep measures on (the configured activation scheme or the better other one) and the
    measurement behind the choice; recorded once in results.jsonl like every other job."""
    key = context_key(cfg, spec)
    job = make_job(key, "schemes")
    store = ResultStore(out, shard)
    done = store.load()
    rec = done.get(job.id)
    if not (rec and rec.get("ok")):
        t0 = time.perf_counter()
        result = measure_schemes(cfg, spec, out, log)
        rec = {"id": job.id, "kind": "schemes", "unit": None, "ok": True, "result": result,
               "wall_s": round(time.perf_counter() - t0, 2)}
        store.append(rec)
    result = rec["result"]
    chosen = result["chosen"]
    if (out / "schemes" / chosen).is_dir():
        adopt_scheme(out, chosen)
    effective = cfg if chosen == result["configured"] else with_activation_mode(cfg, chosen)
    return effective, result


def measure_costs(ctx: Context) -> dict:
    """Latency and size of keeping each layer high, at the sweep's input size, from real IRs."""
    from .audit import audit_runtime
    from .bench import Target, benchmark, machine_info
    from .export import ir_size

    h, w = ctx.spec.input_size
    shape = (1, 3, h, w)
    irs = ctx.out / "irs"
    xml = {"int8": export_plan(ctx, ctx.base_plan, irs / "int8.xml"),
           "fp32": export_plan(ctx, None, irs / "fp32.xml"),
           "paper": export_plan(ctx, paper_plan(ctx.base_plan), irs / "paper.xml")}
    ctx.log("performance counters of the int8, fp32 and paper-recipe IRs")
    times = {k: _conv_times(v, shape, ctx.spec.latency_runs) for k, v in xml.items()}
    audits = {k: audit_runtime(v, shape) for k, v in xml.items()}
    stats = benchmark([Target(k, "openvino", v) for k, v in xml.items()], input_size=(h, w),
                      iterations=ctx.spec.bench_iterations, warmup=2, progress=False)
    wall = {s.name: s.median_ms for s in stats}
    # geometry at the input size, for boundary (Reorder / Convert) costs
    elems: dict[str, int] = {}
    hooks = [m.register_forward_hook(lambda mod, i, o, n=n: elems.__setitem__(n, i[0][0].numel() + o[0].numel()))
             for n, m in ctx.fp32.named_modules() if isinstance(m, nn.Conv2d)]
    try:
        with torch.no_grad():
            ctx.fp32(torch.zeros(shape))
    finally:
        for hk in hooks:
            hk.remove()
    t8, t32, tp = times["int8"]["convs"], times["fp32"]["convs"], times["paper"]["convs"]
    high = paper_plan(ctx.base_plan).high_precision_layers()
    predicted_paper = times["int8"]["total_ms"] + sum(t32.get(n, {}).get("ms", 0) - t8.get(n, {}).get("ms", 0)
                                                      for n in high)
    boundary_total = max(0.0, times["paper"]["total_ms"] - predicted_paper)
    per_elem = boundary_total / max(1, sum(elems.get(n, 0) for n in high))
    # counters sum to a little less than the wall-clock median (dispatch between nodes): scale to the median
    scale = wall["int8"] / times["int8"]["total_ms"] if times["int8"]["total_ms"] else 1.0
    bytes_high = 2 if ctx.cfg.export.compact_16bit else 4
    layers = {}
    for n, m in ctx.fp32.named_modules():
        if not isinstance(m, nn.Conv2d):
            continue
        a, b = t8.get(n, {}).get("ms", 0.0), t32.get(n, {}).get("ms", 0.0)
        layers[n] = {"int8_ms": a * scale, "fp32_ms": b * scale, "boundary_ms": per_elem * elems.get(n, 0) * scale,
                     "int8_exec": t8.get(n, {}).get("exec", ""), "fp32_exec": t32.get(n, {}).get("exec", ""),
                     "size_bytes": m.weight.numel() * (bytes_high - 1)}
    pairs = ctx.eval_pairs()
    fid = {k: ir_fidelity(xml[k], xml["fp32"], pairs, ctx.crop_border) for k in ("int8", "paper")}
    mi = machine_info()
    return {"input_size": [h, w], "wall_ms": wall, "counter_total_ms": {k: v["total_ms"] for k, v in times.items()},
            "counter_other_ms": {k: v["other_ms"] for k, v in times.items()}, "counter_scale": scale,
            "boundary_ms_paper": boundary_total * scale, "boundary_ms_per_elem": per_elem * scale,
            "paper_layers": high, "layers": layers,
            "size_bytes": {k: ir_size(v).bin_bytes for k, v in xml.items()},
            "runtime_convs": {k: {"int8": a.conv_int8, "fp32": a.conv_fp32} for k, a in audits.items()},
            "ir_fidelity": fid, "eval_images": len(pairs),
            "machine": {"cpu": mi.cpu, "cores": mi.cores, "openvino": mi.openvino}}


def measure_gain(ctx: Context, unit: Unit) -> dict:
    return _quality(ctx.apply(ctx.base_plan.with_layers(unit.high(ctx.base_plan))), ctx)


def measure_loss(ctx: Context, unit: Unit) -> dict:
    return _quality(ctx.apply(ctx.all_high.with_layers(unit.low(ctx.base_plan, ctx.all_high))), ctx)


def measure_base(ctx: Context) -> dict:
    return {"int8": _quality(ctx.apply(ctx.base_plan), ctx), "high": _quality(ctx.apply(ctx.all_high), ctx),
            "paper": _quality(ctx.apply(paper_plan(ctx.base_plan)), ctx), "ranking_crops": ctx.ranking[2]}


def measure_qat(ctx: Context, unit: Optional[Unit]) -> dict:
    """Short distillation QAT of the all-int8 model (unit None) or of the unit kept high; fidelity after."""
    from .config import deep_merge
    from .train import train

    plan = ctx.base_plan if unit is None else ctx.base_plan.with_layers(unit.high(ctx.base_plan))
    model = ctx.apply(plan, copy.deepcopy(ctx.apply(ctx.base_plan)))
    t = to_dict(ctx.cfg)
    t["variants"] = {}
    t = deep_merge(t, {"training": {"iterations": ctx.spec.qat_steps, "distill_only": True, "checkpoint_every":
                                    10 ** 9, "device": "cpu", "gan_weight": 0.0, "perceptual_weight": 0.0,
                                    "pixel_weight": 0.0}})
    folder = ctx.out / "qat" / (unit.name if unit else "_base")
    with _single_process():
        train(parse_config(t), model=model, teacher=ctx.fp32, out_dir=folder, plan=plan, progress=False,
              resume=True)
    return _quality(model.eval(), ctx)


# ----------------------------------------------------------------------------------------------
# the sweep

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


def plan_jobs(cfg: Config, spec: SweepSpec, ctx: Context, done: dict[str, dict]) -> tuple[list[Job], list[Job]]:
    """(jobs that need nothing, jobs that need the proxy's ranking), deterministic in every shard."""
    key = context_key(cfg, spec)
    first = [make_job(key, "base"), make_job(key, "costs"), make_job(key, "proxy")]
    stage_units = make_units(ctx.base_plan, {}, "stage")
    for u in stage_units:
        first += [make_job(key, "gain", u), make_job(key, "loss", u)]
    return first, []


def unit_jobs(cfg: Config, spec: SweepSpec, ctx: Context, proxy: dict) -> list[Job]:
    key = context_key(cfg, spec)
    if spec.granularity == "stage":
        units: list[Unit] = []
    elif spec.granularity == "block":
        units = make_units(ctx.base_plan, {}, "block")
    else:  # the proxy job recorded which layers share an input quantizer: no calibration needed to plan
        units = contenders(proxy, [Unit(n, "layer", (n,), o) for n, o in proxy["units"].items()], spec)
    jobs = []
    for u in units:
        jobs += [make_job(key, "gain", u), make_job(key, "loss", u)]
    if spec.mode == "qat":
        pool = units or make_units(ctx.base_plan, {}, "stage")
        rows = proxy["layers"]
        top = sorted(pool, key=lambda u: -sum(rows[n]["gain_mse"] for n in u.layers))[: spec.qat_top]
        jobs += [make_job(key, "qat")] + [make_job(key, "qat", u) for u in top]
    return jobs


def _owned(job: Job, shard: tuple[int, int]) -> bool:
    return int(job.id, 16) % shard[1] == shard[0]


def _run_job(job: Job, ctx: Context) -> dict:
    if job.kind == "base":
        return measure_base(ctx)
    if job.kind == "costs":
        return measure_costs(ctx)
    if job.kind == "proxy":
        return measure_proxy(ctx)
    if job.kind == "gain":
        return measure_gain(ctx, job.unit)
    if job.kind == "loss":
        return measure_loss(ctx, job.unit)
    if job.kind == "qat":
        return measure_qat(ctx, job.unit)
    raise SweepError(f"unknown job kind {job.kind!r}")


def _execute(jobs: list[Job], ctx: Context, store: ResultStore, done: dict[str, dict], shard: tuple[int, int],
             progress: bool) -> int:
    from tqdm import tqdm

    todo = [j for j in jobs if _owned(j, shard) and not done.get(j.id, {}).get("ok")]
    failed = 0
    for job in tqdm(todo, desc=f"sweep jobs (shard {shard[0]}/{shard[1]})", disable=not progress):
        t0 = time.perf_counter()
        try:
            result = _run_job(job, ctx)
            rec = {"id": job.id, "kind": job.kind, "unit": asdict(job.unit) if job.unit else None, "ok": True,
                   "result": result, "wall_s": round(time.perf_counter() - t0, 2)}
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:  # noqa: BLE001 - a crashed job is recorded and the sweep goes on
            failed += 1
            rec = {"id": job.id, "kind": job.kind, "unit": asdict(job.unit) if job.unit else None, "ok": False,
                   "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc(limit=6),
                   "wall_s": round(time.perf_counter() - t0, 2)}
            ctx.log(f"job {job.label()} failed: {rec['error']}")
        store.append(rec)
        done[job.id] = rec
    return failed


@dataclass
class SweepOutcome:
    complete: bool
    failed: int
    jobs: int
    summary: Optional[dict] = None
    wall_s: float = 0.0
    notes: list[str] = field(default_factory=list)


def run_sweep(cfg: Config, out_dir: str | Path, spec: SweepSpec, *, shard: tuple[int, int] = (0, 1),
              log: Callable[[str], None] = print, progress: bool = True) -> SweepOutcome:
    """Run this shard's jobs (skipping finished ones); when every job is finished, write the outputs."""
    from .config import dump_config

    t0 = time.perf_counter()
    if cfg.compression is None:
        raise SweepError("the config has compression: null (fp32); a sweep needs a quantization section")
    if cfg.variants:
        raise ConfigError(f"the config defines variants ({', '.join(cfg.variants)}); sweep one: write a "
                          "single-variant config")
    out = Path(out_dir)
    store = ResultStore(out, shard)
    dump_config(cfg, out / "config.json", check_unchanged=True, ignore=("name", "benchmark", "eval", "variants"))
    scheme = None
    if spec.activations == "auto":
        cfg, scheme = choose_scheme(cfg, spec, out, log, shard)
        if scheme["chosen"] != scheme["configured"]:
            log(f"activations: {scheme['chosen']} (closer to fp32 than the configured {scheme['configured']} at "
                f"{scheme['schemes'][scheme['chosen']]['int8_ratio']:.3f}x its latency); the sweep measures on it")
    dump_config(cfg, out / "effective_config.json")
    ctx = Context(cfg, spec, out, log)
    done = store.load()
    first, _ = plan_jobs(cfg, spec, ctx, done)
    failed = _execute(first, ctx, store, done, shard, progress)
    proxy_job = next(j for j in first if j.kind == "proxy")
    proxy = done.get(proxy_job.id, {}).get("result") if done.get(proxy_job.id, {}).get("ok") else None
    if proxy is None and (spec.granularity == "layer" or spec.mode == "qat"):
        log("computing the proxy ranking locally (another shard records it)")
        proxy = measure_proxy(ctx)
    second = unit_jobs(cfg, spec, ctx, proxy or {"layers": {}}) if proxy is not None or spec.granularity == "block" \
        else []
    failed += _execute(second, ctx, store, done, shard, progress)
    jobs = first + second
    missing = [j for j in jobs if not done.get(j.id, {}).get("ok")]
    outcome = SweepOutcome(not missing, failed, len(jobs), wall_s=time.perf_counter() - t0)
    if missing:
        others = [j for j in missing if not _owned(j, shard)]
        if others:
            outcome.notes.append(f"{len(others)} jobs belong to other shards: concatenate their results*.jsonl into "
                                 f"{out} and re-run this command (finished jobs are skipped) to write the report")
        crashed = len(missing) - len(others)
        if crashed:
            outcome.notes.append(f"{crashed} jobs crashed (errors in results.jsonl); re-run to retry them")
        return outcome
    from .sweep_report import summarize, write_outputs

    outcome.summary = summarize(cfg, spec, ctx, jobs, done)
    outcome.summary["activation_scheme"] = scheme
    write_outputs(outcome.summary, out)
    return outcome


def spearman(a: list[float], b: list[float]) -> Optional[float]:
    """Rank correlation (average ranks for ties); None with fewer than 3 points."""
    if len(a) < 3:
        return None

    def ranks(v: list[float]) -> list[float]:
        order = sorted(range(len(v)), key=lambda i: v[i])
        r = [0.0] * len(v)
        i = 0
        while i < len(order):
            j = i
            while j + 1 < len(order) and v[order[j + 1]] == v[order[i]]:
                j += 1
            for k in range(i, j + 1):
                r[order[k]] = (i + j) / 2
            i = j + 1
        return r
    ra, rb = ranks(a), ranks(b)
    ma, mb = sum(ra) / len(ra), sum(rb) / len(rb)
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb))
    va = math.sqrt(sum((x - ma) ** 2 for x in ra))
    vb = math.sqrt(sum((y - mb) ** 2 for y in rb))
    return cov / (va * vb) if va and vb else None
