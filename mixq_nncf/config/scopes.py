"""NNCF 2.x scope names for a model, from one traced forward pass (plain torch, no NNCF).

NNCF 2.x named every op by the module path it ran in, with class names, and a per-scope call counter:
``MSRResNet/Sequential[body]/ResidualBlockNoBN[0]/NNCFConv2d[conv1]/conv2d_0``; the image input is
``/nncf_model_input_0``. Its quantizer ids add ``|WEIGHT`` (a layer's weights), ``|OUTPUT`` (an op's output) or
``|INPUT<port>`` (an op's input). NNCF 3.4 dropped these names, so configs written for NNCF 2.x are resolved
here: the module path is read from the bracketed names, and an op's output is traced to the conv layers that
read it (through data-movement ops such as pixel_shuffle, cat or interpolate, as NNCF's quantizer propagation did).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

MODEL_INPUT = "/nncf_model_input_0"
# ops a quantizer placed on their input would see through (they move data, they do not compute)
_DATA_MOVEMENT = {"cat", "pixel_shuffle", "pixel_unshuffle", "interpolate", "reshape", "view", "flatten", "permute",
                  "contiguous", "max_pool2d", "avg_pool2d", "__getitem__", "chunk", "split", "clone", "dropout"}
# NNCF 2.x wrapped these modules and showed the wrapper's class name
_INPUT_AFFINE = {"sub", "mul", "add", "div", "__sub__", "__mul__", "__add__", "__truediv__", "rsub"}
_NNCF_CLASS = {"Conv2d": "NNCFConv2d", "Linear": "NNCFLinear", "BatchNorm2d": "NNCFBatchNorm2d",
               "ConvTranspose2d": "NNCFConvTranspose2d", "Embedding": "NNCFEmbedding"}


@dataclass(frozen=True)
class ScopeTrace:
    layer_scopes: dict[str, str]  # conv layer (module path) -> its NNCF 2.x op name
    output_consumers: dict[str, tuple[str, ...]]  # NNCF 2.x op name -> conv layers reading its output
    output_layers: tuple[str, ...]  # conv layers whose output reaches the model output without another conv


def module_path(scope: str) -> str:
    """'MSRResNet/Sequential[body]/ResidualBlockNoBN[3]/NNCFConv2d[conv1]/conv2d_0|WEIGHT' -> 'body.3.conv1'
    (the bracketed names, whatever the class names)."""
    return ".".join(re.findall(r"\[([^\]]*)\]", scope.split("|", 1)[0]))


def normalized(op_name: str) -> str:
    """An op name without class names: 'A/LeakyReLU[lrelu]/leaky_relu_0' -> '[lrelu]/leaky_relu_0', so a config
    written for a model class of another name (or an older NNCF wrapper name) still matches."""
    if op_name.startswith("/"):
        return op_name
    parts = op_name.split("/")[1:]
    parts = [re.sub(r"^[^\[]*\[", "[", p) if "[" in p else p for p in parts]
    if parts:  # in-place variants ('relu__0', NNCF 2.x) name the same op as 'relu_0'
        m = re.fullmatch(r"(.*?)_(\d+)", parts[-1])
        if m and not m.group(1).startswith("__"):
            parts[-1] = f"{m.group(1).rstrip('_')}_{m.group(2)}"
    return "/".join(parts)


def looks_like_nncf_scope(pattern: str) -> bool:
    return "/" in pattern or "[" in pattern


def _tensors(obj: Any) -> list[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, (list, tuple)):
        return [t for o in obj for t in _tensors(o)]
    if isinstance(obj, dict):
        return [t for o in obj.values() for t in _tensors(o)]
    return []


class _Tracer(TorchFunctionMode):
    def __init__(self, root: nn.Module):
        super().__init__()
        self.stack: list[str] = [type(root).__name__]
        self.counts: dict[tuple[str, str], int] = {}
        self.sources: dict[int, frozenset[str]] = {}  # tensor id -> producer op names visible there
        self.producer: dict[int, tuple[str, str, list[int]]] = {}  # tensor id -> (op name, fn, input ids)
        self.keep: list[torch.Tensor] = []  # keep traced tensors alive so ids stay unique
        self.conv_inputs: dict[str, frozenset[str]] = {}
        self.layer_scopes: dict[str, str] = {}
        self.current_module: list[tuple[str, nn.Module]] = []
        self.input_chain: frozenset[str] = frozenset({MODEL_INPUT})

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = getattr(func, "__name__", "")
        outs = _tensors(out)
        if not outs or name in ("__get__", "size", "dim", "numel"):
            return out
        scope = "/".join(self.stack)
        k = self.counts.get((scope, name), 0)
        self.counts[(scope, name)] = k + 1
        op = f"{scope}/{name}_{k}"
        ins = [t for t in _tensors(args) + _tensors(kwargs)]
        in_sources = frozenset().union(*(self.sources.get(id(t), frozenset()) for t in ins)) if ins else frozenset()
        # data movement shows its inputs' producers; a per-channel affine on the image alone (EDSR's mean shift)
        # shows the image input, where NNCF 2.x put the input quantizer
        see_through = name in _DATA_MOVEMENT or (name in _INPUT_AFFINE and in_sources and in_sources <= self.input_chain)
        visible = frozenset({op}) | (in_sources if see_through else frozenset())
        if see_through and in_sources <= self.input_chain:
            self.input_chain = self.input_chain | {op}
        for t in outs:
            self.sources[id(t)] = visible
            self.producer[id(t)] = (op, name, [id(t) for t in ins])
            self.keep.append(t)
        self.keep.extend(ins)
        if name == "conv2d" and self.current_module and isinstance(self.current_module[-1][1], nn.Conv2d):
            layer = self.current_module[-1][0]
            self.layer_scopes.setdefault(layer, op)
            self.conv_inputs[layer] = self.sources.get(id(args[0]), frozenset()) if args else frozenset()
        return out


def trace_scopes(model: nn.Module, example: torch.Tensor | None = None) -> ScopeTrace:
    """One forward pass of ``model`` on a small example, naming every op the NNCF 2.x way. It runs on a copy on
    PyTorch's meta device (shapes only, no arithmetic), so a 16.7M-parameter RRDBNet traces in a moment."""
    try:
        meta = {n: torch.empty_like(t, device="meta") for n, t in
                list(model.named_parameters()) + list(model.named_buffers())}
        return _trace(model, torch.zeros(1, 3, 16, 16, device="meta"), meta)
    except (NotImplementedError, RuntimeError):  # an op without a meta kernel: trace for real
        return _trace(model, example if example is not None else torch.rand(1, 3, 16, 16))


