"""Low-bit weights rounded block by block to reproduce the fp32 model's outputs, on NNCF's weight quantizers.

Rounding each weight to its nearest level is what costs 4-bit weights most of their quality: the errors of a
layer's weights add up in its output, and the outputs' errors add up through the network. Here each conv's weights
are rounded by GPTQ (Frantar et al. 2023, after OBQ: one input column at a time, each column's rounding error
pushed onto the columns not yet rounded through the inverse of the input's second moments H = E[x x^T]), with the
asymmetric target of GPTAQ (Li et al. 2025): the conv is fitted to what the fp32 conv outputs on the fp32 model's
input, W' = W E[x_fp x_q^T] H^-1, from the input the quantized model really feeds it, so every conv also corrects
the error that reaches it from the layers before. Blocks follow BRECQ (Li et al. 2021): convs are done in call
order inside a block (an RRDB, a residual block, one conv of a Compact stack), each on the inputs produced by the
convs already rounded, and each block is fed with what the blocks already rounded produce.

The result is written back as weights that already sit on their quantizer's grid (scales stay as fitted), so NNCF's
own round-to-nearest reproduces the chosen rounding exactly: checkpoints, QAT, export and the int8 kernels need
nothing new.
"""
from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import torch
from nncf.torch.quantization.layers import SymmetricQuantizer
from torch import nn

from mixq_nncf.config.schema import WeightRounding
from mixq_nncf.io_utils import atomic_torch_save
from mixq_nncf.quant.sites import QuantizerSite, quantizer_modules

Inputs = dict[str, list[torch.Tensor]]


@dataclass
class BlockResult:
    name: str
    error_nearest: float  # mean squared error of the block's output against fp32's, round-to-nearest weights
    error_rounded: float  # with the weights kept: the rounded ones, or the nearest ones where those did better

    @property
    def no_gain(self) -> bool:
        """The rounded weights left the output no closer to fp32 than round-to-nearest."""
        return self.error_rounded >= self.error_nearest

    @property
    def gain_db(self) -> float:
        return 10 * math.log10(max(self.error_nearest, 1e-20) / max(self.error_rounded, 1e-20))


@dataclass
class RoundingResult:
    blocks: list[BlockResult] = field(default_factory=list)
    resumed: int = 0
    wall_s: float = 0.0


def _low_bit_quantizers(modules: dict[str, nn.Module], sites: dict[str, QuantizerSite],
                        max_bits: int) -> dict[str, SymmetricQuantizer]:
    """conv layer -> its enabled symmetric weight quantizer of at most max_bits (asymmetric weights run fp32 on the
    CPU plugin anyway, so they are left alone)."""
    out = {}
    for key, site in sites.items():
        q = modules[key]
        if site.kind == "weight" and len(site.layers) == 1 and q.is_enabled_quantization() \
                and q.num_bits <= max_bits and isinstance(q, SymmetricQuantizer):
            out[site.layers[0]] = q
    return out


def _input_quantizers(modules: dict[str, nn.Module], sites: dict[str, QuantizerSite]) -> dict[str, nn.Module]:
    """conv layer -> the one enabled activation quantizer on its input (a conv fed by several is left fp32
    here: an approximation of the block, not of the model)."""
    by_layer: dict[str, list[nn.Module]] = {}
    for key, site in sites.items():
        if site.kind == "activation" and modules[key].is_enabled_quantization():
            for layer in site.layers:
                by_layer.setdefault(layer, []).append(modules[key])
    return {layer: qs[0] for layer, qs in by_layer.items() if len(qs) == 1}


