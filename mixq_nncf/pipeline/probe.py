"""Fidelity in torch on a few fixed crops: cheap enough to measure every variant before and after training."""
from __future__ import annotations

from typing import Callable

import torch


def probe_inputs(eval_pairs: list[dict], size: int, n: int = 4) -> list[torch.Tensor]:
    """Centre LR crops used to measure fidelity before/after training in torch (cheap, same for every variant)."""
    out = []
    for pair in eval_pairs[:n]:
        lr = pair["lr"]
        h, w = lr.shape[-2:]
        s = min(size, h, w)
        top, left = (h - s) // 2, (w - s) // 2
        out.append(lr[..., top:top + s, left:left + s].unsqueeze(0))
    return out


class CachedOutputs:
    """A model's outputs on fixed inputs, computed once.

    Every quantized variant's fidelity (before and after QAT, and in the export parity check) compares against
    the fp32 model on the same probe crops; on RRDBNet each fp32 pass costs about a second.
    """

    def __init__(self, model: Callable[[torch.Tensor], torch.Tensor]):
        self.model = model
        self._outputs: dict[int, tuple] = {}

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        hit = self._outputs.get(id(x))
        if hit is None:
            hit = self._outputs[id(x)] = (x, self.model(x))  # holding x keeps its id from being reused
        return hit[1]


def torch_fidelity(model: Callable, reference: Callable, inputs: list[torch.Tensor], crop_border: int) -> float:
    """Mean PSNR-Y of ``model`` vs ``reference`` outputs on the same inputs."""
    from mixq_nncf.eval.metrics import psnr_y

    vals = []
    with torch.no_grad():
        for x in inputs:
            vals.append(psnr_y(model(x).clamp(0, 1), reference(x).clamp(0, 1), crop_border))
    return sum(vals) / len(vals)
