import json

import pytest

from mixq_nncf.errors import ConfigError

from mixq_nncf.config.overrides import apply_overrides

from mixq_nncf.config.files import load_config

from mixq_nncf.config.schema import parse_config

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
