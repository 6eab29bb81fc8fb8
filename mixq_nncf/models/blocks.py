"""Blocks shared by more than one generator (BasicSR module names)."""
from __future__ import annotations

import torch
from torch import nn

STAGE_NAMES = ("feature_extraction", "body", "upsampling", "reconstruction")


class ResidualBlockNoBN(nn.Module):
    """conv-ReLU-conv with identity skip; used by MSRResNet and EDSR.

    Args:
        num_feat: channels.
        res_scale: residual scaling (EDSR-L uses 0.1).
    """

    def __init__(self, num_feat: int = 64, res_scale: float = 1.0):
        super().__init__()
        self.res_scale = res_scale
        self.conv1 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv2 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(self.relu(self.conv1(x)))
        if self.res_scale != 1.0:
            out = out * self.res_scale
        return x + out


def make_layer(block: type[nn.Module], num: int, **kwargs) -> nn.Sequential:
    return nn.Sequential(*[block(**kwargs) for _ in range(num)])
