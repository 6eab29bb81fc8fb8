"""Per-layer float precision carried by the IR itself, and what each convolution should run on this CPU.

On CPUs with AVX512-BF16 or AMX the OpenVINO CPU plugin's default inference precision is bf16: every layer that
is not int8 runs bf16 unless the whole model is compiled with INFERENCE_PRECISION_HINT=f32. A layer whose IR
rt_info holds ``<attribute name="precise" version="0" />`` keeps f32 under that default while int8 layers stay
int8 (read back by ``read_model`` as ``DisablePrecisionConversion_0``). OpenVINO's Python API has no way to set that
attribute (string rt_info keys such as ``precise_0`` are other attributes and do nothing), so the export writes
it into the serialized .xml, into the <layer> of each float convolution and of its bias addition, before the
sidecar hashes are taken. Such an IR needs no precision hint: the default runs int8 layers int8, marked layers
f32 and unmarked float layers bf16 (f32 on CPUs without bf16 units).

The marks do not reach what int8 convolutions output: under the bf16 default the plugin hands the residual sums
fused into them on in bf16, whatever the marks (Real-ESRGAN x4plus all-int8 on a Zen 4: 24 of its 47 non-u8
conv outputs bf16, 0.26 dB below the same IR under the f32 hint, 0.43 dB below NNCF's emulation). So only IRs
whose plan asks bf16 of some layer go without a hint; the others are deployed with the f32 hint (ir/export.py).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional
from xml.sax.saxutils import unescape

from mixq_nncf.errors import IRError

FLOAT_PRECISIONS = ("f32", "bf16")
PRECISE_ATTRIBUTE = '<attribute name="precise" version="0" />'
READ_BACK_KEY = "DisablePrecisionConversion"
NO_BF16_NOTE = "bf16 requested, runs f32 on this CPU (no AVX512-BF16/AMX)"
_INT8_CONSTANTS = ("i8", "u8", "i4", "u4")


def conv_module(layer_name: str) -> str:
    """'__module.body.0.conv1/aten::_convolution/Convolution' -> 'body.0.conv1' (the names ir/audit.py uses)."""
    m = re.search(r"__module\.([\w.]+?)/aten::_?convolution", layer_name)
    return m.group(1) if m else layer_name


def name_unnamed_convolutions(ov_model, model, example_input) -> int:
    """Give every Convolution of a converted model its torch module's name; returns how many were renamed.

    ov.convert_model folds a constant scale after a conv into its weights and the conv then takes the scale's name
    (RRDBNet's ``conv5(x) * 0.2``: 'Multiply_215633'), so per-layer marks and the audit could not find it. The
    torch convs run in the IR's topological order for these feed-forward generators: the IR's convs are paired with
    the torch model's in execution order, and only when every conv that kept its name sits where that order says."""
    import torch
    from torch import nn

    order: list[str] = []
    hooks = [m.register_forward_hook(lambda mod, i, o, n=n: order.append(n))
             for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    try:
        with torch.no_grad():
            model(example_input)
    finally:
        for hook in hooks:
            hook.remove()
    convs = [op for op in ov_model.get_ordered_ops() if op.get_type_name() == "Convolution"]
    if len(convs) != len(order) or len(set(order)) != len(order):
        return 0
    unnamed = []
    for op, module in zip(convs, order):
        found = conv_module(op.get_friendly_name())
        if found == op.get_friendly_name():
            unnamed.append((op, module))
        elif found != module:
            return 0  # the orders differ: pairing by position would name convs wrongly
    for op, module in unnamed:
        op.set_friendly_name(f"__module.{module}/aten::_convolution/Convolution")
    return len(unnamed)


def check_float_precision(float_precision: dict, convs: list[str], where: str) -> dict[str, str]:
    """The mapping validated against the IR's float convolutions; raises IRError naming the bad entries."""
    if not isinstance(float_precision, dict):
        raise IRError(f"{where}: float_precision must map convolution module names to 'f32' or 'bf16', got "
                      f"{type(float_precision).__name__}")
    bad = {k: v for k, v in float_precision.items() if v not in FLOAT_PRECISIONS}
    if bad:
        raise IRError(f"{where}: float_precision values must be 'f32' or 'bf16'; got {bad}")
    unknown = sorted(set(float_precision) - set(convs))
    if unknown:
        shown = ", ".join(convs[:12]) + (" ..." if len(convs) > 12 else "")
        raise IRError(f"{where}: float_precision names {', '.join(unknown)}, which are not float convolutions of "
                      f"this IR (int8 convolutions run int8 whatever the hint); float convolutions: {shown or 'none'}")
    return {c: float_precision.get(c, "f32") for c in convs}


def _weight_is_int8(conv) -> bool:
    """True where the conv's weights are 8-bit or narrower (an FQ of <= 256 levels or an i8/u8/i4/u4 constant)."""
    node = conv.input_value(1).get_node()
    while node.get_type_name() in ("Convert", "Subtract", "Multiply", "Reshape") and node.get_input_size():
        if node.get_type_name() == "Convert" and \
                node.input_value(0).get_element_type().get_type_name() in _INT8_CONSTANTS:
            return True
        node = node.input_value(0).get_node()
    if node.get_type_name() == "FakeQuantize":
        return int(node.get_attributes().get("levels", 0)) <= 256
    return node.get_type_name() == "Constant" and node.get_output_element_type(0).get_type_name() in _INT8_CONSTANTS


def _bias_add(conv):
    """The Add that adds a constant bias to the conv's output, if any (fused into the conv by the plugin)."""
    targets = list(conv.output(0).get_target_inputs())
    if len(targets) != 1:
        return None
    node = targets[0].get_node()
    if node.get_type_name() != "Add":
        return None
    other = node.input_value(1 - targets[0].get_index()).get_node()
    while other.get_type_name() in ("Convert", "Reshape") and other.get_input_size():
        other = other.input_value(0).get_node()
    return node if other.get_type_name() == "Constant" else None


def float_convolutions(ov_model) -> dict[str, list[str]]:
    """module name -> friendly names of the layers that carry its precision (the conv and its bias Add), for
    every convolution whose weights are not 8-bit (fp32, or 16-bit, which the CPU plugin runs as fp32)."""
    out: dict[str, list[str]] = {}
    for op in ov_model.get_ordered_ops():
        if op.get_type_name() != "Convolution" or _weight_is_int8(op):
            continue
        layers = [op.get_friendly_name()]
        add = _bias_add(op)
        if add is not None:
            layers.append(add.get_friendly_name())
        out[conv_module(op.get_friendly_name())] = layers
    return out


def mark_precise(xml_path: str | Path, layer_names: list[str]) -> int:
    """Write the ``precise`` rt_info attribute into each named <layer> of a serialized IR .xml; returns how many.

    Text edit in one pass, not a re-serialization: the rest of the file stays byte for byte what OpenVINO wrote."""
    xml_path = Path(xml_path)
    text = xml_path.read_text()
    wanted = set(layer_names)
    found: set[str] = set()
    parts: list[str] = []
    pos = 0
    marked = 0
    for m in re.finditer(r'<layer\b[^>]*\bname="([^"]*)"[^>]*>', text):
        name = unescape(m.group(1), {"&quot;": '"'})
        if name not in wanted:
            continue
        found.add(name)
        end = text.find("</layer>", m.end())
        body = text[m.end():end]
        if PRECISE_ATTRIBUTE in body:
            continue
        indent = re.match(r"\s*", body).group(0).lstrip("\n") or "\t\t\t"
        rt = body.find("<rt_info>")
        at = m.end() + rt + len("<rt_info>") if rt >= 0 else m.end()
        block = (f"\n{indent}\t{PRECISE_ATTRIBUTE}" if rt >= 0
                 else f"\n{indent}<rt_info>\n{indent}\t{PRECISE_ATTRIBUTE}\n{indent}</rt_info>")
        parts += [text[pos:at], block]
        pos = at
        marked += 1
    missing = sorted(wanted - found)
    if missing:
        raise IRError(f"{xml_path}: layer {missing[0]!r} not found in the serialized IR; re-export it")
    parts.append(text[pos:])
    xml_path.write_text("".join(parts))
    return marked


def marked_in_xml(xml_path: str | Path) -> list[str]:
    """Module names of the convolutions whose <layer> in the .xml carries the ``precise`` attribute."""
    text = Path(xml_path).read_text()
    out = []
    for m in re.finditer(r'<layer\b[^>]*\bname="([^"]*)"[^>]*\btype="Convolution"[^>]*>', text):
        end = text.find("</layer>", m.end())
        if PRECISE_ATTRIBUTE in text[m.end():end]:
            out.append(conv_module(m.group(1)))
    return out


def marked_in_model(ov_model) -> list[str]:
    """Module names of the convolutions OpenVINO read back with the precision mark (what the plugin sees)."""
    return [conv_module(op.get_friendly_name()) for op in ov_model.get_ordered_ops()
            if op.get_type_name() == "Convolution"
            and any(str(k).startswith(READ_BACK_KEY) for k in op.get_rt_info().keys())]


# ----------------------------------------------------------------------------------------------
# requested vs what runs

def requested_precisions(conv_bits: dict[str, Optional[int]],
                         float_precision: Optional[dict[str, str]] = None) -> dict[str, str]:
    """What a plan asks of each conv: 'int8' for 8 bits and narrower (int4 runs on int8 kernels); else the float
    precision it names ('f32' unless float_precision says 'bf16'); 16-bit convs run float on this plugin."""
    float_precision = float_precision or {}
    return {m: "int8" if bits is not None and bits <= 8 else float_precision.get(m, "f32")
            for m, bits in conv_bits.items()}


def expected_precision(requested: str, *, bf16_cpu: bool) -> str:
    """What a request becomes on this CPU when honoured: int8 -> int8, f32 -> f32, bf16 -> bf16 where the CPU has
    bf16 units (AVX512-BF16/AMX) and f32 elsewhere (the plugin has no bf16 kernels to run there)."""
    if requested == "bf16" and not bf16_cpu:
        return "f32"
    return requested


@dataclass
class LayerCheck:
    """One conv: what the plan asked, what this CPU and compile setting should run, what the runtime graph says."""
    module: str
    requested: str
    expected: str
    ran: str
    kernel: str
    note: str = ""

    @property
    def mismatch(self) -> bool:
        return self.ran != self.expected


def check_layers(requested: dict[str, str], ran: dict[str, tuple[str, str]], *, hint: Optional[str],
                 marked: list[str], bf16_cpu: bool) -> list[LayerCheck]:
    """requested: module -> int8/bf16/f32; ran: module -> (kind, primitiveType) from the runtime graph; hint: the
    compile's INFERENCE_PRECISION_HINT (None = the plugin's default); marked: convs carrying the f32 mark."""
    rows = []
    for module, want in requested.items():
        kind, kernel = ran.get(module, ("missing", ""))
        expected = expected_precision(want, bf16_cpu=bf16_cpu)
        note = ""
        if want == "bf16" and not bf16_cpu:
            note = NO_BF16_NOTE
        if kind != expected:
            if want == "bf16" and hint == "f32":
                note = "bf16 requested, compiled with the f32 hint (compile as deployed: precision 'auto')"
            elif want == "f32" and module not in marked:
                note = "f32 requested but not marked in the IR: it runs at the default precision"
            elif kind == "missing":
                note = "no such convolution in the runtime graph"
        rows.append(LayerCheck(module, want, expected, kind, kernel, note))
    return rows
