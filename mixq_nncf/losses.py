"""SR GAN losses (BasicSR conventions): pixel L1, VGG19 perceptual L1, standard and relativistic-average GAN,
and distillation to the fp32 teacher."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def pixel_loss(sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
    return F.l1_loss(sr, hr)


def distill_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """L1 to the fp32 model's output on the same LR input: the cost of quantization, without any ground truth."""
    return F.l1_loss(student, teacher.detach())


class PerceptualLoss(nn.Module):
    """L1 between VGG19 conv5_4 (before ReLU) features, as ESRGAN."""

    def __init__(self, weights: str | None = None):
        super().__init__()
        from .models.vgg import VGGFeatureExtractor

        self.vgg = VGGFeatureExtractor(weights=weights)

    def forward(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        return F.l1_loss(self.vgg(sr), self.vgg(hr).detach())


def gan_loss_d(real_logits: torch.Tensor, fake_logits: torch.Tensor, gan_type: str) -> torch.Tensor:
    """Discriminator loss. vanilla: BCE(real, 1) + BCE(fake, 0); ragan: relativistic average (ESRGAN)."""
    if gan_type == "vanilla":
        return (F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits)) +
                F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))) / 2
    real_rel = real_logits - fake_logits.mean()
    fake_rel = fake_logits - real_logits.mean()
    return (F.binary_cross_entropy_with_logits(real_rel, torch.ones_like(real_rel)) +
            F.binary_cross_entropy_with_logits(fake_rel, torch.zeros_like(fake_rel))) / 2


def gan_loss_g(real_logits: torch.Tensor, fake_logits: torch.Tensor, gan_type: str) -> torch.Tensor:
    """Generator adversarial loss (real_logits are detached for the generator step)."""
    if gan_type == "vanilla":
        return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))
    real_rel = real_logits.detach() - fake_logits.mean()
    fake_rel = fake_logits - real_logits.detach().mean()
    return (F.binary_cross_entropy_with_logits(real_rel, torch.zeros_like(real_rel)) +
            F.binary_cross_entropy_with_logits(fake_rel, torch.ones_like(fake_rel))) / 2
