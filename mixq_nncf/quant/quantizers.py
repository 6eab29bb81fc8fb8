"""An NNCF 3.4 quantizer's own fields, read and written in this module only: bits, signedness, stored range.

NNCF keeps a quantizer's bit width twice (``num_bits`` for its levels, ``_qspec`` for get_config /
load_from_config) and its range in private storage parameters (a symmetric quantizer's scale, an asymmetric
one's low and width, possibly as logarithms). Every change goes through here so both copies stay in step.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from nncf.torch.quantization.layers import AsymmetricQuantizer, SymmetricQuantizer
from torch import nn


@dataclass(frozen=True)
class QuantizerState:
    """A quantizer's settings as plain values (for the table and for checks)."""
    enabled: bool
    bits: Optional[int]
    levels: Optional[int]
    mode: str
    per_channel: bool
    signed: bool
    range_low: float
    range_high: float


def is_asymmetric(q: nn.Module) -> bool:
    return isinstance(q, AsymmetricQuantizer)


def set_bits(q: nn.Module, bits: int) -> None:
    q.num_bits = bits
    q._qspec.num_bits = bits  # get_config/load_from_config read the spec
    q.set_levels()


def set_signed(q: nn.Module, signed: bool) -> None:
    """Signed or unsigned levels for a symmetric quantizer (the spec too, so a restored checkpoint agrees)."""
    q.signed = signed
    q._qspec.signedness_to_force = signed


def make_signed(q: nn.Module) -> bool:
    """Signed levels for an unsigned symmetric quantizer; True where it changed (asymmetric ones have no sign)."""
    if not isinstance(q, SymmetricQuantizer) or q.signed:
        return False
    set_signed(q, True)
    return True


def range_shape(q: nn.Module) -> tuple[int, ...]:
    """Shape of the stored range (per-channel quantizers hold one value per channel)."""
    return tuple((q.input_low if is_asymmetric(q) else q.scale).shape)


def write_range(q: nn.Module, low: torch.Tensor, high: torch.Tensor) -> None:
    """Store a range in a quantizer's own parameters (symmetric: scale = high; asymmetric: low and width)."""
    with torch.no_grad():
        if is_asymmetric(q):
            q.input_low.data.copy_(low.reshape(q.input_low.shape))
            width = (high - low).reshape(q._input_range_param_storage.shape)
            q._input_range_param_storage.data.copy_(width.log() if q.is_using_log_scale_storage else width)
        else:
            scale = high.reshape(q._scale_param_storage.shape)
            q._scale_param_storage.data.copy_(scale.log() if q.is_using_log_scale_storage else scale)


def pin_input_range(q: nn.Module, lo: float, hi: float) -> None:
    """Make the image-input quantizer cover exactly [lo, hi]: torch clamps to its range, OpenVINO (which strips
    16-bit FakeQuantize) does not, so a narrower calibrated range would make them disagree."""
    with torch.no_grad():
        if is_asymmetric(q):
            q.input_low.data.fill_(lo)
            q._input_range_param_storage.data.fill_(hi - lo)
            if q.is_using_log_scale_storage:
                q._input_range_param_storage.data.log_()
        else:
            signed = lo < 0
            if q.signed != signed:
                set_signed(q, signed)
            scale = max(abs(lo), abs(hi))
            q._scale_param_storage.data.fill_(scale)
            if q.is_using_log_scale_storage:
                q._scale_param_storage.data.log_()


def quantizer_state(q: nn.Module) -> QuantizerState:
    enabled = q.is_enabled_quantization()
    with torch.no_grad():
        if is_asymmetric(q):
            low = q.input_low.detach()
            high = low + q.input_range.detach()
            mode = "asymmetric"
        else:
            scale = q.scale.detach().abs()
            high = scale
            low = -scale if q.signed else torch.zeros_like(scale)
            mode = "symmetric"
    return QuantizerState(enabled, q.num_bits if enabled else None, q.levels if enabled else None, mode,
                          bool(q.per_channel), bool(q.signed), float(low.min()), float(high.max()))
