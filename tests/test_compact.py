"""SRVGGNetCompact (Real-ESRGAN Compact) and the embedded realesr-animevideov3 weights."""
import pytest
import torch
import torch.nn.functional as F

from mixq_nncf.errors import CheckpointError
from mixq_nncf.models import build_generator, load_generator, stage_map
from mixq_nncf.models.ncnn import find_embedded, ncnn_to_state_dict
from mixq_nncf.models.srvgg import SRVGGNetCompact


def test_module_names_follow_real_esrgan():
    sd = build_generator("srvgg_compact_x4").state_dict()
    assert tuple(sd["body.0.weight"].shape) == (64, 3, 3, 3)
    assert tuple(sd["body.1.weight"].shape) == (64,)  # PReLU slopes, one per channel
    assert tuple(sd["body.2.weight"].shape) == (64, 64, 3, 3)
    assert tuple(sd["body.34.weight"].shape) == (48, 64, 3, 3)
    assert len([k for k in sd if k.endswith(".bias")]) == 18
    assert "body.35.weight" not in sd


def test_stage_map_of_compact():
    stages = stage_map(SRVGGNetCompact(num_feat=8, num_conv=5, upscale=2))
    assert stages == {"feature_extraction": ["body.0"], "body": [f"body.{2 * i}" for i in range(1, 6)],
                      "upsampling": ["body.12"], "reconstruction": []}


def test_compact_adds_nearest_upsampled_input():
    model = SRVGGNetCompact(num_feat=4, num_conv=1, upscale=3).eval()
    for conv in (model.body[0], model.body[2], model.body[4]):
        torch.nn.init.zeros_(conv.weight)
        torch.nn.init.zeros_(conv.bias)
    x = torch.rand(1, 3, 5, 7)
    with torch.no_grad():
        assert torch.equal(model(x), F.interpolate(x, scale_factor=3, mode="nearest"))


@pytest.fixture(scope="module")
def anime_x4():
    return load_generator("realesr_animevideov3_x4")


def test_embedded_animevideov3_upscales_like_a_trained_model(anime_x4):
    # a trained generator keeps a flat image flat; random weights (seeded) add an offset of their own
    torch.manual_seed(0)
    random_model = build_generator("realesr_animevideov3_x4").eval()
    for value in (0.2, 0.5, 0.8):
        flat = torch.full((1, 3, 16, 16), value)
        with torch.no_grad():
            assert float((anime_x4(flat) - value)[..., 8:-8, 8:-8].abs().max()) < 0.03
            assert float((random_model(flat) - value)[..., 8:-8, 8:-8].abs().max()) > 0.04
    slopes = anime_x4.body[1].weight
    assert not torch.allclose(slopes, torch.full_like(slopes, 0.25))  # PReLU slopes read, not PyTorch's init


@pytest.mark.parametrize("scale", [2, 3])
def test_animevideov3_x2_x3_are_x4_then_bicubic(anime_x4, photo_lr, scale):
    model = load_generator(f"realesr_animevideov3_x{scale}")
    assert model.scale == scale
    lr = photo_lr[1]
    with torch.no_grad():
        expected = F.interpolate(anime_x4(lr), scale_factor=scale / 4, mode="bicubic", align_corners=False)
        out = model(lr)
    assert out.shape[-2:] == (lr.shape[-2] * scale, lr.shape[-1] * scale)
    assert torch.allclose(out, expected, atol=1e-6)


def test_ncnn_scale_mismatch_is_named(anime_x4):
    param, binf = find_embedded("realesr-animevideov3-x2")
    with pytest.raises(CheckpointError, match="bicubic"):
        ncnn_to_state_dict(param, binf, anime_x4)
    with pytest.raises(CheckpointError, match="PReLU"):
        ncnn_to_state_dict(param, binf, build_generator("realesrgan_x4plus_anime"))


def test_shipped_compact_config_resolves_a_plan():
    from pathlib import Path

    from mixq_nncf.config.files import load_config
    from mixq_nncf.config.plan import resolve_plan

    cfg = load_config(Path(__file__).parents[1] / "configs" / "compact" / "animevideov3_x4.json")
    assert cfg.model.arch == "realesr_animevideov3_x4" and cfg.compression.overflow_fix == "auto"
    model = build_generator(cfg.model.arch)
    plan = resolve_plan(model, cfg.compression, tuple(cfg.input_info.range))
    assert len(plan.layers) == 18
    assert set(cfg.variants) == {"fp32", "ptq_int8", "ptq_mixed", "allocated"}


def test_per_layer_bits_reach_compact_convs(calibration, tmp_path):
    """The plan's 16-bit first and last convs get 16-bit weight quantizers and export as float convolutions."""
    from mixq_nncf.config.plan import resolve_plan
    from mixq_nncf.config.schema import parse_config
    from mixq_nncf.ir.export import export_ir, read_meta
    from mixq_nncf.quant.ptq import quantize
    from mixq_nncf.quant.table import quantizer_table

    torch.manual_seed(0)
    model = SRVGGNetCompact(num_feat=8, num_conv=3, upscale=4).eval()
    cfg = parse_config({"compression": {"stages": {"feature_extraction": {"bits": 16}, "upsampling": {"bits": 16}}}})
    q = quantize(model, resolve_plan(model, cfg.compression), calibration[:4], compression=cfg.compression)
    weight_bits = {r.layers[0]: r.bits for r in quantizer_table(q) if r.kind == "weight" and r.layers}
    assert weight_bits == {"body.0": 16, "body.2": 8, "body.4": 8, "body.6": 8, "body.8": 16}
    xml = export_ir(q, tmp_path / "m.xml", example_input=calibration[0],
                    float_precision={"body.0": "f32", "body.8": "f32"})
    assert read_meta(xml)["float_precision"] == {"body.0": "f32", "body.8": "f32"}


class _ModuleListCompact(SRVGGNetCompact):
    """Real-ESRGAN's own forward: the ModuleList's convs are called from the top-level module."""

    def forward(self, x):
        out = x
        for layer in self.body:
            out = layer(out)
        return self.upsampler(out) + F.interpolate(x, scale_factor=self.upscale, mode="nearest")


def test_a_plan_layer_no_quantizer_serves_is_named(calibration):
    """NNCF names no module for convs called from outside their parent: apply_plan refuses instead of silently
    leaving them at 8 bits."""
    from mixq_nncf.config.plan import resolve_plan
    from mixq_nncf.config.schema import parse_config
    from mixq_nncf.errors import ScopeError
    from mixq_nncf.quant.ptq import quantize

    model = _ModuleListCompact(num_feat=8, num_conv=2, upscale=4).eval()
    cfg = parse_config({"compression": {"stages": {"feature_extraction": {"bits": 16}}}})
    with pytest.raises(ScopeError, match=r"body\.0, body\.2, body\.4, body\.6 .*nn\.Sequential"):
        quantize(model, resolve_plan(model, cfg.compression), calibration[:2], compression=cfg.compression)
