"""SR GAN losses (BasicSR conventions): pixel L1, VGG19 perceptual L1, standard and relativistic-average GAN,
and distillation to the fp32 teacher."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mixq_nncf.data.luma import luma
from mixq_nncf.train.vgg import VGGFeatureExtractor


def pixel_loss(sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
    return F.l1_loss(sr, hr)


def distill_loss(student: torch.Tensor, teacher: torch.Tensor, lowpass_sigma: float = 0.0) -> torch.Tensor:
    """L1 to the fp32 model's output on the same LR input: the cost of quantization, without any ground truth.

    With ``lowpass_sigma`` > 0 the difference is Gaussian-blurred first: detail finer than the blur that the student
    cannot place exactly is then not regressed to its local mean (which pays L1 to shrink it)."""
    if lowpass_sigma <= 0:
        return F.l1_loss(student, teacher.detach())
    diff = student - teacher.detach()
    b, c, h, w = diff.shape
    return _gaussian_blur(diff.reshape(b * c, 1, h, w), lowpass_sigma).abs().mean()


class PerceptualLoss(nn.Module):
    """L1 between VGG19 conv5_4 (before ReLU) features, as ESRGAN."""

    def __init__(self, weights: str | None = None):
        super().__init__()
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


# ---------------------------------------------------------------------------------------------------------------
# Texture-preserving distillation terms: all compare the quantized student with the fp32 teacher on the same input,
# so they need no ground truth and no downloaded weights.

def gradient_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """L1 between horizontal and vertical finite differences: penalises added grain and lost edges directly,
    which plain L1 on pixels weighs no more than a small colour shift."""
    teacher = teacher.detach()
    dx = F.l1_loss(student[..., :, 1:] - student[..., :, :-1], teacher[..., :, 1:] - teacher[..., :, :-1])
    dy = F.l1_loss(student[..., 1:, :] - student[..., :-1, :], teacher[..., 1:, :] - teacher[..., :-1, :])
    return (dx + dy) / 2


def fft_loss(student: torch.Tensor, teacher: torch.Tensor, tile: int = 32) -> torch.Tensor:
    """L1 between the 2-D FFT magnitudes (orthonormal) of ``tile`` px tiles: matches how much energy each spatial
    frequency carries in each neighbourhood, whatever its phase. Where the student cannot place the teacher's fine
    texture exactly, plain L1 pays it to blur it away; this term pays it to keep the texture's energy. Tiles keep
    grain in a flat region from cancelling lost texture elsewhere."""
    def tiles(x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2] // tile * tile, x.shape[-1] // tile * tile
        if h == 0 or w == 0:
            return x.float()
        x = x[..., :h, :w].float().unfold(-2, tile, tile).unfold(-2, tile, tile)
        return x  # (..., H/tile, W/tile, tile, tile)

    s = torch.fft.rfft2(tiles(student), norm="ortho").abs()
    t = torch.fft.rfft2(tiles(teacher.detach()), norm="ortho").abs()
    return F.l1_loss(s, t)


def mscn(image: torch.Tensor, window: int = 7, c: float = 1.0 / 255) -> torch.Tensor:
    """Mean-subtracted, contrast-normalised luma (NIQE's and BRISQUE's input): (Y - mu) / (sigma + c) with a
    7x7 Gaussian (sigma 7/6) local mean and deviation; c = 1/255 is NIQE's constant 1 on the 0-255 scale."""
    y = luma(image)
    r = torch.arange(window, device=image.device, dtype=torch.float32) - (window - 1) / 2
    g = torch.exp(-(r ** 2) / (2 * (window / 6) ** 2))
    g = g / g.sum()

    def blur(x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, (window // 2,) * 4, mode="replicate")
        return F.conv2d(F.conv2d(x, g.view(1, 1, 1, -1)), g.view(1, 1, -1, 1))

    mu = blur(y)
    sigma = (blur(y * y) - mu * mu).clamp_min(1e-10).sqrt()
    return (y - mu) / (sigma + c)


def mscn_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """L1 between the MSCN maps of student and teacher. NIQE reads the statistics of these maps; dividing by the
    local contrast weighs an error in a flat region (where quantization grain shows) as much as a far larger one in
    texture, where plain L1 sees only the large one. Quantization grain therefore costs the student here what it
    costs it under NIQE, while the reference is still the teacher's output, pixel for pixel."""
    student, teacher = student.float(), teacher.detach().float()
    loss = F.l1_loss(mscn(student), mscn(teacher))
    if min(student.shape[-2:]) >= 16:  # NIQE reads a second scale, at half resolution
        loss = (loss + F.l1_loss(mscn(F.avg_pool2d(student, 2)), mscn(F.avg_pool2d(teacher, 2)))) / 2
    return loss


def mscn_statistics(image: torch.Tensor, tile: int = 32) -> torch.Tensor:
    """Moment versions of NIQE's 18 features per tile: MSCN variance and mean |MSCN| (the GGD's scale and shape),
    and for the four neighbour products (horizontal, vertical, both diagonals) their mean and the mean square of
    their negative and positive parts (the asymmetric GGD's mean and left / right variances). Shape
    (batch, tiles, 14). Moments instead of NIQE's fitted parameters keep the gradient smooth; they move with them."""
    m = mscn(image)
    products = [m[..., :, :-1] * m[..., :, 1:], m[..., :-1, :] * m[..., 1:, :],
                m[..., :-1, :-1] * m[..., 1:, 1:], m[..., :-1, 1:] * m[..., 1:, :-1]]
    h, w = (m.shape[-2] - 1) // tile * tile, (m.shape[-1] - 1) // tile * tile
    if h == 0 or w == 0:
        raise ValueError(f"MSCN statistics need images of at least {tile + 1} px a side, got {tuple(m.shape[-2:])}")

    def per_tile(x: torch.Tensor) -> torch.Tensor:
        x = x[..., :h, :w]
        return x.reshape(x.shape[0], h // tile, tile, w // tile, tile).mean(dim=(2, 4)).flatten(1)

    maps = [m[:, 0] ** 2, m[:, 0].abs()]
    for p in products:
        p = p[:, 0]
        maps += [p, p.clamp(max=0) ** 2, p.clamp(min=0) ** 2]
    return torch.stack([per_tile(x) for x in maps], dim=-1)


def mscn_statistics_loss(student: torch.Tensor, teacher: torch.Tensor, tile: int = 32) -> torch.Tensor:
    """L1 between per-tile MSCN statistics (`mscn_statistics`) of student and teacher, at full and half resolution
    as NIQE reads them. Unlike `mscn_loss` it does not ask for the teacher's grain pixel by pixel, only for the same
    local statistics: the neighbour correlation that quantization grain lowers and the contrast it raises."""
    student, teacher = student.float(), teacher.detach().float()
    tile = max(4, min(tile, (min(student.shape[-2:]) - 1) // 2))  # small patches: at least 2 x 2 tiles
    loss = F.l1_loss(mscn_statistics(student, tile), mscn_statistics(teacher, tile))
    half = tile // 2
    if min(student.shape[-2:]) >= 2 * (half + 1):
        loss = (loss + F.l1_loss(mscn_statistics(F.avg_pool2d(student, 2), half),
                                 mscn_statistics(F.avg_pool2d(teacher, 2), half))) / 2
    return loss


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    if sigma <= 0:
        return x
    radius = max(1, int(round(3 * sigma)))
    r = torch.arange(-radius, radius + 1, device=x.device, dtype=torch.float32)
    g = torch.exp(-(r ** 2) / (2 * sigma ** 2))
    g = (g / g.sum()).to(x.dtype)
    x = F.pad(x, (radius,) * 4, mode="replicate")
    return F.conv2d(F.conv2d(x, g.view(1, 1, 1, -1)), g.view(1, 1, -1, 1))


def luma_bands(image: torch.Tensor, band_sigmas=(0.0, 1.0, 2.0, 4.0)) -> list[torch.Tensor]:
    """The luma split into frequency bands: blur(sigma_k) - blur(sigma_k+1) for consecutive ``band_sigmas``
    (0 = the image itself), finest first."""
    y = luma(image)
    blurred = [_gaussian_blur(y, sigma) for sigma in band_sigmas]
    return [fine - coarse for fine, coarse in zip(blurred[:-1], blurred[1:])]


def detail_gain_loss(student: torch.Tensor, teacher: torch.Tensor, band_sigmas=(0.0, 1.0, 2.0, 4.0),
                     tile: int = 32) -> torch.Tensor:
    """How far the student's detail is from the teacher's gain, per frequency band of the luma.

    Each band is a difference of Gaussian blurs (``band_sigmas`` delimit the bands; 0 = the image itself). In each
    ``tile`` px tile the student's band is projected on the teacher's: gain = <s, t> / <t, t>. L1 / L2
    distillation of a student that cannot place the teacher's detail exactly is cheapest with gain < 1 (shrinking
    the detail shrinks the error with it), which is how QAT raises PSNR while the texture goes flat and NIQE gets
    worse. The term charges |1 - gain| per tile, weighted by the teacher's band energy so flat tiles (where the gain
    is undefined) count for nothing. Two-sided: charging only shrinkage lets the few tiles the student cannot fix
    drive every other tile past the teacher (oversharpening). Grain is orthogonal to the teacher's detail and costs
    (almost) nothing here: removing it stays the pixel term's job. Mean over bands; 0 = the teacher's gain."""
    tile = max(2, min(tile, min(student.shape[-2:])))
    terms = []
    for bs, bt in zip(luma_bands(student, band_sigmas), luma_bands(teacher.detach(), band_sigmas)):
        cross = F.avg_pool2d(bs * bt, tile)
        energy = F.avg_pool2d(bt * bt, tile)
        terms.append((energy - cross).abs().sum() / energy.sum().clamp_min(1e-12))
    return torch.stack(terms).mean()


def feature_distill_loss(student_feats: list[torch.Tensor], teacher_feats: list[torch.Tensor]) -> torch.Tensor:
    """Mean over blocks of L1 between the student's and the teacher's block outputs, each scaled by the teacher
    block's mean magnitude so deep and shallow blocks weigh alike. Quantization error is caught where it enters,
    before 20 more blocks amplify it."""
    if not student_feats or len(student_feats) != len(teacher_feats):
        raise ValueError(f"feature distillation got {len(student_feats)} student and {len(teacher_feats)} teacher "
                         "features; both models need the same hooked blocks")
    terms = [F.l1_loss(s, t.detach()) / (t.detach().abs().mean() + 1e-6) for s, t in zip(student_feats, teacher_feats)]
    return torch.stack(terms).mean()


def discriminator_accuracy(real_logits: torch.Tensor, fake_logits: torch.Tensor, gan_type: str) -> float:
    """Share of real and fake patches the discriminator classifies right (0.5 = chance). For RaGAN a patch is
    judged against the other side's mean logit, as in its loss."""
    real, fake = real_logits.detach().float(), fake_logits.detach().float()
    if gan_type == "ragan":
        real, fake = real - fake.mean(), fake - real.mean()
    return float(((real > 0).float().mean() + (fake < 0).float().mean()) / 2)
