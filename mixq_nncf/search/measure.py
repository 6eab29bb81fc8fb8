"""Measuring quality in torch, one job at a time: fidelity on the ranking crops of the calibrated model re-planned
(a unit kept high at 16 bits or in emulated bf16, a unit dropped to int8, the references), after a short QAT, and
the cheap per-layer proxy that ranks every layer before the contenders are measured. Each measurement returns a
JSON-able dict.
"""
from __future__ import annotations

import contextlib
import copy
import os
from typing import Iterator, Optional

import torch
from torch import nn

from mixq_nncf.config.schema import deep_merge, parse_config, to_dict
from mixq_nncf.eval.metrics import niqe
from mixq_nncf.quant.nncf_adapter import quantizer_modules
from mixq_nncf.search.context import Context
from mixq_nncf.search.fidelity import forward, psnr_each, ssim_each
from mixq_nncf.search.spec import Unit, make_units, paper_plan
from mixq_nncf.train.loop import train

PROXY_CROPS = 2  # ranking crops the proxy's forward and backward passes run on
PROXY_PROBES = 2  # Gaussian probes of the Hutchinson estimate


def ranking_quality(model: nn.Module, ctx: Context) -> dict:
    """Mean fidelity to fp32 on the ranking crops (PSNR-Y, SSIM-Y; NIQE too with --niqe), and PSNR per crop."""
    x, ref, _ = ctx.ranking
    out = forward(model, x)
    psnr = psnr_each(out, ref, ctx.crop_border)
    ssim = ssim_each(out, ref, ctx.crop_border)
    q = {"psnr": sum(psnr) / len(psnr), "ssim": sum(ssim) / len(ssim), "psnr_each": psnr}
    if ctx.spec.niqe:
        q["niqe"] = sum(niqe(o, ctx.crop_border) for o in out) / len(out)
    return q


def measure_base(ctx: Context) -> dict:
    """The references every unit is compared with: all-int8, all-high and the paper recipe."""
    return {"int8": ranking_quality(ctx.apply(ctx.base_plan), ctx),
            "high": ranking_quality(ctx.apply(ctx.all_high), ctx),
            "paper": ranking_quality(ctx.apply(paper_plan(ctx.base_plan)), ctx), "ranking_crops": ctx.ranking[2]}


def measure_gain(ctx: Context, unit: Unit) -> dict:
    """Quality with the unit kept high (16 bits, run f32) on the all-int8 model, and under "bf16" with the unit
    unquantized in emulated bf16: one more forward pass, so every measured unit has both figures."""
    q = ranking_quality(ctx.apply(ctx.base_plan.with_layers(unit.high(ctx.base_plan))), ctx)
    model = ctx.apply(ctx.base_plan.with_layers(unit.bf16(ctx.base_plan)))
    with bf16_emulated(model, unit.layers):
        q["bf16"] = ranking_quality(model, ctx)
    return q


def _to_bf16(t: torch.Tensor) -> torch.Tensor:
    return t.to(torch.bfloat16).to(t.dtype)


@contextlib.contextmanager
def bf16_emulated(model: nn.Module, layers: tuple[str, ...]) -> Iterator[nn.Module]:
    """The named convs compute on bf16-rounded weights and inputs (bf16 storage, f32 accumulation, as the CPU
    plugin's bf16 kernels do) while inside; the weights are restored after. Cheaper than an IR per unit, and the
    figure a bf16 CPU would deploy, whatever CPU the sweep runs on."""
    convs = {n: m for n, m in model.named_modules() if n in layers and isinstance(m, nn.Conv2d)}
    missing = sorted(set(layers) - set(convs))
    if missing:
        raise ValueError(f"bf16 emulation: no conv named {', '.join(missing)} in the model")
    saved = {n: m.weight.data for n, m in convs.items()}
    hooks = [m.register_forward_pre_hook(lambda mod, args: (_to_bf16(args[0]),) + tuple(args[1:]))
             for m in convs.values()]
    try:
        for m in convs.values():
            m.weight.data = _to_bf16(m.weight.data)
        yield model
    finally:
        for h in hooks:
            h.remove()
        for n, m in convs.items():
            m.weight.data = saved[n]


def measure_loss(ctx: Context, unit: Unit) -> dict:
    """Quality with the unit dropped to int8 on the all-high model."""
    return ranking_quality(ctx.apply(ctx.all_high.with_layers(unit.low(ctx.base_plan, ctx.all_high))), ctx)


