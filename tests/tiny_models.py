"""Tiny generators and real photo crops that keep the suite fast on 2 cores."""
from __future__ import annotations

import torch

from mixq_nncf.config.schema import parse_config
from mixq_nncf.data.datasets import load_image, make_lr, offline_photos
from mixq_nncf.models import build_generator

TINY = {"num_feat": 8, "num_block": 1}
FAMILIES = ["msrresnet_x4", "rrdbnet_x4", "edsr_m_x4"]


def photo_lr_crops() -> list[torch.Tensor]:
    """Four real LR crops (1, 3, 24, 24) from the offline eval photos."""
    out = []
    for path in offline_photos("eval")[:4]:
        hr = load_image(path)[:, 100:196, 100:196]
        out.append(make_lr(hr, 4).unsqueeze(0))
    return out


def calibration_tensors() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [torch.rand(1, 3, 16, 16, generator=g) for _ in range(4)]


def tiny(arch: str = "msrresnet_x4") -> torch.nn.Module:
    torch.manual_seed(0)
    return build_generator(arch, **TINY).eval()


def tiny_config(**sections) -> object:
    data = {"model": {"arch": "msrresnet_x4", "args": TINY, "weights": None}}
    data.update(sections)
    return parse_config(data)


def ir_conv_bits(xml) -> dict[str, tuple]:
    """What an exported IR itself says each conv runs at: (weight bits, input activation bits), None = fp32.

    Read from the graph, not from our quantizer mapping: input bits from the levels of the FakeQuantize ops that
    feed the conv's data input (through concat / reshape / pixel-shuffle ops); weight bits from the weight's
    FakeQuantize levels, or, where OpenVINO stored the quantized weight as integers (8 bits and below as i8,
    16 bits as i16 with compact_16bit), from the span of the stored integers.
    """
    import math
    import re

    import numpy as np
    import openvino as ov

    def act_levels(node) -> list:
        kind = node.get_type_name()
        if kind == "FakeQuantize":
            return [node.get_attributes()["levels"]]
        if kind == "Concat":
            return [lv for i in range(node.get_input_size()) for lv in act_levels(node.input_value(i).get_node())]
        if kind in ("Reshape", "Transpose", "DepthToSpace", "Convert", "Squeeze", "Unsqueeze"):
            return act_levels(node.input_value(0).get_node())
        return [None]

    def weight_bits(node):
        while node.get_type_name() in ("Multiply", "Subtract", "Convert") and node.get_input_size():
            node = node.input_value(0).get_node()
        if node.get_type_name() == "FakeQuantize":
            return math.ceil(math.log2(node.get_attributes()["levels"]))
        kind = node.get_output_element_type(0).get_type_name()
        if kind not in ("i4", "u4", "i8", "u8", "i16", "u16"):
            return None
        data = node.get_data()
        if kind in ("i4", "u4"):  # two values per byte
            packed = data.view(np.uint8).ravel()
            data = np.concatenate([packed & 0xF, packed >> 4]).astype(np.int16)
            if kind == "i4":
                data = np.where(data > 7, data - 16, data)
        span = int(data.max()) - int(data.min()) + 1
        return math.ceil(math.log2(span))

    out = {}
    for op in ov.Core().read_model(str(xml)).get_ordered_ops():
        if op.get_type_name() != "Convolution":
            continue
        found = re.search(r"__module\.([\w.]+?)/aten::_?convolution", op.get_friendly_name())
        if found:
            name = found.group(1)
        else:  # RRDB's conv5 is fused with the block's 0.2 residual scale and named after the Multiply
            block = re.search(r"__module\.([\w.]+?)/aten::cat", op.input_value(0).get_node().get_friendly_name())
            name = f"{block.group(1)}.conv5"
        levels = act_levels(op.input_value(0).get_node())
        act = None if None in levels else math.ceil(math.log2(max(levels)))
        out[name] = (weight_bits(op.input_value(1).get_node()), act)
    return out
