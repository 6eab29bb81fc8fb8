"""MSRResNet: the SRGAN generator without BN (Ledig et al., CVPR 2017; Wang et al., ESRGAN, 2018).

Module names follow BasicSR's srresnet_arch so official checkpoints load unchanged.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mixq_nncf.models.blocks import ResidualBlockNoBN, make_layer


class MSRResNet(nn.Module):
    """Args:
        num_in_ch / num_out_ch: image channels.
        num_feat: body width.
        num_block: residual blocks.
        upscale: 2, 3 or 4.
    """

    # Stage -> regexes over module names (full match). Non-conv ops of a stage (the
    # bilinear image skip belongs to reconstruction) are listed in STAGE_OPS.
    STAGES = {
        "feature_extraction": (r"conv_first",),
        "body": (r"body\.\d+\.conv[12]",),
        "upsampling": (r"upconv[12]",),
        "reconstruction": (r"conv_hr", r"conv_last"),
    }
    STAGE_OPS = {"reconstruction": ("bilinear image skip (interpolate + add)",), "body": ("residual adds",)}

    def __init__(self, num_in_ch: int = 3, num_out_ch: int = 3, num_feat: int = 64, num_block: int = 16,
                 upscale: int = 4):
        super().__init__()
        if upscale not in (2, 3, 4):
            raise ValueError(f"MSRResNet supports upscale 2, 3 or 4, got {upscale}")
        self.upscale = upscale
        self.conv_first = nn.Conv2d(num_in_ch, num_feat, 3, 1, 1)
        self.body = make_layer(ResidualBlockNoBN, num_block, num_feat=num_feat)
        if upscale == 4:
            self.upconv1 = nn.Conv2d(num_feat, num_feat * 4, 3, 1, 1)
            self.upconv2 = nn.Conv2d(num_feat, num_feat * 4, 3, 1, 1)
            self.pixel_shuffle = nn.PixelShuffle(2)
        else:
            self.upconv1 = nn.Conv2d(num_feat, num_feat * upscale * upscale, 3, 1, 1)
            self.pixel_shuffle = nn.PixelShuffle(upscale)
        self.conv_hr = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_last = nn.Conv2d(num_feat, num_out_ch, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(negative_slope=0.1)

    @property
    def scale(self) -> int:
        return self.upscale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.lrelu(self.conv_first(x))
        out = self.body(feat)
        out = self.lrelu(self.pixel_shuffle(self.upconv1(out)))
        if self.upscale == 4:
            out = self.lrelu(self.pixel_shuffle(self.upconv2(out)))
        out = self.conv_last(self.lrelu(self.conv_hr(out)))
        base = F.interpolate(x, scale_factor=self.upscale, mode="bilinear", align_corners=False)
        return out + base
