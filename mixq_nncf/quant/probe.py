"""What QAT of the quantizer intervals needs: the learnable intervals and FQSR's quantization-error term."""
from __future__ import annotations

import torch
from torch import nn

from mixq_nncf.quant.sites import quantizer_modules


def interval_parameters(qmodel: nn.Module) -> dict[str, nn.Parameter]:
    """The quantizer intervals QAT learns: NNCF stores a symmetric quantizer's scale and an asymmetric one's
    input_low / input_range as nn.Parameters (requires_grad=True) whose gradients come from NNCF's fake-quantize
    backward (LSQ-style, straight-through inside the range); model.parameters() includes them, so the
    training optimizer updates them with the weights."""
    out = {}
    for key, q in quantizer_modules(qmodel).items():
        for name, p in q.named_parameters(recurse=False):
            if p.requires_grad and p.dtype.is_floating_point:
                out[f"{key}.{name}"] = p
    return out


class QuantErrorProbe:
    """FQSR's quantization-aware calibration term: forward hooks on every enabled quantizer record
    mean |q(x) - x| of its input; ``take()`` returns their mean since the last call (a differentiable tensor).

    Gradients reach the intervals through NNCF's fake-quantize backward, so minimizing this term alone moves the
    scales toward the rounding / clipping trade-off of each tensor."""

    def __init__(self, qmodel: nn.Module):
        self._errors: list[torch.Tensor] = []
        self._handles = []
        seen: set[int] = set()
        for q in quantizer_modules(qmodel).values():
            if id(q) in seen:
                continue
            seen.add(id(q))
            self._handles.append(q.register_forward_hook(self._hook))

    def _hook(self, module, args, output):
        if module.is_enabled_quantization() and torch.is_tensor(output) and output.is_floating_point():
            self._errors.append((output - args[0]).abs().mean())

    def take(self) -> torch.Tensor:
        errors, self._errors = self._errors, []
        if not errors:
            return torch.zeros(())
        return torch.stack(errors).mean()

    def close(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
