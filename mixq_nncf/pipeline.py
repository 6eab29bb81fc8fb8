"""`mixq run`: config -> quantize -> train -> export -> audit -> benchmark -> evaluate -> report.

Every step writes its artifacts atomically into the run folder. A result is reused only when the content hash
of what it measured still matches (the IR's .xml + .bin, the config section, the checkpoint, the eval images),
so an interrupted run resumes where it stopped (training resumes from its own checkpoint) and a re-exported IR
is never reported with the old IR's latency or quality.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from mixq_nncf.config.schema import Config, bits_name, to_dict

from mixq_nncf.config.files import dump_config
from mixq_nncf.io_utils import (atomic_write_json, atomic_write_text, cached_json, content_key, ensure_writable, fault_point,
                       file_hash, remove_stale_temp)

Log = Callable[[str], None]


@dataclass
class VariantArtifacts:
    name: str
    folder: Path
    recipe: str
    checkpoint: Path | None = None
    ir: Path | None = None
    training: dict[str, Any] = field(default_factory=dict)
    parity: dict[str, Any] = field(default_factory=dict)
    audit: dict[str, Any] = field(default_factory=dict)
    size: dict[str, Any] = field(default_factory=dict)


def recipe_of(cfg: Config, plan: Any | None) -> str:
    """Short words for a variant: 'fp32', 'PTQ int8', 'QAT int8 + int16 x3', 'QAT int8, ranges p0.01-p99.99'."""
    if cfg.compression is None or plan is None:
        return "fp32"
    counts: dict[str, int] = {}
    for prec in plan.layers.values():
        key = bits_name(prec.weight_bits) if prec.weight_bits == prec.act_bits else \
            f"w{bits_name(prec.weight_bits)}/a{bits_name(prec.act_bits)}"
        counts[key] = counts.get(key, 0) + 1
    main = max(counts, key=counts.get)
    rest = ", ".join(f"{k} x{n}" for k, n in counts.items() if k != main)
    kind = "QAT" if cfg.training.iterations > 0 else "PTQ"
    if cfg.compression.fully_quantized is not None:
        kind += f" fully quantized (skips int{cfg.compression.fully_quantized.bits()[2]})"
    rng = cfg.compression.initializer.range
    ranges = "" if rng.type == "mean_min_max" else f", ranges {_range_words(rng)}"
    return f"{kind} {main}" + (f" + {rest}" if rest else "") + ranges


def _range_words(rng) -> str:
    """A non-default activation range initialiser, so a report row says what its ranges started from."""
    if rng.type != "mean_percentile":
        return rng.type.replace("_", "-")
    low, high = rng.percentiles()
    return f"p{low:g}-p{high:g}"


def _ptq_key(cfg: Config, plan: Any) -> str:
    """Variants whose PTQ differs only in bit widths share one calibration (bits change without re-calibration)."""
    comp = to_dict(cfg.compression)
    for k in ("stages", "scope_overrides"):
        comp.pop(k, None)
    comp["weights"].pop("bits", None)
    comp["activations"].pop("bits", None)
    comp.pop("fully_quantized", None)  # bit widths only: the same calibration serves it
    comp.get("initializer", {}).pop("weight_range", None)  # applied after the bits, on each variant's copy
    fp32_layers = sorted(n for n, p in plan.layers.items() if p.weight_bits is None and p.act_bits is None)
    blob = json.dumps({"model": to_dict(cfg.model), "data": to_dict(cfg.data), "input": to_dict(cfg.input_info),
                       "compression": comp, "fp32": fp32_layers}, sort_keys=True)
    return hashlib.sha1(blob.encode()).hexdigest()[:12]


def probe_inputs(eval_pairs: list[dict], size: int, n: int = 4) -> list:
    """Centre LR crops used to measure fidelity before/after training in torch (cheap, same for every variant)."""
    out = []
    for pair in eval_pairs[:n]:
        lr = pair["lr"]
        h, w = lr.shape[-2:]
        s = min(size, h, w)
        top, left = (h - s) // 2, (w - s) // 2
        out.append(lr[..., top:top + s, left:left + s].unsqueeze(0))
    return out


class CachedOutputs:
    """A model's outputs on fixed inputs, computed once.

    Every quantized variant's fidelity (before and after QAT, and in the export parity check) compares against
    the fp32 model on the same probe crops; on RRDBNet each fp32 pass costs about a second.
    """

    def __init__(self, model):
        self.model = model
        self._outputs: dict[int, tuple] = {}

    def __call__(self, x):
        hit = self._outputs.get(id(x))
        if hit is None:
            hit = self._outputs[id(x)] = (x, self.model(x))  # holding x keeps its id from being reused
        return hit[1]


def torch_fidelity(model, reference, inputs: list, crop_border: int) -> float:
    """Mean PSNR-Y of ``model`` vs ``reference`` outputs on the same inputs."""
    import torch

    from mixq_nncf.eval.metrics import psnr_y

    vals = []
    with torch.no_grad():
        for x in inputs:
            vals.append(psnr_y(model(x).clamp(0, 1), reference(x).clamp(0, 1), crop_border))
    return sum(vals) / len(vals)


def run(cfg: Config, out_dir: Path, *, variants: list[str] | None = None, log: Log = print,
        progress: bool = True) -> dict:
    """Run every variant of ``cfg`` into ``out_dir`` and write report.json / report.md; returns the report dict."""

    from mixq_nncf.data import datasets as data_mod
    from mixq_nncf.models import load_generator

    out_dir = Path(out_dir)
    ensure_writable(out_dir)
    remove_stale_temp(out_dir)  # what a killed run was writing; its finished outputs stay
    dump_config(cfg, out_dir / "config.json")
    names = variants or cfg.variant_names()
    vcfgs = {n: cfg.variant(n) for n in names}
    t_start = time.perf_counter()

    # 1. the fp32 model, data
    log(f"[1/7] loading {cfg.model.arch} (weights: {cfg.model.weights})")
    fp32 = load_generator(cfg.model.arch, cfg.model.args, cfg.model.weights)
    scale = int(fp32.scale)
    crop_border = cfg.eval.crop_border if cfg.eval.crop_border is not None else scale
    eval_paths = data_mod.resolve_images(cfg.data.eval, "eval")
    if cfg.data.eval_max_images:
        eval_paths = eval_paths[: cfg.data.eval_max_images]
    eval_key = content_key([(p.name, file_hash(p)) for p in eval_paths], cfg.data.eval_lr, cfg.data.eval_crop,
                           cfg.model.arch, cfg.model.args, _weights_key(cfg))
    eval_pairs = [eval_set_item for eval_set_item in data_mod.EvalPairs(
        eval_paths, scale, lr_paths=(data_mod.resolve_images(cfg.data.eval_lr, "eval") if cfg.data.eval_lr else None),
        crop=cfg.data.eval_crop)]
    probe = probe_inputs(eval_pairs, cfg.input_info.sample_size[-1])
    probe_ref = CachedOutputs(fp32)
    calibration = None

    def _calib():
        nonlocal calibration
        if calibration is None:
            calibration = data_mod.calibration_inputs(cfg.data.calibration or cfg.data.train,
                                                      cfg.data.calibration_samples, cfg.data.calibration_patch,
                                                      scale, cfg.data.seed)
        return calibration

    # 2-4. per variant: quantize, train, export, audit
    arts: dict[str, VariantArtifacts] = {}
    for i, name in enumerate(names):
        vcfg = vcfgs[name]
        folder = out_dir / "variants" / name
        folder.mkdir(parents=True, exist_ok=True)
        # benchmark / eval results live outside the variant folder and are checked on their own
        unused = ("name", "description", "variants", "benchmark", "eval") + \
            (("training",) if vcfg.compression is None or vcfg.training.iterations == 0 else ())
        dump_config(vcfg, folder / "config.json", check_unchanged=True, ignore=unused)
        art = VariantArtifacts(name=name, folder=folder, recipe="fp32")
        arts[name] = art
        log(f"[2/7] variant {i + 1}/{len(names)} '{name}'")
        model, plan = _quantized_model(vcfg, fp32, folder, out_dir / "cache", _calib, log)
        art.recipe = recipe_of(vcfg, plan)
        for conflict in getattr(plan, "conflicts", None) or []:
            log(f"      warning: {conflict}")
        if vcfg.compression is not None and vcfg.training.iterations > 0:
            model, art.training = _train(vcfg, model, plan, fp32, folder, probe, probe_ref, crop_border, log)
        art.checkpoint = folder / ("train/final.pt" if art.training else "quantized.pt")
        art.ir, art.parity = _export(vcfg, model, probe_ref, folder, probe, log, art.checkpoint)
        art.audit, art.size = _audit(vcfg, art.ir, folder, log)

    # 5. benchmark, 6. evaluate, 7. report
    baseline = next((n for n in names if vcfgs[n].compression is None), None)
    bench = _benchmark(cfg, arts, fp32, baseline, out_dir, log, progress)
    quality, per_image = _evaluate(cfg, arts, fp32, eval_pairs, crop_border, out_dir, log, progress, baseline,
                                   eval_key)
    _add_niqe_gap(quality, per_image, baseline)
    report = _assemble(cfg, arts, bench, quality, baseline, scale, eval_paths, out_dir)
    report["wall_s"] = round(time.perf_counter() - t_start, 1)
    _figures(report, arts, eval_pairs, out_dir)
    from mixq_nncf.eval.report import render_markdown

    atomic_write_json(out_dir / "report.json", report)
    atomic_write_text(out_dir / "report.md", render_markdown(report))
    log(f"[7/7] report written: {out_dir / 'report.md'}")
    return report


# ----------------------------------------------------------------------------------------------
# steps

def _quantized_model(cfg: Config, fp32, folder: Path, cache: Path, calibration: Callable[[], list], log: Log):
    """PTQ (or fp32) model of a variant; shares calibration across variants that differ only in bits."""
    from mixq_nncf.quant.nncf_adapter import apply_plan
    from mixq_nncf.config.plan import as_int8, resolve_plan
    from mixq_nncf.quant.checkpoint import load_quantized, save_quantized
    from mixq_nncf.quant.ptq import complete_plan, init_weight_ranges, quantize

    ckpt = folder / "quantized.pt"
    key = content_key(to_dict(cfg.model), _weights_key(cfg), to_dict(cfg.data), to_dict(cfg.input_info),
                      to_dict(cfg.compression))
    if ckpt.exists():
        loaded = load_quantized(ckpt)
        if loaded.meta.get("key") == key:
            log(f"      quantized model found: {ckpt}")
            return loaded.model, _with_conflicts(loaded.plan, loaded.meta.get("conflicts"))
        log(f"      {ckpt} was made from other inputs: quantizing again")
    if cfg.compression is None:
        save_quantized(fp32, ckpt, arch=cfg.model.arch, args=cfg.model.args, plan=None,
                       meta={"variant": cfg.name, "weights": cfg.model.weights, "key": key})
        return fp32, None
    input_range = tuple(cfg.input_info.range)
    plan = resolve_plan(fp32, cfg.compression, input_range)
    base_ckpt = cache / f"ptq_{_ptq_key(cfg, plan)}.pt"
    if base_ckpt.exists():
        log(f"      reusing calibration {base_ckpt.name}")
        model = load_quantized(base_ckpt).model
    else:
        log(f"      calibrating ({cfg.data.calibration_samples} LR crops of {cfg.data.calibration_patch} px)")
        t0 = time.perf_counter()
        int8_plan = as_int8(plan)
        model = quantize(fp32, int8_plan, calibration(), compression=cfg.compression, input_range=input_range)
        save_quantized(model, base_ckpt, arch=cfg.model.arch, args=cfg.model.args, plan=int8_plan,
                       meta={"calibration_s": time.perf_counter() - t0})
    plan = complete_plan(model, plan, cfg.compression)
    applied = apply_plan(model, plan, input_range=input_range)
    conflicts = applied.conflicts
    fitted = {} if cfg.compression.initializer.weight_range == "min_max" else \
        init_weight_ranges(model, cfg.compression, applied.sites, calibration())
    if fitted:
        log(f"      weight ranges fitted (least output error) in {len(fitted)} quantizers, mean clipping ratio "
            f"{sum(fitted.values()) / len(fitted):.2f}")
    save_quantized(model, ckpt, arch=cfg.model.arch, args=cfg.model.args, plan=plan,
                   meta={"variant": cfg.name, "weights": cfg.model.weights, "key": key, "conflicts": conflicts})
    return model, _with_conflicts(plan, conflicts)


def _with_conflicts(plan, conflicts):
    """The plan, carrying the layers whose fp32 wish a shared quantizer overruled (for the run's warning)."""
    if plan is not None:
        object.__setattr__(plan, "conflicts", list(conflicts or []))
    return plan


def _weights_key(cfg: Config) -> Any:
    """The weights file's content hash (a path alone says nothing about what it holds)."""
    w = cfg.model.weights
    if w and w != "embedded" and Path(w).is_file():
        return file_hash(Path(w))
    return w


_HARMLESS_TRAINING = ("log_every", "checkpoint_every", "tensorboard", "device", "num_workers")


def _training_key(cfg: Config, start: Path) -> str:
    training = {k: v for k, v in to_dict(cfg.training).items() if k not in _HARMLESS_TRAINING}
    return content_key(file_hash(start), training, to_dict(cfg.data), cfg.model.arch)


def _train(cfg: Config, model, plan, fp32, folder: Path, probe: list, probe_ref: CachedOutputs, crop_border: int,
           log: Log):
    from mixq_nncf.quant.checkpoint import load_quantized

    info_path = folder / "training.json"
    final = folder / "train" / "final.pt"
    key = _training_key(cfg, folder / "quantized.pt")

    def _final_matches(info: dict) -> bool:
        return final.is_file() and info.get("final_sha256") == file_hash(final)

    def _compute() -> dict:
        return _run_training(cfg, model, plan, probe, probe_ref, crop_border, fp32, folder, final, log)

    info, reused = cached_json(info_path, key, _compute, valid=_final_matches)
    if reused:
        log(f"      trained model found: {final}")
    return load_quantized(final).model, info


def _run_training(cfg: Config, model, plan, probe: list, probe_ref, crop_border: int, fp32, folder: Path,
                  final: Path, log: Log) -> dict:
    from mixq_nncf.quant.checkpoint import load_quantized
    from mixq_nncf.train.loop import train

    before = torch_fidelity(model, probe_ref, probe, crop_border)
    log(f"      QAT: {cfg.training.iterations} steps (fidelity before {before:.2f} dB)")
    t0 = time.perf_counter()
    result = train(cfg, model=model, teacher=fp32, out_dir=folder / "train", resume=True, plan=plan)
    trained = load_quantized(final).model
    after = torch_fidelity(trained, probe_ref, probe, crop_border)
    info = {"steps": cfg.training.iterations, "fidelity_before": before, "fidelity_after": after,
            "wall_s": time.perf_counter() - t0, "probe": f"{len(probe)} centre LR crops of the eval images, torch",
            "result": to_dict(result) if hasattr(result, "__dataclass_fields__") else str(result),
            "final_sha256": file_hash(final)}
    log(f"      QAT done: fidelity {before:.2f} -> {after:.2f} dB")
    return info


def _export(cfg: Config, model, probe_ref: CachedOutputs, folder: Path, probe: list, log: Log, checkpoint: Path):
    from mixq_nncf.ir.export import check_parity, export_ir, ir_fingerprint

    xml = folder / "model.xml"
    source = checkpoint if checkpoint.is_file() else None
    key = content_key(file_hash(source) if source else None, to_dict(cfg.export), list(probe[0].shape))
    if _ir_matches(xml, key):
        log(f"      IR found: {xml}")
    else:
        log("      exporting OpenVINO IR")
        meta = {"arch": cfg.model.arch, "args": cfg.model.args, "weights": cfg.model.weights, "variant": cfg.name,
                "source_key": key}
        export_ir(model, xml, example_input=probe[0], dynamic=cfg.export.dynamic_shape,
                  compact_16bit=cfg.export.compact_16bit, meta=meta, int4_weights=cfg.export.int4_weights)

    def _parity() -> dict:
        images = [p for p in probe[: max(1, cfg.export.parity_images)]]
        return to_dict(check_parity(xml, model, images,
                                    reference_model=probe_ref if cfg.compression is not None else None,
                                    tolerance_db=cfg.export.parity_tolerance_db,
                                    max_gain_db=cfg.export.parity_max_gain_db,
                                    fp32_tolerance=cfg.export.fp32_tolerance))

    parity, _ = cached_json(folder / "parity.json", content_key(ir_fingerprint(xml), to_dict(cfg.export)), _parity)
    return xml, parity


def _ir_matches(xml: Path, key: str) -> bool:
    """A complete IR (its .xml/.bin are the pair its sidecar names) exported from the same checkpoint/settings."""
    from mixq_nncf.errors import IRError
    from mixq_nncf.ir.export import verify_ir

    if not xml.is_file():
        return False
    try:
        return verify_ir(xml).get("source_key") == key
    except IRError:
        return False


def _audit(cfg: Config, xml: Path, folder: Path, log: Log):
    from mixq_nncf.ir.audit import audit_runtime
    from mixq_nncf.ir.export import ir_fingerprint, ir_size

    shape = tuple(cfg.input_info.sample_size)

    def _compute() -> dict:
        audit = to_dict(audit_runtime(xml, input_shape=shape))
        audit.pop("ops", None)
        return {"audit": audit, "size": to_dict(ir_size(xml))}

    saved, _ = cached_json(folder / "audit.json", content_key(ir_fingerprint(xml), list(shape)), _compute)
    return saved["audit"], saved["size"]


def _benchmark(cfg: Config, arts: dict[str, VariantArtifacts], fp32, baseline: str | None, out_dir: Path,
               log: Log, progress: bool) -> dict:
    """All variant IRs and the peers timed in one interleaved run (ratios are only fair within one run)."""
    from mixq_nncf.ir.bench import Target
    from mixq_nncf.ir.export import ir_fingerprint

    path = out_dir / "bench.json"
    names = list(arts)
    targets = [Target(name=n, kind="openvino", path=a.ir) for n, a in arts.items()]
    peers = list(cfg.benchmark.peers)
    peer_names: list[str] = []
    if baseline is None and "ov_fp32" in peers:
        from mixq_nncf.ir.export import export_ir

        xml = out_dir / "peers" / "ov_fp32.xml"
        peer_key = content_key(cfg.model.arch, cfg.model.args, _weights_key(cfg), cfg.export.dynamic_shape)
        if not _ir_matches(xml, peer_key):
            import torch

            sample = torch.rand(*cfg.input_info.sample_size)
            export_ir(fp32, xml, example_input=sample, dynamic=cfg.export.dynamic_shape, compact_16bit=False,
                      meta={"source_key": peer_key})
        targets.append(Target(name="ov_fp32", kind="openvino", path=xml))
        peer_names.append("ov_fp32")
    if "torch_fp32" in peers:
        targets.append(Target(name="torch_fp32", kind="torch", model=fp32))
        peer_names.append("torch_fp32")
    key = content_key({t.name: ir_fingerprint(t.path) for t in targets if t.kind == "openvino"}, peer_names,
                      "torch_fp32" in peers and (cfg.model.arch, cfg.model.args, _weights_key(cfg)),
                      to_dict(cfg.benchmark), baseline)
    result, reused = cached_json(path, key, lambda: _measure(cfg, arts, targets, peer_names, names, baseline, log,
                                                             progress))
    if reused:
        log("[5/7] benchmark found")
    return result


def _measure(cfg: Config, arts: dict[str, VariantArtifacts], targets: list, peer_names: list, names: list,
             baseline: str | None, log: Log, progress: bool) -> dict:
    from mixq_nncf.ir.audit import layer_time_shares
    from mixq_nncf.ir.bench import benchmark, machine_info

    h, w = cfg.benchmark.input_size
    log(f"[5/7] benchmarking {len(targets)} targets at 1x3x{h}x{w} (interleaved, {cfg.benchmark.iterations} runs each)")
    stats = benchmark(targets, input_size=(h, w), threads=cfg.benchmark.threads, streams=cfg.benchmark.streams,
                      iterations=cfg.benchmark.iterations, warmup=cfg.benchmark.warmup, progress=progress)
    result: dict[str, Any] = {"variants": names, "peers": peer_names, "machine": to_dict(machine_info()),
                              "settings": to_dict(cfg.benchmark), "stats": {s.name: to_dict(s) for s in stats},
                              "fp32_time_share": {}}
    for n, a in arts.items():
        if n != baseline and a.audit.get("conv_fp32", 0):
            shares = layer_time_shares(a.ir, (1, 3, h, w))
            result["fp32_time_share"][n] = to_dict(shares)
    fault_point("benchmark")
    return result


def _run_ir(compiled, lr):
    from mixq_nncf.ir.export import run_ir

    return run_ir(compiled, lr).clamp(0, 1)


def _evaluate(cfg: Config, arts: dict[str, VariantArtifacts], fp32, eval_pairs: list, crop_border: int,
              out_dir: Path, log: Log, progress: bool, baseline: str | None = None,
              eval_key: str | None = None) -> tuple[dict, list]:
    """Score each variant's OpenVINO output: fidelity to the fp32 model, no-reference quality, and GT metrics."""
    from mixq_nncf.ir.export import ir_fingerprint

    path = out_dir / "eval" / "summary.json"
    names = list(arts)
    metric_names = list(cfg.eval.metrics)
    key = content_key({n: ir_fingerprint(a.ir) for n, a in arts.items()}, metric_names, crop_border, baseline,
                      eval_key)

    def _samples_kept(saved: dict) -> bool:
        return all(_sample_path(out_dir, n).is_file() for n in ["bicubic"] + names)

    saved, reused = cached_json(path, key, lambda: _score(cfg, arts, fp32, eval_pairs, crop_border, out_dir, log,
                                                          progress, baseline, names, metric_names),
                                valid=_samples_kept)
    if reused:
        log("[6/7] evaluation found")
    return saved["quality"], saved["per_image"]


def _score(cfg: Config, arts: dict[str, VariantArtifacts], fp32, eval_pairs: list, crop_border: int, out_dir: Path,
           log: Log, progress: bool, baseline: str | None, names: list, metric_names: list) -> dict:
    import csv
    import io

    import torch
    from tqdm import tqdm

    from mixq_nncf.data.datasets import imresize, save_image
    from mixq_nncf.ir.export import compile_ir
    from mixq_nncf.eval.metrics import MetricSuite

    suite = MetricSuite(metric_names, crop_border)
    log(f"[6/7] evaluating {len(names)} variants on {len(eval_pairs)} images ({', '.join(metric_names)})")
    with torch.no_grad():
        refs = [fp32(p["lr"].unsqueeze(0))[0].clamp(0, 1) for p in tqdm(eval_pairs, desc="fp32 reference",
                                                                        disable=not progress)]
    rows: list[dict] = []
    bicubic = [imresize(p["lr"], fp32.scale).clamp(0, 1) for p in eval_pairs]
    for name, a in [("bicubic", None)] + list(arts.items()):
        # the fp32 IR matched the torch model tensor-wise at export (parity), so its outputs are the references
        reuse = bicubic if a is None else (refs if name == baseline else None)
        compiled = None if reuse is not None else compile_ir(a.ir)
        for k, pair in enumerate(tqdm(eval_pairs, desc=f"eval {name}", disable=not progress)):
            pred = reuse[k] if reuse is not None else _run_ir(compiled, pair["lr"])
            if k == 0:  # kept for the side-by-side figure, so it needs no second inference
                save_image(pred, _sample_path(out_dir, name))
            scores = suite.score(pred, reference=refs[k], gt=pair.get("hr"))
            rows.append({"variant": name, "image": pair["name"], **scores})
    quality = {n: suite.summarize([r for r in rows if r["variant"] == n]) for n in ["bicubic"] + names}
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out_dir / "eval" / "per_image.csv", buf.getvalue())
    return {"variants": names, "metrics": metric_names, "quality": quality, "per_image": rows}


