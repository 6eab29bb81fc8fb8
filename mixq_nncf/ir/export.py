"""OpenVINO IR export with compact 16-bit weights, a parity check after every export, and the size report.

ov.convert_model stores FakeQuantize'd weights as 8-bit only when levels <= 256; 65536-level (16-bit) weights
stay fp32. With compact_16bit they are rewritten as an i16 constant + Convert/Subtract/Multiply that yields
exactly the 16-bit grid values (half the bytes, same compiled graph on the CPU).
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch import nn

from mixq_nncf.cpu import int8_parity_slack_db
from mixq_nncf.errors import IRError, ParityError
from mixq_nncf.io_utils import umask_mode, fault_point, file_hash
from mixq_nncf.ir.deploy import PER_LAYER, deployed_precision, deployment_settings, mark_runtime_options, \
    write_ovms_config
from mixq_nncf.ir.precision import check_float_precision, float_convolutions, mark_precise, \
    name_unnamed_convolutions
from mixq_nncf.ir.sidecar import read_meta, verify_ir  # noqa: F401 - part of this module's API


def _ov():
    import openvino as ov

    return ov


def _compact_16bit_weights(model) -> int:
    """Replace 65536-level FakeQuantize on constant weights by i16 storage; returns how many were rewritten."""
    ov = _ov()
    import openvino.opset13 as ops

    rewritten = 0
    for node in model.get_ordered_ops():
        if node.get_type_name() != "FakeQuantize" or node.get_attributes().get("levels") != 65536:
            continue
        src = node.input_value(0).get_node()
        if src.get_type_name() == "Convert":  # fp16-compressed constant
            src = src.input_value(0).get_node()
        if src.get_type_name() != "Constant":
            continue
        consts = [node.input_value(i).get_node() for i in range(1, 5)]
        if any(c.get_type_name() != "Constant" for c in consts):
            continue
        w = src.get_data().astype(np.float64)
        il, ih, ol, oh = (c.get_data().astype(np.float64) for c in consts)
        levels = 65535.0
        q = np.round((np.clip(w, il, ih) - il) / np.maximum(ih - il, 1e-30) * levels)
        out_step = (oh - ol) / levels
        stored = (q - 32768).astype(np.int16)
        zero = (-32768.0 - ol / np.where(out_step == 0, 1, out_step)).astype(np.float32)
        c16 = ops.constant(stored)
        deq = ops.multiply(ops.subtract(ops.convert(c16, ov.Type.f32), ops.constant(zero)),
                           ops.constant(out_step.astype(np.float32)))
        for target in list(node.output(0).get_target_inputs()):
            target.replace_source_output(deq.output(0))
        rewritten += 1
    return rewritten


def _int4_weights_on_int8_kernels(model) -> int:
    """Insert Convert(i4 -> i8) after every i4 (u4 -> u8) weight constant; returns how many.

    ov.convert_model stores 4-bit FakeQuantize'd weights as i4 constants, and the CPU plugin then runs those convs
    in fp32 (there is no int4 convolution kernel). 4-bit values are exact on the 8-bit grid with the same scale:
    with the Convert the plugin folds the constant to i8 at compile time and runs the conv on its int8 kernels,
    while the IR's .bin keeps the 4-bit bytes."""
    ov = _ov()
    import openvino.opset13 as ops

    wider = {ov.Type.i4: ov.Type.i8, ov.Type.u4: ov.Type.u8}
    rewritten = 0
    for node in model.get_ordered_ops():
        if node.get_type_name() != "Constant" or node.get_output_element_type(0) not in wider:
            continue
        targets = list(node.output(0).get_target_inputs())
        widened = ops.convert(node, wider[node.get_output_element_type(0)])
        for target in targets:
            target.replace_source_output(widened.output(0))
        rewritten += 1
    return rewritten


def _traced(model: nn.Module, example_input: torch.Tensor):
    """The model traced once, without torch.jit's check_trace re-run.

    check_trace runs the NNCF-hooked model twice more and took three quarters of ov.convert_model's time on a
    quantized RRDBNet; check_parity compares the IR with the torch model anyway. Falls back to the plain module
    where this OpenVINO has no decoder with trace_kwargs.
    """
    try:
        from openvino.frontend.pytorch.ts_decoder import TorchScriptPythonDecoder

        return TorchScriptPythonDecoder(model, example_input=example_input, trace_kwargs={"check_trace": False})
    except (ImportError, TypeError):
        return model


# what export_ir writes for the same model and settings; part of every cache key of an exported IR, so a change
# here re-exports (2: IRs whose plan asks no bf16 layer are deployed with the f32 hint)
EXPORT_FORMAT = 2


