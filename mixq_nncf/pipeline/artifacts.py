"""What a run keeps on disk and the content keys that decide whether a kept result may be reused.

A result is reused only when the hash of what it measured still matches (the IR's .xml + .bin, the config
section, the checkpoint, the eval images), so a re-exported IR is never reported with the old IR's figures.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mixq_nncf.config.plan import PrecisionPlan
from mixq_nncf.config.schema import Config, compression_key, data_key, to_dict
from mixq_nncf.errors import IRError
from mixq_nncf.io_utils import content_key, file_hash


INT8_WEIGHTS_FILE = "int8_weights.json"  # what compression.overflow_fix "pairs" left the 8-bit weights


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


def weights_key(cfg: Config) -> Any:
    """The weights file's content hash (a path alone says nothing about what it holds)."""
    w = cfg.model.weights
    if w and w != "embedded" and Path(w).is_file():
        return file_hash(Path(w))
    return w


def quantized_key(cfg: Config) -> str:
    """What a variant's quantized checkpoint was made from."""
    return content_key(to_dict(cfg.model), weights_key(cfg), data_key(cfg), to_dict(cfg.input_info),
                       compression_key(cfg))


def ptq_key(cfg: Config, plan: PrecisionPlan) -> str:
    """Variants whose PTQ differs only in bit widths share one calibration (bits change without re-calibration)."""
    comp = compression_key(cfg)
    for k in ("stages", "scope_overrides"):
        comp.pop(k, None)
    comp["weights"].pop("bits", None)
    comp["activations"].pop("bits", None)
    comp.pop("fully_quantized", None)  # bit widths only: the same calibration serves it
    comp.get("initializer", {}).pop("weight_range", None)  # applied after the bits, on each variant's copy
    comp.get("initializer", {}).pop("weight_rounding", None)  # so is the rounding of low-bit weights
    fp32_layers = sorted(n for n, p in plan.layers.items() if p.weight_bits is None and p.act_bits is None)
    blob = json.dumps({"model": to_dict(cfg.model), "data": data_key(cfg), "input": to_dict(cfg.input_info),
                       "compression": comp, "fp32": fp32_layers}, sort_keys=True)
    return hashlib.sha1(blob.encode()).hexdigest()[:12]


_HARMLESS_TRAINING = ("log_every", "checkpoint_every", "tensorboard", "device", "num_workers")


def training_key(cfg: Config, start: Path) -> str:
    """What a training run depends on: its starting checkpoint, the training and data sections."""
    training = {k: v for k, v in to_dict(cfg.training).items() if k not in _HARMLESS_TRAINING}
    return content_key(file_hash(start), training, data_key(cfg), cfg.model.arch)


def ir_matches(xml: Path, key: str) -> bool:
    """A complete IR (its .xml/.bin are the pair its sidecar names) exported from the same checkpoint/settings."""
    from mixq_nncf.ir.export import verify_ir

    if not xml.is_file():
        return False
    try:
        return verify_ir(xml).get("source_key") == key
    except IRError:
        return False


def sample_path(out_dir: Path, variant: str) -> Path:
    """Where evaluation keeps a variant's output on the first eval image (for the figures)."""
    return out_dir / "eval" / "samples" / f"{variant}.png"
