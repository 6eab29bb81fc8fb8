"""Steps 5 and 6 of `mixq run`: every variant's IR timed in one interleaved run, then scored on the eval images
(and on the held-out photos where the config names them)."""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn
from tqdm import tqdm

from mixq_nncf.config.schema import Config, to_dict
from mixq_nncf.data.datasets import imresize, save_image
from mixq_nncf.io_utils import atomic_write_text, cached_json, content_key, fault_point
from mixq_nncf.pipeline.artifacts import VariantArtifacts, ir_matches, sample_path, weights_key

Log = Callable[[str], None]


def benchmark_variants(cfg: Config, arts: dict[str, VariantArtifacts], fp32: nn.Module, baseline: str | None,
                       out_dir: Path, log: Log, progress: bool) -> dict:
    """All variant IRs and the peers timed in one interleaved run (ratios are only fair within one run)."""
    from mixq_nncf.ir.bench import BASELINE_DEFAULT, Target, baseline_targets, plugin_default_precision
    from mixq_nncf.ir.export import ir_fingerprint

    path = out_dir / "bench.json"
    # the fp32 variant is timed as the two baselines (under OpenVINO's defaults and under the f32 hint)
    names = [n for n in arts if n != baseline]
    targets = [Target(name=n, kind="openvino", path=a.ir) for n, a in arts.items() if n != baseline]
    if baseline is not None or fp32 is not None:
        base = baseline_targets(arts[baseline].ir if baseline is not None else _fp32_peer_ir(cfg, fp32, out_dir))
        if plugin_default_precision() == "f32":  # defaults and the f32 hint compile the same graph: timed once
            base = [t for t in base if t.name != BASELINE_DEFAULT]
        targets += base
    peers = list(cfg.benchmark.peers)
    peer_names: list[str] = []
    if "torch_fp32" in peers:
        targets.append(Target(name="torch_fp32", kind="torch", model=fp32))
        peer_names.append("torch_fp32")
    key = content_key({t.name: ir_fingerprint(t.path) for t in targets if t.kind == "openvino"}, peer_names,
                      "torch_fp32" in peers and (cfg.model.arch, cfg.model.args, weights_key(cfg)),
                      to_dict(cfg.benchmark), baseline)
    result, reused = cached_json(path, key, lambda: _measure(cfg, arts, targets, peer_names, names, baseline, log,
                                                             progress))
    if reused:
        log("[5/7] benchmark found")
    return result


def _fp32_peer_ir(cfg: Config, fp32: nn.Module, out_dir: Path) -> Path:
    """The fp32 model as an IR, for runs whose variants include no fp32 one."""
    from mixq_nncf.ir.export import export_ir

    xml = out_dir / "peers" / "ov_fp32.xml"
    peer_key = content_key(cfg.model.arch, cfg.model.args, weights_key(cfg), cfg.export.dynamic_shape)
    if not ir_matches(xml, peer_key):
        sample = torch.rand(*cfg.input_info.sample_size)
        export_ir(fp32, xml, example_input=sample, dynamic=cfg.export.dynamic_shape, compact_16bit=False,
                  meta={"source_key": peer_key})
    return xml


def _measure(cfg: Config, arts: dict[str, VariantArtifacts], targets: list, peer_names: list, names: list,
             baseline: str | None, log: Log, progress: bool) -> dict:
    from mixq_nncf.ir.audit import layer_time_shares
    from mixq_nncf.ir.bench import BASELINE_DEFAULT, BASELINE_F32, benchmark, machine_info

    h, w = cfg.benchmark.input_size
    log(f"[5/7] benchmarking {len(targets)} targets at 1x3x{h}x{w} (interleaved, {cfg.benchmark.iterations} runs each)")
    stats = benchmark(targets, input_size=(h, w), threads=cfg.benchmark.threads, streams=cfg.benchmark.streams,
                      iterations=cfg.benchmark.iterations, warmup=cfg.benchmark.warmup, progress=progress)
    result: dict[str, Any] = {"variants": names, "peers": peer_names, "machine": to_dict(machine_info()),
                              "settings": to_dict(cfg.benchmark), "stats": {s.name: to_dict(s) for s in stats},
                              "fp32_time_share": {}}
    if BASELINE_F32 in result["stats"] and BASELINE_DEFAULT not in result["stats"]:
        # OpenVINO's default precision is f32 here: the f32-hint timing is the defaults' timing (one compiled graph)
        result["stats"][BASELINE_DEFAULT] = {**result["stats"][BASELINE_F32], "name": BASELINE_DEFAULT}
        result["default_is_f32_hint"] = True
    for n, a in arts.items():
        if n != baseline and a.audit.get("conv_fp32", 0):
            shares = layer_time_shares(a.ir, (1, 3, h, w))
            result["fp32_time_share"][n] = to_dict(shares)
    fault_point("benchmark")
    return result