def export_ir(model: nn.Module, xml_path: str | Path, *, example_input: torch.Tensor, dynamic: bool = True,
              compact_16bit: bool = True, meta: Optional[dict] = None, int4_weights: str = "int8_kernels",
              float_precision: Optional[dict[str, str]] = None) -> Path:
    """Convert a (quantized or fp32) torch model to an IR; .xml, .bin and the sidecar .json appear atomically.

    float_precision: None = the IR carries no per-layer precision and is deployed with INFERENCE_PRECISION_HINT=f32
    (its sidecar says so). A dict maps float (not 8-bit) convolutions, by module name, to "f32" or "bf16"; every
    float conv it does not name is "f32". Those marked f32 carry the ``precise`` rt_info attribute in the .xml, so
    the IR runs as planned under the CPU plugin's defaults and is deployed with no hint (see ir/precision.py) when
    the plan asks bf16 of some conv; when it asks none, with the f32 hint, which also keeps f32 what int8 convs
    output (the residual sums fused into them), as NNCF's emulation computes it."""
    ov = _ov()
    xml_path = Path(xml_path)
    xml_path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    shape = [1, 3, -1, -1] if dynamic else list(example_input.shape)
    with torch.no_grad(), warnings.catch_warnings():
        # tracing warnings (deprecation, fake-quantize values read as constants) are noise here: the IR is
        # checked against the torch model by check_parity
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        ov_model = ov.convert_model(_traced(model, example_input), example_input=example_input,
                                    input=[ov.PartialShape(shape)])
    name_unnamed_convolutions(ov_model, model, example_input)
    rewritten = _compact_16bit_weights(ov_model) if compact_16bit else 0
    widened = _int4_weights_on_int8_kernels(ov_model) if int4_weights == "int8_kernels" else 0
    if rewritten or widened:
        ov_model.validate_nodes_and_infer_types()
    deploy = PER_LAYER if float_precision is not None else "f32"
    floats = float_convolutions(ov_model) if float_precision is not None else {}
    planned = check_float_precision(float_precision, list(floats), str(xml_path)) if floats or float_precision else {}
    if deploy == PER_LAYER and "bf16" not in planned.values():
        deploy = "f32"  # nothing runs bf16 by plan: the hint keeps int8 convs' outputs f32 too (no mark does)
    mark_runtime_options(ov_model, deploy)
    tmp = Path(tempfile.mkdtemp(prefix=".export-", dir=xml_path.parent))
    try:
        tmp_xml = tmp / xml_path.name
        ov.save_model(ov_model, str(tmp_xml), compress_to_fp16=False)
        # the marks go into the .xml before its hash is taken: the sidecar vouches for the marked file
        mark_precise(tmp_xml, [layer for m, p in planned.items() if p == "f32" for layer in floats[m]])
        sidecar = dict(meta or {})
        sidecar.update({"compact_16bit_weights": rewritten, "int4_weights_on_int8_kernels": widened,
                        "dynamic": dynamic, "openvino": ov.get_version(), "input_shape": shape,
                        "deployment": deployment_settings(deploy),
                        "float_precision": planned if float_precision is not None else None,
                        "files": {s: file_hash(tmp_xml.with_suffix(s)) for s in (".xml", ".bin")}})
        tmp_xml.with_suffix(".json").write_text(json.dumps(sidecar, indent=2, default=str) + "\n")
        # three renames cannot be one atomic step; the sidecar goes last and holds the hashes of the .xml and
        # .bin it belongs to, so a crash in between leaves a pair that verify_ir rejects, never a silent mix
        for suffix in (".bin", ".xml", ".json"):
            os.chmod(tmp_xml.with_suffix(suffix), umask_mode())
            os.replace(tmp_xml.with_suffix(suffix), xml_path.with_suffix(suffix))
            fault_point(f"export{suffix}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    write_ovms_config(xml_path, deploy)
    return xml_path


def ir_fingerprint(xml_path: str | Path) -> str:
    """Content hash of an IR's .xml and .bin: the key of every result measured on it."""
    xml_path = Path(xml_path)
    meta = verify_ir(xml_path)
    files = meta.get("files") or {s: file_hash(xml_path.with_suffix(s)) for s in (".xml", ".bin")}
    return files[".xml"][:16] + files[".bin"][:16]


def read_ir(xml_path: str | Path):
    """ov.Model of a verified IR; any OpenVINO read error becomes one line naming the file and the fix."""
    ov = _ov()
    verify_ir(xml_path)
    try:
        return ov.Core().read_model(str(xml_path))
    except RuntimeError as exc:
        raise IRError(f"{xml_path}: OpenVINO cannot read this IR ({_first_line(exc)}); the .xml or .bin is corrupt "
                      "or truncated: re-export it") from None


def _first_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip() and not ln.startswith("Check ")]
    return (lines[0] if lines else type(exc).__name__)[:160]


