import pytest
import torch

from tiny_models import tiny
from mixq_nncf.ir.audit import audit_runtime, layer_time_shares
from mixq_nncf.config.schema import parse_config
from mixq_nncf.errors import ParityError
from mixq_nncf.ir.export import check_parity, compile_ir, export_ir, ir_size, read_meta, run_ir
from mixq_nncf.config.plan import resolve_plan
from mixq_nncf.quant.table import quantizer_table
from mixq_nncf.quant.ptq import quantize
from mixq_nncf.serve.upscale import upscale_image

MIXED = {"stages": {"feature_extraction": {"bits": 16}, "reconstruction": {"bits": 16}}}


def _quantized(comp, calibration, arch="msrresnet_x4"):
    torch.manual_seed(0)
    from mixq_nncf.models import build_generator

    model = build_generator(arch, num_feat=16, num_block=2).eval()
    cfg = parse_config({"compression": comp})
    return model, quantize(model, resolve_plan(model, cfg.compression), calibration, compression=cfg.compression)


@pytest.fixture(scope="module")
def irs(tmp_path_factory, calibration):
    out = tmp_path_factory.mktemp("irs")
    fp32, int8 = _quantized({}, calibration)
    _, mixed = _quantized(MIXED, calibration)
    ex = calibration[0]
    return {
        "models": {"fp32": fp32, "int8": int8, "mixed": mixed},
        "fp32": export_ir(fp32, out / "fp32.xml", example_input=ex, meta={"arch": "msrresnet_x4"}),
        "int8": export_ir(int8, out / "int8.xml", example_input=ex),
        "mixed": export_ir(mixed, out / "mixed.xml", example_input=ex),
        "mixed_fp32w": export_ir(mixed, out / "mixed_plain.xml", example_input=ex, compact_16bit=False),
    }


def test_parity_passes_for_fp32_int8_mixed(irs, photo_lr):
    m = irs["models"]
    fp = check_parity(irs["fp32"], m["fp32"], photo_lr[:2])
    assert fp.mode == "tensor" and fp.max_abs_diff < 1e-4
    for name in ("int8", "mixed"):
        r = check_parity(irs[name], m[name], photo_lr[:2], reference_model=m["fp32"])
        assert r.mode == "quality" and r.passed


def test_parity_fails_on_broken_model(irs, photo_lr):
    m = irs["models"]
    broken = tiny()  # other weights than the exported IR
    with pytest.raises(ParityError, match="differs from torch"):
        check_parity(irs["fp32"], broken, photo_lr[:2])
    import copy

    bad = copy.deepcopy(m["int8"])
    with torch.no_grad():
        bad.conv_last.weight.mul_(-1)
    # the IR much better than the torch model it claims to be: examined, and the FakeQuantize count reported
    with pytest.raises(ParityError, match=r"dB above the torch quantized model's .*not the model that was trained; "
                                          r"it holds \d+ FakeQuantize ops where the torch model has \d+ enabled"):
        check_parity(irs["int8"], bad, photo_lr[:2], reference_model=m["fp32"])


def test_parity_bounds_the_ir_both_ways(irs, photo_lr, tmp_path):
    """IR worse than torch fails; an IR without quantizers (an fp32 IR passed off as int8) fails as too good."""
    import copy

    m = irs["models"]
    bad = copy.deepcopy(m["int8"])
    with torch.no_grad():
        bad.conv_last.weight.mul_(-1)
    worse = export_ir(bad, tmp_path / "worse.xml", example_input=photo_lr[0])
    with pytest.raises(ParityError, match=r"dB below the torch quantized model's"):
        check_parity(worse, m["int8"], photo_lr[:2], reference_model=m["fp32"])
    r = check_parity(irs["fp32"], bad, photo_lr[:2], reference_model=m["fp32"], raise_on_failure=False)
    assert not r.passed and r.ir_fidelity_db > r.torch_fidelity_db + 1.0
    assert "it holds 0 FakeQuantize ops where the torch model has" in r.problems[0]
    # both within rounding noise of fp32 (>= LOSSLESS_DB): dB differences mean nothing there and pass
    ok = check_parity(irs["fp32"], m["int8"], photo_lr[:2], reference_model=m["fp32"])
    assert min(ok.torch_fidelity_db, ok.ir_fidelity_db) >= 50


