"""Step 7 of `mixq run`: the report dict (report.json; eval.report renders it as Markdown)."""
from __future__ import annotations

from pathlib import Path

from mixq_nncf.config.schema import Config, to_dict
from mixq_nncf.pipeline.artifacts import VariantArtifacts


def _variant_row(a: VariantArtifacts, stats: dict, quality: dict, bench: dict, out_dir: Path) -> dict:
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
    }


def assemble_report(cfg: Config, arts: dict[str, VariantArtifacts], bench: dict, quality: dict,
                    baseline: str | None, scale: int, eval_paths: list, out_dir: Path) -> dict:
    """Every variant's sizes, latency, quality, runtime precision and parity, with the peers and notes."""
    stats = bench["stats"]
    variants = {n: _variant_row(a, stats.get(n, {}), quality, bench, out_dir) for n, a in arts.items()}
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
