"""Where NNCF 3.4 put its quantizers: the hook storage and the NNCF graph, read in this module only.

NNCF 3.x has no per-layer bit width API. After nncf.quantize the quantizers live in the model's hook storage;
the NNCF graph tells which conv layer (weight pre-hook, port 1) and which ops (activation quantizers feeding
port 0, possibly through pixel_shuffle / concat / interpolate) each one serves.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterable, Optional

import torch
from nncf.common.graph import NNCFGraph, NNCFNode
from nncf.torch.function_hook.nncf_graph.nncf_graph_builder import build_nncf_graph
from nncf.torch.function_hook.wrapper import get_hook_storage
from nncf.torch.quantization.layers import BaseQuantizer
from torch import nn

from mixq_nncf.models import conv_layers


@dataclass(frozen=True)
class QuantizerSite:
    key: str  # hook storage path, e.g. "pre_hooks.conv_first/conv2d/0__1.0"
    kind: str  # weight | activation
    layers: tuple[str, ...]  # conv layers served
    ops: tuple[str, ...]  # every consumer op (convs, adds, interpolate ...)
    is_model_input: bool = False


_TRANSPARENT = {"cat", "pixel_shuffle", "pixel_unshuffle", "interpolate", "reshape", "view", "flatten", "permute",
                "contiguous", "max_pool2d", "avg_pool2d", "__getitem__", "chunk", "split", "clone", "dropout"}
_INPUT_AFFINE = {"sub", "mul", "add", "div", "__sub__", "__mul__", "__add__", "__truediv__", "rsub"}
_GRAPH_ENDS = ("nncf_model_const", "nncf_model_input", "nncf_model_output")


def example_input(size: int = 16) -> torch.Tensor:
    return torch.rand(1, 3, size, size)


def hook_storage(qmodel: nn.Module) -> nn.Module:
    return get_hook_storage(qmodel)


def quantizer_modules(qmodel: nn.Module) -> dict[str, nn.Module]:
    """Hook key -> quantizer module (a quantizer shared by several hooks appears under each key)."""
    return {n: m for n, m in hook_storage(qmodel).named_modules(remove_duplicate=False)
            if isinstance(m, BaseQuantizer)}


def is_quantized(model: nn.Module) -> bool:
    try:
        return bool(quantizer_modules(model))
    except Exception:  # noqa: BLE001 - a plain torch model has no hook storage
        return False


def is_weight_key(key: str) -> bool:
    """A hook key of a weight quantizer: the pre-hook on a conv's port 1."""
    return key.startswith("pre_hooks") and key.endswith("__1.0")


def canonical_keys(modules: dict[str, nn.Module]) -> dict[str, str]:
    """Hook key -> the first key of the same quantizer instance (NNCF shares one quantizer across a
    unified-scale group, e.g. all inputs of a concat)."""
    first: dict[int, str] = {}
    return {k: first.setdefault(id(m), k) for k, m in modules.items()}


def node_to_key(node_name: str, keys: Iterable[str]) -> Optional[str]:
    """Quantize-op node name (e.g. 'lrelu/post_hook__lrelu-leaky_relu-1__0[0]/symmetric_quantize/0') -> hook key."""
    m = re.search(r"(pre|post)_hook__(.+?)__(\d+)\[(\d+)\]", node_name)
    if not m:
        return None
    kind, op, port, idx = m.groups()
    for key in keys:
        km = re.fullmatch(rf"{kind}_hooks\.(.+)__{port}\.{idx}", key)
        if km and km.group(1).replace("/", "-") == op:
            return key
    return None


def nncf_graph(qmodel: nn.Module, example: torch.Tensor | None = None) -> NNCFGraph:
    """The NNCF graph of a quantized model (one trace on ``example``)."""
    return build_nncf_graph(qmodel, example if example is not None else example_input())


def is_quantize_node(node: NNCFNode) -> bool:
    return node.node_type.endswith("quantize")


def _conv_nodes(graph: NNCFGraph, qmodel: nn.Module) -> dict[str, str]:
    """NNCF graph node name of each conv call -> the conv layer's module name."""
    layer_of_node = {}
    for layer in conv_layers(qmodel):
        prefix = layer.replace(".", "/") + "/conv2d/"
        for node in graph.get_all_nodes():
            if node.node_name.startswith(prefix) and node.node_type == "conv2d":
                layer_of_node[node.node_name] = layer
    return layer_of_node


def _upstream_quantizers(graph: NNCFGraph, node: NNCFNode, seen: set[str]) -> list[NNCFNode]:
    """The quantize nodes that feed ``node`` directly or through data-movement ops only."""
    found = []
    for edge in graph.get_input_edges(node):
        src = edge.from_node
        if src.node_name in seen:
            continue
        seen.add(src.node_name)
        if is_quantize_node(src):
            found.append(src)
        elif src.node_type in _TRANSPARENT:
            found += _upstream_quantizers(graph, src, seen)
    return found


def _input_quantizer_keys(graph: NNCFGraph, keys: list[str]) -> set[str]:
    """Quantizers that see the image input through data-independent ops only (mean shift, pixel_unshuffle)."""
    found: set[str] = set()
    frontier = [n for n in graph.get_all_nodes() if n.node_type == "nncf_model_input"]
    seen: set[str] = set()
    while frontier:
        node = frontier.pop()
        for edge in graph.get_output_edges(node):
            nxt = edge.to_node
            if nxt.node_name in seen:
                continue
            seen.add(nxt.node_name)
            if is_quantize_node(nxt):
                key = node_to_key(nxt.node_name, keys)
                if key:
                    found.add(key)
            elif nxt.node_type in _TRANSPARENT or nxt.node_type in _INPUT_AFFINE:
                frontier.append(nxt)
    return found


def quantizer_sites(qmodel: nn.Module, example: torch.Tensor | None = None) -> dict[str, QuantizerSite]:
    """Map every quantizer to the layers and ops it serves, from the NNCF graph (one trace of the model).

    The result depends only on the architecture and where NNCF put quantizers, so it can be computed once per
    calibration and passed to apply_plan for every candidate plan."""
    graph = nncf_graph(qmodel, example)
    modules = quantizer_modules(qmodel)
    canonical = canonical_keys(modules)
    keys = list(modules)
    layer_of_node = _conv_nodes(graph, qmodel)
    serves: dict[str, dict[str, Any]] = {k: {"layers": [], "ops": [], "input": False}
                                         for k in dict.fromkeys(canonical.values())}
    for node in graph.get_all_nodes():
        if is_quantize_node(node) or node.node_type in _GRAPH_ENDS or node.node_type in _TRANSPARENT:
            continue
        layer = layer_of_node.get(node.node_name)
        for q in _upstream_quantizers(graph, node, set()):
            key = node_to_key(q.node_name, keys)
            if key is None:
                continue
            entry = serves[canonical[key]]
            entry["ops"].append(node.node_name)
            if layer:
                entry["layers"].append(layer)
    for key in _input_quantizer_keys(graph, keys):
        serves[canonical[key]]["input"] = True
    sites = {}
    for key, entry in serves.items():
        kind = "weight" if is_weight_key(key) else "activation"
        sites[key] = QuantizerSite(key, kind, tuple(dict.fromkeys(entry["layers"])), tuple(dict.fromkeys(entry["ops"])),
                                   entry["input"])
    return sites