def _blocks(model: nn.Module, example: torch.Tensor) -> list[tuple[str, list[str]]]:
    """(first block of a top-level module, the module's blocks) in the order the model's forward calls them. A
    Sequential's or ModuleList's elements are called one after the other (a ModuleList itself is never called)."""
    candidates = []
    for name, child in model.named_children():
        if not any(isinstance(m, nn.Conv2d) for m in child.modules()):
            continue
        if isinstance(child, (nn.Sequential, nn.ModuleList)) and len(child) > 1:
            candidates.append((f"{name}.0", [f"{name}.{i}" for i in range(len(child))]))
        else:
            candidates.append((name, [name]))
    order: list[str] = []
    handles = [model.get_submodule(n).register_forward_pre_hook(lambda m, a, n=n: order.append(n) if n not in order
                                                                else None) for n, _ in candidates]
    try:
        with torch.no_grad():
            model(example)
    finally:
        for h in handles:
            h.remove()
    named = dict(candidates)
    return [(n, named[n]) for n in order]


def _capture_inputs(model: nn.Module, module_name: str, samples: list[torch.Tensor]) -> list[torch.Tensor]:
    """The input of ``module_name`` for every sample (one forward of the whole model each)."""
    seen: list[torch.Tensor] = []
    handle = model.get_submodule(module_name).register_forward_pre_hook(lambda m, a: seen.append(a[0].detach()))
    try:
        with torch.no_grad():
            for x in samples:
                model(x)
    finally:
        handle.remove()
    if len(seen) != len(samples):
        raise RuntimeError(f"weight rounding: {module_name} was called {len(seen)} times for {len(samples)} samples")
    return seen


class _Captured(Exception):
    """Raised by a capture hook once the one input wanted is seen: the rest of the block need not run."""


def _conv_inputs(block: nn.Module, xs: list[torch.Tensor], convs: list[str], run=None) -> tuple[Inputs, list[str]]:
    """Each named conv's input for every sample, and the order in which the block calls its convs."""
    seen: Inputs = {n: [] for n in convs}
    order: list[str] = []
    stop = len(convs) == 1

    def hook(n):
        def record(m, a):
            seen[n].append(a[0].detach())
            if n not in order:
                order.append(n)
            if stop:
                raise _Captured
        return record

    handles = [block.get_submodule(n).register_forward_pre_hook(hook(n)) for n in convs]
    try:
        with torch.no_grad():
            for x in xs:
                try:
                    (run or block)(x)
                except _Captured:
                    pass
    finally:
        for h in handles:
            h.remove()
    return seen, order


class _QuantizedBlock:
    """Runs a block as the quantized model does: weights through their NNCF quantizers (low-bit ones as they
    are currently rounded), each conv's input through its activation quantizer."""

    def __init__(self, block: nn.Module, prefix: str, low_bit: dict[str, SymmetricQuantizer],
                 input_quantizers: dict[str, nn.Module], weight_quantizers: dict[str, nn.Module]):
        self.block = block
        self.convs = {n: m for n, m in block.named_modules() if isinstance(m, nn.Conv2d)}
        full = {n: f"{prefix}.{n}" if n else prefix for n in self.convs}
        self.layer = full
        self.low_bit = {n: low_bit[full[n]] for n in self.convs if full[n] in low_bit}
        self.weight_q = {n: weight_quantizers[full[n]] for n in self.convs if full[n] in weight_quantizers}
        self.input_q = {n: input_quantizers[full[n]] for n in self.convs if full[n] in input_quantizers}

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            params = {f"{n}.weight" if n else "weight": q(self.convs[n].weight) for n, q in self.weight_q.items()}
            handles = [self.convs[n].register_forward_pre_hook(lambda m, a, q=q: (q(a[0]),) + tuple(a[1:]))
                       for n, q in self.input_q.items()]
            try:
                return torch.func.functional_call(self.block, params, (x,), strict=False)
            finally:
                for h in handles:
                    h.remove()