def _add_niqe_gap(quality: dict, per_image: list, baseline: str | None) -> None:
    """niqe_gap: each variant's per-photo NIQE distance to fp32's, beside the set-mean NIQE."""
    from mixq_nncf.eval.metrics import per_image_gap

    if baseline is None:
        return
    for name, q in quality.items():
        gap = per_image_gap(per_image, "niqe", name, baseline)  # None where NIQE was not scored
        if gap is not None:
            q["niqe_gap"] = gap


def _assemble(cfg: Config, arts: dict[str, VariantArtifacts], bench: dict, quality: dict, baseline: str | None,
              scale: int, eval_paths: list, out_dir: Path) -> dict:
    stats = bench["stats"]
    variants = {}
    for n, a in arts.items():
        s = stats.get(n, {})
        variants[n] = {
            "recipe": a.recipe,
            "ir": str(a.ir.relative_to(out_dir)),
            "checkpoint": str(a.checkpoint.relative_to(out_dir)) if a.checkpoint else None,
            "bin_bytes": a.size.get("bin_bytes"),
            "bytes_by_precision": a.size.get("bytes_by_precision"),
            "latency_median_ms": s.get("median_ms"),
            "latency_p90_ms": s.get("p90_ms"),
            "gmacs_per_s": s.get("gmac_per_s"),
            "quality": quality.get(n, {}),
            "runtime_precision": {k: v for k, v in a.audit.items() if isinstance(v, int)},
            "runtime_fp32_convs": a.audit.get("fp32_convs", []),
            "fp32_time_share": (bench.get("fp32_time_share", {}).get(n) or {}).get("fp32_share"),
            "parity": a.parity,
        }
    peers = {p: {"latency_median_ms": stats[p].get("median_ms"), "latency_p90_ms": stats[p].get("p90_ms")}
             for p in bench.get("peers", []) if p in stats}
    notes = []
    if "bicubic" in quality and quality["bicubic"]:
        notes.append("Bicubic upscaling of the same inputs scores " + ", ".join(
            f"{k} {v:.3f}" for k, v in quality["bicubic"].items() if isinstance(v, (int, float))) + ".")
    return {
        "name": cfg.name, "model": to_dict(cfg.model), "scale": scale, "baseline": baseline or "ov_fp32",
        "machine": bench.get("machine", {}), "benchmark": to_dict(cfg.benchmark),
        "eval": {"images": len(eval_paths), "source": cfg.data.eval, "crop_border": cfg.eval.crop_border or scale},
        "variants": variants, "peers": peers,
        "training": {n: a.training for n, a in arts.items() if a.training},
        "notes": notes,
    }


