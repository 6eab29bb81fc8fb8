"""NNCF 2.x quantization configs, read as they are and translated into mixq's own config.

NNCF 3 removed the JSON NNCFConfig; configs written for NNCF 2.x (its sample scripts' files) keep working here.
What the translation does, key by key (``mixq config convert FILE`` prints it for a given file):

- ``compression``: an object or a list; only ``"algorithm": "quantization"`` is supported, other algorithms are
  an error naming them. Unknown keys inside it are errors, all reported at once with the valid choices.
- ``weights`` / ``activations``: ``bits``, ``mode``, ``per_channel``, ``signed`` map one to one.
  ``logarithm_scale: true`` is an error: NNCF 3.4's post-training quantizers store the linear scale.
- Scopes (``ignored_scopes``, ``target_scopes``, ``scope_overrides``): an NNCF scope string names the module
  path in its brackets (``MSRResNet/Sequential[body]/ResidualBlockNoBN[3]/NNCFConv2d[conv1]/conv2d_0`` is
  ``body.3.conv1``), whatever the class names. ``{re}`` patterns keep NNCF's rule: re.search (match anywhere) over
  the module path and the layer's NNCF 2.x scope name (mixq's own format full-matches module paths).
- ``initializer.range``: ``num_init_samples`` sets the number of calibration crops (data.calibration_samples);
  ``min_max`` and ``mixed_min_max`` -> NNCF 3.4 MINMAX, ``mean_min_max`` -> MEAN_MINMAX, ``mean_percentile``
  -> mean of per-sample quantiles at ``params.min_percentile`` / ``max_percentile`` (NNCF 2.x defaults 0.1 / 99.9);
  ``percentile`` and ``threesigma`` have no NNCF 3.4 estimator and are errors.
- ``initializer.precision``: ``manual`` + ``bitwidth_per_scope`` gives exactly those bits: ``...|WEIGHT`` sets a
  layer's weight bits, ``<conv>|INPUT0`` its input bits, ``<op>|OUTPUT`` the input bits of every conv that reads
  that op's output (mixq's activation precision is per conv input). ``hawq`` / ``autoq`` stop with the
  equivalent ``mixq sweep`` + ``mixq allocate`` commands (see allocation_commands for the budget translation).
- ``batchnorm_adaptation``, the staged-quantization ``params`` and sample-script keys (``batch_size``,
  ``epochs``, ``optimizer``, ``pretrained``, ``target_device``, ``dataset``, a ``model`` string...) are listed once
  as ignored, with the reason.
"""
from __future__ import annotations

import copy
import re
import shlex
from dataclasses import dataclass, field
from typing import Any, Optional

from .config import Config, ConfigError, apply_overrides, parse_config, to_dict
from .scopes import MODEL_INPUT, looks_like_nncf_scope, module_path

# sections of mixq's own format that an NNCF file may also carry (a hybrid file) and --set may target
OWN_SECTIONS = ("name", "model", "data", "training", "export", "benchmark", "eval", "variants")
# top-level keys with a reason they are not used
TOP_IGNORED = {
    "target_device": "mixq targets the OpenVINO CPU plugin and measures what really runs there",
    "hw_config_type": "mixq targets the OpenVINO CPU plugin",
    "accuracy_aware_training": "use `mixq allocate` budgets (--min-fidelity-db, --max-drop-db) instead",
    "log_dir": "outputs go to --out",
    "disable_shape_matching": "not used by NNCF 3.4",
}
# keys of NNCF's sample-script configs that mark a file as NNCF 2.x (any other unknown key in a file that is NNCF
# for another reason is listed as ignored too; in a mixq file it stays an unknown-key error)
SAMPLE_SCRIPT_KEYS = ("pretrained", "num_classes", "batch_size", "batch_size_val", "batch_size_init", "epochs",
                      "multiprocessing_distributed", "distributed", "optimizer", "workers", "dataset", "dataset_dir",
                      "weights", "resuming_checkpoint_path", "no_strip_on_export", "export_to_ir_via_onnx", "seed",
                      "print_freq", "test_every_n_epochs", "save_freq", "cpu_only", "gpu_id", "dist_url",
                      "world_size", "rank", "mode", "checkpoint_save_dir", "metrics_dump", "execution_mode",
                      "label_smoothing", "train_sampler", "preprocessing", "dataset_type", "image_size")
