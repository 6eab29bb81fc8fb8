"""Per-layer float precision carried by the IR, the requested-vs-run audit, kernels and the honest baseline.

Every assertion holds on CPUs with and without bf16 units: what bf16 becomes is read from mixq_nncf.cpu."""
import json

import pytest
import torch

from mixq_nncf.config.plan import LayerPrecision, PrecisionPlan, resolve_plan
from mixq_nncf.errors import ConfigError
from mixq_nncf.config.schema import parse_config
from mixq_nncf.cpu import cpu_flags, has_bf16
from mixq_nncf.errors import IRError
from mixq_nncf.ir.audit import audit_markdown, audit_runtime
from mixq_nncf.ir.export import (
    export_ir,
    precision_config,
    read_ir,
    read_meta,
    verify_ir,
)
from mixq_nncf.ir.kernels import ISA_FAMILIES, isa_family, kernel_groups, kernel_summary
from mixq_nncf.ir.precision import (
    NO_BF16_NOTE,
    PRECISE_ATTRIBUTE,
    marked_in_model,
    marked_in_xml,
    requested_precisions,
)
from mixq_nncf.quant.ptq import quantize

MIXED = {"stages": {"feature_extraction": {"bits": 16}, "reconstruction": {"bits": 16}}}
HERE_BF16 = "bf16" if has_bf16() else "f32"  # what a bf16 request runs on this CPU


@pytest.fixture(scope="module")
def mixed(tmp_path_factory, calibration):
    from mixq_nncf.models import build_generator

    torch.manual_seed(0)
    model = build_generator("msrresnet_x4", num_feat=8, num_block=1).eval()
    cfg = parse_config({"compression": MIXED})
    q = quantize(model, resolve_plan(model, cfg.compression), calibration, compression=cfg.compression)
    out = tmp_path_factory.mktemp("precision")
    plan = {"conv_first": "f32", "conv_hr": "bf16"}  # conv_last unnamed: f32
    return {"model": q, "example": calibration[0],
            "marked": export_ir(q, out / "marked.xml", example_input=calibration[0], float_precision=plan),
            "plain": export_ir(q, out / "plain.xml", example_input=calibration[0]),
            "bits": {"conv_first": 16, "body.0.conv1": 8, "body.0.conv2": 8, "upconv1": 8, "upconv2": 8,
                     "conv_hr": 16, "conv_last": 16}, "plan": plan}


def test_f32_marks_are_written_into_the_xml_and_read_back(mixed):
    xml = mixed["marked"]
    assert sorted(marked_in_xml(xml)) == ["conv_first", "conv_last"]  # conv_hr asked bf16: no mark
    assert sorted(marked_in_model(read_ir(xml))) == ["conv_first", "conv_last"]
    text = xml.read_text()
    layer = text[text.index('name="__module.conv_first/aten::_convolution/Convolution"'):]
    assert PRECISE_ATTRIBUTE in layer[:layer.index("</layer>")]
    verify_ir(xml)  # the sidecar hashes are those of the marked .xml
    meta = read_meta(xml)
    assert meta["float_precision"] == {"conv_first": "f32", "conv_hr": "bf16", "conv_last": "f32"}
    assert meta["deployment"]["why"] == "no hint: per-layer precision is in the IR"
    assert meta["deployment"]["compile_config"] == {} and meta["deployment"]["benchmark_app"] == ""
    ovms = json.loads(xml.with_suffix(".ovms.json").read_text())
    assert ovms["model_config_list"][0]["config"]["plugin_config"] == {}
    assert precision_config(xml) == {}  # compiled with the plugin's defaults, as deployed


def test_ir_without_marks_keeps_the_f32_hint(mixed):
    xml = mixed["plain"]
    assert marked_in_xml(xml) == [] and PRECISE_ATTRIBUTE not in xml.read_text()
    assert read_meta(xml)["deployment"]["compile_config"] == {"INFERENCE_PRECISION_HINT": "f32"}
    assert read_meta(xml)["float_precision"] is None
    assert precision_config(xml) == {"INFERENCE_PRECISION_HINT": "f32"}
    assert precision_config(xml, "default") == {}


