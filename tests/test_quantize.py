import glob

import pytest
import torch

from tiny_models import FAMILIES, TINY, ir_conv_bits, tiny
from mixq_nncf.cli import main
from mixq_nncf.config.files import load_config
from mixq_nncf.config.schema import parse_config
from mixq_nncf.cpu import has_int8_dot_product
from mixq_nncf.errors import ScopeError
from mixq_nncf.ir.export import export_ir
from mixq_nncf.quant.apply import input_range_problems
from mixq_nncf.config.plan import LayerPrecision, match_scope, resolve_plan
from mixq_nncf.quant.checkpoint import load_quantized, save_quantized
from mixq_nncf.quant.table import layer_bits, quantizer_table
from mixq_nncf.quant.ptq import quantize

PUBLISHED = sorted(p for p in glob.glob("configs/paper/*_p*_int8.json") + glob.glob("configs/paper/*_qat_*.json")
                   if "repro" not in p)


def _arch_tiny(arch):
    return {"model.arch": arch}


def _quantized(config, arch, calibration):
    """A tiny model of the family quantized with the config's plan: (plan, quantized model)."""
    cfg = load_config(config)
    model = tiny(arch)
    plan = resolve_plan(model, cfg.compression)
    return plan, quantize(model, plan, calibration, compression=cfg.compression)


# one config per distinct bit pattern: all-int8, int16 first/last + int8, int4 weights with int8 ends
IR_CONFIGS = ["configs/paper/srgan_ptq_int8.json", "configs/paper/esrgan_qat_mixed.json", "configs/fqsr/fqsr_a8w4_msrresnet.json"]


@pytest.mark.parametrize("config", IR_CONFIGS)
@pytest.mark.parametrize("arch", FAMILIES)
def test_exported_ir_runs_the_configured_bits(config, arch, calibration, tmp_path):
    """Read back from the exported IR's own FakeQuantize levels / stored integers, not through our mapping."""
    plan, qmodel = _quantized(config, arch, calibration)
    ir = ir_conv_bits(export_ir(qmodel, tmp_path / "m.xml", example_input=calibration[0]))
    assert set(ir) == set(plan.layers)
    # every conv runs the plan's weight bits; a shared activation quantizer may only raise the input's
    # without VNNI/AMX the overflow fix doubles the 8-bit weight ranges: the stored integers span about 7 bits
    halved = (7, 8) if not has_int8_dot_product() else (8,)
    for layer, asked in plan.layers.items():
        assert ir[layer][0] in (halved if asked.weight_bits == 8 else (asked.weight_bits,)), (layer, ir[layer], asked)
        assert ir[layer][1] >= asked.act_bits, (layer, ir[layer], asked)
    if "mixed" in config:
        assert ir["conv_first"] == (16, 16) and ir["conv_last"] == (16, 16)
        assert all(ir[l][0] in halved for l in plan.layers if plan.stage_of[l] == "body")
    if "a8w4" in config:
        assert {ir[l][0] for l in plan.layers} == {4}


@pytest.mark.parametrize("config", PUBLISHED + ["configs/fqsr/fqsr_a8w4_msrresnet.json", "configs/fqsr/fqsr_a4w4_msrresnet.json"])
@pytest.mark.parametrize("arch", FAMILIES)
def test_quantizer_bits_survive_save(config, arch, calibration, tmp_path):
    plan, qmodel = _quantized(config, arch, calibration)
    got = layer_bits(quantizer_table(qmodel, plan))
    path = save_quantized(qmodel, tmp_path / "q.pt", arch=arch, args=TINY, plan=plan)
    restored = load_quantized(path)
    assert layer_bits(quantizer_table(restored.model, restored.plan)) == got
    rows = {r.quantizer: r.levels for r in quantizer_table(restored.model)}
    assert rows == {r.quantizer: r.levels for r in quantizer_table(qmodel)}
    x = torch.rand(1, 3, 12, 12)
    with torch.no_grad():
        assert torch.allclose(restored.model(x), qmodel(x))