def _trace(model: nn.Module, example: torch.Tensor, tensors: dict | None = None) -> ScopeTrace:
    tracer = _Tracer(model)
    names = {m: n for n, m in model.named_modules() if n}
    handles = []

    def pre(mod, _args):
        cls = type(mod).__name__
        tracer.stack.append(f"{_NNCF_CLASS.get(cls, cls)}[{names[mod].rsplit('.', 1)[-1]}]")
        tracer.current_module.append((names[mod], mod))

    def post(_mod, _args, _out):
        tracer.stack.pop()
        tracer.current_module.pop()

    for mod in names:
        handles.append(mod.register_forward_pre_hook(pre))
        handles.append(mod.register_forward_hook(post))
    try:
        x = example.clone()
        tracer.sources[id(x)] = frozenset({MODEL_INPUT})
        tracer.keep.append(x)
        with torch.no_grad(), tracer:
            out = torch.func.functional_call(model, tensors, (x,)) if tensors else model(x)
    finally:
        for h in handles:
            h.remove()
    consumers: dict[str, list[str]] = {}
    for layer, sources in tracer.conv_inputs.items():
        for s in sources:
            consumers.setdefault(s, []).append(layer)
    conv_of_op = {op: layer for layer, op in tracer.layer_scopes.items()}
    # walk back from the output through non-conv ops; the convs met first feed the output
    feeding: list[str] = []
    frontier = [id(t) for t in _tensors(out)]
    seen: set[int] = set()
    while frontier:
        tid = frontier.pop()
        if tid in seen or tid not in tracer.producer:
            continue
        seen.add(tid)
        op, _fn, ins = tracer.producer[tid]
        if op in conv_of_op:
            feeding.append(conv_of_op[op])
        else:
            frontier.extend(ins)
    return ScopeTrace(dict(tracer.layer_scopes), {k: tuple(v) for k, v in consumers.items()},
                      tuple(dict.fromkeys(feeding)))
