"""Fully quantized mode (FQSR) on tiny generators: what the OpenVINO runtime graph really runs, skip quantizers
through save/restore, learnable intervals, the calibration loss and 4-bit weights."""

import numpy as np
import pytest
import torch

from tiny_models import FAMILIES, TINY, tiny
from mixq_nncf.ir.audit import audit_runtime
from mixq_nncf.errors import ConfigError, MixqError
from mixq_nncf.config.schema import parse_config
from mixq_nncf.ir.export import compile_ir, export_ir, ir_size
from mixq_nncf.quant.probe import interval_parameters
from mixq_nncf.quant.sites import quantizer_modules, quantizer_sites
from mixq_nncf.quant.skips import skip_inputs
from mixq_nncf.config.plan import resolve_plan
from mixq_nncf.quant.checkpoint import load_quantized, save_quantized
from mixq_nncf.quant.ptq import quantize_from_config
from mixq_nncf.train.loop import train

SHAPE = (1, 3, 16, 16)


def _cfg(arch="msrresnet_x4", weights="int8", activations="int8", skips="int8", training=None):
    return parse_config({
        "model": {"arch": arch, "args": TINY, "weights": None},
        "data": {"calibration_samples": 4, "calibration_patch": 16},
        "compression": {"fully_quantized": {"weights": weights, "activations": activations, "skips": skips},
                        "initializer": {"fast_bias_correction": False}},
        "training": {"iterations": 0, "batch_size": 2, "patch_size": 32, "lr_g": 1e-3, "pixel_weight": 0.0,
                     "perceptual_weight": 0.0, "gan_weight": 0.0, "distill_weight": 0.0, "log_every": 1,
                     "checkpoint_every": 100, "device": "cpu", "milestones": [1000], **(training or {})}})


def _quantized(cfg, calibration):
    return quantize_from_config(cfg, calibration=calibration, fp32_model=tiny(cfg.model.arch))


@pytest.fixture(scope="module")
def a8w8(tmp_path_factory, calibration):
    """Each family fully quantized at a8w8 and exported once."""
    root = tmp_path_factory.mktemp("fqsr")
    out = {}
    for arch in FAMILIES:
        res = _quantized(_cfg(arch), calibration)
        xml = export_ir(res.model, root / f"{arch}.xml", example_input=torch.rand(*SHAPE))
        out[arch] = (res, xml)
    return out


@pytest.mark.parametrize("arch", FAMILIES)
def test_a8w8_runtime_has_no_fp32_conv_and_int8_additions(a8w8, arch):
    res, xml = a8w8[arch]
    audit = audit_runtime(xml, input_shape=SHAPE)
    assert audit.conv_fp32 == 0 and audit.conv_other == 0
    assert audit.conv_int8 == len(res.plan.layers)
    # every residual / long-skip / output addition: its inputs are i8/u8, or f32 holding values an int8 op
    # already rounded to the 8-bit grid; none is an unquantized fp32 tensor
    assert audit.adds >= 1
    assert audit.add_inputs_fp32 == 0, [a for a in audit.add_inputs if a.kind == "fp32"]
    for add in {a.add for a in audit.add_inputs if a.where == "eltwise"}:
        kinds = [a.kind for a in audit.add_inputs if a.add == add]
        assert "int8" in kinds, (add, kinds)
    for kind in ("concat", "pixel_shuffle", "interpolate"):
        for precision in audit.by_type.get(kind, {}):
            assert precision in ("i8", "u8") or kind == "interpolate", (kind, audit.by_type[kind])
    assert audit.precision_conversions <= 2  # the image input and the output, nothing in between


@pytest.mark.parametrize("arch", FAMILIES)
def test_skip_quantizers_exist_and_survive_save(arch, calibration, tmp_path):
    res = _quantized(_cfg(arch, skips="int6"), calibration)
    inputs = skip_inputs(res.model)
    assert inputs and all(t.quantizer is not None for t in inputs)
    adds = {t.op for t in inputs if t.op_type in ("add", "__add__", "__iadd__")}
    assert adds and set(res.plan.adds) == adds and set(res.plan.adds.values()) == {6}
    modules = quantizer_modules(res.model)
    sites = quantizer_sites(res.model)
    # a quantizer feeding only additions holds the skip bits; one shared with a conv keeps the conv's 8
    skip_only = [k for k, s in sites.items() if set(s.ops) and set(s.ops) <= adds]
    assert skip_only and all(modules[k].num_bits == 6 for k in skip_only)
    assert all(modules[k].num_bits == 8 for k, s in sites.items() if s.layers)
    path = save_quantized(res.model, tmp_path / "q.pt", arch=arch, args=TINY, plan=res.plan)
    back = load_quantized(path)
    assert back.plan.adds == res.plan.adds
    restored = quantizer_modules(back.model)
    assert {k: restored[k].num_bits for k in skip_only} == {k: 6 for k in skip_only}
    x = torch.rand(*SHAPE)
    with torch.no_grad():
        assert torch.allclose(back.model(x), res.model(x))


def test_learnable_intervals_move_including_skips(calibration, tmp_path):
    cfg = _cfg(training={"distill_weight": 1.0, "iterations": 4})
    res = _quantized(cfg, calibration)
    params = interval_parameters(res.model)
    assert params and all(p.requires_grad for p in params.values())
    # the optimizer sees them: train() builds it from model.parameters()
    ids = {id(p) for p in res.model.parameters()}
    assert all(id(p) in ids for p in params.values())
    before = {k: p.detach().clone() for k, p in params.items()}
    train(cfg, model=res.model, teacher=res.fp32_model, out_dir=tmp_path, plan=res.plan, progress=False)
    moved = [k for k, p in interval_parameters(res.model).items() if not torch.equal(p.detach(), before[k])]
    assert len(moved) >= len(before) // 2, (len(moved), len(before))
    skip_keys = {k for k, s in quantizer_sites(res.model).items() if any("add" in op for op in s.ops)}
    assert any(k.split("._")[0] in skip_keys or k.rsplit(".", 1)[0] in skip_keys for k in moved)