def test_ir_whose_plan_asks_no_bf16_keeps_its_marks_and_the_f32_hint(mixed, tmp_path):
    """Marks cannot keep what int8 convs output f32 under the bf16 default; with nothing planned bf16 the f32 hint
    costs nothing the plan wanted, so the IR is deployed with it."""
    xml = export_ir(mixed["model"], tmp_path / "f32.xml", example_input=mixed["example"],
                    float_precision={"conv_hr": "f32"})
    assert sorted(marked_in_xml(xml)) == ["conv_first", "conv_hr", "conv_last"]
    meta = read_meta(xml)
    assert meta["float_precision"] == {"conv_first": "f32", "conv_hr": "f32", "conv_last": "f32"}
    assert meta["deployment"]["compile_config"] == {"INFERENCE_PRECISION_HINT": "f32"}
    assert precision_config(xml) == {"INFERENCE_PRECISION_HINT": "f32"}


def test_float_precision_names_must_be_float_convs(mixed, tmp_path):
    with pytest.raises(IRError, match=r"body\.0\.conv1, which are not float convolutions"):
        export_ir(mixed["model"], tmp_path / "x.xml", example_input=mixed["example"],
                  float_precision={"body.0.conv1": "f32"})
    with pytest.raises(IRError, match="must be 'f32' or 'bf16'"):
        export_ir(mixed["model"], tmp_path / "x.xml", example_input=mixed["example"],
                  float_precision={"conv_first": "fp16"})
    assert not (tmp_path / "x.xml").exists()


def test_audit_reads_back_requested_vs_run_for_this_cpu(mixed):
    requested = requested_precisions(mixed["bits"], mixed["plan"])
    assert requested == {"conv_first": "f32", "body.0.conv1": "int8", "body.0.conv2": "int8", "upconv1": "int8",
                         "upconv2": "int8", "conv_hr": "bf16", "conv_last": "f32"}
    audit = audit_runtime(mixed["marked"], (1, 3, 16, 16), requested=requested)
    assert audit.hint is None and audit.default_precision == HERE_BF16
    rows = {r.module: r for r in audit.layers}
    assert {m: r.ran for m, r in rows.items()} == {
        "conv_first": "f32", "body.0.conv1": "int8", "body.0.conv2": "int8", "upconv1": "int8", "upconv2": "int8",
        "conv_hr": HERE_BF16, "conv_last": "f32"}
    assert audit.mismatches == []
    assert (NO_BF16_NOTE in audit.notes) == (not has_bf16()) == (rows["conv_hr"].note == NO_BF16_NOTE)
    md = audit_markdown(audit)
    assert "| conv_hr | bf16 | " + HERE_BF16 + " | " + HERE_BF16 + " |" in md
    # the same IR under the whole-model f32 hint: the bf16 request is lost where bf16 exists, and only there
    hinted = audit_runtime(mixed["marked"], (1, 3, 16, 16), requested=requested, precision="f32")
    assert hinted.hint == "f32" and bool(hinted.mismatches) == has_bf16()
    # an IR without marks under the plugin's default: the f32 requests are lost where bf16 exists
    plain = audit_runtime(mixed["plain"], (1, 3, 16, 16), requested=requested, precision="default")
    assert sorted(m.split(":")[0] for m in plain.mismatches) == (["conv_first", "conv_last"] if has_bf16() else [])