SAMPLE_SCRIPT_REASON = "read by NNCF's sample scripts (training loop, dataset, device, export), not by quantization"
COMPRESSION_KEYS = ("algorithm", "initializer", "preset", "quantize_inputs", "quantize_outputs", "weights",
                    "activations", "scope_overrides", "ignored_scopes", "target_scopes", "validate_scopes",
                    "overflow_fix", "params", "export_to_onnx_standard_ops", "compression_lr_multiplier")
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
OTHER_ALGORITHMS = ("magnitude_sparsity", "rb_sparsity", "const_sparsity", "filter_pruning", "knowledge_distillation",
                    "binarization", "movement_sparsity", "elasticity", "progressive_shrinking")
NNCF_ONLY_COMPRESSION = ("quantize_inputs", "quantize_outputs", "params", "export_to_onnx_standard_ops",
                         "compression_lr_multiplier")
# keys only mixq's own compression section has (a full dump of a mixq config has them all)
MIXQ_ONLY_COMPRESSION = ("stages", "regex_search", "activation_outputs")


@dataclass
class Translation:
    """An NNCF 2.x config understood: mixq's config (a dict, not yet validated) and what was left out."""
    config: dict
    ignored: list[str] = field(default_factory=list)  # "key (reason)"
    notes: list[str] = field(default_factory=list)  # how a key was understood, where it is approximate
    allocation: Optional[dict] = None  # hawq / autoq: {"type", "compression_ratio", "bits"}
    nncf_model: Optional[str] = None  # the sample-script model name the file was written for


def is_nncf_config(data: Any) -> bool:
    """True for a file in NNCF 2.x form rather than mixq's own (keys only NNCF has)."""
    if not isinstance(data, dict):
        return False
    if isinstance(data.get("model"), str) or isinstance(data.get("compression"), list):
        return True
    if any(k in SAMPLE_SCRIPT_KEYS or k in TOP_IGNORED for k in data):
        return True
    comp = data.get("compression")
    if not isinstance(comp, dict) or any(k in comp for k in MIXQ_ONLY_COMPRESSION):
        return False
    if any(k in comp for k in NNCF_ONLY_COMPRESSION):
        return True
    init = comp.get("initializer")
    if isinstance(init, dict) and ("precision" in init or "batchnorm_adaptation" in init or
                                   isinstance(init.get("range"), list)):
        return True
    if isinstance(init, dict) and isinstance(init.get("range"), dict) and (
            "params" in init["range"] or init["range"].get("type") in ("mixed_min_max", "percentile", "threesigma")):
        return True
    overrides = comp.get("scope_overrides")
    if isinstance(overrides, dict) and set(overrides) and set(overrides) <= {"weights", "activations"} and all(
            isinstance(v, dict) and all(isinstance(x, dict) for x in v.values()) for v in overrides.values()):
        return True
    for side in ("weights", "activations"):
        group = comp.get(side)
        if isinstance(group, dict) and any(k in group for k in ("signed", "logarithm_scale", "ignored_scopes",
                                                                 "target_scopes", "unified_scale_ops")):
            return True
    return False


def _choices(where: str, key: str, valid: tuple) -> str:
    return f"{where}: unknown key '{key}'; valid keys: {', '.join(valid)}"


class _Collector:
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


def _bits(value: Any, where: str, errors: _Collector) -> Optional[int]:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 2 <= value <= 16:
        errors.errors.append(f"{where}: {value!r} is not a bit width; use an integer 2..16")
        return None
    return value


def _scope(pattern: Any, where: str, errors: _Collector) -> Optional[str]:
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


def _scopes(value: Any, where: str, errors: _Collector) -> list[str]:
    items = [value] if isinstance(value, str) else value if isinstance(value, list) else None
    if items is None:
        errors.errors.append(f"{where}: expected a scope string or a list of them, got {value!r}")
        return []
    return [s for s in (_scope(p, f"{where}[{i}]", errors) for i, p in enumerate(items)) if s is not None]


