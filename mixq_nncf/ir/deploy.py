"""The settings an IR must be deployed with, shipped beside it.

On CPUs with AVX512-BF16 or AMX the OpenVINO CPU plugin runs every non-int8 layer in bf16 unless told otherwise.
A mixed IR's 16-bit layers then run at 8-bit mantissa precision: on Real-ESRGAN x4plus the QAT-mixed IR falls from
33.97 dB fidelity (f32) to 31.87 dB, below all-int8. Two ways keep them f32:

- per-layer (IRs exported with ``float_precision``): each float convolution that must stay f32 carries the
  ``precise`` rt_info attribute in the .xml (ir/precision.py). The plugin's default then runs int8 layers int8,
  marked layers f32 and the rest bf16, with no hint at all: plain OpenVINO users get what was measured.
- whole-model (older IRs, or ``float_precision=None``): INFERENCE_PRECISION_HINT=f32 at compile time, which also
  forgoes bf16 everywhere. The model-level rt_info ``runtime_options`` is not read by the CPU plugin for this key,
  so the setting travels as data.

Either way ``<stem>.json`` (the export sidecar) gains ``deployment`` (compile options and benchmark_app flags),
``<stem>.ovms.json`` is an OpenVINO Model Server model entry, and whole-model IRs also record the hint in their own
rt_info ``runtime_options/INFERENCE_PRECISION_HINT`` for tools that read it.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

DEPLOY_PRECISION = "f32"
PER_LAYER = "per_layer"
NO_HINT = "no hint: per-layer precision is in the IR"
HINTS = ("f32", "bf16", "f16")


def deployment_settings(precision: str = DEPLOY_PRECISION) -> dict:
    """What to pass to compile_model / benchmark_app / the model server so the IR runs as it was measured.
    precision: a whole-model INFERENCE_PRECISION_HINT, or PER_LAYER for IRs that carry their own marks."""
    if precision == PER_LAYER:
        return {"precision_hint": None, "compile_config": {}, "benchmark_app": "", "why": NO_HINT}
    return {
        "precision_hint": precision,
        "compile_config": {"INFERENCE_PRECISION_HINT": precision},
        "benchmark_app": f"-infer_precision {precision}",
        "why": ("CPUs with AVX512-BF16/AMX default to bf16 for non-int8 layers; the measured quality needs "
                f"INFERENCE_PRECISION_HINT={precision}"),
    }


def compile_config_of(meta: dict) -> Optional[dict]:
    """The precision part of the compile options a sidecar records (None where it records none: IRs made
    elsewhere). Only the hint is taken from the file, and only a known value: the file is data."""
    dep = meta.get("deployment") if isinstance(meta, dict) else None
    if not isinstance(dep, dict) or not isinstance(dep.get("compile_config"), dict):
        return None
    hint = dep["compile_config"].get("INFERENCE_PRECISION_HINT")
    if hint is None:
        return {} if dep.get("precision_hint", "") is None else None
    return {"INFERENCE_PRECISION_HINT": hint} if hint in HINTS else None


def deployed_precision(xml_path: str | Path) -> dict:
    """The precision part of the compile options an IR is deployed with, from its sidecar: none for IRs that carry
    each layer's precision, the recorded hint for the others, the f32 hint for IRs made elsewhere."""
    from mixq_nncf.ir.sidecar import read_meta

    recorded = compile_config_of(read_meta(xml_path))
    return {"INFERENCE_PRECISION_HINT": DEPLOY_PRECISION} if recorded is None else recorded


def mark_runtime_options(ov_model, precision: str = DEPLOY_PRECISION) -> None:
    """Record the hint in the IR itself (OpenVINO 2026.4.1's CPU plugin does not apply it; tools can read it)."""
    if precision != PER_LAYER:
        ov_model.set_rt_info(precision, ["runtime_options", "INFERENCE_PRECISION_HINT"])


def ovms_config(xml_path: str | Path, precision: str = DEPLOY_PRECISION) -> dict:
    """A model-server config.json for this IR. OVMS loads <base_path>/<version>/<model>.xml: put the .xml and
    .bin in a folder named 1/ under base_path."""
    xml = Path(xml_path)
    return {"model_config_list": [{"config": {
        "name": xml.stem,
        "base_path": f"./{xml.stem}",
        "target_device": "CPU",
        "plugin_config": deployment_settings(precision)["compile_config"],
    }}]}


def write_ovms_config(xml_path: str | Path, precision: str = DEPLOY_PRECISION) -> Path:
    from mixq_nncf.io_utils import atomic_write_text

    xml = Path(xml_path)
    return atomic_write_text(xml.with_suffix(".ovms.json"), json.dumps(ovms_config(xml, precision), indent=2) + "\n")