def test_bf16_from_the_config_runs_as_planned(calibration, tmp_path):
    """'bf16' per stage/scope: unquantized, exported without the f32 mark, audited as bf16 (f32 without bf16 units);
    'int16' and 'fp32' layers keep the mark and run f32 under any hint."""
    from mixq_nncf.models import build_generator

    torch.manual_seed(0)
    model = build_generator("msrresnet_x4", num_feat=8, num_block=1).eval()
    cfg = parse_config({"compression": {
        "stages": {"feature_extraction": {"bits": "bf16"}, "reconstruction": {"bits": "int16"}},
        "scope_overrides": {"conv_last": {"bits": "fp32"}, "upconv2": {"weights": "bf16", "activations": "bf16"}}}})
    plan = resolve_plan(model, cfg.compression)
    assert plan.layers["conv_first"] == LayerPrecision(None, None, "bf16") and plan.layers["conv_first"].name == "bf16"
    assert plan.layers["upconv2"].name == "bf16" and plan.layers["conv_hr"] == LayerPrecision(16, 16, "f32")
    assert plan.float_kinds() == {"conv_first": "bf16", "upconv2": "bf16", "conv_hr": "f32", "conv_last": "f32"}
    assert PrecisionPlan.from_dict(plan.to_dict()) == plan
    assert plan.counts()["w:bf16 a:bf16"] == 2
    q = quantize(model, plan, calibration, compression=cfg.compression)
    xml = export_ir(q, tmp_path / "bf16.xml", example_input=calibration[0], float_precision=plan.float_kinds())
    assert sorted(marked_in_xml(xml)) == ["conv_hr", "conv_last"]
    requested = {n: "int8" if p.runs_int8 else p.float_kind for n, p in plan.layers.items()}
    audit = audit_runtime(xml, (1, 3, 16, 16), requested=requested)
    ran = {r.module: r.ran for r in audit.layers}
    assert ran == {"conv_first": HERE_BF16, "body.0.conv1": "int8", "body.0.conv2": "int8", "upconv1": "int8",
                   "upconv2": HERE_BF16, "conv_hr": "f32", "conv_last": "f32"}
    assert audit.mismatches == [] and (NO_BF16_NOTE in audit.notes) == (not has_bf16())


@pytest.mark.parametrize("compression,message", [
    ({"scope_overrides": {"conv_first": {"weights": "bf16", "bits": "int8"}}}, None),
    ({"fully_quantized": {"weights": "bf16"}}, "contradicts the fully quantized mode"),
])
def test_bf16_cannot_be_mixed_with_quantized_weights(compression, message):
    from mixq_nncf.models import build_generator

    model = build_generator("msrresnet_x4", num_feat=8, num_block=1).eval()
    if message is None:  # weights say bf16 and win over bits: the layer is unquantized bf16, inputs int8
        plan = resolve_plan(model, parse_config({"compression": compression}).compression)
        assert plan.layers["conv_first"] == LayerPrecision(None, 8, "bf16")
        with pytest.raises(ConfigError, match="bf16 leaves a layer's weights unquantized"):
            LayerPrecision(8, 8, "bf16")
        return
    with pytest.raises(ConfigError, match=message):
        resolve_plan(model, parse_config({"compression": compression}).compression)


def test_kernel_summary_names_the_isa():
    assert isa_family("brgconv_avx512_amx_i8") == "AMX"
    assert isa_family("brgconv_avx512_f32") == "AVX-512"
    assert isa_family("jit_avx2_I8") == "AVX2" and isa_family("ref_i8") == "ref"
    groups = kernel_groups([("u8", "brgconv_avx512_amx_i8")] * 3 + [("f32", "brgconv_avx512_f32")])
    assert kernel_summary(groups) == "3 conv AMX int8 (brgconv_avx512_amx_i8), 1 conv AVX-512 f32 (brgconv_avx512_f32)"


def test_audit_kernels_match_this_cpu(mixed):
    audit = audit_runtime(mixed["plain"], (1, 3, 16, 16))
    assert sum(g.count for g in audit.kernels) == 7
    assert {g.precision for g in audit.kernels} == {"int8", "f32"}
    labels = {label for _, label in ISA_FAMILIES}
    assert all(g.isa in labels for g in audit.kernels)
    wide = {"AMX", "AVX-512", "AVX-512 VNNI"}
    if "amx_int8" in cpu_flags():
        assert {g.isa for g in audit.kernels if g.precision == "int8"} == {"AMX"}
    if "avx512f" not in cpu_flags():
        assert not wide & {g.isa for g in audit.kernels}
    assert audit.kernel_text.startswith(f"{audit.kernels[0].count} conv ")