def _group(group: dict, side: str, errors: _Collector, tr: Translation) -> dict:
    where = f"compression.{side}"
    errors.unknown(group, GROUP_KEYS + (("unified_scale_ops",) if side == "activations" else ()), where)
    out: dict[str, Any] = {}
    if "bits" in group:
        out["bits"] = _bits(group["bits"], f"{where}.bits", errors)
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
        tr.ignored.append(f"compression.activations.unified_scale_ops (NNCF 3.4 unifies scales itself from its "
                          "hardware config)")
    return out


def _range(rng: Any, errors: _Collector, tr: Translation) -> dict:
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
        out["min_percentile"] = float(params.get("min_percentile", 0.1))
        out["max_percentile"] = float(params.get("max_percentile", 99.9))
    elif params:
        tr.ignored.append(f"{where}.params (percentiles apply to mean_percentile only)")
    return out


def _precision(prec: Any, comp_out: dict, errors: _Collector, tr: Translation) -> None:
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
        bits = _bits(entry[0], w, errors)
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


def _scope_overrides(value: Any, errors: _Collector, comp_out: dict, defaults: dict) -> None:
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
            target = _scope(pattern, w, errors)
            bits = _bits(spec["bits"], f"{w}.bits", errors)
            if target is not None and bits is not None:
                out.setdefault(target, {})[side] = bits


def translate(data: dict, name: str = "nncf") -> Translation:
    """An NNCF 2.x config dict -> mixq config dict; every error inside compression is collected and raised at once."""
    errors = _Collector()
    tr = Translation(config={"name": name})
    sample_keys: list[str] = []
    for key, value in data.items():
        if key in ("compression", "input_info", "$schema", "description"):
            continue
        if key == "model" and isinstance(value, str):
            tr.nncf_model = value
            sample_keys.append(key)
        elif key in OWN_SECTIONS:
            tr.config[key] = copy.deepcopy(value)
        elif key in TOP_IGNORED:
            tr.ignored.append(f"{key} ({TOP_IGNORED[key]})")
        else:
            sample_keys.append(key)
    if sample_keys:
        tr.ignored.insert(0, f"{', '.join(sample_keys)} ({SAMPLE_SCRIPT_REASON})")
    info = data.get("input_info")
    if isinstance(info, list):
        if len(info) != 1:
            errors.errors.append("input_info: the generators take one image input; give one entry")
        info = info[0] if info else {}
    if isinstance(info, dict):
        kept = {k: info[k] for k in ("sample_size", "range") if k in info}
        if kept:
            tr.config["input_info"] = kept
        extra = [k for k in info if k not in kept]
        if extra:
            tr.ignored.append(f"input_info: {', '.join(extra)} (the image input is float [0, 1])")
    comp = data.get("compression")
    entries = comp if isinstance(comp, list) else [comp] if comp is not None else []
    quant = []
    for i, entry in enumerate(entries):
        where = f"compression[{i}]" if isinstance(comp, list) else "compression"
        if not isinstance(entry, dict):
            errors.errors.append(f"{where}: expected an object with an 'algorithm'")
            continue
        algo = entry.get("algorithm")
        if algo == "quantization":
            quant.append(entry)
        else:
            known = " (an NNCF 2.x algorithm)" if algo in OTHER_ALGORITHMS else ""
            errors.errors.append(f"{where}.algorithm: '{algo}'{known} is not supported; mixq-nncf does quantization "
                                 "only: remove that entry or set \"algorithm\": \"quantization\"")
    if len(quant) > 1:
        errors.errors.append("compression: more than one quantization entry; give one")
    if quant:
        tr.config["compression"] = _compression(quant[0], errors, tr)
    elif comp is not None and not errors.errors:
        errors.errors.append("compression: no quantization entry")
    if errors.errors:
        lines = "\n  - ".join(errors.errors)
        raise ConfigError(f"{len(errors.errors)} problem(s) in this NNCF 2.x config:\n  - {lines}")
    return tr


