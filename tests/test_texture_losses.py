"""Texture-preserving QAT terms (gradient, FFT, feature and adversarial distillation) on tiny generators, CPU."""
import copy

import pytest
import torch

from tiny_models import TINY, photo_lr_crops
from mixq_nncf.config.schema import parse_config
from mixq_nncf.errors import MixqError
from mixq_nncf.train.losses import (detail_gain_loss, discriminator_accuracy, distill_loss, fft_loss, gradient_loss, mscn,
                              mscn_loss, mscn_statistics, mscn_statistics_loss)
from mixq_nncf.eval.metrics import laplacian_energy, texture_fidelity
from mixq_nncf.train.discriminator import PatchDiscriminator
from mixq_nncf.quant.ptq import quantize_from_config
from mixq_nncf.train.loop import feature_taps, train, warm_up_discriminator

RRDB = {"arch": "rrdbnet_x4", "args": {**TINY, "num_grow_ch": 8}, "weights": None}
BASE = {"model": RRDB, "data": {"calibration_samples": 4, "calibration_patch": 16},
        "training": {"iterations": 30, "batch_size": 2, "patch_size": 32, "lr_g": 2e-3, "lr_d": 2e-4,
                     "distill_only": False, "pixel_weight": 0.0, "perceptual_weight": 0.0, "gan_weight": 0.0,
                     "distill_weight": 0.0, "checkpoint_every": 100, "log_every": 1, "device": "cpu",
                     "milestones": [1000]}}


def _cfg(**training) -> object:
    data = copy.deepcopy(BASE)
    data["training"].update(training)
    return parse_config(data)


def _student_teacher(cfg):
    """A quantized tiny RRDBNet and a teacher with other weights, so every term starts far from its minimum."""
    torch.manual_seed(0)
    student = quantize_from_config(cfg, fp32_model=_tiny_rrdb(0)).model
    return student, _tiny_rrdb(1)


def _tiny_rrdb(seed: int):
    from mixq_nncf.models import build_generator

    torch.manual_seed(seed)
    return build_generator("rrdbnet_x4", **RRDB["args"]).eval()


def _term_on(term: str, student, teacher, x) -> float:
    with torch.no_grad():
        if term == "feature":
            taps = feature_taps(student, teacher, [])
            student(x), teacher(x)
            value = float(taps.loss())
            taps.close()
            return value
        s, t = student(x), teacher(x)
        return float({"gradient": gradient_loss, "fft": fft_loss, "mscn": mscn_loss,
                      "mscn_stats": mscn_statistics_loss, "detail_gain": detail_gain_loss,
                      "distill_lowpass": lambda a, b: distill_loss(a, b, 1.0)}[term](s, t))


@pytest.mark.parametrize("term,weights", [
    ("gradient", {"gradient_weight": 1.0}),
    ("fft", {"fft_weight": 1.0}),
    ("mscn", {"mscn_weight": 1.0}),
    ("mscn_stats", {"mscn_stats_weight": 1.0}),
    ("detail_gain", {"detail_gain_weight": 1.0}),
    ("feature", {"feature_distill_weight": 1.0}),
    ("distill_lowpass", {"distill_weight": 1.0, "distill_lowpass_sigma": 1.0}),
])
def test_each_texture_term_decreases_alone(term, weights, tmp_path):
    cfg = _cfg(**weights)
    student, teacher = _student_teacher(cfg)
    x = torch.cat(photo_lr_crops())
    before = _term_on(term, student, teacher, x)
    train(cfg, model=student, teacher=teacher, out_dir=tmp_path, progress=False)
    after = _term_on(term, student, teacher, x)
    assert after < 0.85 * before, (term, before, after)