def test_baseline_leads_the_benchmark(mixed, tmp_path):
    from mixq_nncf.ir.bench import (
        BASELINE_DEFAULT,
        BASELINE_F32,
        Target,
        baseline_targets,
        benchmark,
        machine_info,
        speedups,
        stats_markdown,
    )
    from mixq_nncf.models import build_generator

    fp32 = export_ir(build_generator("msrresnet_x4", num_feat=8, num_block=1).eval(), tmp_path / "fp32.xml",
                     example_input=mixed["example"])
    stats = benchmark(baseline_targets(fp32) + [Target("mixed", "openvino", mixed["marked"])], input_size=(16, 16),
                      iterations=3, warmup=1, progress=False)
    ratios = speedups(stats)
    by = {s.name: s for s in stats}
    assert ratios["mixed"][0] == pytest.approx(by[BASELINE_DEFAULT].median_ms / by["mixed"].median_ms)
    assert ratios["mixed"][1] == pytest.approx(by[BASELINE_F32].median_ms / by["mixed"].median_ms)
    assert "int8" in by["mixed"].kernels and "int8" not in by[BASELINE_F32].kernels
    machine = machine_info()
    assert machine.default_precision == ("bf16" if has_bf16() else "f32")
    assert machine.amx == bool({"amx_int8", "amx_bf16"} & cpu_flags())
    md = stats_markdown(stats, None, machine)
    assert f"| target | speed-up vs fp32 IR under OpenVINO defaults ({machine.default_precision} on this CPU" in md
    assert machine.units in md and by["mixed"].kernels in md


def test_paired_ratio_runs_both_modes(mixed):
    from mixq_nncf.ir.paired import paired_ratio

    for mode in ("latency", "throughput"):
        r = paired_ratio(mixed["plain"], mixed["marked"], shape=(1, 3, 16, 16), mode=mode, rounds=4, warmup=1,
                         batch=2)
        assert r.mode == mode and r.rounds == 4 and r.ratio_q1 <= r.ratio_median <= r.ratio_q3
        assert r.base_ms > 0 and r.other_ms > 0 and "int8" in r.other_kernels
        assert r.images_per_round == (2 if mode == "throughput" else 1)


def test_report_leads_with_the_default_baseline_and_says_what_bf16_becomes():
    from mixq_nncf.eval.report import render_markdown

    report = {"machine": {"flags": [], "default_precision": "f32", "units": "AMX: no"},
              "baselines": {"default": {"latency_median_ms": 40.0, "precision": "f32"},
                            "f32_hint": {"latency_median_ms": 50.0}},
              "variants": {"mixed": {"latency_median_ms": 10.0, "kernels": "7 conv AVX2 int8 (jit_avx2_I8)",
                                     "float_precision": {"conv_hr": "bf16", "conv_first": "f32"},
                                     "precision_check": {"mismatches": ["conv_first: f32 requested, runs bf16"]}}}}
    md = render_markdown(report)
    assert "| variant | speed-up vs OV fp32 IR, defaults (f32 here) | vs OV fp32 IR, f32 hint |" in md
    assert "| mixed | 4.00x | 5.00x |" in md
    assert f"`mixed`: {NO_BF16_NOTE}: conv_hr." in md
    assert "7 conv AVX2 int8 (jit_avx2_I8)" in md and "conv_first: f32 requested, runs bf16" in md
    report["machine"]["default_precision"] = "bf16"
    assert NO_BF16_NOTE not in render_markdown(report)


def test_every_conv_keeps_its_module_name_in_the_ir(calibration, tmp_path):
    """RRDBNet scales conv5's output by 0.2; OpenVINO folds the scale into the weights and the conv takes the
    scale's name. The export names it back, so marks and the audit reach every conv."""
    import re

    from mixq_nncf.models import build_generator

    torch.manual_seed(0)
    model = build_generator("rrdbnet_x4", num_feat=8, num_block=1, num_grow_ch=8).eval()
    convs = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)]
    assert any(n.endswith("conv5") for n in convs)
    cfg = parse_config({"compression": {"scope_overrides": {"{re}.*conv5": {"bits": "fp32"}}}})
    plan = resolve_plan(model, cfg.compression)
    q = quantize(model, plan, calibration, compression=cfg.compression)
    xml = export_ir(q, tmp_path / "rrdb.xml", example_input=calibration[0], float_precision=plan.float_kinds())
    named = re.findall(r'name="__module\.([\w.]+?)/aten::_?convolution/Convolution" type="Convolution"',
                       xml.read_text())
    assert sorted(named) == sorted(convs)
    assert sorted(marked_in_xml(xml)) == sorted(n for n in convs if n.endswith("conv5"))
    requested = {n: "int8" if p.runs_int8 else p.float_kind for n, p in plan.layers.items()}
    audit = audit_runtime(xml, (1, 3, 16, 16), requested=requested)
    assert audit.mismatches == [] and {r.module for r in audit.layers} == set(convs)
