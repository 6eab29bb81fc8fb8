"""The settings an IR must be deployed with, shipped beside it.

On CPUs with AVX512-BF16 or AMX the OpenVINO CPU plugin runs every non-int8 layer in bf16 unless told
INFERENCE_PRECISION_HINT=f32. A mixed IR's 16-bit layers then run at 8-bit mantissa precision: on Real-ESRGAN
x4plus the QAT-mixed IR falls from 33.97 dB fidelity (f32) to 31.87 dB, below all-int8. In OpenVINO 2026.4.1 no
graph form keeps a convolution in f32 under the bf16 hint: the model's rt_info ``runtime_options`` is not read
for this key, and the per-node precision marks (DisablePrecisionConversion / disable_fp16_compression) are not
copyable, so the plugin's own fusions drop them before it decides. The setting therefore travels as data:

- ``<stem>.json`` (the export sidecar) gains ``deployment``: the compile options and the benchmark_app flags;
- ``<stem>.ovms.json``: an OpenVINO Model Server model entry carrying the hint in ``plugin_config``;
- the IR's own rt_info ``runtime_options/INFERENCE_PRECISION_HINT`` = f32, for tools that read it.
"""
from __future__ import annotations

import json
from pathlib import Path

DEPLOY_PRECISION = "f32"


def deployment_settings(precision: str = DEPLOY_PRECISION) -> dict:
    """What to pass to compile_model / benchmark_app / the model server so the IR runs as it was measured."""
    return {
        "compile_config": {"INFERENCE_PRECISION_HINT": precision},
        "benchmark_app": f"-infer_precision {precision}",
        "why": ("CPUs with AVX512-BF16/AMX default to bf16 for non-int8 layers; the measured quality needs "
                f"INFERENCE_PRECISION_HINT={precision}"),
    }


def mark_runtime_options(ov_model, precision: str = DEPLOY_PRECISION) -> None:
    """Record the hint in the IR itself (OpenVINO 2026.4.1's CPU plugin does not apply it; tools can read it)."""
    ov_model.set_rt_info(precision, ["runtime_options", "INFERENCE_PRECISION_HINT"])


def ovms_config(xml_path: str | Path, precision: str = DEPLOY_PRECISION) -> dict:
    """A model-server config.json for this IR. OVMS loads <base_path>/<version>/<model>.xml: put the .xml and
    .bin in a folder named 1/ under base_path."""
    xml = Path(xml_path)
    return {"model_config_list": [{"config": {
        "name": xml.stem,
        "base_path": f"./{xml.stem}",
        "target_device": "CPU",
        "plugin_config": {"INFERENCE_PRECISION_HINT": precision},
    }}]}


def write_ovms_config(xml_path: str | Path, precision: str = DEPLOY_PRECISION) -> Path:
    from mixq_nncf.io_utils import atomic_write_text

    xml = Path(xml_path)
    return atomic_write_text(xml.with_suffix(".ovms.json"), json.dumps(ovms_config(xml, precision), indent=2) + "\n")
