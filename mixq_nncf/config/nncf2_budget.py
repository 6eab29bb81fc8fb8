"""NNCF 2.x hawq / autoq precision searches as the equivalent `mixq sweep` + `mixq allocate` commands, with the
compression budget translated into an IR size budget where a sound translation exists."""
from __future__ import annotations

import shlex
from typing import Optional

import torch

from mixq_nncf.config.nncf2_sections import Translation
from mixq_nncf.models import build_generator


def model_named(config: dict) -> bool:
    """Whether a translated config names the SR model (an NNCF file names a classification model, or none)."""
    return isinstance(config.get("model"), dict) and "arch" in config["model"]


def _weight_sizes(config: dict) -> Optional[tuple[float, float]]:
    """(fp32 MB, all-int8 MB) of the model's parameters: conv weights at 4 / 1 bytes, everything else fp32.
    The IR's .bin is about this size (mixq allocate measures the real one)."""
    try:
        model = build_generator(config["model"]["arch"], **(config["model"].get("args") or {}))
    except Exception:  # noqa: BLE001 - an unknown arch is reported by the config check itself
        return None
    weights = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    total = sum(p.numel() for p in model.parameters())
    return total * 4 / 1e6, (weights * 1 + (total - weights) * 4) / 1e6


def allocation_commands(tr: Translation, source: str, overrides: list[str]) -> list[str]:
    """The mixq commands equivalent to an NNCF hawq / autoq precision search, with the budget translated.

    NNCF's searches lower bits below 8 under a compression budget; `mixq allocate` starts from all-int8 (the
    fastest the CPU plugin runs: it has no kernel below int8) and keeps the most sensitive layers high under a
    budget (--max-size-mb: the IR's weights file). So a budget maps onto it only where it allows at least the
    all-int8 model; a tighter one has no sound translation and the message says so."""
    alloc = tr.allocation or {}
    kind = alloc.get("type", "hawq")
    ratio = alloc.get("compression_ratio")
    sets = " ".join(f"--set {shlex.quote(o)}" for o in overrides)
    sizes = _weight_sizes(tr.config) if model_named(tr.config) else None
    base = " ".join(filter(None, ["mixq config convert", shlex.quote(source), sets, "--out base.json"]))
    if ratio is None:
        mb, how = "MB", "no compression_ratio given: choose the IR size budget in MB"
    elif kind == "autoq":
        # AutoQ: model size relative to the fp32 parameters (all-int8 = 0.25)
        mb = f"{ratio * sizes[0]:.4g}" if sizes else None
        how = (f"AutoQ's compression_ratio {ratio} is the model size over its fp32 parameter size"
               + (f" ({sizes[0]:.4g} MB here)" if sizes else "") + "; the same size budget")
        if ratio < 0.25:
            mb = None
            how += (f", but {ratio} < 0.25 is smaller than the all-int8 model, which mixq cannot go below (the CPU "
                    "plugin has no kernel under int8, so lower bits give no speed); the sound choice is all-int8")
    else:
        # HAWQ: all-int8 bit complexity (sum of MACs x bits) over the mixed model's
        mb = f"{sizes[1] / ratio:.4g}" if sizes else None
        how = (f"HAWQ's compression_ratio {ratio} is all-int8 bit complexity (MACs x bits per layer) over the mixed "
               "model's; as a size budget that is the all-int8 size" + (f" ({sizes[1]:.4g} MB here)" if sizes else "")
               + f" / {ratio}, an approximation (bit complexity weighs layers by MACs and both sides' bits, size by "
               "parameters and weight bits)")
        if ratio > 1:
            mb = None
            how += (f"; {ratio} > 1 asks for less than all-int8, which mixq cannot go below (the CPU plugin has no "
                    "kernel under int8); the sound choice is all-int8")
    if mb is None and ratio is not None:
        return [f"NNCF's {kind} precision search has no sound mixq budget here ({how}).", base,
                "mixq quantize base.json --out quantized   # all-int8"]
    if mb is None:
        mb = "(ratio x the fp32 MB)" if kind == "autoq" else "(the all-int8 MB / ratio)"
    return [
        f"NNCF's {kind} precision search is mixq's measured sweep + allocation ({how}; NNCF's candidate bits "
        f"{alloc.get('bits')} become: every layer int8, the most sensitive kept 16-bit within the budget).",
        base,
        "mixq sweep base.json --out sweep",
        f"mixq allocate sweep --max-size-mb {mb} --out allocated.json",
        "mixq quantize allocated.json --out quantized   # or: mixq run allocated.json --out run",
    ]