def _columns(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    cols = torch.nn.functional.unfold(x.float(), conv.kernel_size, dilation=conv.dilation, padding=conv.padding,
                                      stride=conv.stride)
    return cols.transpose(0, 1).reshape(cols.shape[1], -1)


def _gptq_conv(conv: nn.Conv2d, q: SymmetricQuantizer, x_q: list[torch.Tensor], x_fp: list[torch.Tensor],
               damp: float, act_order: bool = False) -> None:
    """Round one conv's weights (on-grid values written into conv.weight). act_order: the input columns with the
    largest second moment first (GPTQ's "act-order"), so their rounding errors can still be absorbed by many
    columns instead of few."""
    d = conv.weight[0].numel()
    h = torch.zeros(d, d, dtype=torch.float64)
    cross = torch.zeros(d, d, dtype=torch.float64)
    count = 0
    for a, b in zip(x_q, x_fp):
        cq, cf = _columns(conv, a), _columns(conv, b)
        h += (cq @ cq.T).double()
        cross += (cf @ cq.T).double()
        count += cq.shape[1]
    h, cross = h / count, cross / count
    w = conv.weight.detach().reshape(conv.weight.shape[0], -1).double()
    dead = torch.diag(h) == 0
    h[dead, dead] = 1
    h_raw = h.clone()
    h += damp * torch.mean(torch.diag(h)) * torch.eye(d, dtype=h.dtype)
    chol = torch.linalg.cholesky(h)
    # the weights that map the quantized input onto the fp32 conv's output on the fp32 input: least squares with
    # a ridge towards W (not towards 0, which would shrink the weights where the inputs are correlated)
    w = w + torch.cholesky_solve((w @ (cross - h_raw)).T, chol).T
    w[:, dead] = 0
    perm = torch.argsort(torch.diag(h_raw), descending=True) if act_order else torch.arange(d)
    h_perm = h[perm][:, perm]
    u = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h_perm)), upper=True)
    w = w[:, perm]
    step = ((q.scale.detach().abs() + q.eps) / q.level_high).reshape(-1, 1).double()
    levels = torch.zeros_like(w)
    for i in range(d):
        col = w[:, i: i + 1]
        lv = torch.clamp(torch.round(col / step), q.level_low, q.level_high)
        levels[:, i: i + 1] = lv
        err = (col - lv * step) / u[i, i]
        w[:, i:] -= err @ u[i: i + 1, i:]
    levels[:, perm] = levels.clone()
    with torch.no_grad():
        conv.weight.copy_((levels * step).reshape(conv.weight.shape).to(conv.weight.dtype))


def _round_block(qb: _QuantizedBlock, block_fp: nn.Module, x_q: list[torch.Tensor], x_fp: list[torch.Tensor],
                 damp: float, act_order: bool = False) -> None:
    """GPTQ each low-bit conv of the block in call order, on the inputs of the convs already rounded."""
    fp_inputs, order = _conv_inputs(block_fp, x_fp, list(qb.low_bit))
    for n in order:
        conv = qb.convs[n]
        if conv.groups != 1:
            continue
        q_inputs, _ = _conv_inputs(qb.block, x_q, [n], run=qb)
        quantize_input = qb.input_q.get(n)
        if quantize_input is not None:  # the capture sees the input before the block's input quantizer hook
            with torch.no_grad():
                q_inputs[n] = [quantize_input(x) for x in q_inputs[n]]
        _gptq_conv(conv, qb.low_bit[n], q_inputs[n], fp_inputs[n], damp, act_order)


def _block_error(qb: _QuantizedBlock, x_q: list[torch.Tensor], y_fp: list[torch.Tensor]) -> float:
    with torch.no_grad():
        return sum(float((qb(x) - y).pow(2).mean()) for x, y in zip(x_q, y_fp)) / len(x_q)


def settings_key(s: WeightRounding, model: nn.Module, samples: list[torch.Tensor],
                 low_bit: dict[str, SymmetricQuantizer]) -> str:
    """What a saved state was made from: the settings, the fp32 model, the samples and the low-bit quantizers'
    fitted scales (another weight_range start must not resume from weights rounded on other grids)."""
    h = hashlib.sha256(repr(s).encode())
    scales = [q.scale for _, q in sorted(low_bit.items())]
    for t in list(model.state_dict().values())[:8] + samples[:2] + scales:
        h.update(t.detach().float().cpu().numpy().tobytes()[:4096])
    return h.hexdigest()[:16]


