"""NNCF 2.x quantization configs read as they are: NNCF's own example files, each schema element, the warnings
and `mixq config convert`."""
import json
import re

import pytest

from tiny_models import TINY, tiny
from mixq_nncf.config.preflight import preflight_warnings
from mixq_nncf.cli import main
from mixq_nncf.errors import ConfigError
from mixq_nncf.config.files import load_config, strip_json_comments
from mixq_nncf.errors import ScopeError
from mixq_nncf.config.nncf2 import conversion, is_nncf_config
from mixq_nncf.config.plan import LayerPrecision, resolve_plan
from mixq_nncf.quant.table import layer_bits, quantizer_table
from mixq_nncf.quant.ptq import quantize_from_config

DATA = "tests/data/nncf_configs"
MODEL = ["model.arch=msrresnet_x4", "model.args=" + json.dumps(TINY), "model.weights=null"]
FAST = ["data.calibration_patch=16", "compression.initializer.range.num_init_samples=4"]


def _write(tmp_path, text, name="nncf.json"):
    path = tmp_path / name
    path.write_text(text if isinstance(text, str) else json.dumps(text))
    return path


def _nncf(compression, **top):
    return {"model": "resnet50", "batch_size": 8, "epochs": 3, "optimizer": {"type": "Adam"},
            "input_info": {"sample_size": [1, 3, 32, 32]}, "compression": compression, **top}


def _plan(cfg):
    return resolve_plan(tiny(cfg.model.arch), cfg.compression)


# ---------------------------------------------------------------------------------------------- comments

def test_comments_stripped_outside_strings_only(tmp_path):
    text = '{\n  // a comment\n  "name": "a//b /* not a comment */", /* block\n spanning */ "x": 1\n}'
    assert json.loads(strip_json_comments(text)) == {"name": "a//b /* not a comment */", "x": 1}
    assert strip_json_comments(text).count("\n") == text.count("\n")  # error line numbers stay right
    with pytest.raises(ConfigError, match="unterminated"):
        load_config(_write(tmp_path, '{"a": 1 /* open'))
    # our own format takes comments too, and a JSON error still names the line
    own = _write(tmp_path, '{\n // tiny model\n "model": {"arch": "msrresnet_x4", "weights": null} /* end */\n}', "own.json")
    assert load_config(own).model.weights is None
    with pytest.raises(ConfigError, match="line 3"):
        load_config(_write(tmp_path, '{\n // c\n "a": ,\n}', "bad.json"))


# ---------------------------------------------------------------------------------------------- NNCF's own files

@pytest.mark.parametrize("name, samples", [("resnet50_imagenet_int8", 850),
                                           ("mobilenet_v2_imagenet_int8_per_tensor", 7000),
                                           ("mobilenet_v3_small_imagenet_int8", 4000)])
def test_nncf_example_configs_load_unchanged(name, samples):
    notes = []
    cfg = load_config(f"{DATA}/{name}.json", MODEL, notes=notes)
    assert cfg.model.arch == "msrresnet_x4" and cfg.compression is not None
    # num_init_samples is honoured: that many calibration crops, not a silent 32
    assert cfg.compression.initializer.range.num_init_samples == samples
    assert cfg.data.calibration_samples == samples
    ignored = [n for n in notes if "batch_size" in n]
    assert len(ignored) == 1 and "epochs" in ignored[0] and "pretrained" in ignored[0]  # one line, not fatal
    if "per_tensor" in name:
        assert cfg.compression.weights.per_channel is False and cfg.compression.activations.per_channel is False
        assert any("batchnorm_adaptation" in n for n in notes)
    if "v3" in name:
        assert cfg.compression.preset == "mixed"
        rng = cfg.compression.initializer.range
        assert (rng.type, rng.min_percentile, rng.max_percentile) == ("mean_percentile", 0.1, 99.9)


def test_nncf_config_without_model_names_the_fix():
    with pytest.raises(ConfigError, match=r"resnet50.*--set model.arch="):
        load_config(f"{DATA}/resnet50_imagenet_int8.json")


@pytest.mark.parametrize("name", ["mobilenet_v2_imagenet_int8_per_tensor", "mobilenet_v3_small_imagenet_int8"])
def test_nncf_example_configs_quantize(name):
    cfg = load_config(f"{DATA}/{name}.json", MODEL + FAST)
    assert cfg.data.calibration_samples == 4
    res = quantize_from_config(cfg)
    rows = quantizer_table(res.model, res.plan)
    assert {r.bits for r in rows} == {8}
    weights = [r for r in rows if r.kind == "weight"]
    acts = [r for r in rows if r.kind == "activation"]
    if "per_tensor" in name:
        assert not any(r.per_channel for r in weights)
    else:  # preset mixed: asymmetric activations, per-channel symmetric weights
        assert all(r.per_channel and r.mode == "symmetric" for r in weights)
        assert any(r.mode == "asymmetric" for r in acts)


