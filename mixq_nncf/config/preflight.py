"""Settings that quietly defeat the purpose, found before any work starts (both config formats)."""
from __future__ import annotations

import json
from typing import Iterable, Optional

from mixq_nncf.config.plan import PrecisionPlan, resolve_plan
from mixq_nncf.config.schema import Config, RangeInit
from mixq_nncf.config.scopes import trace_scopes
from mixq_nncf.models import build_generator


def settings_warnings(cfg: Config, plan: Optional[PrecisionPlan], output_layers: Iterable[str] = ()) -> list[str]:
    """One line per problem: asymmetric int8 / 4-bit weights, a >8-bit layer feeding the model output, a
    calibration set smaller than the range initializer asks for."""
    comp = cfg.compression
    if comp is None or plan is None:
        return []
    out = []
    if comp.weights.mode == "asymmetric":
        int8 = [n for n, p in plan.layers.items() if p.weight_bits is not None and 5 <= p.weight_bits <= 8]
        low = [n for n, p in plan.layers.items() if p.weight_bits is not None and p.weight_bits <= 4]
        if int8:
            out.append(f"asymmetric weights: the OpenVINO CPU plugin has no int8 kernel for asymmetric weights, so "
                       f"{len(int8)} conv(s) with 5..8-bit weights run fp32 (measured: 0 int8 convs). Set "
                       "compression.weights.mode to symmetric")
        if low:
            out.append(f"asymmetric 4-bit (or lower) weights on {len(low)} conv(s) ({', '.join(low[:3])}"
                       f"{' ...' if len(low) > 3 else ''}): the exported IR does not match the torch model (parity "
                       "check fails); use symmetric weights for low bits")
    wide = [n for n in output_layers if n in plan.layers and any(b is not None and b > 8 for b in
                                                                   (plan.layers[n].weight_bits, plan.layers[n].act_bits))]
    if wide:
        out.append(f"{', '.join(wide)} feeds the model output at more than 8 bits: NNCF 3.4 quantizes its input and "
                   "weights (not the output, so export works), but the CPU plugin strips 65536-level FakeQuantize "
                   "and runs it fp32; ignored_scopes gives the same speed with a plainer IR")
    rng = comp.initializer.range
    # only a num_init_samples someone chose (not the default) makes a smaller calibration set a surprise
    if rng.num_init_samples != RangeInit().num_init_samples and rng.num_init_samples > cfg.data.calibration_samples:
        out.append(f"calibration set smaller than asked: initializer.range.num_init_samples is "
                   f"{rng.num_init_samples} but data.calibration_samples makes only {cfg.data.calibration_samples} "
                   f"crops; ranges come from {cfg.data.calibration_samples}. Raise data.calibration_samples")
    return out


def preflight_warnings(cfg: Config) -> list[str]:
    """settings_warnings for every variant of a config, on a randomly initialised copy of its architecture (the
    plan depends on the architecture only). Scope errors surface here too, before any weights load."""
    lines: list[str] = []
    models: dict[str, tuple] = {}  # one build and trace per architecture, however many variants
    for name in cfg.variant_names():
        v = cfg.variant(name)
        if v.compression is None:
            continue
        key = json.dumps([v.model.arch, v.model.args], sort_keys=True, default=str)
        if key not in models:
            model = build_generator(v.model.arch, **v.model.args).eval()
            models[key] = (model, trace_scopes(model).output_layers)
        model, outputs = models[key]
        plan = resolve_plan(model, v.compression, tuple(v.input_info.range))
        prefix = f"variant {name}: " if cfg.variants else ""
        lines += [prefix + w for w in settings_warnings(v, plan, outputs)]
    return list(dict.fromkeys(lines))
