"""The generator's loss as one table of terms: each term a name, a weight and a function of the step's tensors.

The training loop evaluates every term of the table, logs each weighted value under its name and sums them. A
term whose weight is 0 is not in the table, so it costs nothing and is not logged.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from mixq_nncf.config.schema import TrainingSection
from mixq_nncf.errors import MixqError, TrainingDiverged
from mixq_nncf.quant.nncf_adapter import QuantErrorProbe, is_quantized
from mixq_nncf.train.losses import (PerceptualLoss, detail_gain_loss, distill_loss, feature_distill_loss, fft_loss,
                                    gan_loss_g, gradient_loss, mscn_loss, mscn_statistics_loss, pixel_loss)


@dataclass(frozen=True)
class StepContext:
    """What the loss terms of one generator step read."""
    lr: torch.Tensor  # the LR batch
    hr: torch.Tensor  # its ground truth
    sr: torch.Tensor  # the student's output (carries the gradient)
    target: Optional[torch.Tensor]  # the fp32 teacher's output (no gradient); None when no term needs it


@dataclass(frozen=True)
class LossTerm:
    name: str  # the key it is logged under
    weight: float
    fn: Callable[[StepContext], torch.Tensor]  # the unweighted term


@dataclass(frozen=True)
class LossWeights:
    """Every term's weight once training.distill_only has turned off the ground-truth terms (0 = off)."""
    quant_error: float
    distill: float
    gradient: float
    fft: float
    mscn: float
    mscn_stats: float
    detail_gain: float
    feature: float
    pixel: float
    perceptual: float
    gan_g: float
    adv_distill: float

    @classmethod
    def from_config(cls, t: TrainingSection) -> LossWeights:
        ground_truth = not t.distill_only  # distill_only: no pixel, perceptual or GAN term against ground truth
        w = cls(quant_error=t.quant_error_weight,
                distill=(t.distill_weight or 1.0) if t.distill_only else t.distill_weight,
                gradient=t.gradient_weight, fft=t.fft_weight, mscn=t.mscn_weight, mscn_stats=t.mscn_stats_weight,
                detail_gain=t.detail_gain_weight, feature=t.feature_distill_weight,
                pixel=t.pixel_weight if ground_truth else 0.0,
                perceptual=t.perceptual_weight if ground_truth else 0.0,
                gan_g=t.gan_weight if ground_truth else 0.0,
                adv_distill=t.adv_distill_weight)
        if w.gan_g > 0 and w.adv_distill > 0:
            raise MixqError("training.adv_distill_weight and training.gan_weight both ask for a discriminator: the "
                            "first judges against the fp32 teacher, the second against ground truth; set one of "
                            "them to 0")
        return w

    @property
    def needs_teacher(self) -> bool:
        return any(getattr(self, n) > 0 for n in ("distill", "gradient", "fft", "mscn", "mscn_stats", "detail_gain",
                                                  "feature", "adv_distill"))

    @property
    def needs_discriminator(self) -> bool:
        return self.gan_g > 0 or self.adv_distill > 0


def loss_terms(t: TrainingSection, w: LossWeights, *, perceptual: Optional[PerceptualLoss],
               taps: Optional[FeatureTaps], probe: Optional[QuantErrorProbe], disc: Optional[nn.Module],
               autocast: Callable[[], AbstractContextManager]) -> list[LossTerm]:
    """The table of the terms ``w`` turns on. ``perceptual``, ``taps``, ``probe`` and ``disc`` are needed only
    by the terms that use them. ``autocast`` wraps the perceptual and ground-truth GAN forwards; adversarial
    distillation runs its discriminator in full precision."""
    bands = tuple(t.detail_gain_bands)

    def perceptual_fn(c: StepContext) -> torch.Tensor:
        with autocast():
            return perceptual(c.sr, c.hr).float()

    table = [  # summed in this order
        LossTerm("quant_error", w.quant_error, lambda c: probe.take()),  # FQSR: rounding + clipping error
        LossTerm("distill", w.distill, lambda c: distill_loss(c.sr, c.target, t.distill_lowpass_sigma)),
        LossTerm("gradient", w.gradient, lambda c: gradient_loss(c.sr, c.target)),
        LossTerm("fft", w.fft, lambda c: fft_loss(c.sr, c.target)),
        LossTerm("mscn", w.mscn, lambda c: mscn_loss(c.sr, c.target)),
        LossTerm("mscn_stats", w.mscn_stats, lambda c: mscn_statistics_loss(c.sr, c.target)),
        LossTerm("detail_gain", w.detail_gain, lambda c: detail_gain_loss(c.sr, c.target, bands)),
        LossTerm("feature", w.feature, lambda c: taps.loss()),  # block outputs hooked in this step's forwards
        LossTerm("pixel", w.pixel, lambda c: pixel_loss(c.sr, c.hr)),
        LossTerm("perceptual", w.perceptual, perceptual_fn),
        LossTerm("gan_g", w.gan_g, _adversarial(disc, lambda c: c.hr, t.gan_type, autocast)),
        LossTerm("adv_distill", w.adv_distill, _adversarial(disc, lambda c: c.target, t.gan_type, nullcontext)),
    ]
    return [term for term in table if term.weight > 0]