def test_mscn_is_niqes_normalisation():
    """The term compares exactly the maps NIQE computes its features from (pyiqa, 0-255 scale, constant 1)."""
    from pyiqa.archs.func_util import normalize_img_with_gauss

    from mixq_nncf.data.datasets import load_image, offline_photos

    y = load_image(offline_photos("eval")[0])[:1, :96, :96].unsqueeze(0)
    ours = mscn(y)
    theirs = normalize_img_with_gauss(y * 255.0, padding="replicate")
    assert float((ours - theirs).abs().max()) < 1e-2 and float((ours - theirs).abs().mean()) < 1e-4


def test_mscn_term_weighs_grain_in_flat_regions():
    """The same grain costs the same pixel L1 anywhere, but far more MSCN distance in a flat region than in
    texture: the error NIQE sees and L1 distillation underweights."""
    g = torch.Generator().manual_seed(0)
    teacher = torch.full((1, 3, 64, 128), 0.5)
    teacher[..., 64:] += 0.2 * torch.rand((1, 1, 64, 64), generator=g)  # right half textured, left half flat
    grain = 0.01 * torch.randn((1, 1, 64, 64), generator=g)
    flat, textured = teacher.clone(), teacher.clone()
    flat[..., :64] += grain
    textured[..., 64:] += grain
    l1 = torch.nn.functional.l1_loss
    assert abs(float(l1(flat, teacher)) - float(l1(textured, teacher))) < 1e-6
    assert float(mscn_loss(flat, teacher)) > 3 * float(mscn_loss(textured, teacher))


def test_mscn_statistics_see_grain_not_position():
    """Grain lowers the neighbour correlation NIQE reads and costs the statistics term far more than a one-pixel
    shift, which costs plain L1 several times more than the grain does: the term asks for the teacher's local
    statistics, not its pixels."""
    from mixq_nncf.data.datasets import load_image, offline_photos

    l1 = torch.nn.functional.l1_loss
    g = torch.Generator().manual_seed(0)
    shift_cost, grain_cost = [], []
    for path in offline_photos("eval")[:3]:
        teacher = load_image(path)[:, :96, :96].unsqueeze(0)
        shifted = torch.roll(teacher, 1, dims=-1)
        grainy = (teacher + 0.01 * torch.randn((1, 1, 96, 96), generator=g)).clamp(0, 1)
        assert float(l1(shifted, teacher)) > 1.5 * float(l1(grainy, teacher))
        horizontal_vertical = (mscn_statistics(grainy) - mscn_statistics(teacher)).mean(dim=(0, 1))[[2, 5]]
        assert bool((horizontal_vertical < 0).all()), horizontal_vertical
        shift_cost.append(float(mscn_statistics_loss(shifted, teacher)))
        grain_cost.append(float(mscn_statistics_loss(grainy, teacher)))
    assert sum(grain_cost) > 2 * sum(shift_cost), (grain_cost, shift_cost)


def _photo_crops_and_smooth():
    """(crop, 3x3 box-blurred crop) for the first 3 eval photos, 96 px: real detail to shrink or keep."""
    from mixq_nncf.data.datasets import load_image, offline_photos

    for path in offline_photos("eval")[:3]:
        crop = load_image(path)[:, :96, :96].unsqueeze(0)
        pad = torch.nn.functional.pad(crop, (1, 1, 1, 1), mode="replicate")
        yield path, crop, torch.nn.functional.avg_pool2d(pad, 3, 1)


def test_detail_gain_charges_shrunk_detail_not_grain():
    """Blurring the teacher's detail costs the gain term, more the more it shrinks, and so does amplifying it by as
    much; grain on top of the full detail costs it little: the term measures how much of the teacher's detail the
    student keeps, not how much noise it adds."""
    g = torch.Generator().manual_seed(0)
    for path, teacher, smooth in _photo_crops_and_smooth():
        detail = teacher - smooth
        costs = [float(detail_gain_loss(smooth + k * detail, teacher)) for k in (1.0, 0.75, 0.5, 0.0)]
        assert costs[0] < 1e-6 and costs[1] < costs[2] < costs[3], costs
        grainy = teacher + 0.02 * torch.randn((1, 1, 96, 96), generator=g)
        assert float(detail_gain_loss(grainy, teacher)) < 0.2 * costs[2], (path, costs)
        assert abs(float(detail_gain_loss(smooth + 1.5 * detail, teacher)) - costs[2]) < 1e-4