def _sample_path(out_dir: Path, variant: str) -> Path:
    return out_dir / "eval" / "samples" / f"{variant}.png"


def _figures(report: dict, arts: dict[str, VariantArtifacts], eval_pairs: list, out_dir: Path) -> None:
    from mixq_nncf.data.datasets import load_image
    from mixq_nncf.eval.report import save_side_by_side, save_tradeoff_plot

    figs = out_dir / "figures"
    report["figures"] = {}
    if eval_pairs:
        # _evaluate kept every variant's output on the first eval image
        panels = [(n, load_image(_sample_path(out_dir, n))) for n in ["bicubic"] + list(arts)]
        h, w = panels[0][1].shape[-2:]
        size = min(160, h, w)
        save_side_by_side(panels, figs / "crops.png", crop=((h - size) // 2, (w - size) // 2, size))
        report["figures"]["side-by-side crops"] = "figures/crops.png"
        _texture_figure(report, panels, figs)
    save_tradeoff_plot(report, figs / "tradeoff.png")
    report["figures"]["latency vs fidelity"] = "figures/tradeoff.png"


def _texture_figure(report: dict, panels: list, figs: Path) -> None:
    """The most textured region of the fp32 output, per variant: crop, zoomed inset, difference to fp32."""
    from mixq_nncf.eval.report import most_textured_crop, save_texture_grid

    named = dict(panels)
    reference = report.get("baseline") or "fp32"
    if reference not in named:
        return
    crop = most_textured_crop(named[reference], 128)
    save_texture_grid(panels, figs / "texture.png", reference=reference, crop=crop)
    report["figures"]["most textured region: crop, 4x inset, |difference to fp32| x4"] = "figures/texture.png"
