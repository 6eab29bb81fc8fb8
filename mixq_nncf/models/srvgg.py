"""SRVGGNetCompact: Real-ESRGAN's Compact generator (Wang et al., Real-ESRGAN, ICCV-W 2021).

A plain conv stack on the LR grid, one pixel shuffle at the end and the nearest-upsampled input added back: no
convolution runs at HR resolution, which is why it is the model people run on CPUs and for video
(realesr-animevideov3, realesr-general-x4v3). Module names follow Real-ESRGAN's srvgg_arch (``body.N``, convs at
even indices, activations at odd ones) so official .pth files load strictly.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

ACTIVATIONS = ("prelu", "relu", "leakyrelu")


def _activation(act_type: str, num_feat: int) -> nn.Module:
    if act_type == "prelu":
        return nn.PReLU(num_parameters=num_feat)
    if act_type == "relu":
        return nn.ReLU()
    return nn.LeakyReLU(negative_slope=0.1)


class SRVGGNetCompact(nn.Module):
    """Args:
        num_in_ch / num_out_ch: image channels.
        num_feat: width of every body conv. num_conv: body convs after the first one (16 for animevideov3,
            32 for realesr-general-x4v3).
        upscale: the network's own factor (pixel shuffle and the nearest image skip).
        act_type: 'prelu' (every published checkpoint), 'relu' or 'leakyrelu' (slope 0.1).
        out_scale: if set (< upscale), the output is resized bicubic to out_scale x the input, as
            realesr-animevideov3 x2 / x3 do (the x4 network followed by a 0.5 / 0.75 resize).
    """

    STAGE_OPS = {"upsampling": ("pixel shuffle",), "reconstruction": ("nearest image skip (interpolate + add)",
                                                                      "bicubic output resize (out_scale)")}

    def __init__(self, num_in_ch: int = 3, num_out_ch: int = 3, num_feat: int = 64, num_conv: int = 16,
                 upscale: int = 4, act_type: str = "prelu", out_scale: int | None = None):
        super().__init__()
        if act_type not in ACTIVATIONS:
            raise ValueError(f"SRVGGNetCompact act_type must be one of {', '.join(ACTIVATIONS)}, got {act_type!r}")
        if upscale < 1 or num_conv < 0:
            raise ValueError(f"SRVGGNetCompact needs upscale >= 1 and num_conv >= 0, got {upscale}, {num_conv}")
        if out_scale is not None and not 1 <= out_scale <= upscale:
            raise ValueError(f"SRVGGNetCompact out_scale must be between 1 and upscale {upscale}, got {out_scale}")
        self.upscale = upscale
        self.num_conv = num_conv
        self.out_scale = out_scale if out_scale != upscale else None
        # a Sequential (Real-ESRGAN's is a ModuleList, same state-dict keys): NNCF names an op by the chain of
        # modules *called* above it, and a ModuleList is never called, so its convs would be anonymous
        # ('/conv2d/0') and no per-layer precision could reach them
        layers = [nn.Conv2d(num_in_ch, num_feat, 3, 1, 1), _activation(act_type, num_feat)]
        for _ in range(num_conv):
            layers += [nn.Conv2d(num_feat, num_feat, 3, 1, 1), _activation(act_type, num_feat)]
        layers.append(nn.Conv2d(num_feat, num_out_ch * upscale * upscale, 3, 1, 1))
        self.body = nn.Sequential(*layers)
        self.upsampler = nn.PixelShuffle(upscale)

    @property
    def STAGES(self) -> dict[str, tuple[str, ...]]:
        """The last conv's index depends on num_conv, so the stage map is built per instance."""
        last = 2 * self.num_conv + 2
        return {
            "feature_extraction": (r"body\.0",),
            "body": tuple(rf"body\.{2 * i}" for i in range(1, self.num_conv + 1)),
            "upsampling": (rf"body\.{last}",),
            "reconstruction": (),
        }

    @property
    def scale(self) -> int:
        return self.out_scale or self.upscale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.upsampler(self.body(x)) + F.interpolate(x, scale_factor=self.upscale, mode="nearest")
        if self.out_scale is not None:
            out = F.interpolate(out, scale_factor=self.out_scale / self.upscale, mode="bicubic", align_corners=False)
        return out
