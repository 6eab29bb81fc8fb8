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
from typing import Any

from mixq_nncf.config.nncf2_budget import allocation_commands, model_named
from mixq_nncf.config.nncf2_sections import (INITIALIZER_KEYS, Collector, Translation, scope_list, translate_group,
                                             translate_precision, translate_range, translate_scope_overrides)
from mixq_nncf.config.overrides import apply_overrides
from mixq_nncf.config.plan import resolve_plan
from mixq_nncf.config.schema import Config, parse_config
from mixq_nncf.errors import ConfigError
from mixq_nncf.models import build_generator

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
OTHER_ALGORITHMS = ("magnitude_sparsity", "rb_sparsity", "const_sparsity", "filter_pruning", "knowledge_distillation",
                    "binarization", "movement_sparsity", "elasticity", "progressive_shrinking")
NNCF_ONLY_COMPRESSION = ("quantize_inputs", "quantize_outputs", "params", "export_to_onnx_standard_ops",
                         "compression_lr_multiplier")
# keys only mixq's own compression section has (a full dump of a mixq config has them all)
MIXQ_ONLY_COMPRESSION = ("stages", "regex_search", "activation_outputs")


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


def translate(data: dict, name: str = "nncf") -> Translation:
    """An NNCF 2.x config dict -> mixq config dict; every error inside compression is collected and raised at once."""
    errors = Collector()
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
    if len(errors.errors) == 1:
        raise ConfigError(f"NNCF 2.x config: {errors.errors[0]}")
    if errors.errors:
        lines = "\n  - ".join(errors.errors)
        raise ConfigError(f"{len(errors.errors)} problem(s) in this NNCF 2.x config:\n  - {lines}")
    return tr


def _compression(q: dict, errors: Collector, tr: Translation) -> dict:
    errors.unknown(q, COMPRESSION_KEYS, "compression")
    out: dict[str, Any] = {"algorithm": "quantization"}
    if "preset" in q:
        if q["preset"] not in ("performance", "mixed"):
            errors.errors.append(f"compression.preset: {q['preset']!r} is not valid; choose one of performance, mixed")
        out["preset"] = q["preset"]
    else:  # NNCF 2.x quantizes activations symmetrically unless told; mixq's own default is asymmetric
        out["preset"] = "performance"
    defaults = {}
    for side in ("weights", "activations"):
        group = translate_group(errors.obj(q.get(side), f"compression.{side}"), side, errors, tr)
        defaults[side] = group
        if group:
            out[side] = group
    if "weights" in out:  # NNCF 2.x's unspecified weight mode is symmetric, like mixq's default
        out["weights"] = {"mode": "symmetric", **out["weights"]}
    for key in ("ignored_scopes", "target_scopes"):
        if key in q:
            out[key] = scope_list(q[key], f"compression.{key}", errors)
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
        translate_scope_overrides(q["scope_overrides"], errors, out, defaults)
    init = errors.obj(q.get("initializer"), "compression.initializer")
    errors.unknown(init, INITIALIZER_KEYS, "compression.initializer")
    if "range" in init:
        rng = translate_range(init["range"], errors, tr)
        if rng:
            out["initializer"] = {"range": rng}
    else:
        out["initializer"] = {"range": {"type": "min_max"}}
        tr.notes.append("no initializer.range: NNCF 2.x's default mixed_min_max -> min_max (NNCF 3.4 MINMAX)")
    if "batchnorm_adaptation" in init:
        tr.ignored.append("compression.initializer.batchnorm_adaptation (the SR generators have no BatchNorm layers; "
                          "NNCF 3.4's fast bias correction is there as compression.initializer.fast_bias_correction)")
    if "precision" in init:
        translate_precision(init["precision"], out, errors, tr)
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
    try:
        tr = translate_with_overrides(data, overrides, name)
        # with no model named, a stand-in architecture validates the rest
        cfg = parse_config(tr.config if model_named(tr.config) else
                           {**tr.config, "model": {"arch": "msrresnet_x4", "weights": None}})
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    report: dict[str, Any] = {"config": tr.config, "ignored": tr.ignored, "notes": list(tr.notes), "commands": [],
                              "layers": {}}
    if not model_named(tr.config):
        report["notes"].append("no model named: add --set model.arch=ARCH --set model.weights=PATH to use this config")
    else:
        if cfg.compression is not None:
            model = build_generator(cfg.model.arch, **cfg.model.args).eval()
            plan = resolve_plan(model, cfg.compression, tuple(cfg.input_info.range))
            report["layers"] = {n: [p.weight_bits, p.act_bits] for n, p in plan.layers.items()}
    if tr.allocation:
        lines = allocation_commands(tr, source, overrides)
        report["notes"].append(lines[0])
        report["commands"] = lines[1:]
    return report