def test_nncf_manual_example_for_resnet50_reports_the_unmatched_scope():
    # NNCF's own manual mixed config (with // comments) parses; its ResNet-50 scopes do not exist in an SR model
    cfg = load_config(f"{DATA}/resnet50_imagenet_mixed_int_manual.json", MODEL)
    assert cfg.compression.weights.mode == "asymmetric"
    assert cfg.compression.scope_overrides["layer1.0.conv1"].weights == 8
    with pytest.raises(ScopeError, match="conv1"):
        _plan(cfg)


# ---------------------------------------------------------------------------------------------- manual precision

MANUAL = """{
    "model": "msrresnet",  // the sample script's name; the SR preset comes from --set
    "batch_size": 16,
    "compression": {
        "algorithm": "quantization",
        "activations": {"signed": true},
        "initializer": {
            "range": {"num_init_samples": 4, "type": "min_max"},
            "precision": {
                "type": "manual",
                "bitwidth_per_scope": [
                    /* weights */
                    [16, "MSRResNet/NNCFConv2d[conv_first]/conv2d_0|WEIGHT"],
                    [4, "MSRResNet/Sequential[body]/ResidualBlockNoBN[0]/NNCFConv2d[conv1]/conv2d_0|WEIGHT"],
                    [6, "MSRResNet/Sequential[body]/ResidualBlockNoBN[0]/NNCFConv2d[conv2]/conv2d_0|WEIGHT"],
                    // activations: the image input, an op output (class names need not match), a conv input
                    [16, "/nncf_model_input_0|OUTPUT"],
                    [6, "MSRResNet/Sequential[body]/ResidualBlockNoBN[0]/ReLU[relu]/relu__0|OUTPUT"],
                    [4, "SRGenerator/LeakyReLU[lrelu]/leaky_relu_1|OUTPUT"],
                    [5, "MSRResNet/NNCFConv2d[conv_hr]/conv2d_0|INPUT0"]
                ]
            }
        }
    }
}"""
MANUAL_BITS = {"conv_first": (16, 16), "body.0.conv1": (4, 8), "body.0.conv2": (6, 6), "upconv1": (8, 8),
               "upconv2": (8, 4), "conv_hr": (8, 5), "conv_last": (8, 8)}


def test_manual_bitwidth_per_scope_gives_exactly_those_bits(tmp_path):
    cfg = load_config(_write(tmp_path, MANUAL), MODEL + ["data.calibration_patch=16"])
    assert cfg.data.calibration_samples == 4
    res = quantize_from_config(cfg)
    assert {n: (p.weight_bits, p.act_bits) for n, p in res.plan.layers.items()} == MANUAL_BITS
    rows = quantizer_table(res.model, res.plan)
    got = layer_bits(rows)
    assert {n: (p.weight_bits, p.act_bits) for n, p in got.items()} == MANUAL_BITS
    # activations.signed: true forces signed ranges even after a relu (unsigned by statistics otherwise)
    relu = [r for r in rows if r.kind == "activation" and "body.0.conv2" in r.layers]
    assert relu and all(r.signed for r in relu)


def test_bad_quantizer_ids_are_errors(tmp_path):
    comp = {"algorithm": "quantization", "initializer": {"precision": {"bitwidth_per_scope": [
        [8, "MSRResNet/NNCFConv2d[conv_first]/conv2d_0"], [3.5, "MSRResNet/NNCFConv2d[conv_hr]/conv2d_0|WEIGHT"],
        [8, "MSRResNet/__add___0|INPUT1"]]}}}
    with pytest.raises(ConfigError) as exc:
        load_config(_write(tmp_path, _nncf(comp)), MODEL)
    msg = str(exc.value)
    assert "3 problem(s)" in msg and "|WEIGHT, |OUTPUT or |INPUT" in msg and "3.5" in msg and "convolutions only" in msg
    comp = {"algorithm": "quantization", "initializer": {"precision": {"bitwidth_per_scope": [
        [8, "MSRResNet/Nope[nothing]/conv2d_0|OUTPUT"]]}}}
    with pytest.raises(ScopeError, match="no conv layer reads the output"):
        _plan(load_config(_write(tmp_path, _nncf(comp)), MODEL))


# ---------------------------------------------------------------------------------------------- scopes

