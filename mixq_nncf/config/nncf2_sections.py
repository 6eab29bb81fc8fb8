"""The sections of an NNCF 2.x quantization entry, translated one by one into mixq's compression section:
weights / activations groups, scopes, scope_overrides, initializer.range and initializer.precision (bits per
NNCF quantizer id). Every problem is collected, so a file's errors are reported together."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Optional

from mixq_nncf.config.scopes import MODEL_INPUT, looks_like_nncf_scope, module_path
from mixq_nncf.config.values import parse_bits
from mixq_nncf.errors import ConfigError

GROUP_KEYS = ("mode", "bits", "signed", "per_channel", "logarithm_scale", "ignored_scopes", "target_scopes",
              "validate_scopes")
OVERRIDE_KEYS = ("mode", "bits", "signed", "per_channel", "initializer")
INITIALIZER_KEYS = ("range", "precision", "batchnorm_adaptation")
RANGE_KEYS = ("num_init_samples", "type", "params")
RANGE_PARAM_KEYS = ("min_percentile", "max_percentile")
NNCF_RANGE_TYPES = {"min_max": "min_max", "mixed_min_max": "min_max", "mean_min_max": "mean_min_max",
                    "mean_percentile": "mean_percentile", "percentile": None, "threesigma": None}
PRECISION_KEYS = ("type", "bits", "bitwidth_per_scope", "compression_ratio", "num_data_points", "iter_number",
                  "tolerance", "eval_subset_ratio", "warmup_iter_number", "traces_per_layer_path",
                  "dump_init_precision_data", "bitwidth_assignment_mode")
PRECISION_TYPES = ("manual", "hawq", "autoq")


@dataclass
class Translation:
    """An NNCF 2.x config understood: mixq's config (a dict, not yet validated) and what was left out."""
    config: dict
    ignored: list[str] = field(default_factory=list)  # "key (reason)"
    notes: list[str] = field(default_factory=list)  # how a key was understood, where it is approximate
    allocation: Optional[dict] = None  # hawq / autoq: {"type", "compression_ratio", "bits"}
    nncf_model: Optional[str] = None  # the sample-script model name the file was written for


def _choices(where: str, key: str, valid: tuple) -> str:
    return f"{where}: unknown key '{key}'; valid keys: {', '.join(valid)}"


class Collector:
    """Problems found so far; all are reported together at the end."""

    def __init__(self):
        self.errors: list[str] = []

    def unknown(self, obj: dict, valid: tuple, where: str) -> None:
        for k in obj:
            if k not in valid:
                self.errors.append(_choices(where, k, valid))

    def obj(self, value: Any, where: str) -> dict:
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.errors.append(f"{where}: expected an object, got {value!r}")
            return {}
        return value


def bits_value(value: Any, where: str, errors: Collector) -> Optional[int]:
    """NNCF's bits: an integer 2..16; an integral number or a name 'int2'..'int16' reads as in mixq's format."""
    try:
        bits = parse_bits(value, where)
    except ConfigError:
        bits = None
    if bits is None:
        errors.errors.append(f"{where}: {value!r} is not a bit width; use an integer 2..16 or a name 'int2'..'int16' "
                             "(a layer left out of the quantizer's scopes stays fp32)")
    return bits


def percentile(params: dict, key: str, default: float, where: str, errors: Collector) -> float:
    value = params.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        errors.errors.append(f"{where}.{key}: expected a number 0..100, got {value!r}")
        return default
    return float(value)


def scope_pattern(pattern: Any, where: str, errors: Collector) -> Optional[str]:
    """An NNCF scope -> a mixq pattern: '{re}' kept (searched NNCF-style), a scope string -> its module path."""
    if not isinstance(pattern, str):
        errors.errors.append(f"{where}: expected a scope string, got {pattern!r}")
        return None
    if pattern.startswith("{re}") or not looks_like_nncf_scope(pattern):
        return pattern
    path = module_path(pattern)
    if not path:
        errors.errors.append(f"{where}: '{pattern}' names no module (mixq's scopes are conv layers; use a scope "
                             "with the layer's bracketed module names, e.g. 'MSRResNet/NNCFConv2d[conv_first]')")
        return None
    return path


def scope_list(value: Any, where: str, errors: Collector) -> list[str]:
    items = [value] if isinstance(value, str) else value if isinstance(value, list) else None
    if items is None:
        errors.errors.append(f"{where}: expected a scope string or a list of them, got {value!r}")
        return []
    return [s for s in (scope_pattern(p, f"{where}[{i}]", errors) for i, p in enumerate(items)) if s is not None]


