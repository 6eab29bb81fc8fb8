"""Step 7 of `mixq run`: the report dict (report.json; eval.report renders it as Markdown)."""
from __future__ import annotations

import json
from pathlib import Path

from mixq_nncf.config.schema import Config, to_dict
from mixq_nncf.pipeline.artifacts import INT8_WEIGHTS_FILE, VariantArtifacts


def _float_precision(ir: Path) -> dict | None:
    """What the IR's sidecar says each float conv runs at (None: a whole-model hint, no per-layer marks)."""
    try:
        value = json.loads(ir.with_suffix(".json").read_text()).get("float_precision")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, dict) else None


def _deployment(ir: Path) -> str:
    """How the IR is compiled where it is deployed, from its sidecar (IRs made elsewhere: the f32 hint)."""
    from mixq_nncf.ir.deploy import compile_config_of
    from mixq_nncf.ir.sidecar import read_meta

    config = compile_config_of(read_meta(ir))
    if config == {}:
        return "per-layer precision in the IR, no hint"
    return f"INFERENCE_PRECISION_HINT={(config or {}).get('INFERENCE_PRECISION_HINT', 'f32')}"


def _int8_weights(folder: Path) -> dict | None:
    try:
        value = json.loads((folder / INT8_WEIGHTS_FILE).read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _variant_row(a: VariantArtifacts, stats: dict, quality: dict, bench: dict, out_dir: Path) -> dict:
    float_precision = _float_precision(a.ir)
    return {
        "recipe": a.recipe,
        "ir": str(a.ir.relative_to(out_dir)),
        "checkpoint": str(a.checkpoint.relative_to(out_dir)) if a.checkpoint else None,
        "bin_bytes": a.size.get("bin_bytes"),
        "bytes_by_precision": a.size.get("bytes_by_precision"),
        "latency_median_ms": stats.get("median_ms"),
        "latency_p90_ms": stats.get("p90_ms"),
        "gmacs_per_s": stats.get("gmac_per_s"),
        "quality": quality.get(a.name, {}),
        "runtime_precision": {k: v for k, v in a.audit.items() if isinstance(v, int)},
        "runtime_fp32_convs": a.audit.get("fp32_convs", []),
        "fp32_time_share": (bench.get("fp32_time_share", {}).get(a.name) or {}).get("fp32_share"),
        "parity": a.parity,
        "kernels": stats.get("kernels") or a.audit.get("kernel_text", ""),
        "float_precision": float_precision,
        "deployment": _deployment(a.ir),
        "int8_weights": _int8_weights(a.folder),
        "precision_check": {"notes": a.audit.get("notes") or [], "mismatches": a.audit.get("mismatches") or []},
    }


def assemble_report(cfg: Config, arts: dict[str, VariantArtifacts], bench: dict, quality: dict,
                    baseline: str | None, scale: int, eval_paths: list, out_dir: Path) -> dict:
    """Every variant's sizes, latency, quality, runtime precision and parity, with the peers and notes."""
    from mixq_nncf.ir.bench import BASELINE_DEFAULT, BASELINE_F32  # the report stage only: training needs no OpenVINO

    stats = bench["stats"]
    # the fp32 variant was timed as the f32-hint baseline: the same IR compiled as it is deployed
    variants = {n: _variant_row(a, stats.get(BASELINE_F32 if n == baseline else n, {}), quality, bench, out_dir)
                for n, a in arts.items()}
    machine = bench.get("machine", {})
    baselines = {key: {"latency_median_ms": stats[name].get("median_ms"), "latency_p90_ms": stats[name].get("p90_ms"),
                       "kernels": stats[name].get("kernels", ""),
                       "precision": machine.get("default_precision") if key == "default" else "f32",
                       "same_as_f32_hint": bool(bench.get("default_is_f32_hint")) and key == "default"}
                 for key, name in (("default", BASELINE_DEFAULT), ("f32_hint", BASELINE_F32)) if name in stats}
    peers = {p: {"latency_median_ms": stats[p].get("median_ms"), "latency_p90_ms": stats[p].get("p90_ms")}
             for p in bench.get("peers", []) if p in stats}
    notes = []
    if "bicubic" in quality and quality["bicubic"]:
        notes.append("Bicubic upscaling of the same inputs scores " + ", ".join(
            f"{k} {v:.3f}" for k, v in quality["bicubic"].items() if isinstance(v, (int, float))) + ".")
    return {
        "name": cfg.name, "model": to_dict(cfg.model), "scale": scale, "baseline": baseline or BASELINE_F32,
        "machine": machine, "benchmark": to_dict(cfg.benchmark),
        "eval": {"images": len(eval_paths), "source": cfg.data.eval, "crop_border": cfg.eval.crop_border or scale},
        "variants": variants, "peers": peers, "baselines": baselines,
        "training": {n: a.training for n, a in arts.items() if a.training},
        "notes": notes,
    }


def add_heldout(report: dict, cfg: Config, quality: dict, images: int) -> None:
    """The held-out photos' scores beside the eval photos' (each variant's ``quality_heldout``)."""
    report["heldout"] = {"images": images, "source": cfg.data.heldout, "crop": cfg.data.heldout_crop}
    for name, row in report["variants"].items():
        row["quality_heldout"] = quality.get(name, {})
    if quality.get("bicubic"):
        report["heldout"]["bicubic"] = quality["bicubic"]