# CPUs with AVX512-BF16/AMX default to bf16 inference for fp32 layers; IRs without per-layer precision marks are
# compiled with f32 pinned so "fp32" in every report means fp32.
DEFAULT_CPU_CONFIG = {"INFERENCE_PRECISION_HINT": "f32"}


def precision_config(xml_path: str | Path, precision: str = "auto") -> dict:
    """The precision part of the compile options. "auto": what the IR's sidecar records for deployment (no hint
    for IRs that carry per-layer precision, the f32 hint for the others and for IRs without a sidecar);
    "default": no hint, as a plain OpenVINO user compiles (bf16 on AVX512-BF16/AMX CPUs); else that hint."""
    if precision == "default":
        return {}
    if precision == "auto":
        return deployed_precision(xml_path)
    return {**DEFAULT_CPU_CONFIG, "INFERENCE_PRECISION_HINT": precision}


def compile_ir(xml_path: str | Path, *, shape: Optional[tuple] = None, config: Optional[dict] = None,
               precision: str = "auto"):
    """Compile for the CPU as the IR is deployed (precision "auto", see precision_config) unless ``config`` or
    ``precision`` says otherwise; "default" compiles with no hint, "f32" / "bf16" with that hint."""
    ov = _ov()
    model = read_ir(xml_path)
    base = precision_config(xml_path, precision)
    try:
        if shape is not None:
            model.reshape({model.input(0).get_any_name(): ov.PartialShape(list(shape))})
        return ov.Core().compile_model(model, "CPU", {**base, **(config or {})})
    except RuntimeError as exc:
        raise IRError(f"{xml_path}: OpenVINO cannot compile this IR ({_first_line(exc)}); re-export it, or check "
                      "the input shape") from None


def run_ir(compiled, x: torch.Tensor) -> torch.Tensor:
    """One inference; x is (N,3,H,W) or (3,H,W)."""
    batch = x.unsqueeze(0) if x.dim() == 3 else x
    out = compiled(batch.detach().cpu().numpy())[compiled.output(0)]
    out = torch.from_numpy(np.asarray(out))
    return out[0] if x.dim() == 3 else out


# ----------------------------------------------------------------------------------------------
# parity

LOSSLESS_DB = 50.0


@dataclass
class ParityResult:
    mode: str  # tensor (fp32 IR) | quality (quantized IR)
    passed: bool
    max_abs_diff: float
    mean_abs_diff: float
    torch_fidelity_db: Optional[float] = None
    ir_fidelity_db: Optional[float] = None
    tolerance: float = 0.0
    images: int = 0
    problems: list[str] = field(default_factory=list)