def translate_group(group: dict, side: str, errors: Collector, tr: Translation) -> dict:
    where = f"compression.{side}"
    errors.unknown(group, GROUP_KEYS + (("unified_scale_ops",) if side == "activations" else ()), where)
    out: dict[str, Any] = {}
    if "bits" in group:
        out["bits"] = bits_value(group["bits"], f"{where}.bits", errors)
    if "mode" in group:
        if group["mode"] not in ("symmetric", "asymmetric"):
            errors.errors.append(f"{where}.mode: {group['mode']!r} is not valid; choose one of symmetric, asymmetric")
        out["mode"] = group["mode"]
    for key in ("per_channel", "signed"):
        if key in group:
            if not isinstance(group[key], bool):
                errors.errors.append(f"{where}.{key}: expected true or false, got {group[key]!r}")
            out[key] = group[key]
    if group.get("logarithm_scale"):
        errors.errors.append(f"{where}.logarithm_scale: not supported; NNCF 3.4's post-training quantizers store the "
                             "linear scale (QAT trains it as it is). Remove the key")
    for key in ("ignored_scopes", "target_scopes"):
        if group.get(key):
            errors.errors.append(f"{where}.{key}: one-sided scopes are not supported (on NNCF 3.4 a conv's weights "
                                 f"and input are quantized together); use compression.{key}")
    if "unified_scale_ops" in group:
        tr.ignored.append("compression.activations.unified_scale_ops (NNCF 3.4 unifies scales itself from its "
                          "hardware config)")
    return out


def translate_range(rng: Any, errors: Collector, tr: Translation) -> dict:
    where = "compression.initializer.range"
    if isinstance(rng, list):
        if len(rng) == 1 and isinstance(rng[0], dict) and not {"target_scopes", "ignored_scopes",
                                                               "target_quantizer_group"} & set(rng[0]):
            rng = rng[0]
        else:
            errors.errors.append(f"{where}: per-scope range initializers are not supported (NNCF 3.4 has one "
                                 "activation range estimator per model); give one object")
            return {}
    rng = errors.obj(rng, where)
    errors.unknown(rng, RANGE_KEYS, where)
    out: dict[str, Any] = {}
    if "num_init_samples" in rng:
        n = rng["num_init_samples"]
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            errors.errors.append(f"{where}.num_init_samples: expected a positive integer, got {n!r}")
        else:
            out["num_init_samples"] = n
    kind = rng.get("type", "mixed_min_max")
    if kind not in NNCF_RANGE_TYPES:
        errors.errors.append(f"{where}.type: {kind!r} is not an NNCF range type; choose one of "
                             f"{', '.join(t for t, v in NNCF_RANGE_TYPES.items() if v)}")
    elif NNCF_RANGE_TYPES[kind] is None:
        errors.errors.append(f"{where}.type: '{kind}' has no NNCF 3.4 range estimator; supported: "
                             f"{', '.join(t for t, v in NNCF_RANGE_TYPES.items() if v)}")
    else:
        out["type"] = NNCF_RANGE_TYPES[kind]
        if kind == "mixed_min_max":
            tr.notes.append("initializer.range.type mixed_min_max (NNCF 2.x default) -> min_max: NNCF 3.4's MINMAX "
                            "(minimum of minima, maximum of maxima over the calibration samples)")
    params = errors.obj(rng.get("params"), f"{where}.params")
    errors.unknown(params, RANGE_PARAM_KEYS, f"{where}.params")
    if out.get("type") == "mean_percentile":
        out["min_percentile"] = percentile(params, "min_percentile", 0.1, f"{where}.params", errors)
        out["max_percentile"] = percentile(params, "max_percentile", 99.9, f"{where}.params", errors)
    elif params:
        tr.ignored.append(f"{where}.params (percentiles apply to mean_percentile only)")
    return out