def test_lowpass_distillation_does_not_pay_for_shrinking_fine_detail():
    """Plain L1 distillation is cheapest with the finest detail shrunk; on blurred outputs that detail weighs little,
    while an error the LR input describes (a smooth shift) costs as much as under plain L1."""
    for path, teacher, smooth in _photo_crops_and_smooth():
        shrunk = smooth + 0.5 * (teacher - smooth)
        plain, lowpass = float(distill_loss(shrunk, teacher)), float(distill_loss(shrunk, teacher, 1.5))
        assert lowpass < 0.35 * plain, (path, plain, lowpass)
        shifted = teacher + 0.02
        assert abs(float(distill_loss(shifted, teacher, 1.5)) - float(distill_loss(shifted, teacher))) < 1e-5


def test_feature_taps_name_missing_block():
    with pytest.raises(MixqError, match="feature_distill_blocks"):
        feature_taps(_tiny_rrdb(0), _tiny_rrdb(1), ["body.7"])


def test_discriminator_warm_up_tells_teacher_from_student_before_generator_trains():
    """Warm-up alone (no generator step) lifts the patch discriminator above chance on batches it never saw."""
    cfg = _cfg(distill_weight=1.0)  # only quantizes the student here
    student, teacher = _student_teacher(cfg)
    torch.manual_seed(0)
    disc = PatchDiscriminator(3, 16)
    opt = torch.optim.Adam(disc.parameters(), lr=1e-3, betas=(0.9, 0.99))
    g = torch.Generator().manual_seed(0)
    crops = torch.cat(photo_lr_crops())
    batches = [crops[torch.randperm(4, generator=g)[:2]] for _ in range(40)]
    acc = warm_up_discriminator(disc, opt, student, teacher, batches, "ragan")
    with torch.no_grad():
        held_out = torch.cat([c.flip(-1) for c in photo_lr_crops()])
        held_acc = discriminator_accuracy(disc(teacher(held_out)), disc(student(held_out)), "ragan")
    assert sum(acc[:3]) / 3 < 0.9 and held_acc > 0.7, (acc[:3], held_acc)


def test_adversarial_distillation_term_falls_against_a_warmed_up_discriminator(tmp_path):
    """With a warmed-up discriminator held still (lr_d 0), the student's adversarial term falls."""
    cfg = _cfg(adv_distill_weight=1.0, lr_d=0.0, batch_size=4)
    student, teacher = _student_teacher(cfg)
    torch.manual_seed(0)
    disc = PatchDiscriminator(3, 32)
    opt = torch.optim.Adam(disc.parameters(), lr=1e-3, betas=(0.9, 0.99))
    crops = torch.cat(photo_lr_crops())
    warm_up_discriminator(disc, opt, student, teacher, [crops] * 30, "ragan")
    torch.save(disc.state_dict(), tmp_path / "net_d.pth")
    cfg = _cfg(adv_distill_weight=1.0, lr_d=0.0, batch_size=4, discriminator_weights=str(tmp_path / "net_d.pth"))
    seen: list[dict] = []
    train(cfg, model=student, teacher=teacher, out_dir=tmp_path / "g", progress=False,
          on_step=lambda step, losses: seen.append(losses))
    first = sum(s["adv_distill"] for s in seen[:6]) / 6
    last = sum(s["adv_distill"] for s in seen[-6:]) / 6
    assert last < 0.85 * first, (first, last)


def test_warm_up_runs_inside_training_and_is_logged(tmp_path):
    cfg = _cfg(adv_distill_weight=1e-2, adv_warmup_steps=3, iterations=2, lr_d=1e-3)
    student, teacher = _student_teacher(cfg)
    seen: list[dict] = []
    train(cfg, model=student, teacher=teacher, out_dir=tmp_path, progress=False,
          on_step=lambda step, losses: seen.append(losses))
    log = (tmp_path / "train_log.csv").read_text()
    assert "d_warmup_acc" in log and all("d_acc" in s and "adv_distill" in s for s in seen)