def _compression(q: dict, errors: _Collector, tr: Translation) -> dict:
    errors.unknown(q, COMPRESSION_KEYS, "compression")
    out: dict[str, Any] = {"algorithm": "quantization"}
    if "preset" in q:
        if q["preset"] not in ("performance", "mixed"):
            errors.errors.append(f"compression.preset: {q['preset']!r} is not valid; choose one of performance, mixed")
        out["preset"] = q["preset"]
    defaults = {}
    for side in ("weights", "activations"):
        group = _group(errors.obj(q.get(side), f"compression.{side}"), side, errors, tr)
        defaults[side] = group
        if group:
            out[side] = group
    if "weights" in out:  # NNCF 2.x's unspecified weight mode is symmetric, like mixq's default
        out["weights"] = {"mode": "symmetric", **out["weights"]}
    for key in ("ignored_scopes", "target_scopes"):
        if key in q:
            out[key] = _scopes(q[key], f"compression.{key}", errors)
    if "validate_scopes" in q:
        out["validate_scopes"] = bool(q["validate_scopes"])
    if "overflow_fix" in q:
        if q["overflow_fix"] not in ("enable", "disable", "first_layer_only"):
            errors.errors.append(f"compression.overflow_fix: {q['overflow_fix']!r} is not valid; choose one of "
                                 "enable, disable, first_layer_only")
        out["overflow_fix"] = q["overflow_fix"]
    if q.get("quantize_inputs", True) is not True:
        errors.errors.append("compression.quantize_inputs: false is not supported (the image input quantizer is the "
                             "first conv's input quantizer on NNCF 3.4); leave the first conv fp32 with ignored_scopes")
    if q.get("quantize_outputs"):
        tr.ignored.append("compression.quantize_outputs (NNCF 3.4 places no quantizer on model outputs)")
    for key, reason in (("params", "the staged-quantization training schedule; QAT is set in training.*"),
                        ("export_to_onnx_standard_ops", "mixq exports an OpenVINO IR"),
                        ("compression_lr_multiplier", "QAT learning rates are set in training.*")):
        if key in q:
            tr.ignored.append(f"compression.{key} ({reason})")
    if "scope_overrides" in q:
        _scope_overrides(q["scope_overrides"], errors, out, defaults)
    init = errors.obj(q.get("initializer"), "compression.initializer")
    errors.unknown(init, INITIALIZER_KEYS, "compression.initializer")
    if "range" in init:
        rng = _range(init["range"], errors, tr)
        if rng:
            out["initializer"] = {"range": rng}
    else:
        out["initializer"] = {"range": {"type": "min_max"}}
        tr.notes.append("no initializer.range: NNCF 2.x's default mixed_min_max -> min_max (NNCF 3.4 MINMAX)")
    if "batchnorm_adaptation" in init:
        tr.ignored.append("compression.initializer.batchnorm_adaptation (the SR generators have no BatchNorm layers; "
                          "NNCF 3.4's fast bias correction runs instead)")
    if "precision" in init:
        _precision(init["precision"], out, errors, tr)
    if any(s.startswith("{re}") for s in out.get("ignored_scopes", []) + out.get("target_scopes", []) +
           list(out.get("scope_overrides", {}))):
        out["regex_search"] = True
    return out


# ----------------------------------------------------------------------------------------------
# loading with overrides, and the hawq / autoq budget

def _split_overrides(overrides: list[str]) -> tuple[list[str], list[str]]:
    """--set on an NNCF file: mixq-only sections apply to the translated config, the rest to the NNCF file."""
    before, after = [], []
    for item in overrides:
        head = item.split("=", 1)[0].strip().split(".")[0]
        (after if head in OWN_SECTIONS else before).append(item)
    return before, after


def _apply_nncf_overrides(data: dict, overrides: list[str]) -> dict:
    comp = data.get("compression")
    if isinstance(comp, list) and any(o.startswith("compression.") for o in overrides):
        idx = next((i for i, e in enumerate(comp) if isinstance(e, dict) and e.get("algorithm") == "quantization"), None)
        if idx is not None:
            overrides = [f"compression.{idx}.{o[len('compression.'):]}" if o.startswith("compression.") else o
                         for o in overrides]
            as_dict = {**data, "compression": {str(i): e for i, e in enumerate(comp)}}
            out = apply_overrides(as_dict, overrides)
            out["compression"] = [out["compression"][str(i)] for i in range(len(comp))]
            return out
    return apply_overrides(data, overrides)