def translate_precision(prec: Any, comp_out: dict, errors: Collector, tr: Translation) -> None:
    where = "compression.initializer.precision"
    prec = errors.obj(prec, where)
    errors.unknown(prec, PRECISION_KEYS, where)
    kind = prec.get("type", "manual")
    if kind not in PRECISION_TYPES:
        errors.errors.append(f"{where}.type: {kind!r} is not valid; choose one of {', '.join(PRECISION_TYPES)}")
        return
    if kind in ("hawq", "autoq"):
        ratio = prec.get("compression_ratio")
        if ratio is not None and (isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or ratio <= 0):
            errors.errors.append(f"{where}.compression_ratio: expected a positive number, got {ratio!r}")
            ratio = None
        tr.allocation = {"type": kind, "compression_ratio": ratio, "bits": prec.get("bits", [2, 4, 8])}
        used = {"type", "bits", "compression_ratio"}
        rest = [k for k in prec if k not in used]
        if rest:
            tr.ignored.append(f"{where}: {', '.join(rest)} (settings of NNCF's own {kind} search; mixq measures "
                              "every layer instead)")
        return
    if "compression_ratio" in prec or set(prec) & {"num_data_points", "iter_number", "tolerance"}:
        tr.ignored.append(f"{where}: search settings (used by hawq / autoq only, not by type manual)")
    if "bits" in prec:
        tr.ignored.append(f"{where}.bits (the candidate bit widths of a search; type manual sets each scope)")
    entries = prec.get("bitwidth_per_scope", [])
    if not isinstance(entries, list):
        errors.errors.append(f"{where}.bitwidth_per_scope: expected a list of [bits, scope] pairs")
        return
    overrides: dict[str, dict] = {}
    outputs: dict[str, int] = {}
    for i, entry in enumerate(entries):
        w = f"{where}.bitwidth_per_scope[{i}]"
        if not (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[1], str)):
            errors.errors.append(f"{w}: expected [bits, \"scope|WEIGHT\"], got {entry!r}")
            continue
        bits = bits_value(entry[0], w, errors)
        scope, _, kind_id = entry[1].partition("|")
        if bits is None:
            continue
        if kind_id == "WEIGHT" or re.fullmatch(r"INPUT\d*", kind_id):
            if kind_id != "WEIGHT" and "conv2d_" not in scope.rsplit("/", 1)[-1]:
                errors.errors.append(f"{w}: '{entry[1]}': input quantizers are supported on convolutions only "
                                     "(mixq's activation bits are per conv input); name the producing op's |OUTPUT")
                continue
            path = module_path(scope)
            if not path:
                errors.errors.append(f"{w}: '{entry[1]}' names no module")
                continue
            overrides.setdefault(path, {})["weights" if kind_id == "WEIGHT" else "activations"] = bits
        elif kind_id == "OUTPUT":
            outputs[MODEL_INPUT if scope.lstrip("/") == MODEL_INPUT.lstrip("/") else scope] = bits
        else:
            errors.errors.append(f"{w}: '{entry[1]}' is not an NNCF quantizer id; it ends with |WEIGHT, |OUTPUT or "
                                 "|INPUT<n>")
    if overrides:  # bitwidth_per_scope is applied after scope_overrides in NNCF 2.x: its bits win, listed first
        existing = comp_out.get("scope_overrides", {})
        merged = {path: {**existing.get(path, {}), **sides} for path, sides in overrides.items()}
        comp_out["scope_overrides"] = {**merged, **{k: v for k, v in existing.items() if k not in merged}}
    if outputs:
        comp_out["activation_outputs"] = outputs
        tr.notes.append("bitwidth_per_scope '<op>|OUTPUT' entries set the input bits of every conv that reads that "
                        "op's output (through pixel_shuffle / cat / interpolate), the image input's included")


def translate_scope_overrides(value: Any, errors: Collector, comp_out: dict, defaults: dict) -> None:
    where = "compression.scope_overrides"
    value = errors.obj(value, where)
    errors.unknown(value, ("weights", "activations"), where)
    out: dict[str, dict] = comp_out.setdefault("scope_overrides", {})
    for side in ("weights", "activations"):
        for pattern, spec in errors.obj(value.get(side), f"{where}.{side}").items():
            w = f"{where}.{side}.{pattern}"
            spec = errors.obj(spec, w)
            errors.unknown(spec, OVERRIDE_KEYS, w)
            for key in ("mode", "per_channel", "signed"):
                if key in spec and spec[key] != defaults[side].get(key):
                    errors.errors.append(f"{w}.{key}: a per-scope {key} is not supported (NNCF 3.4 sets it for the "
                                         f"whole model); set it in compression.{side}, only bits differ per scope")
            if "initializer" in spec:
                errors.errors.append(f"{w}.initializer: per-scope range initialization is not supported")
            if "bits" not in spec:
                continue
            target = scope_pattern(pattern, w, errors)
            bits = bits_value(spec["bits"], f"{w}.bits", errors)
            if target is not None and bits is not None:
                out.setdefault(target, {})[side] = bits
