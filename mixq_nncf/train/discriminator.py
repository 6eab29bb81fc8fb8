"""VGG-style discriminator of SRGAN/ESRGAN (BasicSR's VGGStyleDiscriminator, same module names)."""
from __future__ import annotations

import torch
from torch import nn


class VGGStyleDiscriminator(nn.Module):
    """Args:
        num_in_ch: image channels. num_feat: base width.
        input_size: patch size. 128 and 256 are BasicSR's layouts (load official checkpoints); any other multiple
            of 32 keeps the names and sizes linear1 to the final feature map (for small CPU patches).
    """

    def __init__(self, num_in_ch: int = 3, num_feat: int = 64, input_size: int = 128):
        super().__init__()
        if input_size % 32:
            raise ValueError(f"VGGStyleDiscriminator needs input_size divisible by 32, got {input_size}")
        self.input_size = input_size
        f = num_feat
        self.conv0_0 = nn.Conv2d(num_in_ch, f, 3, 1, 1, bias=True)
        self.conv0_1 = nn.Conv2d(f, f, 4, 2, 1, bias=False)
        self.bn0_1 = nn.BatchNorm2d(f, affine=True)
        self.conv1_0 = nn.Conv2d(f, f * 2, 3, 1, 1, bias=False)
        self.bn1_0 = nn.BatchNorm2d(f * 2, affine=True)
        self.conv1_1 = nn.Conv2d(f * 2, f * 2, 4, 2, 1, bias=False)
        self.bn1_1 = nn.BatchNorm2d(f * 2, affine=True)
        self.conv2_0 = nn.Conv2d(f * 2, f * 4, 3, 1, 1, bias=False)
        self.bn2_0 = nn.BatchNorm2d(f * 4, affine=True)
        self.conv2_1 = nn.Conv2d(f * 4, f * 4, 4, 2, 1, bias=False)
        self.bn2_1 = nn.BatchNorm2d(f * 4, affine=True)
        self.conv3_0 = nn.Conv2d(f * 4, f * 8, 3, 1, 1, bias=False)
        self.bn3_0 = nn.BatchNorm2d(f * 8, affine=True)
        self.conv3_1 = nn.Conv2d(f * 8, f * 8, 4, 2, 1, bias=False)
        self.bn3_1 = nn.BatchNorm2d(f * 8, affine=True)
        self.conv4_0 = nn.Conv2d(f * 8, f * 8, 3, 1, 1, bias=False)
        self.bn4_0 = nn.BatchNorm2d(f * 8, affine=True)
        self.conv4_1 = nn.Conv2d(f * 8, f * 8, 4, 2, 1, bias=False)
        self.bn4_1 = nn.BatchNorm2d(f * 8, affine=True)
        self.has_stage5 = input_size == 256
        if self.has_stage5:
            self.conv5_0 = nn.Conv2d(f * 8, f * 8, 3, 1, 1, bias=False)
            self.bn5_0 = nn.BatchNorm2d(f * 8, affine=True)
            self.conv5_1 = nn.Conv2d(f * 8, f * 8, 4, 2, 1, bias=False)
            self.bn5_1 = nn.BatchNorm2d(f * 8, affine=True)
        final = 4 if input_size in (128, 256) else input_size // 32
        self.linear1 = nn.Linear(f * 8 * final * final, 100)
        self.linear2 = nn.Linear(100, 1)
        self.lrelu = nn.LeakyReLU(negative_slope=0.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.input_size or x.shape[-2] != self.input_size:
            raise ValueError(f"VGGStyleDiscriminator built for {self.input_size}px patches got "
                             f"{tuple(x.shape[-2:])}; set training.patch_size to {self.input_size} or rebuild it")
        feat = self.lrelu(self.conv0_0(x))
        feat = self.lrelu(self.bn0_1(self.conv0_1(feat)))
        for i in range(1, 6 if self.has_stage5 else 5):
            feat = self.lrelu(getattr(self, f"bn{i}_0")(getattr(self, f"conv{i}_0")(feat)))
            feat = self.lrelu(getattr(self, f"bn{i}_1")(getattr(self, f"conv{i}_1")(feat)))
        feat = feat.flatten(1)
        return self.linear2(self.lrelu(self.linear1(feat)))


class PatchDiscriminator(nn.Module):
    """A small fully convolutional discriminator that scores every ~22x22 px patch on its own (PatchGAN-style).

    Quantization grain is a local, high-frequency property: a shallow net with a small receptive field learns to
    spot it in a few dozen steps, where the VGG-style discriminator (one logit per 128 px image, BatchNorm) needs
    thousands. Works on any input size. Args: num_in_ch: image channels. num_feat: width.
    """

    def __init__(self, num_in_ch: int = 3, num_feat: int = 32):
        super().__init__()
        f = num_feat
        self.conv0 = nn.Conv2d(num_in_ch, f, 3, 1, 1)
        self.conv1 = nn.Conv2d(f, f * 2, 4, 2, 1)
        self.conv2 = nn.Conv2d(f * 2, f * 2, 3, 1, 1)
        self.conv3 = nn.Conv2d(f * 2, f * 2, 4, 2, 1)
        self.conv_out = nn.Conv2d(f * 2, 1, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(negative_slope=0.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.lrelu(self.conv0(x))
        for conv in (self.conv1, self.conv2, self.conv3):
            feat = self.lrelu(conv(feat))
        return self.conv_out(feat).flatten(1)
