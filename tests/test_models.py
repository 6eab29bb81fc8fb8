import json
import re

import pytest
import torch

from mixq_nncf.cli import main
from mixq_nncf.config.schema import parse_config
from mixq_nncf.errors import CheckpointError
from mixq_nncf.models import EDSR, MSRResNet, RRDBNet
from mixq_nncf.models.detect import detect_checkpoint
from mixq_nncf.models import PRESETS, SRVGGNetCompact, build_generator, conv_layers, count_parameters, load_generator, stage_map
from mixq_nncf.train.discriminator import VGGStyleDiscriminator

REFERENCE_COUNTS = {"msrresnet_x4": 1_517_571, "rrdbnet_x4": 16_697_987, "edsr_m_x4": 1_517_571,
                    "edsr_l_x4": 43_089_923, "srvgg_compact_x4": 621_424, "realesr_general_x4v3": 1_213_296}


@pytest.mark.parametrize("name,count", REFERENCE_COUNTS.items())
def test_parameter_counts_match_basicsr(name, count):
    assert count_parameters(build_generator(name)) == count


def test_discriminator_parameter_count():
    assert count_parameters(VGGStyleDiscriminator(3, 64)) == 14_499_401


def test_discriminator_rejects_wrong_patch():
    d = VGGStyleDiscriminator(3, 8, input_size=32)
    assert d(torch.rand(2, 3, 32, 32)).shape == (2, 1)
    with pytest.raises(ValueError, match="patch_size"):
        d(torch.rand(2, 3, 64, 64))


def tiny_args(name: str) -> dict:
    """Small widths per family (the Compact generator counts convs, the others blocks)."""
    if PRESETS[name].arch is SRVGGNetCompact:
        return {"num_feat": 8, "num_conv": 2}
    return {"num_feat": 8, "num_block": 1}


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_stage_map_covers_every_conv_once(name):
    model = build_generator(name, num_feat=8)
    stages = stage_map(model)
    flat = [layer for layers in stages.values() for layer in layers]
    assert sorted(flat) == sorted(conv_layers(model))
    for stage in ("feature_extraction", "body", "upsampling", "reconstruction"):
        # a stage may hold no conv only where the generator names the ops that make it up
        assert stages[stage] or stage in type(model).STAGE_OPS, stage


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_forward_shape(name):
    model = build_generator(name, **tiny_args(name))
    x = torch.rand(1, 3, 12, 12)
    scale = PRESETS[name].scale
    assert model(x).shape == (1, 3, 12 * scale, 12 * scale)


def test_embedded_anime_weights_load_and_upscale(photo_lr):
    model = load_generator("realesrgan_x4plus_anime")
    lr = photo_lr[0]
    with torch.no_grad():
        sr = model(lr)
    bicubic = torch.nn.functional.interpolate(lr, scale_factor=4, mode="bicubic", align_corners=False)
    assert sr.shape == bicubic.shape
    assert -0.1 < float(sr.min()) and float(sr.max()) < 1.1
    # a real SR model stays close to the image content; random weights do not
    assert float((sr - bicubic).abs().mean()) < 0.06
    random_model = build_generator("realesrgan_x4plus_anime")
    with torch.no_grad():
        assert float((random_model(lr) - bicubic).abs().mean()) > 0.1


def test_embedded_weights_only_where_shipped():
    from mixq_nncf.errors import MissingFileError

    with pytest.raises(MissingFileError, match="no embedded weights"):
        load_generator("msrresnet_x4", weights="embedded")