def test_intervals_get_their_own_learning_rate(calibration, tmp_path):
    """training.lr_quantizers moves the intervals far more than the weights' lr would, and leaves the weights' lr
    alone: the intervals travel >10x as far as at lr_g while the weights move the same."""
    def run(lr_quantizers, out):
        cfg = _cfg(training={"distill_weight": 1.0, "iterations": 3, "lr_g": 1e-5, "lr_quantizers": lr_quantizers})
        res = _quantized(cfg, calibration)
        q_before = {k: p.detach().clone() for k, p in interval_parameters(res.model).items()}
        w_before = {n: p.detach().clone() for n, p in res.model.named_parameters() if n.endswith("conv_first.weight")}
        train(cfg, model=res.model, teacher=res.fp32_model, out_dir=out, plan=res.plan, progress=False)
        q_move = sum(float((p.detach() - q_before[k]).abs().sum()) for k, p in interval_parameters(res.model).items())
        w_move = sum(float((p.detach() - w_before[n]).abs().sum()) for n, p in res.model.named_parameters()
                     if n in w_before)
        return q_move, w_move

    q_same, w_same = run(None, tmp_path / "a")
    q_own, w_own = run(1e-3, tmp_path / "b")
    assert q_own > 10 * q_same, (q_same, q_own)
    assert w_same > 0 and abs(w_own - w_same) < 0.5 * w_same, (w_same, w_own)


def test_quant_error_term_decreases_alone(calibration, tmp_path):
    cfg = _cfg(weights="int4", training={"quant_error_weight": 1.0, "iterations": 25, "lr_g": 3e-3})
    res = _quantized(cfg, calibration)
    seen = []
    train(cfg, model=res.model, teacher=None, out_dir=tmp_path, plan=res.plan, progress=False,
          on_step=lambda step, losses: seen.append(losses))
    assert all(set(s) == {"quant_error"} for s in seen)
    first = sum(s["quant_error"] for s in seen[:5]) / 5
    last = sum(s["quant_error"] for s in seen[-5:]) / 5
    assert last < 0.9 * first, (first, last)


def test_quant_error_needs_a_quantized_model(tmp_path):
    cfg = _cfg(training={"quant_error_weight": 1.0, "iterations": 1})
    with pytest.raises(MixqError, match="needs a quantized model"):
        train(cfg, model=tiny(), teacher=None, out_dir=tmp_path, progress=False)


def test_4bit_weights_stored_as_i4_and_run_on_int8_kernels(calibration, tmp_path):
    """OpenVINO stores 4-bit weights as i4 and runs those convs fp32; the default export widens the constants to
    i8 in the graph, so the .bin keeps i4 and the convs run int8 with the same outputs."""
    res8 = _quantized(_cfg(), calibration)
    res4 = _quantized(_cfg(weights="int4"), calibration)
    x = torch.rand(*SHAPE)
    xml8 = export_ir(res8.model, tmp_path / "w8.xml", example_input=x)
    native = export_ir(res4.model, tmp_path / "w4_native.xml", example_input=x, int4_weights="as_converted")
    kernels = export_ir(res4.model, tmp_path / "w4.xml", example_input=x)
    n = len(res4.plan.layers)
    size8, size4 = ir_size(xml8), ir_size(kernels)
    assert "i8" in size8.bytes_by_precision and "i4" in size4.bytes_by_precision
    assert "i8" not in size4.bytes_by_precision
    assert size4.bytes_by_precision["i4"] * 2 == pytest.approx(size8.bytes_by_precision["i8"], rel=0.01)
    assert ir_size(native).bytes_by_precision == size4.bytes_by_precision
    assert audit_runtime(native, input_shape=SHAPE).conv_fp32 == n  # no int4 conv kernel: fp32
    audit = audit_runtime(kernels, input_shape=SHAPE)
    assert audit.conv_int8 == n and audit.conv_fp32 == 0
    a = compile_ir(native)(x.numpy())[0]
    b = compile_ir(kernels)(x.numpy())[0]
    with torch.no_grad():
        t = res4.model(x).numpy()
    # same quantized model: the two IRs differ only where int8 accumulation flips an output rounding
    assert np.abs(a - b).mean() < 0.05 * np.abs(t - a).mean() + 1e-3


def test_fully_quantized_config_errors(calibration):
    with pytest.raises(ConfigError, match="fp32 contradicts the fully quantized mode"):
        parse_config({"compression": {"fully_quantized": {"skips": "fp32"}}})
    with pytest.raises(ConfigError, match="leaves no layer fp32"):
        parse_config({"compression": {"fully_quantized": {}, "ignored_scopes": ["conv_first"]}})
    cfg = parse_config({"compression": {"fully_quantized": {"weights": "int4"},
                                        "stages": {"reconstruction": {"bits": "fp32"}}}})
    with pytest.raises(ConfigError, match=r"layer conv_(hr|last) is set to fp32"):
        resolve_plan(tiny(), cfg.compression)
    plan = resolve_plan(tiny(), parse_config({"compression": {"fully_quantized": {"weights": "int4"},
                                                              "stages": {"feature_extraction": {"weights": 8}}}}).compression)
    assert plan.layers["conv_first"].weight_bits == 8 and plan.layers["conv_last"].weight_bits == 4
    assert all(p.act_bits == 8 for p in plan.layers.values())
