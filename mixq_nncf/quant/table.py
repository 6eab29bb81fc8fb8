"""The quantizer table: every quantizer, the layers and ops it serves, its bits, mode and range."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

from mixq_nncf.config.plan import LayerPrecision, PrecisionPlan
from mixq_nncf.config.schema import bits_name
from mixq_nncf.models import layer_stages
from mixq_nncf.quant.quantizers import quantizer_state
from mixq_nncf.quant.sites import QuantizerSite, quantizer_modules, quantizer_sites


@dataclass(frozen=True)
class QuantizerRow:
    quantizer: str
    kind: str
    layers: list[str]
    ops: list[str]
    stages: list[str]
    bits: Optional[int]
    levels: Optional[int]
    mode: str
    per_channel: bool
    signed: bool
    range_low: float
    range_high: float
    model_input: bool


def quantizer_table(qmodel: nn.Module, plan: PrecisionPlan | None = None, example: torch.Tensor | None = None,
                    sites: dict[str, QuantizerSite] | None = None) -> list[QuantizerRow]:
    sites = sites if sites is not None else quantizer_sites(qmodel, example)
    modules = quantizer_modules(qmodel)
    stage_of = plan.stage_of if plan else layer_stages(qmodel)
    rows = []
    for key, site in sites.items():
        st = quantizer_state(modules[key])
        rows.append(QuantizerRow(
            quantizer=key, kind=site.kind, layers=list(site.layers), ops=list(site.ops),
            stages=sorted({stage_of[l] for l in site.layers if l in stage_of}),
            bits=st.bits, levels=st.levels, mode=st.mode, per_channel=st.per_channel, signed=st.signed,
            range_low=st.range_low, range_high=st.range_high, model_input=site.is_model_input))
    return rows


def table_markdown(rows: list[QuantizerRow]) -> str:
    def short(names: list[str]) -> str:
        return ", ".join(names[:3]) + (f" (+{len(names) - 3})" if len(names) > 3 else "")

    lines = ["| quantizer | kind | layers | stage | bits | mode | per-channel | range |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        target = short(r.layers) if r.layers else short(r.ops)
        if r.model_input:
            target = "model input -> " + target
        lines.append(f"| `{r.quantizer}` | {r.kind} | {target} | {', '.join(r.stages) or '-'} | "
                     f"{bits_name(r.bits)} | {r.mode}{' signed' if r.signed else ''} | {'yes' if r.per_channel else 'no'}"
                     f" | [{r.range_low:.4g}, {r.range_high:.4g}] |")
    return "\n".join(lines)


def layer_bits(rows: list[QuantizerRow]) -> dict[str, LayerPrecision]:
    """What the quantizers really hold, per layer (for checking a plan against a model)."""
    w: dict[str, Optional[int]] = {}
    a: dict[str, Optional[int]] = {}
    for r in rows:
        for layer in r.layers:
            if r.kind == "weight":
                w[layer] = r.bits
            else:
                a[layer] = max(filter(None, [a.get(layer), r.bits]), default=None)
    return {l: LayerPrecision(w.get(l), a.get(l)) for l in set(w) | set(a)}
