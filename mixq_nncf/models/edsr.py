"""EDSR: Enhanced Deep Residual Networks (Lim et al., CVPR-W 2017).

Module names follow BasicSR's edsr_arch so official checkpoints load unchanged.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from mixq_nncf.models.blocks import ResidualBlockNoBN, make_layer


def _upsample(scale: int, num_feat: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    if scale & (scale - 1) == 0:
        for _ in range(int(math.log2(scale))):
            layers += [nn.Conv2d(num_feat, 4 * num_feat, 3, 1, 1), nn.PixelShuffle(2)]
    elif scale == 3:
        layers += [nn.Conv2d(num_feat, 9 * num_feat, 3, 1, 1), nn.PixelShuffle(3)]
    else:
        raise ValueError(f"EDSR supports scale 2^n or 3, got {scale}")
    return nn.Sequential(*layers)


class EDSR(nn.Module):
    """Args:
        num_feat / num_block: 64/16 for EDSR-M (baseline), 256/32 for EDSR-L.
        upscale: 2, 3 or 4. res_scale: 1 for M, 0.1 for L.
        img_range / rgb_mean: the DIV2K mean shift, applied inside the model.
    """

    STAGES = {
        "feature_extraction": (r"conv_first",),
        "body": (r"body\.\d+\.conv[12]", r"conv_after_body"),
        "upsampling": (r"upsample\.\d+",),
        "reconstruction": (r"conv_last",),
    }
    STAGE_OPS = {"feature_extraction": ("mean shift",), "body": ("residual adds", "long skip add"),
                 "upsampling": ("pixel shuffle",)}

    def __init__(self, num_in_ch: int = 3, num_out_ch: int = 3, num_feat: int = 64, num_block: int = 16,
                 upscale: int = 4, res_scale: float = 1.0, img_range: float = 255.0,
                 rgb_mean: tuple[float, float, float] = (0.4488, 0.4371, 0.4040)):
        super().__init__()
        self.upscale = upscale
        self.img_range = img_range
        self.register_buffer("mean", torch.tensor(rgb_mean).view(1, 3, 1, 1), persistent=False)
        self.conv_first = nn.Conv2d(num_in_ch, num_feat, 3, 1, 1)
        self.body = make_layer(ResidualBlockNoBN, num_block, num_feat=num_feat, res_scale=res_scale)
        self.conv_after_body = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.upsample = _upsample(upscale, num_feat)
        self.conv_last = nn.Conv2d(num_feat, num_out_ch, 3, 1, 1)

    @property
    def scale(self) -> int:
        return self.upscale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.mean) * self.img_range
        x = self.conv_first(x)
        res = self.conv_after_body(self.body(x)) + x
        x = self.conv_last(self.upsample(res))
        return x / self.img_range + self.mean