def test_models_json(capsys):
    assert main(["models", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    for name, count in REFERENCE_COUNTS.items():
        assert rows[name]["parameters"] == count
    assert rows["msrresnet_x4"]["stages"]["reconstruction"] == ["conv_hr", "conv_last"]


# -- checkpoints recognised without an arch -------------------------------------------------------------------

def _old_esrgan(sd):
    out = {}
    for k, v in sd.items():
        k = re.sub(r"^body\.(\d+)\.rdb(\d)\.conv(\d)\.", r"RRDB_trunk.\1.RDB\2.conv\3.0.", k)
        for new, old in (("conv_body.", "trunk_conv."), ("conv_up1.", "upconv1."), ("conv_up2.", "upconv2."),
                         ("conv_hr.", "HRconv.")):
            k = k.replace(new, old)
        out[k] = v
    return out


def _old_mmsr(sd):
    return {re.sub(r"^body\.", "recon_trunk.", k).replace("conv_hr.", "HRconv."): v for k, v in sd.items()}


def _edsr_pytorch(sd, num_block):
    out = {"sub_mean.weight": torch.eye(3).view(3, 3, 1, 1), "add_mean.bias": torch.zeros(3)}
    for k, v in sd.items():
        k = re.sub(r"^body\.(\d+)\.conv1\.", r"body.\1.body.0.", k)
        k = re.sub(r"^body\.(\d+)\.conv2\.", r"body.\1.body.2.", k)
        k = k.replace("conv_first.", "head.0.").replace("conv_after_body.", f"body.{num_block}.")
        out[re.sub(r"^upsample\.", "tail.0.", k).replace("conv_last.", "tail.1.")] = v
    return out


def _params_ema_module(sd):
    return {"params_ema": {f"module.{k}": v for k, v in sd.items()}}


# (model built, layout writer, the preset detection must name)
DETECT_CASES = {
    "rrdbnet_x4_basicsr": (RRDBNet(scale=4, num_feat=16, num_block=3, num_grow_ch=8), dict, "rrdbnet_x4"),
    "rrdbnet_x2_unshuffle": (RRDBNet(scale=2, num_feat=8, num_block=2, num_grow_ch=4), _params_ema_module, "rrdbnet_x2"),
    "rrdbnet_x1_unshuffle": (RRDBNet(scale=1, num_feat=8, num_block=1, num_grow_ch=4), dict, "rrdbnet_x1"),
    "rrdbnet_x4_old_esrgan": (RRDBNet(scale=4, num_feat=8, num_block=2, num_grow_ch=8), _old_esrgan, "rrdbnet_x4"),
    "compact_x2": (SRVGGNetCompact(num_feat=8, num_conv=3, upscale=2), dict, "srvgg_compact_x2"),
    "compact_x4_params": (SRVGGNetCompact(num_feat=16, num_conv=5, upscale=4), lambda sd: {"params": sd},
                          "srvgg_compact_x4"),
    "msrresnet_x3": (MSRResNet(num_feat=8, num_block=2, upscale=3), dict, "msrresnet_x3"),
    "msrresnet_x4_old_mmsr": (MSRResNet(num_feat=16, num_block=3, upscale=4), _old_mmsr, "msrresnet_x4"),
    "edsr_x2_basicsr": (EDSR(num_feat=8, num_block=3, upscale=2), _params_ema_module, "edsr_m_x2"),
    "edsr_x3_edsr_pytorch": (EDSR(num_feat=16, num_block=2, upscale=3), lambda sd: _edsr_pytorch(sd, 2), "edsr_m_x3"),
}


@pytest.mark.parametrize("case", sorted(DETECT_CASES))
def test_checkpoint_is_recognised_without_arch(case, tmp_path):
    torch.manual_seed(1)
    source, layout, arch = DETECT_CASES[case]
    source = source.eval()
    path = tmp_path / "weights.pth"
    torch.save(layout(source.state_dict()), path)
    found = detect_checkpoint(path)
    assert found.arch == arch
    model = load_generator(None, None, str(path))
    x = torch.rand(1, 3, 12, 16)
    with torch.no_grad():
        assert torch.equal(model(x), source(x))
    cfg = parse_config({"model": {"weights": str(path)}})  # a config naming only the weights
    assert cfg.model.arch == arch and cfg.model.args == found.args


def test_safetensors_checkpoint_is_recognised(tmp_path):
    safetensors = pytest.importorskip("safetensors.torch")
    torch.manual_seed(2)
    source = SRVGGNetCompact(num_feat=8, num_conv=2, upscale=3).eval()
    path = tmp_path / "compact.safetensors"
    safetensors.save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    assert detect_checkpoint(path).args["num_conv"] == 2
    model = load_generator(None, None, str(path))
    x = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(model(x), source(x))


def test_unknown_checkpoint_names_its_keys(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"encoder.weight": torch.zeros(4, 3, 3, 3)}, path)
    with pytest.raises(CheckpointError, match=r"not a checkpoint of a supported generator.*encoder\.weight"):
        detect_checkpoint(path)
    with pytest.raises(CheckpointError, match="encoder.weight"):
        parse_config({"model": {"weights": str(path)}})


def test_compact_without_prelu_asks_for_the_activation(tmp_path):
    path = tmp_path / "relu.pth"
    torch.save(SRVGGNetCompact(num_feat=4, num_conv=1, act_type="relu").state_dict(), path)
    with pytest.raises(CheckpointError, match="act_type"):
        detect_checkpoint(path)
