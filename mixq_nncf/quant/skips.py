"""Fully quantized mode (FQSR): the quantizers on the inputs of additions, concatenations and the upsampling path.

NNCF 3.4's CPU hardware config already puts quantizers on both inputs of every tensor addition, on concat
inputs (one shared scale) and before interpolate / pixel_shuffle, so this module finds them rather than adding
any; apply.apply_skip_bits then sets their bits from ``plan.adds``.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional

import torch
from torch import nn

from mixq_nncf.config.plan import PrecisionPlan
from mixq_nncf.errors import MixqError
from mixq_nncf.quant.sites import canonical_keys, is_quantize_node, nncf_graph, node_to_key, quantizer_modules

ADD_OPS = {"add", "__add__", "__iadd__", "add_", "__radd__", "sub", "__sub__", "__rsub__"}
DATA_MOVE_OPS = {"cat", "interpolate", "pixel_shuffle"}


@dataclass(frozen=True)
class TensorInput:
    """One tensor input of an addition / concat / upsampling op and the quantizer right before it (None: fp32)."""
    op: str  # NNCF graph node, e.g. 'body/0/add/0'
    op_type: str
    port: int
    producer: str
    quantizer: Optional[str]  # canonical hook key


def skip_inputs(qmodel: nn.Module, example: torch.Tensor | None = None) -> list[TensorInput]:
    """Every tensor input of an addition of two tensors (residual, long skip, output skip) and of every concat,
    interpolate and pixel_shuffle, with the quantizer feeding it. Additions of a constant (EDSR's mean shift,
    RRDBNet's 0.2 residual scaling as a mul) are affine maps, not skips, and are left out."""
    graph = nncf_graph(qmodel, example)
    modules = quantizer_modules(qmodel)
    canonical = canonical_keys(modules)
    keys = list(modules)
    out = []
    for node in graph.get_all_nodes():
        if node.node_type not in ADD_OPS | DATA_MOVE_OPS:
            continue
        edges = [e for e in graph.get_input_edges(node) if e.from_node.node_type != "nncf_model_const"]
        if node.node_type in ADD_OPS and len(edges) < 2:
            continue
        for e in sorted(edges, key=lambda e: e.input_port_id):
            src = e.from_node
            key = node_to_key(src.node_name, keys) if is_quantize_node(src) else None
            out.append(TensorInput(node.node_name, node.node_type, e.input_port_id, src.node_name,
                                   canonical[key] if key else None))
    return out


def plan_with_skips(qmodel: nn.Module, plan: PrecisionPlan, bits: int,
                    example: torch.Tensor | None = None) -> PrecisionPlan:
    """The plan with ``adds`` naming every addition of two tensors at ``bits`` (their input quantizers are then set
    by apply_plan). Raises when an input of an addition, concat or upsampling op has no quantizer: the fully
    quantized mode promises that none stays fp32."""
    inputs = skip_inputs(qmodel, example)
    missing = [f"{t.op} input {t.port} (from {t.producer})" for t in inputs if t.quantizer is None]
    if missing:
        raise MixqError(f"fully quantized mode: {len(missing)} skip/upsampling inputs have no quantizer, e.g. "
                        f"{missing[0]}; NNCF did not place one there (check compression.preset and that no scope is "
                        "ignored)")
    adds = {t.op: bits for t in inputs if t.op_type in ADD_OPS}
    return replace(plan, adds=adds)
