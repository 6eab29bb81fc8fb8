"""Weight clipping ranges fitted to the least quantization error, per output channel.

Min-max ranges clip nothing: at 4 bits a single outlier weight then leaves most of a channel on two or three of
its 16 levels. Squared weight error alone can make the output worse (clipping shrinks a channel's largest weights
together, an error smooth image content does not average out), so where calibration images are given the error
is weighted by the second moments of each conv's real input patches.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from mixq_nncf.quant.quantizers import is_asymmetric, range_shape, write_range
from mixq_nncf.quant.sites import QuantizerSite, quantizer_modules

DEFAULT_RATIOS = [round(0.2 + 0.01 * i, 2) for i in range(81)]  # 0.20 .. 1.00


def _channel_dims(w: torch.Tensor, scale_shape: tuple[int, ...]) -> tuple[int, ...]:
    """The dims of ``w`` one scale value covers (all of them for a per-tensor quantizer)."""
    if len(scale_shape) != w.dim():
        return tuple(range(w.dim()))
    return tuple(d for d in range(w.dim()) if scale_shape[d] == 1)


def _input_moments(conv: nn.Module, x: torch.Tensor, max_cols: int = 16384) -> Optional[torch.Tensor]:
    """E[p p^T] over the conv's input patches p (one column of unfold per output pixel), or None where the conv
    is not a plain 2-D one. A weight error dW then costs dW H dW^T in output squared error, per output channel."""
    if not isinstance(conv, nn.Conv2d) or conv.groups != 1 or isinstance(conv.padding, str):
        return None
    cols = torch.nn.functional.unfold(x.float(), conv.kernel_size, dilation=conv.dilation, padding=conv.padding,
                                      stride=conv.stride)  # N, C*k*k, L
    cols = cols.transpose(0, 1).reshape(cols.shape[1], -1)
    if cols.shape[1] > max_cols:
        g = torch.Generator().manual_seed(0)
        cols = cols[:, torch.randperm(cols.shape[1], generator=g)[:max_cols]]
    return cols @ cols.T / cols.shape[1]


def _fit_one(q: nn.Module, w: torch.Tensor, ratios: list[float], moments: Optional[torch.Tensor]) -> torch.Tensor:
    """Write the best per-channel clipping ratio of one weight quantizer; returns the ratios chosen."""
    dims = _channel_dims(w, range_shape(q))
    w_min, w_max = w.amin(dim=dims, keepdim=True), w.amax(dim=dims, keepdim=True)
    if is_asymmetric(q):
        base_low, base_high = w_min, w_max
    else:
        base_high = torch.maximum(w_max.abs(), w_min.abs())
        base_low = -base_high
    base_high = torch.where(base_high > base_low, base_high, base_low + 1e-8)
    per_out = moments is not None and dims == tuple(range(1, w.dim()))
    best_err = torch.full_like(base_high, float("inf"))
    best_ratio = torch.ones_like(base_high)
    for r in ratios:
        write_range(q, base_low * r, base_high * r)
        dw = q(w) - w
        if per_out:
            flat = dw.reshape(dw.shape[0], -1)
            err = ((flat @ moments) * flat).sum(dim=1).reshape(best_err.shape)
        else:
            err = dw.pow(2).sum(dim=dims, keepdim=True)
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best_ratio = torch.where(better, torch.full_like(best_ratio, r), best_ratio)
    write_range(q, base_low * best_ratio, base_high * best_ratio)
    return best_ratio


def _fittable(qmodel: nn.Module, sites: dict[str, QuantizerSite],
              max_bits: Optional[int]) -> dict[str, tuple[nn.Module, nn.Module, str]]:
    """Layer -> (conv, its weight quantizer, hook key) for every enabled per-layer weight quantizer in reach."""
    modules = quantizer_modules(qmodel)
    todo: dict[str, tuple[nn.Module, nn.Module, str]] = {}
    seen: set[int] = set()
    for key, site in sites.items():
        q = modules.get(key)
        if site.kind != "weight" or len(site.layers) != 1 or q is None or id(q) in seen:
            continue
        if not q.is_enabled_quantization() or (max_bits is not None and q.num_bits > max_bits):
            continue
        conv = qmodel.get_submodule(site.layers[0])
        if not isinstance(getattr(conv, "weight", None), torch.Tensor):
            continue
        seen.add(id(q))
        todo[site.layers[0]] = (conv, q, key)
    return todo


def fit_weight_ranges(qmodel: nn.Module, sites: dict[str, QuantizerSite], *, max_bits: Optional[int] = None,
                      examples: Optional[list[torch.Tensor]] = None,
                      ratios: Optional[list[float]] = None) -> dict[str, float]:
    """Per output channel, the weight clipping range with the least quantization error.

    For every enabled per-layer weight quantizer (with at most ``max_bits`` bits, all when None) this tries ranges
    ``ratio * [min, max]`` of each channel's weights through the quantizer itself (any bit width, mode and
    narrow-range setting is honoured) and keeps each channel's best ratio; ratio 1 (min-max) is a candidate, so no
    channel gets worse by the measure used. With ``examples`` (model inputs) the measure is the conv's output
    squared error on them (weight error weighted by the second moments of the conv's real input patches, fitted
    layer by layer in one forward, each layer seeing the already fitted ones before it); without, the weights'
    squared error. Returns quantizer key -> mean chosen ratio."""
    ratios = list(DEFAULT_RATIOS if ratios is None else ratios)
    if 1.0 not in ratios:
        ratios.append(1.0)
    todo = _fittable(qmodel, sites, max_bits)
    fitted: dict[str, float] = {}

    def fit(layer: str, moments: Optional[torch.Tensor]) -> None:
        conv, q, key = todo[layer]
        with torch.no_grad():
            fitted[key] = float(_fit_one(q, conv.weight.detach().float(), ratios, moments).mean())

    if examples:
        handles = []
        for layer, (conv, _q, key) in todo.items():
            def hook(_m, args, layer=layer, conv=conv, key=key):
                if key not in fitted:
                    fit(layer, _input_moments(conv, args[0].detach()))
            handles.append(conv.register_forward_pre_hook(hook))
        try:
            with torch.no_grad():
                qmodel(torch.cat([e[:1] for e in examples[:4] if e.shape[1:] == examples[0].shape[1:]]))
        finally:
            for h in handles:
                h.remove()
    for layer, (_conv, _q, key) in todo.items():
        if key not in fitted:
            fit(layer, None)
    return fitted