def _adversarial(disc: Optional[nn.Module], real_of: Callable[[StepContext], torch.Tensor], gan_type: str,
                 autocast: Callable[[], AbstractContextManager]) -> Callable[[StepContext], torch.Tensor]:
    """The generator's GAN term: the discriminator's logits on the real images are constants here."""
    def fn(c: StepContext) -> torch.Tensor:
        with autocast():
            real = disc(real_of(c)).detach().float()
            fake = disc(c.sr).float()
        return gan_loss_g(real, fake, gan_type)
    return fn


def check_finite(values: dict[str, torch.Tensor], step: int, ckpt_path: Path) -> None:
    """Stop at the first NaN / inf term, naming it, the step and the checkpoint a rerun can start from."""
    for name, value in values.items():
        v = float(value.detach())
        if not math.isfinite(v):
            kept = f"the last good checkpoint is {ckpt_path}" if ckpt_path.is_file() else "no checkpoint was written yet"
            raise TrainingDiverged(f"loss term '{name}' became {v} at step {step}; {kept}. Lower the learning rate "
                                   "(training.lr_g) or check the data.")


def quant_error_probe(model: nn.Module) -> QuantErrorProbe:
    """Hooks for the quant_error term; only a quantized model has quantizers to measure."""
    if not is_quantized(model):
        raise MixqError("training.quant_error_weight > 0 needs a quantized model (set a compression section)")
    return QuantErrorProbe(model)


class FeatureTaps:
    """Forward hooks that keep the outputs of the same named blocks in the student and the fp32 teacher, for
    feature distillation. Both generators name their blocks body.N, so the default taps every body block."""

    def __init__(self, student: nn.Module, teacher: nn.Module, names: list[str]):
        self.student: list[torch.Tensor] = []
        self.teacher: list[torch.Tensor] = []
        s_mods, t_mods = dict(student.named_modules()), dict(teacher.named_modules())
        missing = [n for n in names if n not in s_mods or n not in t_mods]
        if not names or missing:
            raise MixqError(f"training.feature_distill_blocks: no block named {missing or names} in both models; "
                            "use module names such as body.0 (see `mixq models --json`), or leave the list empty "
                            "for every body block")
        self._handles = [s_mods[n].register_forward_hook(lambda m, i, o: self.student.append(o)) for n in names] + \
            [t_mods[n].register_forward_hook(lambda m, i, o: self.teacher.append(o)) for n in names]

    def clear(self) -> None:
        self.student, self.teacher = [], []

    def loss(self) -> torch.Tensor:
        """Distillation over the features of the last student and teacher forward; clears them."""
        try:
            return feature_distill_loss(self.student, self.teacher)
        finally:
            self.student, self.teacher = [], []

    def close(self) -> None:
        for h in self._handles:
            h.remove()


def feature_taps(student: nn.Module, teacher: nn.Module, blocks: list[str]) -> FeatureTaps:
    """Taps on ``blocks``, or on every direct child of the student's ``body`` when the list is empty."""
    if not blocks:
        body = dict(student.named_modules()).get("body")
        blocks = [f"body.{name}" for name, _ in body.named_children()] if body is not None else []
    return FeatureTaps(student, teacher, list(blocks))
