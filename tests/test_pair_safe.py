"""AVX2-safe 8-bit weights ("pairs"): every neighbouring input-channel pair fits int16 with u8 activations, channels
that were safe keep their range, and the IR computes what the torch model does even on inputs built to saturate."""
import numpy as np
import pytest
import torch

from mixq_nncf.config.plan import resolve_plan
from mixq_nncf.config.schema import parse_config
from mixq_nncf.cpu import has_int8_dot_product
from mixq_nncf.quant.pair_safe import PAIR_LIMIT, fit_pair_safe_ranges, pair_sums, widest_pair
from mixq_nncf.quant.ptq import quantize
from mixq_nncf.quant.sites import quantizer_modules, quantizer_sites
from tiny_models import tiny

PLANTED = "conv_first"


def _planted_model() -> torch.nn.Module:
    """A tiny MSRResNet whose first conv has, in output channel 0, two neighbouring input channels at the channel's
    largest magnitude with the same sign: 2 x 127 at 8 bits, which saturates int16 for a white pixel."""
    model = tiny("msrresnet_x4")
    with torch.no_grad():
        w = model.conv_first.weight
        peak = float(w[0].abs().max()) * 1.5
        w[0, 0, 1, 1] = peak
        w[0, 1, 1, 1] = peak
    return model


def _quantized(model, fix: str, calibration):
    comp = parse_config({"compression": {"overflow_fix": fix}}).compression
    return quantize(model, resolve_plan(model, comp), calibration, compression=comp)


def _weight_scale(qmodel, layer: str) -> torch.Tensor:
    sites = quantizer_sites(qmodel, torch.rand(1, 3, 16, 16))
    key = next(k for k, s in sites.items() if s.kind == "weight" and s.layers == (layer,))
    return quantizer_modules(qmodel)[key].scale.detach().reshape(-1).clone()


def _channel_widest(qmodel, layer: str) -> torch.Tensor:
    """Each output channel's largest pair sum of the integers its 8-bit weights store (narrow range: +-127)."""
    w = qmodel.get_submodule(layer).weight.detach()
    ints = torch.round(w / _weight_scale(qmodel, layer).reshape(-1, 1, 1, 1) * 127)
    return pair_sums(ints).amax(dim=(1, 2, 3))


def test_pair_sums_pair_neighbouring_input_channels():
    w = torch.tensor([[[[3.0]], [[-4.0]], [[5.0]]]])  # (1, 3, 1, 1): pairs (0, 1) and (2, padding)
    assert pair_sums(w).reshape(-1).tolist() == [7.0, 5.0]


def test_only_channels_with_a_large_pair_are_widened(calibration):
    model = _planted_model()
    full = _quantized(model, "disable", calibration)
    safe = _quantized(model, "pairs", calibration)
    sites = quantizer_sites(safe, torch.rand(1, 3, 16, 16))
    assert widest_pair(full, quantizer_sites(full, torch.rand(1, 3, 16, 16))) > PAIR_LIMIT
    assert widest_pair(safe, sites) <= PAIR_LIMIT
    ratio = _weight_scale(safe, PLANTED) / _weight_scale(full, PLANTED)
    need = _channel_widest(full, PLANTED)
    assert float(need[0]) >= 250 and 1.9 < float(ratio[0]) <= 2.0  # 254 -> 128 needs about twice the range
    assert torch.equal(ratio == 1, need <= PAIR_LIMIT)  # a channel whose pairs fit keeps its range
    assert bool((ratio <= (need + 2) / PAIR_LIMIT).all())  # and none is widened further than it needs
    assert bool((_channel_widest(safe, PLANTED) <= PAIR_LIMIT).all())
    before = _weight_scale(safe, PLANTED)
    again = fit_pair_safe_ranges(safe, sites)  # idempotent: a second fit changes nothing
    assert torch.equal(_weight_scale(safe, PLANTED), before)
    assert 7.0 < again.mean_bits < 8.0 and 0 < again.widened <= again.channels


def _ir_vs_torch_db(qmodel, tmp_path, name: str) -> float:
    from mixq_nncf.ir.export import compile_ir, export_ir, run_ir

    x = torch.ones(1, 3, 16, 16)  # every input at u8 255: the planted pair's sum is as large as it gets
    xml = export_ir(qmodel, tmp_path / name / "m.xml", example_input=x)
    ir = run_ir(compile_ir(xml), x)
    with torch.no_grad():
        ref = qmodel(x)
    mse = float(((ir - ref) ** 2).mean())
    return float(10 * np.log10(1.0 / max(mse, 1e-12)))


def test_the_ir_computes_what_torch_does_on_a_saturating_input(calibration, tmp_path):
    model = _planted_model()
    safe_db = _ir_vs_torch_db(_quantized(model, "pairs", calibration), tmp_path, "pairs")
    assert safe_db > 45, safe_db
    if not has_int8_dot_product():
        # the same weights at full range saturate this CPU's int16 pair sums: the check above can fail here
        full_db = _ir_vs_torch_db(_quantized(model, "disable", calibration), tmp_path, "full")
        assert full_db < safe_db - 10, (full_db, safe_db)


@pytest.mark.parametrize("fix", ["pairs", "enable"])
def test_both_avx2_fixes_keep_every_pair_within_int16(fix, calibration):
    safe = _quantized(_planted_model(), fix, calibration)
    assert widest_pair(safe, quantizer_sites(safe, torch.rand(1, 3, 16, 16))) <= PAIR_LIMIT