def translate_with_overrides(data: dict, overrides: list[str], name: str = "nncf") -> Translation:
    before, after = _split_overrides(overrides)
    tr = translate(_apply_nncf_overrides(data, before), name)
    tr.config = apply_overrides(tr.config, after)
    n = (tr.config.get("compression") or {}).get("initializer", {}).get("range", {}).get("num_init_samples")
    if n is not None:
        data_section = tr.config.setdefault("data", {})
        if not isinstance(data_section, dict):
            raise ConfigError("data: expected an object")
        data_section.setdefault("calibration_samples", n)
    return tr


def model_named(config: dict) -> bool:
    return isinstance(config.get("model"), dict) and "arch" in config["model"]


def _weight_sizes(config: dict) -> Optional[tuple[float, float]]:
    """(fp32 MB, all-int8 MB) of the model's parameters: conv weights at 4 / 1 bytes, everything else fp32.
    The IR's .bin is about this size (mixq allocate measures the real one)."""
    try:
        from .models import build_generator

        model = build_generator(config["model"]["arch"], **(config["model"].get("args") or {}))
    except Exception:  # noqa: BLE001 - an unknown arch is reported by the config check itself
        return None
    import torch

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


def load_nncf_config(data: dict, overrides: list[str], *, name: str = "nncf", source: str = "CONFIG",
                     notes: list[str] | None = None) -> Config:
    """An NNCF 2.x config, translated and validated; what was ignored or approximated is appended to notes."""
    tr = translate_with_overrides(data, overrides, name)
    if not model_named(tr.config):
        raise ConfigError(f"{source} is an NNCF 2.x config" + (f" for the sample-script model '{tr.nncf_model}'"
                          if tr.nncf_model else "") + ": name the super-resolution model on the command line, e.g. "
                          "--set model.arch=msrresnet_x4 --set model.weights=PATH (`mixq models` lists the presets; "
                          "model.weights=embedded for realesrgan_x4plus)")
    if tr.allocation:
        lines = allocation_commands(tr, source, overrides)
        raise ConfigError(f"{source}: initializer.precision.type '{tr.allocation['type']}' is a precision search, "
                          "which NNCF 3 no longer has. " + lines[0] + " Run:\n  " + "\n  ".join(lines[1:]))
    cfg = parse_config(tr.config)
    if notes is not None:
        notes.extend(summary_lines(tr))
    return cfg


def summary_lines(tr: Translation) -> list[str]:
    lines = []
    if tr.ignored:
        lines.append("NNCF 2.x config: ignored " + "; ".join(tr.ignored))
    lines += [f"NNCF 2.x config: {n}" for n in tr.notes]
    return lines


def conversion(data: dict, overrides: list[str], *, name: str, source: str) -> dict:
    """What `mixq config convert` shows: the mixq config, ignored keys, notes, the commands for hawq / autoq and,
    when the model is named, the bits every conv layer gets (so scope errors show here too)."""
    tr = translate_with_overrides(data, overrides, name)
    report: dict[str, Any] = {"config": tr.config, "ignored": tr.ignored, "notes": list(tr.notes), "commands": [],
                              "layers": {}}
    if not model_named(tr.config):
        report["notes"].append("no model named: add --set model.arch=ARCH --set model.weights=PATH to use this config")
        parse_config({**tr.config, "model": {"arch": "msrresnet_x4", "weights": None}})  # validates the rest
    else:
        cfg = parse_config(tr.config)
        if cfg.compression is not None:
            from .models import build_generator
            from .plan import resolve_plan

            model = build_generator(cfg.model.arch, **cfg.model.args).eval()
            plan = resolve_plan(model, cfg.compression, tuple(cfg.input_info.range))
            report["layers"] = {n: [p.weight_bits, p.act_bits] for n, p in plan.layers.items()}
    if tr.allocation:
        lines = allocation_commands(tr, source, overrides)
        report["notes"].append(lines[0])
        report["commands"] = lines[1:]
    return report
