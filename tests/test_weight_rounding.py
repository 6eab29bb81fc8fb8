"""Block-by-block rounding of low-bit weights (compression.initializer.weight_rounding) on tiny generators and real
crops: it must lower the output error of 4-bit weights against round-to-nearest on crops it did not see, leave
weights NNCF's own quantizer reproduces, resume from its state file, and export to an IR that matches the torch
model."""

import copy
import dataclasses

import pytest
import torch

from tiny_models import TINY, photo_lr_crops, tiny
from mixq_nncf.data.datasets import load_image, make_lr, offline_photos
from mixq_nncf.config.schema import WeightRounding, parse_config
from mixq_nncf.errors import ConfigError
from mixq_nncf.ir.export import check_parity, export_ir
from mixq_nncf.quant.ptq import quantize_from_config, round_low_bit_weights
from mixq_nncf.quant.sites import quantizer_modules, quantizer_sites


def _cfg(arch: str, rounding=None, weights: str = "int4"):
    return parse_config({
        "model": {"arch": arch, "args": TINY, "weights": None},
        "data": {"calibration_samples": 4, "calibration_patch": 16},
        "compression": {"fully_quantized": {"weights": weights, "activations": "int8", "skips": "int8"},
                        "initializer": {"fast_bias_correction": False, "weight_rounding": rounding}}})


def _error(model, fp32, crops) -> float:
    with torch.no_grad():
        return sum(float((model(x) - fp32(x)).pow(2).mean()) for x in crops) / len(crops)


@pytest.fixture(scope="module")
def crops():
    return photo_lr_crops()


@pytest.fixture(scope="module")
def larger_crops():
    """Six 48-px LR crops: enough pixels that every conv's input statistics are full rank (as on real
    calibration sets), unlike 24-px crops against a dense block's 1,224 input columns."""
    out = []
    for path in offline_photos("eval")[:6]:
        hr = load_image(path)[:, 64:256, 64:256]
        out.append(make_lr(hr, 4).unsqueeze(0))
    return out


@pytest.mark.parametrize("arch,order", [("rrdbnet_x4", "input"), ("msrresnet_x4", "input"), ("rrdbnet_x4", "act")])
def test_gptq_removes_most_of_the_error_4bit_weights_add_on_held_out_crops(arch, order, larger_crops):
    """The error 4-bit weights add to the same model with 8-bit weights (same activation quantizers) is what
    rounding can remove; on a tiny random model the 8-bit activations' share can dominate the total. In "act"
    order the columns are rounded permuted and written back in place: a wrong permutation would not fit."""
    fp32 = tiny(arch)
    calibration, held_out = larger_crops[:4], larger_crops[4:]
    eight = quantize_from_config(_cfg(arch, weights="int8"), calibration=calibration, fp32_model=fp32).model
    nearest = quantize_from_config(_cfg(arch), calibration=calibration, fp32_model=fp32).model
    rounded = quantize_from_config(_cfg(arch, {"samples": 4, "patch": 48, "order": order}), calibration=calibration,
                                   fp32_model=fp32).model
    base = _error(eight, fp32, held_out)
    excess_nearest = _error(nearest, fp32, held_out) - base
    assert excess_nearest > 0
    assert _error(rounded, fp32, held_out) - base < 0.5 * excess_nearest
    # where a block's fit came out worse than round-to-nearest it keeps the nearest weights: never worse in sample
    assert _error(rounded, fp32, calibration) <= _error(nearest, fp32, calibration)


def test_rounded_weights_sit_on_the_quantizer_grid(crops):
    fp32 = tiny("rrdbnet_x4")
    model = quantize_from_config(_cfg("rrdbnet_x4", {"samples": 2, "patch": 24}), calibration=crops[:2],
                                 fp32_model=fp32).model
    sites = quantizer_sites(model, crops[0])
    modules = quantizer_modules(model)
    checked = 0
    for key, site in sites.items():
        if site.kind != "weight":
            continue
        w = model.get_submodule(site.layers[0]).weight.detach()
        with torch.no_grad():
            assert torch.allclose(modules[key](w), w, atol=1e-6), site.layers[0]
        checked += 1
    assert checked == len([n for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)])


def test_rounding_resumes_from_its_state_and_is_deterministic(tmp_path, crops):
    fp32 = tiny("rrdbnet_x4")
    cfg = _cfg("rrdbnet_x4")
    base = quantize_from_config(cfg, calibration=crops[:2], fp32_model=fp32).model
    settings = WeightRounding(samples=2, patch=24)
    compression = dataclasses.replace(cfg.compression, initializer=dataclasses.replace(
        cfg.compression.initializer, weight_rounding=settings))
    state = tmp_path / "weight_rounding.state.pt"
    first = copy.deepcopy(base)
    done = round_low_bit_weights(first, fp32, compression, quantizer_sites(first, crops[0]), crops[:2],
                                       state_path=state)
    assert state.is_file() and done.blocks and done.resumed == 0
    second = copy.deepcopy(base)
    again = round_low_bit_weights(second, fp32, compression, quantizer_sites(second, crops[0]), crops[:2],
                                        state_path=state)
    assert again.resumed == len(done.blocks) and not again.blocks
    for (n, a), (_, b) in zip(first.state_dict().items(), second.state_dict().items()):
        assert torch.equal(a, b), n


def test_rounded_model_exports_with_4bit_weights_and_passes_parity(tmp_path, crops):
    fp32 = tiny("msrresnet_x4")
    model = quantize_from_config(_cfg("msrresnet_x4", {"samples": 2, "patch": 24}), calibration=crops[:2],
                                 fp32_model=fp32).model
    xml = export_ir(model, tmp_path / "m.xml", example_input=crops[0])
    parity = check_parity(xml, model, crops[2:], reference_model=fp32)
    assert parity.passed


def test_rounding_settings_are_checked():
    with pytest.raises(ConfigError, match="method"):
        _cfg("rrdbnet_x4", {"method": "brecq"})
    with pytest.raises(ConfigError, match="samples"):
        _cfg("rrdbnet_x4", {"samples": 0})
    with pytest.raises(ConfigError, match="damp"):
        _cfg("rrdbnet_x4", {"damp": 0})