def test_adv_distill_and_gan_against_ground_truth_are_exclusive(tmp_path):
    cfg = _cfg(adv_distill_weight=1.0, gan_weight=1.0)
    student, teacher = _student_teacher(cfg)
    with pytest.raises(MixqError, match="adv_distill_weight"):
        train(cfg, model=student, teacher=teacher, out_dir=tmp_path, progress=False)


def test_texture_metrics_see_grain():
    """Added grain raises the Laplacian ratio above 1 and worsens GMSD / NLPD against the clean image."""
    from mixq_nncf.data.datasets import load_image, offline_photos

    clean = load_image(offline_photos("eval")[0])[:, :192, :192]
    g = torch.Generator().manual_seed(0)
    grainy = (clean + 0.03 * torch.randn(clean.shape, generator=g)).clamp(0, 1)
    assert texture_fidelity("laplacian_ratio", grainy, clean, 4) > 1.2
    assert laplacian_energy(grainy) > laplacian_energy(clean)
    for name in ("fidelity_gmsd", "fidelity_nlpd"):
        assert texture_fidelity(name, grainy, clean, 4) > texture_fidelity(name, clean, clean, 4) + 1e-3, name
    assert texture_fidelity("fidelity_ms_ssim", grainy, clean, 4) < 0.999


def test_texture_figure_finds_the_textured_region(tmp_path):
    from PIL import Image

    from mixq_nncf.eval.report import most_textured_crop, save_texture_grid

    g = torch.Generator().manual_seed(0)
    fp32 = torch.full((3, 200, 240), 0.5)
    fp32[:, 120:180, 150:210] = torch.rand(3, 60, 60, generator=g)
    top, left, size = most_textured_crop(fp32, 64)
    assert size == 64 and 100 <= top <= 136 and 130 <= left <= 166, (top, left)
    grainy = (fp32 + 0.05 * torch.randn(fp32.shape, generator=g)).clamp(0, 1)
    out = save_texture_grid([("fp32", fp32), ("int8", grainy)], tmp_path / "t.png", reference="fp32",
                            crop=(top, left, size))
    img = Image.open(out)
    assert img.width == 2 * 64 + 4 and img.height > 3 * 64
    import numpy as np

    heat = torch.from_numpy(np.array(img.crop((68, img.height - 64, 132, img.height)))).float()
    same = torch.from_numpy(np.array(img.crop((0, img.height - 64, 64, img.height)))).float()
    assert heat.mean() > same.mean() + 5  # the grainy column's difference map lights up, fp32's stays black


def test_intervals_only_training_holds_the_weights(tmp_path):
    """lr_g 0 with lr_quantizers: the rounding grid learns, every weight stays as calibrated, and the distillation
    loss still falls."""
    cfg = _cfg(distill_weight=1.0, lr_g=0.0, lr_quantizers=1e-2, iterations=20)
    student, teacher = _student_teacher(cfg)
    x = torch.cat(photo_lr_crops())
    weights = {n: p.detach().clone() for n, p in student.named_parameters() if "_nncf" not in n and p.dim() == 4}
    intervals = {n: p.detach().clone() for n, p in student.named_parameters() if "scale_param_storage" in n}
    with torch.no_grad():
        before = float(distill_loss(student(x), teacher(x)))
    train(cfg, model=student, teacher=teacher, out_dir=tmp_path, progress=False)
    params = dict(student.named_parameters())
    assert weights and all(torch.equal(params[n], w) for n, w in weights.items())
    assert sum(not torch.equal(params[n], v) for n, v in intervals.items()) > len(intervals) // 2
    with torch.no_grad():
        after = float(distill_loss(student(x), teacher(x)))
    assert after < before, (before, after)