@contextlib.contextmanager
def single_process() -> Iterator[None]:
    """QAT inside a sharded sweep trains on one process: hide torchrun's WORLD_SIZE from train()."""
    saved = {k: os.environ.pop(k) for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK") if k in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


def measure_qat(ctx: Context, unit: Optional[Unit]) -> dict:
    """Short distillation QAT of the all-int8 model (unit None) or of the unit kept high; fidelity after."""
    plan = ctx.base_plan if unit is None else ctx.base_plan.with_layers(unit.high(ctx.base_plan))
    model = ctx.apply(plan, copy.deepcopy(ctx.apply(ctx.base_plan)))
    t = to_dict(ctx.cfg)
    t["variants"] = {}
    t = deep_merge(t, {"training": {"iterations": ctx.spec.qat_steps, "distill_only": True, "checkpoint_every":
                                    10 ** 9, "device": "cpu", "gan_weight": 0.0, "perceptual_weight": 0.0,
                                    "pixel_weight": 0.0}})
    folder = ctx.out / "qat" / (unit.name if unit else "_base")
    with single_process():
        train(parse_config(t), model=model, teacher=ctx.fp32, out_dir=folder, plan=plan, progress=False,
              resume=True)
    return ranking_quality(model.eval(), ctx)


# ----------------------------------------------------------------------------------------------
# the proxy

def measure_proxy(ctx: Context) -> dict:
    """Per-layer quantization noise and its effect on the output, from one fp32 pass and a few backward passes.

    noise: mean squared error a layer's output gets from its own int8 weights and input (the high option's
    remaining error removed); effect: Hutchinson estimate of ||d out / d layer output||_F^2 / N_out with Gaussian
    probes. Their product predicts the output MSE the layer adds (first order, noise assumed white)."""
    # a copy: the proxy calls quantizers outside their hooks; the measured model stays untouched
    qm = ctx.apply(ctx.base_plan, copy.deepcopy(ctx.apply(ctx.base_plan)))
    weight_q, input_q = _quantizers_by_layer(qm, ctx.sites)
    units = {u.name: u for u in make_units(ctx.base_plan, ctx.sites, "layer")}
    convs = {n: m for n, m in ctx.fp32.named_modules() if n in units}
    x, _, _ = ctx.ranking
    x = x[: min(PROXY_CROPS, len(x))]
    feats, sens = _output_sensitivity(ctx.fp32, convs, x)
    with torch.no_grad():
        rows = {n: _noise_row(conv, feats[n][0].detach(), feats[n][1].detach(), units[n], input_q.get(n),
                              weight_q.get(n), sens[n])
                for n, conv in convs.items()}
    total = sum(r["noise"] * r["sensitivity"] for r in rows.values())
    return {"layers": rows, "predicted_out_mse": total, "crop": list(x.shape[-2:]),
            "units": {u.name: u.override for u in units.values()}}


def _quantizers_by_layer(qmodel: nn.Module, sites: dict) -> tuple[dict[str, nn.Module], dict[str, nn.Module]]:
    """(weight quantizer, input quantizer) modules by layer name."""
    modules = quantizer_modules(qmodel)
    weight_q, input_q = {}, {}
    for key, site in sites.items():
        for layer in site.layers:
            (weight_q if site.kind == "weight" else input_q)[layer] = modules[key]
    return weight_q, input_q


def _output_sensitivity(fp32: nn.Module, convs: dict[str, nn.Module], x: torch.Tensor
                        ) -> tuple[dict[str, tuple[torch.Tensor, torch.Tensor]], dict[str, float]]:
    """Each conv's (input, output) on ``x`` and the Hutchinson estimate of how much output MSE a unit of white
    noise at its output causes."""
    feats: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    hooks = [m.register_forward_hook(lambda mod, inp, out, n=n: feats.__setitem__(n, (inp[0], out)))
             for n, m in convs.items()]
    try:
        out = fp32(x.clone().requires_grad_(False))
        n_out = out.numel()
        sens = {n: 0.0 for n in convs}
        gen = torch.Generator().manual_seed(0)
        for _ in range(PROXY_PROBES):
            r = torch.randn(out.shape, generator=gen)
            grads = torch.autograd.grad((out * r).sum(), [feats[n][1] for n in convs], retain_graph=True)
            for n, g in zip(convs, grads):
                sens[n] += float(g.pow(2).sum()) / PROXY_PROBES / n_out
    finally:
        for h in hooks:
            h.remove()
    return feats, sens


def _noise_row(conv: nn.Conv2d, inp: torch.Tensor, y: torch.Tensor, unit: Unit, input_q: Optional[nn.Module],
               weight_q: Optional[nn.Module], sensitivity: float) -> dict:
    """One layer's quantization noise: all of it, what keeping the unit high removes, and what dropping it to int8
    alone adds; times the sensitivity, the output MSE each predicts."""
    xq = input_q(inp) if input_q is not None and input_q.is_enabled_quantization() else inp
    wq = weight_q(conv.weight) if weight_q is not None and weight_q.is_enabled_quantization() else conv.weight

    def mse(x: torch.Tensor, w: torch.Tensor) -> float:
        return float((conv._conv_forward(x, w, conv.bias) - y).pow(2).mean())

    full = mse(xq, wq)
    kept = 0.0 if unit.override == "bits" else mse(xq, conv.weight)
    drop_high = full if unit.override == "bits" else mse(inp, wq)
    return {"noise": full, "removed": max(0.0, full - kept), "noise_alone": drop_high,
            "sensitivity": sensitivity, "gain_mse": max(0.0, full - kept) * sensitivity,
            "loss_mse": drop_high * sensitivity, "macs": y[0].numel() * conv.weight[0].numel(),
            "weights": int(conv.weight.numel()), "in_elems": int(inp[0].numel()), "out_elems": int(y[0].numel())}