def test_narrow_16bit_input_quantizer_is_caught(irs, photo_lr, tmp_path):
    import copy

    from mixq_nncf.quant.nncf_adapter import quantizer_modules as _quantizer_modules

    narrow = copy.deepcopy(irs["models"]["mixed"])
    row = next(r for r in quantizer_table(narrow) if r.model_input)
    assert row.bits == 16
    q = _quantizer_modules(narrow)[row.quantizer]
    (q.scale if hasattr(q, "scale") else q.input_range).data.fill_(0.5)  # symmetric / asymmetric quantizer
    xml = export_ir(narrow, tmp_path / "narrow.xml", example_input=photo_lr[0])
    with pytest.raises(ParityError, match="input quantizer"):
        check_parity(xml, narrow, photo_lr[:2], reference_model=irs["models"]["fp32"])


def test_audit_counts_int8_and_fp32_convs(irs):
    int8 = audit_runtime(irs["int8"], (1, 3, 16, 16))
    assert (int8.conv_int8, int8.conv_fp32) == (9, 0)
    assert int8.kernel_text.startswith("9 conv ") and " int8 (" in int8.kernel_text
    mixed = audit_runtime(irs["mixed"], (1, 3, 16, 16))
    assert (mixed.conv_int8, mixed.conv_fp32) == (6, 3)
    assert sorted(mixed.fp32_convs) == ["conv_first", "conv_hr", "conv_last"]
    fp32 = audit_runtime(irs["fp32"], (1, 3, 16, 16))
    assert (fp32.conv_int8, fp32.conv_fp32) == (0, 9)
    shares = layer_time_shares(irs["mixed"], (1, 3, 16, 16), runs=2)
    assert 0 < shares.fp32_share < 1 and sorted(shares.fp32_layers_ms) == ["conv_first", "conv_hr", "conv_last"]


def test_compact_16bit_weights_are_smaller_and_identical(irs, photo_lr):
    compact, plain = ir_size(irs["mixed"]), ir_size(irs["mixed_fp32w"])
    assert "i16" in compact.bytes_by_precision and "i16" not in plain.bytes_by_precision
    assert compact.bin_bytes < plain.bin_bytes
    assert read_meta(irs["mixed"])["compact_16bit_weights"] == 3
    a, b = compile_ir(irs["mixed"]), compile_ir(irs["mixed_fp32w"])
    x = photo_lr[0]
    assert torch.allclose(run_ir(a, x), run_ir(b, x), atol=2e-3)


def test_tiled_upscale_equals_untiled(irs):
    img = torch.rand(3, 50, 70, generator=torch.Generator().manual_seed(0))
    whole = upscale_image(irs["fp32"], img, 4, tile=0)
    tiled = upscale_image(irs["fp32"], img, 4, tile=24, overlap=12)
    assert whole.shape == (3, 200, 280)
    assert (whole - tiled).abs().max() < 1e-4


def test_bench_returns_sane_stats(irs):
    from mixq_nncf.ir.bench import Target, benchmark, machine_info

    stats = benchmark([Target("fp32", "openvino", irs["fp32"]), Target("int8", "openvino", irs["int8"]),
                       Target("torch", "torch", model=irs["models"]["fp32"])],
                      input_size=(16, 16), iterations=3, warmup=1, progress=False)
    assert [s.name for s in stats] == ["fp32", "int8", "torch"]
    assert all(s.n == 3 and s.min_ms <= s.median_ms <= s.p90_ms for s in stats)
    assert " int8 (" in stats[1].kernels and " int8 (" not in stats[0].kernels and stats[2].kernels == ""
    # GMAC from the IR equals the model's own conv arithmetic at 16x16 (4x: 64x64 output)
    macs = []
    hooks = [mod.register_forward_hook(lambda mod, i, o: macs.append(o.numel() * mod.weight[0].numel()))
             for mod in irs["models"]["fp32"].modules() if isinstance(mod, torch.nn.Conv2d)]
    with torch.no_grad():
        irs["models"]["fp32"](torch.rand(1, 3, 16, 16))
    for h in hooks:
        h.remove()
    assert stats[0].gmac == pytest.approx(sum(macs) / 1e9, rel=1e-6) == stats[1].gmac
    assert stats[0].gmac_per_s == pytest.approx(stats[0].gmac / (stats[0].median_ms / 1e3), rel=1e-6)
    import os

    assert machine_info().cores == os.cpu_count()
