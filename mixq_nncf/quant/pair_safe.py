"""8-bit weights that cannot saturate AVX2's int8 kernels, keeping more than NNCF's 7 bits.

Without VNNI or AMX, oneDNN multiplies u8 activations by s8 weights with ``vpmaddubsw``, which adds the products of
two neighbouring input channels (same output channel and kernel tap) in int16 with saturation. Activations reach
255, so two weights whose magnitudes sum above 32767 // 255 = 128 can overflow. NNCF's overflow fix halves every
weight range (7 bits everywhere); but few pairs are that large (about 1% on Real-ESRGAN x4plus), so here each output
channel's range is widened only as far as its own largest pair needs: the bound holds for every input, and most
channels keep 7.5-8 bits.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from nncf.torch.quantization.layers import SymmetricQuantizer
from torch import nn

from mixq_nncf.quant.quantizers import write_range
from mixq_nncf.quant.sites import QuantizerSite, quantizer_modules

U8_MAX = 255
PAIR_LIMIT = 32767 // U8_MAX  # 128: the largest |w_a| + |w_b| whose u8 products cannot saturate int16
_STEPS = 16  # bisection steps for each channel's widening factor in [1, 2]


@dataclass
class PairSafeReport:
    """The 8-bit weights as they stand: channels whose range is wider than their largest weight (max |int| < 127)
    and the bits they keep on average (8 - log2(127 / max |int|); NNCF's fix keeps 7)."""
    quantizers: int = 0
    channels: int = 0
    widened: int = 0
    mean_bits: float = 8.0
    halved: list[str] = field(default_factory=list)  # 8-bit weights of layers whose pairing is unknown: 7 bits

    def summary(self) -> str:
        text = (f"8-bit weights safe for AVX2 int8 kernels (overflow_fix pairs): {self.widened} of {self.channels} "
                f"channels widened, {self.mean_bits:.2f} bits kept on average (NNCF's overflow fix: 7)")
        return text + (f"; {len(self.halved)} layers at 7 bits" if self.halved else "")


def pair_sums(ints: torch.Tensor) -> torch.Tensor:
    """|w_a| + |w_b| for each pair of neighbouring input channels of conv weights (O, I, kh, kw): (O, I/2, kh, kw).
    An odd channel count pairs the last channel with zero padding, as oneDNN does."""
    if ints.shape[1] % 2:
        ints = torch.cat([ints, torch.zeros_like(ints[:, :1])], dim=1)
    return ints[:, 0::2].abs() + ints[:, 1::2].abs()


def _ints(q: nn.Module, w: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """The integer weights ``q`` stores for ``w`` with range ``scale`` (through the quantizer itself)."""
    write_range(q, -scale, scale)
    return torch.round(q(w) / scale.abs().reshape(_bshape(scale, w)) * q.level_high)


def _bshape(scale: torch.Tensor, w: torch.Tensor) -> tuple[int, ...]:
    return tuple(scale.shape) if scale.dim() == w.dim() else (1,) * w.dim()


def _widest(q: nn.Module, w: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """The largest pair sum under each stored scale value."""
    sums = pair_sums(_ints(q, w, scale))
    if scale.dim() == w.dim() and scale.shape[0] == w.shape[0] and scale.numel() == w.shape[0]:
        return sums.amax(dim=(1, 2, 3)).reshape(scale.shape)
    return sums.amax().reshape(scale.shape) if scale.numel() == 1 else sums.amax().expand(scale.shape)


def _fit_one(q: nn.Module, w: torch.Tensor) -> torch.Tensor:
    """Widen ``q``'s range per channel by the least factor in [1, 2] whose pairs stay within PAIR_LIMIT; returns
    the factors. Factor 2 is NNCF's 7-bit range, which is always safe."""
    base = q.scale.detach().clone()
    low = torch.ones_like(base)
    high = torch.full_like(base, 2.0)
    ok_at_one = _widest(q, w, base) <= PAIR_LIMIT
    for _ in range(_STEPS):
        mid = (low + high) / 2
        ok = _widest(q, w, base * mid) <= PAIR_LIMIT
        high = torch.where(ok, mid, high)
        low = torch.where(ok, low, mid)
    factor = torch.where(ok_at_one, torch.ones_like(base), high)
    write_range(q, -base * factor, base * factor)
    return factor


def _candidates(qmodel: nn.Module, sites: dict[str, QuantizerSite]):
    """(hook key, quantizer, conv or None) for every enabled symmetric 8-bit weight quantizer, once each."""
    modules = quantizer_modules(qmodel)
    seen: set[int] = set()
    for key, site in sites.items():
        q = modules.get(key)
        if site.kind != "weight" or q is None or id(q) in seen or not isinstance(q, SymmetricQuantizer):
            continue
        if not q.is_enabled_quantization() or q.num_bits != 8 or q.is_half_range:
            continue
        seen.add(id(q))
        conv = qmodel.get_submodule(site.layers[0]) if len(site.layers) == 1 else None
        plain = isinstance(conv, nn.Conv2d) and not isinstance(conv.padding, str)
        yield key, q, conv if plain and conv.weight.shape[1] > 0 else None


def fit_pair_safe_ranges(qmodel: nn.Module, sites: dict[str, QuantizerSite]) -> PairSafeReport:
    """Make every 8-bit weight of ``qmodel`` safe on AVX2 int8 kernels (in place; channels already safe keep their
    range, so a second call changes nothing). Weights of layers other than plain Conv2d get NNCF's 7-bit range."""
    with torch.no_grad():
        for key, q, conv in _candidates(qmodel, sites):
            if conv is not None:
                _fit_one(q, conv.weight.detach().float())
            elif float(_stored_peak(q, _weight_of(qmodel, sites[key])).max()) > 64:
                write_range(q, -q.scale.detach() * 2, q.scale.detach() * 2)
    return pair_safe_report(qmodel, sites)


def _weight_of(qmodel: nn.Module, site: QuantizerSite) -> torch.Tensor:
    return qmodel.get_submodule(site.layers[0]).weight.detach().float()


def _stored_peak(q: nn.Module, w: torch.Tensor) -> torch.Tensor:
    """Each channel's largest stored |integer| (127 where the range fits the weights exactly)."""
    ints = _ints(q, w, q.scale.detach().clone())
    return ints.abs().reshape(ints.shape[0], -1).amax(dim=1) if q.scale.numel() > 1 else ints.abs().max().reshape(1)


def pair_safe_report(qmodel: nn.Module, sites: dict[str, QuantizerSite]) -> PairSafeReport:
    """What the 8-bit weights of ``qmodel`` keep, read from their quantizers (no state of the fit is needed)."""
    report = PairSafeReport()
    bits = 0.0
    with torch.no_grad():
        for key, q, conv in _candidates(qmodel, sites):
            peak = _stored_peak(q, _weight_of(qmodel, sites[key])).clamp(min=1)
            report.quantizers += 1
            if conv is None:
                report.halved.append(key)
            report.channels += peak.numel()
            report.widened += int((peak < q.level_high).sum())
            bits += float((8 - torch.log2(q.level_high / peak)).sum())
    report.mean_bits = round(bits / report.channels, 3) if report.channels else 8.0
    return report


def widest_pair(qmodel: nn.Module, sites: dict[str, QuantizerSite]) -> int:
    """The largest |w_a| + |w_b| over the plain-conv 8-bit weights (PAIR_LIMIT or less once fitted)."""
    widest = 0
    with torch.no_grad():
        for _key, q, conv in _candidates(qmodel, sites):
            if conv is not None:
                widest = max(widest, int(_widest(q, conv.weight.detach().float(), q.scale.detach().clone()).max()))
    return widest


__all__ = ["PAIR_LIMIT", "PairSafeReport", "fit_pair_safe_ranges", "pair_safe_report", "pair_sums", "widest_pair"]
