import json

import pytest
import torch

from mixq_nncf.cli import main
from mixq_nncf.models import PRESETS, build_generator, conv_layers, count_parameters, load_generator, stage_map
from mixq_nncf.models.discriminator import VGGStyleDiscriminator

REFERENCE_COUNTS = {"msrresnet_x4": 1_517_571, "rrdbnet_x4": 16_697_987, "edsr_m_x4": 1_517_571,
                    "edsr_l_x4": 43_089_923}


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


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_stage_map_covers_every_conv_once(name):
    model = build_generator(name, **({"num_feat": 8} if "edsr" in name or "msr" in name else {"num_feat": 8}))
    stages = stage_map(model)
    flat = [layer for layers in stages.values() for layer in layers]
    assert sorted(flat) == sorted(conv_layers(model))
    assert all(stages[s] for s in ("feature_extraction", "body", "upsampling", "reconstruction"))


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_forward_shape(name):
    model = build_generator(name, num_feat=8, num_block=1)
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
