import math
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from mixq_nncf.cli import main
from mixq_nncf.data.datasets import load_image, offline_photos, save_image
from mixq_nncf.errors import DataError, MissingFileError
from mixq_nncf.eval.metrics import MetricSuite, niqe, perceptual_index, psnr_y, ssim_y

PUBLISHED_NIQE = {"I03": 15.6538, "I04": 3.6549, "I06": 3.2342, "I08": 3.1922, "I19": 9.0722}


def _y(img: torch.Tensor) -> np.ndarray:
    """MATLAB rgb2ycbcr luma on [0, 255]."""
    r, g, b = (img * 255.0).double()
    return (16.0 + (65.481 * r + 128.553 * g + 24.966 * b) / 255.0).numpy()


@pytest.fixture(scope="module")
def pair():
    hr = load_image(offline_photos("eval")[0])[:, :128, :128]
    noisy = (hr + 0.04 * torch.randn(hr.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    return noisy, hr


def test_psnr_matches_scikit_image(pair):
    pred, ref = pair
    ours = psnr_y(pred, ref, crop_border=4)
    theirs = peak_signal_noise_ratio(_y(ref)[4:-4, 4:-4], _y(pred)[4:-4, 4:-4], data_range=255)
    assert abs(ours - theirs) < 0.02


def test_ssim_matches_scikit_image(pair):
    pred, ref = pair
    ours = ssim_y(pred, ref, crop_border=4)
    theirs = structural_similarity(_y(ref)[4:-4, 4:-4], _y(pred)[4:-4, 4:-4], data_range=255, gaussian_weights=True,
                                   sigma=1.5, use_sample_covariance=False)
    assert abs(ours - theirs) < 2e-3


def test_niqe_matches_published_values_offline():
    import pyiqa

    folder = Path(pyiqa.__file__).parent.parent / "ResultsCalibra" / "dist_dir"
    for name, value in PUBLISHED_NIQE.items():
        assert abs(niqe(load_image(folder / f"{name}.bmp")) - value) < 1e-2, name


def test_niqe_needs_large_images():
    with pytest.raises(DataError, match="at least 96x96"):
        niqe(torch.rand(3, 90, 120))


def test_missing_nrqm_file_names_file_and_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    monkeypatch.delenv("MIXQ_NRQM_MODEL", raising=False)
    with pytest.raises(MissingFileError, match=f"NRQM_model.mat.*{tmp_path / 'pyiqa'}"):
        MetricSuite(["pi"], 4)


def test_pi_is_pirm_formula():
    assert perceptual_index(6.0, 4.0) == pytest.approx(4.0)


def test_eval_pred_gt_writes_csv_and_json(tmp_path, capsys):
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    for i, path in enumerate(offline_photos("eval")[:2]):
        img = (load_image(path)[:, :128, :128] * 255).round().clamp(0, 250) / 255
        save_image(img, gt_dir / f"im{i}.png")
        save_image(img + 5 / 255, pred_dir / f"im{i}.png")  # every pixel +5 in all channels, no clipping
    code = main(["eval", "--pred", str(pred_dir), "--gt", str(gt_dir), "--metrics", "psnr,ssim,niqe",
                 "--out", str(tmp_path / "out")])
    assert code == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    # Y (BT.601) moves by 5 * 219/255 levels everywhere: PSNR = 20 log10(255 / (5 * 219 / 255)) exactly
    exact = 20 * math.log10(255 / (5 * 219 / 255))
    assert summary["images"] == 2 and summary["mean"]["psnr"] == pytest.approx(exact, abs=1e-3)
    assert (tmp_path / "out" / "per_image.csv").read_text().startswith("image,psnr,ssim,niqe")


def test_per_image_gap_does_not_let_errors_of_opposite_sign_cancel():
    from mixq_nncf.eval.metrics import per_image_gap

    rows = [{"variant": "fp32", "image": "a", "niqe": 4.0}, {"variant": "fp32", "image": "b", "niqe": 6.0},
            {"variant": "q", "image": "a", "niqe": 5.0}, {"variant": "q", "image": "b", "niqe": 5.0},
            {"variant": "q", "image": "c", "niqe": 9.0}]  # no fp32 score for c: not compared
    assert per_image_gap(rows, "niqe", "q", "fp32") == pytest.approx(1.0)  # the set means are equal (5 vs 5)
    assert per_image_gap(rows, "niqe", "fp32", "fp32") == 0.0
    assert per_image_gap(rows, "psnr", "q", "fp32") is None


def test_eval_scores_a_model_on_heldout_centre_crops(tmp_path):
    """`mixq eval --split heldout --centre-crop`: the held-out photos, cropped, through a model file."""
    from mixq_nncf.models import load_generator

    weights = tmp_path / "msrresnet.pth"
    torch.manual_seed(0)
    torch.save(load_generator("msrresnet_x4", None, None).state_dict(), weights)
    out = tmp_path / "out"
    code = main(["eval", "--model", str(weights), "--arch", "msrresnet_x4", "--reference", str(weights),
                 "--split", "heldout", "--centre-crop", "128", "--max-images", "2",
                 "--metrics", "fidelity_psnr,psnr", "--out", str(out)])
    assert code == 0
    rows = (out / "per_image.csv").read_text().splitlines()[1:]
    heldout = [p.stem for p in offline_photos("heldout")[:2]]
    assert [r.split(",")[0] for r in rows] == heldout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["mean"]["fidelity_psnr"] >= 79.99  # the model against itself
    assert summary["mean"]["psnr"] < 40  # a random generator against the photos' 128 px centre crops
