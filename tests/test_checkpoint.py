import re

import pytest
import torch

from mixq_nncf.errors import CheckpointError
from mixq_nncf.models import build_generator
from mixq_nncf.models.checkpoint import load_checkpoint


def _old_esrgan(k):
    k = re.sub(r"^body\.(\d+)\.rdb(\d)\.conv(\d)\.", r"RRDB_trunk.\1.RDB\2.conv\3.0.", k)
    return (k.replace("conv_body.", "trunk_conv.").replace("conv_up1.", "upconv1.").replace("conv_up2.", "upconv2.")
            .replace("conv_hr.", "HRconv."))


def _old_mmsr(k):
    return re.sub(r"^body\.(\d+)\.", r"recon_trunk.\1.", k).replace("conv_hr.", "HRconv.")


def _edsr_pytorch(k, n):
    k = k.replace("conv_first.", "head.0.").replace("conv_after_body.", f"body.{n}.")
    k = re.sub(r"^body\.(\d+)\.conv1\.", r"body.\1.body.0.", k)
    k = re.sub(r"^body\.(\d+)\.conv2\.", r"body.\1.body.2.", k)
    return re.sub(r"^upsample\.(\d+)\.", r"tail.0.\1.", k).replace("conv_last.", "tail.1.")


LAYOUTS = {
    "raw": ("msrresnet_x4", lambda sd: sd),
    "params": ("msrresnet_x4", lambda sd: {"params": sd}),
    "params_ema": ("msrresnet_x4", lambda sd: {"params": {k: v * 0 for k, v in sd.items()}, "params_ema": sd}),
    "module_prefix": ("rrdbnet_x4", lambda sd: {f"module.{k}": v for k, v in sd.items()}),
    "old_esrgan": ("rrdbnet_x4", lambda sd: {_old_esrgan(k): v for k, v in sd.items()}),
    "old_mmsr": ("msrresnet_x4", lambda sd: {_old_mmsr(k): v for k, v in sd.items()}),
    "edsr_pytorch": ("edsr_m_x4", lambda sd: {**{_edsr_pytorch(k, 2): v for k, v in sd.items()},
                                              "sub_mean.weight": torch.eye(3).view(3, 3, 1, 1)}),
}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_layout_loads_to_identical_outputs(layout, tmp_path):
    arch, wrap = LAYOUTS[layout]
    torch.manual_seed(1)
    src = build_generator(arch, num_feat=8, num_block=2).eval()
    path = tmp_path / f"{layout}.pth"
    torch.save(wrap(src.state_dict()), path)
    dst = load_checkpoint(build_generator(arch, num_feat=8, num_block=2), path).eval()
    x = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(src(x), dst(x))


def test_wrong_architecture_lists_keys_and_shapes(tmp_path):
    path = tmp_path / "rrdb.pth"
    torch.save({"params": build_generator("rrdbnet_x4", num_feat=8, num_block=1).state_dict()}, path)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(build_generator("msrresnet_x4", num_feat=8, num_block=1), path)
    msg = str(err.value)
    assert "missing keys" in msg and "body.0.conv1.weight" in msg
    assert "unexpected keys" in msg and "body.0.rdb1.conv1.weight" in msg
    assert str(path) in msg


def test_shape_mismatch_is_named(tmp_path):
    path = tmp_path / "wide.pth"
    torch.save(build_generator("msrresnet_x4", num_feat=16, num_block=1).state_dict(), path)
    with pytest.raises(CheckpointError, match=r"shape differences: conv_first.weight: checkpoint \(16, 3, 3, 3\)"):
        load_checkpoint(build_generator("msrresnet_x4", num_feat=8, num_block=1), path)


def test_missing_key_is_not_loaded_silently(tmp_path):
    sd = build_generator("msrresnet_x4", num_feat=8, num_block=1).state_dict()
    sd.pop("conv_last.bias")
    path = tmp_path / "partial.pth"
    torch.save(sd, path)
    with pytest.raises(CheckpointError, match="1 missing keys: conv_last.bias"):
        load_checkpoint(build_generator("msrresnet_x4", num_feat=8, num_block=1), path)


def test_unreadable_file(tmp_path):
    path = tmp_path / "junk.pth"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable torch checkpoint"):
        load_checkpoint(build_generator("msrresnet_x4", num_feat=8, num_block=1), path)