def test_scopes_nncf_strings_regex_search_target_and_validate(tmp_path):
    comp = {"algorithm": "quantization",
            "ignored_scopes": ["MSRResNet/NNCFConv2d[conv_last]/conv2d_0"],
            "target_scopes": ["{re}body", "{re}NNCFConv2d\\[upconv", "MSRResNet/NNCFConv2d[conv_last]"],
            "scope_overrides": {"weights": {"{re}upconv": {"bits": 4}},
                                "activations": {"MSRResNet/Sequential[body]/ResidualBlockNoBN[0]": {"bits": 6}}}}
    cfg = load_config(_write(tmp_path, _nncf(comp)), MODEL)
    plan = {n: (p.weight_bits, p.act_bits) for n, p in _plan(cfg).layers.items()}
    assert plan == {"conv_first": (None, None), "body.0.conv1": (8, 6), "body.0.conv2": (8, 6),
                    "upconv1": (4, 8), "upconv2": (4, 8), "conv_hr": (None, None), "conv_last": (None, None)}
    # the same '{re}' in mixq's own format full-matches module names, so 'body' alone matches nothing
    own = {"model": {"arch": "msrresnet_x4", "args": TINY, "weights": None},
           "compression": {"ignored_scopes": ["{re}body"]}}
    with pytest.raises(ScopeError, match="matches no layer"):
        _plan(load_config(_write(tmp_path, own, "own.json")))
    # validate_scopes: false lets a pattern match nothing, as in NNCF
    comp = {"algorithm": "quantization", "ignored_scopes": ["{re}nothing_here"]}
    with pytest.raises(ScopeError):
        _plan(load_config(_write(tmp_path, _nncf(comp)), MODEL))
    plan = _plan(load_config(_write(tmp_path, _nncf({**comp, "validate_scopes": False})), MODEL))
    assert all(p == LayerPrecision(8, 8) for p in plan.layers.values())


def test_per_scope_mode_and_one_sided_scopes_are_errors(tmp_path):
    comp = {"algorithm": "quantization", "weights": {"ignored_scopes": ["{re}body"]},
            "scope_overrides": {"activations": {"{re}conv_hr": {"mode": "asymmetric", "bits": 8}}}}
    with pytest.raises(ConfigError) as exc:
        load_config(_write(tmp_path, _nncf(comp)), MODEL)
    assert "one-sided" in str(exc.value) and "per-scope mode" in str(exc.value)


# ---------------------------------------------------------------------------------------------- schema

def test_all_compression_errors_reported_at_once_with_choices(tmp_path):
    data = _nncf([{"algorithm": "magnitude_sparsity"},
                  {"algorithm": "quantization", "bogus": 1, "weights": {"bitz": 4, "logarithm_scale": True},
                   "initializer": {"range": {"type": "threesigma"}, "precision": {"type": "greedy"}}},
                  {"algorithm": "filter_pruning"}])
    with pytest.raises(ConfigError) as exc:
        load_config(_write(tmp_path, data), MODEL)
    msg = str(exc.value)
    for needle in ("magnitude_sparsity", "filter_pruning", "'bogus'", "'bitz'", "logarithm_scale", "threesigma",
                   "'greedy'"):
        assert needle in msg, needle
    assert "valid keys: algorithm, initializer" in msg  # each with the valid choices
    assert "supported: min_max, mixed_min_max, mean_min_max, mean_percentile" in msg
    assert "nncf.json: 7 problem(s)" in msg


def test_compression_list_and_overrides_reach_the_quantization_entry(tmp_path):
    data = _nncf([{"algorithm": "quantization", "initializer": {"range": {"num_init_samples": 9}}}],
                 dataset="imagenet", target_device="CPU")
    notes = []
    cfg = load_config(_write(tmp_path, data), MODEL + ["compression.initializer.range.num_init_samples=3"],
                      notes=notes)
    assert cfg.compression.initializer.range.num_init_samples == 3 and cfg.data.calibration_samples == 3
    assert cfg.input_info.sample_size == [1, 3, 32, 32]
    assert any("dataset" in n for n in notes) and any("target_device" in n for n in notes)


@pytest.mark.parametrize("kind, expect", [("min_max", "min_max"), ("mixed_min_max", "min_max"),
                                          ("mean_min_max", "mean_min_max"), ("mean_percentile", "mean_percentile")])
def test_range_types_map_onto_nncf_34(tmp_path, kind, expect):
    rng = {"type": kind, "params": {"min_percentile": 1.0, "max_percentile": 99.0}}
    cfg = load_config(_write(tmp_path, _nncf({"algorithm": "quantization", "initializer": {"range": rng}})), MODEL)
    assert cfg.compression.initializer.range.type == expect
    if kind == "mean_percentile":
        assert (cfg.compression.initializer.range.min_percentile, cfg.compression.initializer.range.max_percentile) \
            == (1.0, 99.0)