@dataclass(frozen=True)
class ImageSet:
    """Photos a run scores every variant on: the eval photos (folder 'eval', whose first output feeds the figures)
    or the held-out photos (folder 'heldout', nothing tuned on them)."""
    folder: str
    pairs: list
    key: str
    keep_samples: bool = False


def evaluate_variants(cfg: Config, arts: dict[str, VariantArtifacts], fp32: nn.Module, images: ImageSet,
                      crop_border: int, out_dir: Path, log: Log, progress: bool,
                      baseline: str | None = None) -> tuple[dict, list]:
    """Score each variant's OpenVINO output: fidelity to the fp32 model, no-reference quality, and GT metrics."""
    from mixq_nncf.ir.export import ir_fingerprint

    path = out_dir / images.folder / "summary.json"
    names = list(arts)
    metric_names = list(cfg.eval.metrics)
    key = content_key({n: ir_fingerprint(a.ir) for n, a in arts.items()}, metric_names, crop_border, baseline,
                      images.key)

    def _samples_kept(saved: dict) -> bool:
        return not images.keep_samples or all(sample_path(out_dir, n).is_file() for n in ["bicubic"] + names)

    saved, reused = cached_json(path, key, lambda: _score(cfg, arts, fp32, images, crop_border, out_dir, log,
                                                          progress, baseline, names, metric_names),
                                valid=_samples_kept)
    if reused:
        log(f"[6/7] evaluation on the {images.folder} photos found")
    return saved["quality"], saved["per_image"]


def _score(cfg: Config, arts: dict[str, VariantArtifacts], fp32: nn.Module, images: ImageSet, crop_border: int,
           out_dir: Path, log: Log, progress: bool, baseline: str | None, names: list, metric_names: list) -> dict:
    from mixq_nncf.eval.metrics import MetricSuite
    from mixq_nncf.ir.export import compile_ir, run_ir

    suite = MetricSuite(metric_names, crop_border)
    pairs = images.pairs
    log(f"[6/7] evaluating {len(names)} variants on {len(pairs)} {images.folder} images ({', '.join(metric_names)})")
    with torch.no_grad():
        refs = [fp32(p["lr"].unsqueeze(0))[0].clamp(0, 1) for p in tqdm(pairs, desc=f"fp32 reference ({images.folder})",
                                                                        disable=not progress)]
    rows: list[dict] = []
    bicubic = [imresize(p["lr"], fp32.scale).clamp(0, 1) for p in pairs]
    for name, a in [("bicubic", None)] + list(arts.items()):
        # the fp32 IR matched the torch model tensor-wise at export (parity), so its outputs are the references
        reuse = bicubic if a is None else (refs if name == baseline else None)
        compiled = None if reuse is not None else compile_ir(a.ir)
        for k, pair in enumerate(tqdm(pairs, desc=f"{images.folder} {name}", disable=not progress)):
            pred = reuse[k] if reuse is not None else run_ir(compiled, pair["lr"]).clamp(0, 1)
            if k == 0 and images.keep_samples:  # kept for the side-by-side figure, so it needs no second inference
                save_image(pred, sample_path(out_dir, name))
            scores = suite.score(pred, reference=refs[k], gt=pair.get("hr"))
            rows.append({"variant": name, "image": pair["name"], **scores})
        del compiled  # one compiled IR at a time
    quality = {n: suite.summarize([r for r in rows if r["variant"] == n]) for n in ["bicubic"] + names}
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out_dir / images.folder / "per_image.csv", buf.getvalue())
    return {"variants": names, "metrics": metric_names, "quality": quality, "per_image": rows}


def add_niqe_gap(quality: dict, per_image: list, baseline: str | None) -> None:
    """niqe_gap: each variant's per-photo NIQE distance to fp32's, beside the set-mean NIQE."""
    from mixq_nncf.eval.metrics import per_image_gap

    if baseline is None:
        return
    for name, q in quality.items():
        gap = per_image_gap(per_image, "niqe", name, baseline)  # None where NIQE was not scored
        if gap is not None:
            q["niqe_gap"] = gap
