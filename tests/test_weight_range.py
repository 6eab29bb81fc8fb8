"""Weight range init below 8 bits: per-channel clipping fitted to the least output error (compression.initializer.
weight_range) against NNCF's min-max ranges, on tiny generators with heavy-tailed (trained-like) weights."""
import pytest
import torch

from tiny_models import TINY, photo_lr_crops, tiny
from mixq_nncf.errors import ConfigError
from mixq_nncf.config.schema import parse_config
from mixq_nncf.models import conv_layers
from mixq_nncf.quant.sites import quantizer_modules, quantizer_sites
from mixq_nncf.quant.weight_ranges import fit_weight_ranges
from mixq_nncf.quant.ptq import quantize_from_config


def _cfg(arch, weights, weight_range):
    return parse_config({
        "model": {"arch": arch, "args": TINY, "weights": None},
        "compression": {"fully_quantized": {"weights": weights, "activations": "int8", "skips": "int8"},
                        "initializer": {"fast_bias_correction": False, "weight_range": weight_range}}})


def _heavy_tailed(arch):
    """Trained SR weights are peaked with long tails (Laplace-like), unlike the uniform init of a fresh model."""
    m = tiny(arch)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name in conv_layers(m):
            w = m.get_submodule(name).weight
            u = torch.rand(w.shape, generator=g) - 0.5
            w.copy_(-w.std() / 1.4 * u.sign() * torch.log1p(-2 * u.abs()))
    return m


def _out_error(fp32, qmodel, probe):
    with torch.no_grad():
        return sum(float((fp32(x) - qmodel(x)).pow(2).mean()) for x in probe) / len(probe)


def _weight_scales(model):
    return {k: q.scale.detach().clone() for k, q in quantizer_modules(model).items()
            if k.startswith("pre_hooks") and k.endswith("__1.0")}


@pytest.mark.parametrize("arch", ["msrresnet_x4", "rrdbnet_x4"])
def test_4bit_fitted_ranges_beat_min_max_on_unseen_photos(arch):
    crops = photo_lr_crops()
    calibration, probe = crops[:2], crops[2:]
    fp32 = _heavy_tailed(arch)
    errors = {}
    for mode in ("min_max", "auto"):
        res = quantize_from_config(_cfg(arch, "int4", mode), calibration=calibration, fp32_model=fp32)
        errors[mode] = _out_error(fp32, res.model, probe)
        scales = _weight_scales(res.model)
        maxima = {n: fp32.get_submodule(n).weight.detach().abs().amax(dim=(1, 2, 3)) for n in res.plan.layers}
        clipped = sum(int((s.flatten() < maxima[k.split(".")[1].split("/")[0]] * 0.999).sum())
                      for k, s in scales.items() if k.split(".")[1].split("/")[0] in maxima)
        if mode == "min_max":
            assert clipped == 0  # NNCF's ranges clip nothing
        else:
            assert clipped > 0
    assert errors["auto"] < 0.7 * errors["min_max"], errors


def test_auto_leaves_8bit_weights_at_min_max_and_mse_fits_them():
    crops = photo_lr_crops()
    fp32 = _heavy_tailed("msrresnet_x4")
    ranges = {m: _weight_scales(quantize_from_config(_cfg("msrresnet_x4", "int8", m), calibration=crops[:2],
                                                     fp32_model=fp32).model) for m in ("min_max", "auto", "mse")}
    assert all(torch.equal(ranges["min_max"][k], ranges["auto"][k]) for k in ranges["min_max"])
    assert any(not torch.equal(ranges["min_max"][k], ranges["mse"][k]) for k in ranges["min_max"])


def test_fit_without_examples_lowers_weight_error():
    """Without example inputs the fit minimises each channel's weight squared error (never above min-max's)."""
    crops = photo_lr_crops()
    fp32 = _heavy_tailed("msrresnet_x4")
    res = quantize_from_config(_cfg("msrresnet_x4", "int4", "min_max"), calibration=crops[:2], fp32_model=fp32)
    sites = quantizer_sites(res.model)
    modules = quantizer_modules(res.model)

    def weight_errors():
        out = {}
        with torch.no_grad():
            for k, s in sites.items():
                if s.kind == "weight":
                    w = res.model.get_submodule(s.layers[0]).weight
                    out[k] = float((modules[k](w) - w).pow(2).sum())
        return out

    before = weight_errors()
    fitted = fit_weight_ranges(res.model, sites)
    after = weight_errors()
    assert set(fitted) == set(before)
    assert all(after[k] <= before[k] + 1e-9 for k in before)
    assert sum(after.values()) < 0.95 * sum(before.values())
    assert all(0.2 <= r <= 1.0 for r in fitted.values())


def test_bad_weight_range_is_a_config_error():
    with pytest.raises(ConfigError, match="weight_range"):
        parse_config({"compression": {"initializer": {"weight_range": "percentile"}}})