def check_parity(xml_path: str | Path, torch_model: nn.Module, images: list[torch.Tensor], *,
                 reference_model: Optional[nn.Module] = None, tolerance_db: float = 0.2,
                 max_gain_db: float = 1.0,
                 fp32_tolerance: float = 1e-4, crop_border: int = 4, input_range: tuple = (0.0, 1.0),
                 raise_on_failure: bool = True) -> ParityResult:
    """fp32 IR (no reference_model): tensors must agree to fp32_tolerance. Quantized IR: its mean fidelity to the
    fp32 reference is bounded both ways by the torch quantized model's: at most tolerance_db below (the IR is
    worse than what was trained) and at most max_gain_db above (a much better IR is not the model that was
    trained either: quantizers were lost on the way, so its latency and size are not what the report claims; the
    failure names how many FakeQuantize ops the IR holds against the torch model's enabled quantizers). The only
    exemption is when both fidelities are >= LOSSLESS_DB, where both are within rounding noise of fp32.
    Tensors cannot be compared: NNCF's fake-quantize and OpenVINO's int8 kernels round differently now and then,
    and on deep models those flips compound: on Real-ESRGAN x4plus after QAT the two fidelities differ per crop by
    up to 1 dB, and by 0.3 dB on the mean of 4 crops, the IR being the closer one."""
    from mixq_nncf.eval.metrics import psnr_y
    from mixq_nncf.quant.nncf_adapter import input_range_problems

    problems = input_range_problems(torch_model, *input_range) if reference_model is not None else []
    tolerance_db = round(tolerance_db + int8_parity_slack_db(), 3)  # AVX2-only CPUs: see cpu.int8_parity_slack_db
    compiled = compile_ir(xml_path)
    diffs, t_fid, ir_fid = [], [], []
    with torch.no_grad():
        for x in images:
            x = x if x.dim() == 4 else x.unsqueeze(0)
            t_out = torch_model(x)
            ir_out = run_ir(compiled, x)
            diffs.append((t_out - ir_out).abs())
            if reference_model is not None:
                ref = reference_model(x).clamp(0, 1)
                t_fid.append(psnr_y(t_out.clamp(0, 1), ref, crop_border))
                ir_fid.append(psnr_y(ir_out.clamp(0, 1), ref, crop_border))
    max_diff = float(max(d.max() for d in diffs))
    mean_diff = float(sum(d.mean() for d in diffs) / len(diffs))
    if reference_model is None:
        passed = max_diff <= fp32_tolerance
        result = ParityResult("tensor", passed and not problems, max_diff, mean_diff, tolerance=fp32_tolerance,
                              images=len(images), problems=problems)
        if not passed:
            result.problems.append(f"fp32 IR output differs from torch by up to {max_diff:.3g} "
                                   f"(tolerance {fp32_tolerance:g})")
    else:
        tf, irf = sum(t_fid) / len(t_fid), sum(ir_fid) / len(ir_fid)
        # above LOSSLESS_DB both outputs are within rounding noise of fp32 and dB differences mean nothing
        passed = tf - tolerance_db <= irf <= tf + max_gain_db or min(tf, irf) >= LOSSLESS_DB
        result = ParityResult("quality", passed and not problems, max_diff, mean_diff, tf, irf, tolerance_db,
                              len(images), problems)
        if not passed:
            result.problems.append(_parity_problem(xml_path, torch_model, tf, irf, tolerance_db, max_gain_db))
    if raise_on_failure and not result.passed:
        raise ParityError(f"{xml_path}: parity check failed: " + "; ".join(result.problems) +
                          ". The IR does not behave like the torch model; do not deploy it.")
    return result


def _parity_problem(xml_path, torch_model, tf: float, irf: float, tolerance_db: float, max_gain_db: float) -> str:
    """Why a quantized IR failed parity, examined in the direction it failed."""
    allowed = f"allowed: {tolerance_db} dB below to {max_gain_db} dB above"
    if irf < tf:
        return (f"IR fidelity to fp32 is {irf:.2f} dB, {tf - irf:.2f} dB below the torch quantized model's {tf:.2f} "
                f"dB ({allowed}): the IR loses accuracy the trained model does not (a quantizer range or layer "
                "converted wrongly)")
    from mixq_nncf.quant.nncf_adapter import quantizer_modules

    enabled = sum(1 for q in quantizer_modules(torch_model).values() if q.is_enabled_quantization())
    fq = sum(1 for op in read_ir(xml_path).get_ordered_ops() if op.get_type_name() == "FakeQuantize")
    compact = int(read_meta(xml_path).get("compact_16bit_weights") or 0)
    return (f"IR fidelity to fp32 is {irf:.2f} dB, {irf - tf:.2f} dB above the torch quantized model's {tf:.2f} dB "
            f"({allowed}): the IR is not the model that was trained; it holds {fq} FakeQuantize ops"
            + (f" + {compact} 16-bit weights stored as i16" if compact else "")
            + f" where the torch model has {enabled} enabled quantizers")


# ----------------------------------------------------------------------------------------------
# size

@dataclass
class SizeReport:
    bin_bytes: int
    bytes_by_precision: dict[str, int]
    ratio_to_fp32: Optional[float] = None


def ir_size(xml_path: str | Path, fp32_xml: str | Path | None = None) -> SizeReport:
    import xml.etree.ElementTree as ET

    xml_path = Path(xml_path)
    verify_ir(xml_path)
    by_prec: dict[str, int] = {}
    try:
        root = ET.parse(xml_path).getroot()
    except ET.ParseError as exc:
        raise IRError(f"{xml_path}: not a readable IR .xml ({exc}); re-export it") from None
    for layer in root.iter("layer"):
        if layer.get("type") != "Const":
            continue
        data = layer.find("data")
        if data is None or data.get("size") is None:
            continue
        prec = data.get("element_type", "?")
        by_prec[prec] = by_prec.get(prec, 0) + int(data.get("size"))
    size = xml_path.with_suffix(".bin").stat().st_size
    ratio = None
    if fp32_xml is not None:
        ratio = size / Path(fp32_xml).with_suffix(".bin").stat().st_size
    return SizeReport(size, dict(sorted(by_prec.items(), key=lambda kv: -kv[1])), ratio)