def test_quantize_inputs_false_is_an_error_and_outputs_ignored(tmp_path):
    with pytest.raises(ConfigError, match="quantize_inputs"):
        load_config(_write(tmp_path, _nncf({"algorithm": "quantization", "quantize_inputs": False})), MODEL)
    notes = []
    load_config(_write(tmp_path, _nncf({"algorithm": "quantization", "quantize_outputs": True})), MODEL, notes=notes)
    assert any("quantize_outputs" in n for n in notes)


def _tiny_sizes():
    model = tiny()
    import torch

    weights = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    total = sum(p.numel() for p in model.parameters())
    return total * 4 / 1e6, (weights + (total - weights) * 4) / 1e6


@pytest.mark.parametrize("name", ["resnet50_imagenet_mixed_int_hawq", "resnet50_imagenet_mixed_int_autoq_staged"])
def test_nncf_example_searches_below_int8_have_no_sound_budget(name):
    # HAWQ 1.4 (less bit complexity than int8) and AutoQ 0.15 (smaller than int8's 0.25) ask for less than
    # all-int8, which the CPU plugin cannot run faster: the message says so and gives the all-int8 commands
    with pytest.raises(ConfigError) as exc:
        load_config(f"{DATA}/{name}.json", MODEL)
    msg = str(exc.value)
    assert "no sound mixq budget" in msg and "mixq quantize base.json" in msg and "mixq config convert" in msg
    assert "mixq allocate" not in msg


@pytest.mark.parametrize("kind, ratio", [("hawq", 0.8), ("autoq", 0.5)])
def test_hawq_autoq_budget_translates_to_allocate(tmp_path, kind, ratio):
    comp = {"algorithm": "quantization",
            "initializer": {"precision": {"type": kind, "bits": [4, 8], "compression_ratio": ratio}}}
    with pytest.raises(ConfigError) as exc:
        load_config(_write(tmp_path, _nncf(comp)), MODEL)
    msg = str(exc.value)
    assert "mixq sweep base.json --out sweep" in msg and "mixq config convert" in msg
    mb = float(re.search(r"--max-size-mb ([0-9.e-]+)", msg).group(1))
    fp32_mb, int8_mb = _tiny_sizes()
    assert mb == pytest.approx(ratio * fp32_mb if kind == "autoq" else int8_mb / ratio, rel=1e-3)
    assert ("approximation" in msg) == (kind == "hawq")


def test_is_nncf_config_keeps_our_own_format():
    import glob

    from mixq_nncf.config.files import read_json

    for path in glob.glob("configs/**/*.json", recursive=True):
        assert not is_nncf_config(read_json(path)), path
    assert is_nncf_config({"compression": {"algorithm": "quantization", "quantize_inputs": True}})
    assert is_nncf_config({"compression": {"scope_overrides": {"weights": {"{re}.*": {"bits": 4}}}}})


# ---------------------------------------------------------------------------------------------- warnings

def _own(tmp_path, compression, data=None):
    cfg = {"model": {"arch": "msrresnet_x4", "args": TINY, "weights": None}, "compression": compression}
    if data:
        cfg["data"] = data
    return load_config(_write(tmp_path, cfg, "own.json"))


def test_warnings_before_work_starts(tmp_path):
    asym8 = preflight_warnings(_own(tmp_path, {"weights": {"mode": "asymmetric"}}))
    assert len(asym8) == 1 and "run fp32" in asym8[0]
    asym4 = preflight_warnings(_own(tmp_path, {"weights": {"mode": "asymmetric"},
                                               "stages": {"body": {"weights": "int4"}}}))
    assert any("4-bit" in w and "body.0.conv1" in w for w in asym4)
    wide = preflight_warnings(_own(tmp_path, {"scope_overrides": {"conv_last": {"bits": 16}}}))
    assert len(wide) == 1 and wide[0].startswith("conv_last feeds the model output")
    assert not preflight_warnings(_own(tmp_path, {"scope_overrides": {"conv_first": {"bits": 16}}}))
    small = preflight_warnings(_own(tmp_path, {"initializer": {"range": {"num_init_samples": 64}}},
                                    {"calibration_samples": 8}))
    assert len(small) == 1 and "smaller than asked" in small[0]
    # given alone, num_init_samples sets the number of calibration crops (no warning)
    cfg = _own(tmp_path, {"initializer": {"range": {"num_init_samples": 64}}})
    assert cfg.data.calibration_samples == 64 and not preflight_warnings(cfg)
    assert not preflight_warnings(_own(tmp_path, {}))