def round_weights(qmodel: nn.Module, fp32: nn.Module, sites: dict[str, QuantizerSite], samples: list[torch.Tensor],
                  settings: WeightRounding, *, state_path: Optional[Path] = None,
                  progress: Optional[Callable[[str], None]] = None) -> RoundingResult:
    """Round every block holding weights of at most settings.max_bits, in model order. ``state_path`` keeps the
    blocks done so far: an interrupted run resumes after the last finished block."""
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    result = RoundingResult()
    modules = quantizer_modules(qmodel)
    low_bit = _low_bit_quantizers(modules, sites, settings.max_bits)
    if not low_bit:
        return result
    weight_q = {s.layers[0]: modules[k] for k, s in sites.items() if s.kind == "weight" and len(s.layers) == 1}
    input_q = _input_quantizers(modules, sites)
    state = _load_state(state_path, settings_key(settings, fp32, samples, low_bit))
    fp32 = fp32.eval()
    todo = [(top, blocks) for top, blocks in _blocks(fp32, samples[0])
            if any(layer.startswith(b + ".") or layer == b for b in blocks for layer in low_bit)]
    bar = tqdm(total=sum(len(b) for _, b in todo), desc="weight rounding", unit="block", disable=None)
    for top, blocks in todo:
        x_fp = _capture_inputs(fp32, top, samples)
        x_q = _capture_inputs(qmodel, top, samples)
        for name in blocks:
            block_fp = fp32.get_submodule(name)
            with torch.no_grad():
                y_fp = [block_fp(x) for x in x_fp]
            qb = _QuantizedBlock(qmodel.get_submodule(name), name, low_bit, input_q, weight_q)
            if qb.low_bit and name in state["blocks"]:
                _restore(qmodel, state["blocks"][name])
                result.resumed += 1
            elif qb.low_bit:
                before = _block_error(qb, x_q, y_fp)
                nearest = {n: qb.convs[n].weight.detach().clone() for n in qb.low_bit}
                _round_block(qb, block_fp, x_q, x_fp, settings.damp, settings.order == "act")
                fit = BlockResult(name, before, _block_error(qb, x_q, y_fp))
                if fit.no_gain:
                    # the layer-by-layer fit can miss the block's output (dense blocks, correlated errors): the
                    # block then keeps its round-to-nearest weights, so rounding never makes a block worse here
                    _restore(qmodel, {qb.layer[n]: w for n, w in nearest.items()})
                done = BlockResult(name, before, min(before, fit.error_rounded))
                state["blocks"][name] = {qb.layer[n]: qb.convs[n].weight.detach().clone() for n in qb.low_bit}
                _save_state(state_path, state)
                result.blocks.append(done)
                if progress:
                    kept = f"fit {fit.gain_db:+.1f} dB: kept round-to-nearest" if fit.no_gain else \
                        f"{fit.gain_db:+.1f} dB"
                    progress(f"      {name}: output error {done.error_nearest:.3g} -> {done.error_rounded:.3g} "
                             f"({kept})")
            with torch.no_grad():
                x_q = [qb(x) for x in x_q]
            x_fp = y_fp
            bar.update(1)
    bar.close()
    result.wall_s = time.perf_counter() - t0
    return result


def _restore(qmodel: nn.Module, saved: dict[str, torch.Tensor]) -> None:
    with torch.no_grad():
        for layer, weight in saved.items():
            qmodel.get_submodule(layer).weight.copy_(weight)


def _load_state(path: Optional[Path], key: str) -> dict:
    if path is not None and path.is_file():
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            if isinstance(state, dict) and state.get("key") == key and isinstance(state.get("blocks"), dict):
                return state
        except Exception:  # noqa: BLE001 - an unreadable state only means starting over
            pass
    return {"key": key, "blocks": {}}


def _save_state(path: Optional[Path], state: dict) -> None:
    if path is not None:
        atomic_torch_save(path, state)
