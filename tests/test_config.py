import json

import pytest

from mixq_nncf.cli import main
from mixq_nncf.config.files import load_config
from mixq_nncf.config.overrides import apply_overrides
from mixq_nncf.config.schema import parse_config
from mixq_nncf.errors import ConfigError


def test_unknown_key_names_key_and_choices():
    with pytest.raises(ConfigError, match=r"unknown config key 'compression.scope_overide'.*scope_overrides"):
        parse_config({"compression": {"scope_overide": {}}})


def test_typo_stage_lists_stages():
    with pytest.raises(ConfigError, match=r"unknown stage 'reconstuction'.*feature_extraction, body, upsampling"):
        parse_config({"compression": {"stages": {"reconstuction": {"bits": 16}}}})


def test_wrong_type_and_bad_precision():
    with pytest.raises(ConfigError, match=r"training.iterations: expected an integer"):
        parse_config({"training": {"iterations": "many"}})
    with pytest.raises(ConfigError, match=r"compression.weights.bits: unknown precision 'uint8'"):
        parse_config({"compression": {"weights": {"bits": "uint8"}}})


def test_set_overrides(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"model": {"arch": "msrresnet_x4"}}))
    cfg = load_config(path, ["training.iterations=7", "model.arch=edsr_m_x4", "compression.stages={\"body\": {\"bits\": 4}}"])
    assert cfg.training.iterations == 7 and cfg.model.arch == "edsr_m_x4"
    assert cfg.compression.stages["body"].weight_bits(8) == 4
    with pytest.raises(ConfigError, match="expected section.key=value"):
        apply_overrides({}, ["training.iterations"])


def test_variant_merge_and_fp32():
    cfg = parse_config({"variants": {"fp32": {"compression": None}, "mixed": {"compression": {"stages": {"body": {"bits": 16}}}}}})
    assert cfg.variant("fp32").compression is None
    assert cfg.variant("mixed").compression.stages["body"].activation_bits(8) == 16
    with pytest.raises(ConfigError, match="unknown variant 'int4'"):
        cfg.variant("int4")
    with pytest.raises(ConfigError, match="variants.bad: unknown config key"):
        parse_config({"variants": {"bad": {"trainig": {}}}})


