"""Fidelity to fp32, the sweep's measure of quality: per crop for torch models, per eval photo for IRs.

Fidelity (PSNR-Y / SSIM-Y against the fp32 model's own output) rather than PSNR against ground truth, because
the question a sweep answers is what quantization changes, not how good the generator is.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from mixq_nncf.eval.metrics import psnr_y, ssim_y
from mixq_nncf.ir.export import compile_ir, run_ir


def forward(model: nn.Module, x: torch.Tensor, chunk: int = 4) -> torch.Tensor:
    """The model's clamped outputs for a batch, run a few crops at a time to bound memory."""
    with torch.no_grad():
        return torch.cat([model(x[i:i + chunk]) for i in range(0, len(x), chunk)]).clamp(0, 1)


def psnr_each(pred: torch.Tensor, ref: torch.Tensor, crop: int) -> list[float]:
    return [psnr_y(pred[i], ref[i], crop) for i in range(len(pred))]


def ssim_each(pred: torch.Tensor, ref: torch.Tensor, crop: int) -> list[float]:
    return [ssim_y(pred[i], ref[i], crop) for i in range(len(pred))]


def ir_fidelity(xml: Path, ref_xml: Path, pairs: list[dict], crop_border: int) -> dict:
    """Mean PSNR-Y / SSIM-Y of an IR's outputs against the fp32 IR's on whole eval images."""
    a, b = compile_ir(xml), compile_ir(ref_xml)
    ps, ss = [], []
    for pair in pairs:
        lr = pair["lr"].unsqueeze(0)
        out, ref = run_ir(a, lr).clamp(0, 1), run_ir(b, lr).clamp(0, 1)
        ps.append(psnr_y(out, ref, crop_border))
        ss.append(ssim_y(out, ref, crop_border))
    return {"psnr": sum(ps) / len(ps), "ssim": sum(ss) / len(ss), "psnr_each": ps, "images": len(pairs)}