def test_asymmetric_low_bits_round_trip(calibration, tmp_path):
    cfg = parse_config({"compression": {"weights": {"mode": "asymmetric"}, "activations": {"mode": "asymmetric", "bits": 6},
                                        "scope_overrides": {"{re}body\\.0\\.conv2": {"bits": 4}}}})
    model = tiny()
    plan = resolve_plan(model, cfg.compression)
    qmodel = quantize(model, plan, calibration, compression=cfg.compression)
    rows = quantizer_table(qmodel, plan)
    assert {r.mode for r in rows} == {"asymmetric"}
    restored = load_quantized(save_quantized(qmodel, tmp_path / "a.pt", arch="msrresnet_x4", args=TINY, plan=plan))
    again = quantizer_table(restored.model, restored.plan)
    assert [(r.bits, r.levels) for r in again] == [(r.bits, r.levels) for r in rows]
    assert layer_bits(again)["body.0.conv2"].weight_bits == 4


def test_ignored_scope_runs_fp32(calibration):
    cfg = parse_config({"compression": {"ignored_scopes": ["conv_last"]}})
    model = tiny()
    plan = resolve_plan(model, cfg.compression)
    assert plan.layers["conv_last"] == LayerPrecision(None, None)
    qmodel = quantize(model, plan, calibration, compression=cfg.compression)
    assert "conv_last" not in layer_bits(quantizer_table(qmodel, plan))


@pytest.mark.parametrize("correct", [True, False])
def test_bias_correction_switch(correct, calibration):
    """NNCF's torch backend rejects fast_bias_correction=False; the config's false means no bias correction."""
    cfg = parse_config({"compression": {"initializer": {"fast_bias_correction": correct}}})
    model = tiny()
    qmodel = quantize(model, resolve_plan(model, cfg.compression), calibration, compression=cfg.compression)
    before = {n: p for n, p in model.state_dict().items() if n.endswith(".bias")}
    after = {n: p for n, p in qmodel.state_dict().items() if n in before}
    assert set(after) == set(before)
    changed = [n for n in before if not torch.equal(before[n], after[n])]
    assert bool(changed) == correct, changed


def test_scope_patterns():
    layers = ["conv_first", "body.0.conv1", "body.0.conv2", "body.10.conv1"]
    assert match_scope("body.0", layers) == ["body.0.conv1", "body.0.conv2"]
    assert match_scope("{re}body\\.\\d+\\.conv1", layers) == ["body.0.conv1", "body.10.conv1"]
    with pytest.raises(ScopeError, match="matches no layer"):
        resolve_plan(tiny(), parse_config({"compression": {"scope_overrides": {"conv_lsat": {"bits": 16}}}}).compression)


def test_input_quantizer_pinned_to_data_range(calibration):
    narrow = [c * 0.3 for c in calibration]  # calibration never sees values above 0.3
    for arch in ("msrresnet_x4", "edsr_m_x4"):
        cfg = parse_config({"compression": {"stages": {"feature_extraction": {"bits": 16}}}})
        model = tiny(arch)
        qmodel = quantize(model, resolve_plan(model, cfg.compression), narrow, compression=cfg.compression)
        inputs = [r for r in quantizer_table(qmodel) if r.model_input]
        assert inputs and inputs[0].bits == 16
        assert input_range_problems(qmodel, 0.0, 1.0) == []
        if arch == "msrresnet_x4":
            assert (inputs[0].range_low, inputs[0].range_high) == (0.0, 1.0)


def test_cli_quantize_writes_table(tmp_path, capsys):
    out = tmp_path / "q"
    code = main(["quantize", "configs/paper/srgan_qat_mixed.json", "--out", str(out), "--set", "model.weights=null",
                 "--set", 'model.args={"num_feat": 8, "num_block": 1}', "--set", "data.calibration_samples=2",
                 "--set", "data.calibration_patch=16"])
    assert code == 0
    assert (out / "quantized.pt").is_file() and (out / "quantizers.json").is_file()
    table = (out / "quantizers.md").read_text()
    assert "| `pre_hooks.conv_first/conv2d/0__1.0` | weight | conv_first | feature_extraction | int16 |" in table


@pytest.mark.parametrize("override,message", [
    ('compression.stages={"reconstuction": {"bits": 16}}', "unknown stage 'reconstuction'"),
    ('compression.scope_overrides={"{re}upconv9": {"bits": 4}}', "'{re}upconv9' matches no layer"),
])
def test_cli_bad_config_exits_nonzero(override, message, tmp_path, capsys):
    code = main(["quantize", "configs/paper/srgan_ptq_int8.json", "--out", str(tmp_path), "--set", "model.weights=null",
                 "--set", override])
    assert code == 2
    assert message in capsys.readouterr().err