def test_invalid_json_reports_position(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text("{\"model\": }")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_config(path)


@pytest.mark.parametrize("name", ["mscn_stats_weight", "fft_weight", "pixel_weight", "quant_error_weight",
                                  "detail_gain_weight"])
def test_negative_loss_weight_is_named(name):
    with pytest.raises(ConfigError, match=rf"training.{name}: -0.5 is negative.*>= 0"):
        parse_config({"training": {name: -0.5}})


@pytest.mark.parametrize("bands", [[1.0], [2.0, 1.0], [0.0, 1.0, 1.0], [-1.0, 2.0]])
def test_detail_gain_bands_must_increase(bands):
    with pytest.raises(ConfigError, match=r"training.detail_gain_bands: .* increasing Gaussian sigmas"):
        parse_config({"training": {"detail_gain_bands": bands}})


def test_negative_distill_lowpass_sigma_is_named():
    with pytest.raises(ConfigError, match=r"training.distill_lowpass_sigma: -1.0 is negative; use a Gaussian blur"):
        parse_config({"training": {"distill_lowpass_sigma": -1.0}})


def test_learning_rates_are_checked():
    with pytest.raises(ConfigError, match=r"training.lr_g: -0.001 is negative"):
        parse_config({"training": {"lr_g": -1e-3}})
    with pytest.raises(ConfigError, match=r"lr_g is 0, training.lr_quantizers is unset.*lr_quantizers"):
        parse_config({"training": {"lr_g": 0.0, "iterations": 10, "distill_only": True}})
    # a discriminator-only phase (generator held) is a valid use of lr_g 0
    assert parse_config({"training": {"lr_g": 0.0, "gan_weight": 1.0, "distill_only": False}}).training.lr_g == 0
    assert parse_config({"training": {"lr_g": 0.0, "lr_quantizers": 1e-2}}).training.lr_quantizers == 1e-2


# ---------------------------------------------------------------------------------------------- bad input, via the CLI

def _cli_error(capsys, path, *sets: str) -> str:
    """Run `mixq config convert` on a file: exit status 2 and a single error line, returned."""
    argv = ["config", "convert", str(path)] + [a for s in sets for a in ("--set", s)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "unexpected error" not in err and "Traceback" not in err
    return err


def _file(tmp_path, text: str, name: str = "cfg.json"):
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("text, key, literal, example", [
    ('{"input_info": {"range": [0.0, Infinity]}}', "input_info.range[1]", "Infinity", "1.0"),
    ('{"training": {"lr_g": NaN}}', "training.lr_g", "NaN", "0.0001"),
    ('{"training": {"betas": [0.9, -Infinity]}}', "training.betas[1]", "-Infinity", "0.99"),
    ('{"model": {"args": {"num_feat": NaN}}}', "model.args.num_feat", "NaN", "1.0"),
    ('{"model": "resnet50", "compression": {"algorithm": "quantization", "initializer": {"range": '
     '{"type": "mean_percentile", "params": {"max_percentile": Infinity}}}}}',
     "compression.initializer.range.params.max_percentile", "Infinity", "1.0"),
])
def test_non_finite_numbers_in_a_file_are_refused_by_key_path(tmp_path, capsys, text, key, literal, example):
    err = _cli_error(capsys, _file(tmp_path, text))
    assert f"cfg.json: {key}: {literal} is not a finite number; use a number such as {example}" in err


@pytest.mark.parametrize("setting, key", [("training.lr_g=NaN", "training.lr_g"),
                                          ("input_info.range=[0, Infinity]", "input_info.range[1]"),
                                          ("training.gamma=-Infinity", "training.gamma")])
def test_non_finite_set_values_are_refused_by_key_path(tmp_path, capsys, setting, key):
    err = _cli_error(capsys, _file(tmp_path, '{"model": {"arch": "msrresnet_x4"}}'), setting)
    assert f"{key}: " in err and "is not a finite number" in err and setting in err


def test_non_finite_python_values_are_refused_by_key_path():
    with pytest.raises(ConfigError, match=r"^input_info.range\[0\]: NaN is not a finite number; use a number such as 0.0"):
        parse_config({"input_info": {"range": [float("nan"), 1.0]}})
    with pytest.raises(ConfigError, match=r"^training.lr_d: Infinity is not a finite number"):
        parse_config({"training": {"lr_d": float("inf")}})


@pytest.mark.parametrize("section, value, message", [
    ("training.batch_size", 0, "training.batch_size: 0 is below 1; use an integer >= 1"),
    ("training.lr_d", -1e-4, "training.lr_d: -0.0001 is negative; use a learning rate >= 0"),
    ("training.gan_weight", -1, "training.gan_weight: -1.0 is negative, which would reward the error it measures"),
    ("training.ema_decay", 1.0, "training.ema_decay: 1.0 is not below 1; use a decay in [0, 1)"),
    ("training.gamma", 0, "training.gamma: 0.0 is not above 0; use a learning-rate factor > 0"),
    ("training.betas", [0.9, 1.5], "training.betas[1]: 1.5 is not below 1; use Adam betas in [0, 1)"),
    ("training.seed", -1, "training.seed: -1 is negative; use a seed 0..4294967295"),
    ("training.num_workers", -2, "training.num_workers: -2 is negative; use an integer >= 0"),
    ("data.calibration_samples", 0, "data.calibration_samples: 0 is below 1"),
    ("data.eval_crop", 0, "data.eval_crop: 0 is below 1"),
    ("input_info.sample_size", [1, 3, 0, 64], "input_info.sample_size[2]: 0 is below 1"),
    ("input_info.range", [1.0, 0.0], "input_info.range: expected [low, high] with low < high, got [1.0, 0.0]"),
    ("compression.initializer.range.max_percentile", 101,
     "compression.initializer.range.max_percentile: 101.0 is above 100; use a percentile 0..100"),
    ("compression.initializer.range.num_init_samples", 0, "compression.initializer.range.num_init_samples: 0 is below 1"),
    ("export.parity_tolerance_db", -0.5, "export.parity_tolerance_db: -0.5 is negative; use a number >= 0"),
    ("benchmark.streams", 0, "benchmark.streams: 0 is below 1"),
    ("eval.tile", -1, "eval.tile: -1 is negative"),
])
def test_numbers_out_of_range_name_the_key_in_a_file_and_in_set(tmp_path, capsys, section, value, message):
    head, key = section.rsplit(".", 1)
    data: dict = {"model": {"arch": "msrresnet_x4"}}
    node = data
    for part in head.split("."):
        node = node.setdefault(part, {})
    node[key] = value
    assert message in _cli_error(capsys, _file(tmp_path, json.dumps(data)))
    base = _file(tmp_path, '{"model": {"arch": "msrresnet_x4"}}', "base.json")
    assert message in _cli_error(capsys, base, f"{section}={json.dumps(value)}")


def test_precision_names_and_numbers_read_the_same_in_a_file_and_in_set(tmp_path, capsys):
    base = _file(tmp_path, '{"model": {"arch": "msrresnet_x4"}}', "base.json")
    named = load_config(_file(tmp_path, '{"compression": {"weights": {"bits": "int7"}, "activations": {"bits": 12}}}'))
    assert (named.compression.weights.bits, named.compression.activations.bits) == ("int7", 12)
    assert load_config(base, ["compression.weights.bits=7"]).compression.weights.bits == 7
    assert load_config(base, ["compression.weights.bits=int7"]).compression.weights.bits == "int7"
    for bad in ('"int17"', "1", '"int1"', "true", '"uint8"'):
        from_file = _cli_error(capsys, _file(tmp_path, '{"compression": {"weights": {"bits": %s}}}' % bad))
        from_set = _cli_error(capsys, base, f"compression.weights.bits={bad}")
        for err in (from_file, from_set):
            assert "compression.weights.bits: " in err and "'int2'..'int16' or an integer 2..16" in err, err
        assert from_file.split("cfg.json: ")[1] == from_set.split("base.json: ")[1]
    err = _cli_error(capsys, base, 'compression.scope_overrides={"conv_first": {"weights": "int20"}}')
    assert "compression.scope_overrides.conv_first.weights: 'int20' is out of range" in err


def test_a_file_deeper_than_the_json_parser_goes_is_one_error(tmp_path, capsys):
    err = _cli_error(capsys, _file(tmp_path, "[" * 10000 + "]" * 10000))
    assert "cfg.json: nested more than 32 levels deep" in err
    err = _cli_error(capsys, _file(tmp_path, '{"model": {"args": {"x": ' + "[" * 200 + "]" * 200 + "}}}"))
    assert "cfg.json: model.args.x" in err and "nested more than 32 levels deep" in err
    err = _cli_error(capsys, _file(tmp_path, "{}", "base.json"), "model.args=" + "[" * 5000 + "]" * 5000)
    assert "model.args" in err and "nested" in err
    err = _cli_error(capsys, _file(tmp_path, "{}", "base.json"), "model.args" + ".a" * 3000 + "=1")
    assert "--set: model.args.a.a" in err and "nested more than 32 levels deep" in err


def test_a_directory_empty_file_or_non_utf8_file_is_one_error_naming_it(tmp_path, capsys):
    folder = tmp_path / "configs"
    folder.mkdir()
    assert f"{folder} is a directory, not a config file" in _cli_error(capsys, folder)
    assert "empty.json is empty; a config is a JSON object" in _cli_error(capsys, _file(tmp_path, "", "empty.json"))
    assert "blank.json is empty" in _cli_error(capsys, _file(tmp_path, "  // nothing\n /* at all */\n", "blank.json"))
    latin = tmp_path / "latin.json"
    latin.write_bytes('{"name": "caf\u00e9"}'.encode("latin-1"))
    assert "latin.json: not UTF-8 text (byte 0xe9 at offset 13)" in _cli_error(capsys, latin)
    assert f"config file not found: {tmp_path / 'nope.json'}" in _cli_error(capsys, tmp_path / "nope.json")
    # a UTF-8 byte-order mark is still UTF-8
    bom = tmp_path / "bom.json"
    bom.write_bytes(b"\xef\xbb\xbf" + b'{"model": {"arch": "msrresnet_x4"}}')
    assert load_config(bom).model.arch == "msrresnet_x4"


def test_nncf_files_name_the_bits_key_and_take_precision_names(tmp_path, capsys):
    nncf = {"model": "resnet50", "compression": {"algorithm": "quantization", "weights": {"bits": "int17"}}}
    err = _cli_error(capsys, _file(tmp_path, json.dumps(nncf)))
    assert "cfg.json: NNCF 2.x config: compression.weights.bits: 'int17' is not a bit width; use an integer 2..16" in err
    nncf["compression"]["weights"]["bits"] = "int7"
    cfg = load_config(_file(tmp_path, json.dumps(nncf)), ["model.arch=msrresnet_x4"])
    assert cfg.compression.weights.bits == 7


def test_train_lr_is_read():
    assert parse_config({"data": {"train": "hr", "train_lr": "lr"}}).data.train_lr == "lr"