def test_cli_prints_ignored_keys_and_warnings_once(tmp_path, capsys):
    data = _nncf({"algorithm": "quantization", "weights": {"mode": "asymmetric"},
                  "initializer": {"range": {"num_init_samples": 2}}})
    path = _write(tmp_path, data)
    args = [a for kv in MODEL + ["data.calibration_patch=16"] for a in ("--set", kv)]
    assert main(["quantize", str(path), "--out", str(tmp_path / "q"), *args]) == 0
    err = capsys.readouterr().err
    assert err.count("warning: NNCF 2.x config: ignored model, batch_size, epochs, optimizer") == 1
    assert err.count("warning: asymmetric weights") == 1


# ---------------------------------------------------------------------------------------------- convert

def test_config_convert_prints_the_mixq_config_and_what_was_ignored(tmp_path, capsys):
    args = [a for kv in MODEL for a in ("--set", kv)]
    out = tmp_path / "converted.json"
    assert main(["config", "convert", f"{DATA}/mobilenet_v2_imagenet_int8_per_tensor.json", *args,
                 "--out", str(out)]) == 0
    text = capsys.readouterr().out
    printed = json.loads(text[:text.index("\n}\n") + 2])
    assert printed == json.loads(out.read_text())
    assert printed["compression"]["weights"]["per_channel"] is False
    assert printed["data"]["calibration_samples"] == 7000
    assert "Ignored keys:" in text and "batchnorm_adaptation" in text
    assert "w:int8 a:int8: conv_first" in text
    # the written file is an ordinary mixq config
    assert load_config(out).compression.weights.per_channel is False
    assert main(["config", "convert", str(_write(tmp_path, MANUAL)), *args,
                 "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert {n: tuple(b) for n, b in report["layers"].items()} == MANUAL_BITS
    assert report["ignored"] and "model, batch_size" in report["ignored"][0]


def test_config_convert_hawq_prints_commands(capsys):
    args = [a for kv in MODEL for a in ("--set", kv)]
    assert main(["config", "convert", f"{DATA}/resnet50_imagenet_mixed_int_hawq.json", *args]) == 0
    text = capsys.readouterr().out
    assert "Equivalent commands:" in text and "no sound mixq budget" in text
    report = conversion(json.loads(open(f"{DATA}/resnet50_imagenet_mixed_int_hawq.json").read()), MODEL,
                        name="hawq", source="hawq.json")
    assert report["commands"][0].startswith("mixq config convert hawq.json --set model.arch=msrresnet_x4")


def test_unknown_top_level_key_in_our_format_stays_an_error(tmp_path):
    with pytest.raises(ConfigError, match="unknown config key 'trainin'"):
        load_config(_write(tmp_path, {"trainin": {"iterations": 1}}, "own.json"))


def test_folder_made_before_new_fields_still_resumes(tmp_path):
    from mixq_nncf.config.files import dump_config
    from mixq_nncf.config.schema import to_dict

    cfg = _own(tmp_path, {})
    old = to_dict(cfg)
    for key in ("target_scopes", "validate_scopes", "regex_search", "activation_outputs"):
        old["compression"].pop(key)
    (tmp_path / "config.json").write_text(json.dumps(old))
    dump_config(cfg, tmp_path / "config.json", check_unchanged=True)  # no "different config" error


def test_bitwidth_per_scope_wins_over_scope_overrides(tmp_path):
    comp = {"algorithm": "quantization",
            "scope_overrides": {"weights": {"MSRResNet/NNCFConv2d[conv_hr]": {"bits": 6}},
                                "activations": {"MSRResNet/NNCFConv2d[conv_hr]": {"bits": 6}}},
            "initializer": {"precision": {"bitwidth_per_scope": [
                [4, "MSRResNet/NNCFConv2d[conv_hr]/conv2d_0|WEIGHT"]]}}}
    plan = _plan(load_config(_write(tmp_path, _nncf(comp)), MODEL))
    assert plan.layers["conv_hr"] == LayerPrecision(4, 6)


def test_default_num_init_samples_does_not_warn_about_a_small_calibration_set(tmp_path):
    assert not preflight_warnings(_own(tmp_path, {}, {"calibration_samples": 2}))


def test_a_full_dump_of_a_mixq_config_is_not_taken_for_nncf(tmp_path):
    from mixq_nncf.config.schema import to_dict

    cfg = _own(tmp_path, {"target_scopes": ["{re}body.*"], "validate_scopes": False})
    path = _write(tmp_path, to_dict(cfg), "dump.json")
    assert load_config(path) == cfg
