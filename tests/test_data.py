import pytest
import torch
import torch.nn.functional as F

from mixq_nncf.config.schema import parse_config
from mixq_nncf.data.datasets import (EvalPairs, TrainPatches, calibration_inputs, imresize, list_images, load_image,
                                     make_lr, match_lr, offline_photos, photo_manifest, resolve_images, save_image,
                                     training_pairs)
from mixq_nncf.errors import DataError
from mixq_nncf.train.setup import train_patches


def test_offline_split_is_fixed_disjoint_and_documented():
    train, eval_ = offline_photos("train"), offline_photos("eval")
    assert len(train) >= 6 and len(eval_) == 8
    assert not set(train) & set(eval_)
    assert all(r["licence"] for r in photo_manifest())
    heldout = offline_photos("heldout")
    assert len(heldout) == 8 and not set(heldout) & (set(train) | set(eval_))
    assert all(p.is_file() for p in heldout)
    with pytest.raises(ValueError, match="heldout"):
        offline_photos("test")


def test_imresize_matches_matlab_convention():
    img = torch.rand(3, 40, 36)
    lr = imresize(img, 0.25)
    assert lr.shape == (3, 10, 9)
    # a constant image stays constant (weights sum to one, mirrored borders)
    assert torch.allclose(imresize(torch.full((3, 16, 16), 0.3), 0.5), torch.full((3, 8, 8), 0.3), atol=1e-6)
    # the reference: pyiqa's port of MATLAB imresize (bicubic a=-0.5, antialiased when shrinking)
    from pyiqa.matlab_utils.resize import imresize as matlab_imresize

    img64 = img.double()
    for scale in (0.25, 0.5, 4):
        ours, ref = imresize(img64, scale), matlab_imresize(img64, scale=scale, antialiasing=True)
        assert ours.shape == ref.shape
        assert (ours - ref).abs().max() < 1e-6, scale
    # and not torch's bicubic (a=-0.75): the test can tell kernels apart
    other = F.interpolate(img[None], size=(10, 9), mode="bicubic", antialias=True)[0]
    assert (lr - other).abs().max() > 1e-3


def test_make_lr_crops_to_scale_and_quantizes():
    lr = make_lr(torch.rand(3, 35, 42), 4)
    assert lr.shape == (3, 8, 10)
    assert torch.equal(lr, (lr * 255).round() / 255)


def test_train_patches_are_aligned_and_deterministic():
    paths = offline_photos("train")[:2]
    ds = TrainPatches(paths, 4, 64, seed=3)
    a, b = ds[5], TrainPatches(paths, 4, 64, seed=3)[5]
    assert a["lr"].shape == (3, 16, 16) and a["hr"].shape == (3, 64, 64)
    assert torch.equal(a["lr"], b["lr"])
    assert not torch.equal(ds[5]["lr"], ds[6]["lr"])
    # LR patch is the bicubic image of its HR patch, up to border effects
    inner = (imresize(a["hr"], 0.25) - a["lr"]).abs()[:, 2:-2, 2:-2].mean()
    assert inner < 0.02


def test_eval_pairs_and_calibration():
    pairs = EvalPairs(offline_photos("eval")[:1], 4, crop=128)
    item = pairs[0]
    assert item["hr"].shape == (3, 128, 128) and item["lr"].shape == (3, 32, 32)
    calib = calibration_inputs("offline", 3, 24, 4)
    assert [c.shape for c in calib] == [(1, 3, 24, 24)] * 3


def test_corrupt_image_is_named(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(DataError, match="broken.png"):
        load_image(bad)


def test_image_smaller_than_patch_is_named(tmp_path):
    small = tmp_path / "small.png"
    save_image(torch.rand(3, 40, 50), small)
    with pytest.raises(DataError, match=r"small.png is 50x40, smaller than the 64px training patch"):
        TrainPatches([small], 4, 64)


def test_empty_folder_is_named(tmp_path):
    with pytest.raises(DataError, match=f"{tmp_path} holds no images"):
        list_images(tmp_path)
    with pytest.raises(DataError, match="dataset not found"):
        resolve_images(str(tmp_path / "nope"))


def test_dataset_layouts(tmp_path):
    div2k = tmp_path / "DIV2K"
    for sub in ("DIV2K_train_HR", "DIV2K_train_LR_bicubic/X4"):
        (div2k / sub).mkdir(parents=True)
    save_image(torch.rand(3, 16, 16), div2k / "DIV2K_train_HR" / "0001.png")
    save_image(torch.rand(3, 4, 4), div2k / "DIV2K_train_LR_bicubic" / "X4" / "0001x4.png")
    hr = resolve_images(str(div2k), "train")
    assert [p.name for p in hr] == ["0001.png"]
    assert [p.name for p in match_lr(hr, div2k / "DIV2K_train_LR_bicubic" / "X4", 4)] == ["0001x4.png"]
    set5 = tmp_path / "Set5" / "image_SRF_4"
    set5.mkdir(parents=True)
    save_image(torch.rand(3, 16, 16), set5 / "img_001_SRF_4_HR.png")
    save_image(torch.rand(3, 4, 4), set5 / "img_001_SRF_4_LR.png")
    assert [p.name for p in resolve_images(str(tmp_path / "Set5"), "eval")] == ["img_001_SRF_4_HR.png"]
    gt = tmp_path / "Set14" / "GTmod12"
    gt.mkdir(parents=True)
    save_image(torch.rand(3, 16, 16), gt / "baboon.png")
    assert [p.name for p in resolve_images(str(tmp_path / "Set14"), "eval")] == ["baboon.png"]


def _pairs(tmp_path, lr_size=(8, 10), lr_name="0001x4.png"):
    hr_dir, lr_dir = tmp_path / "hr", tmp_path / "lr"
    hr_dir.mkdir()
    lr_dir.mkdir()
    hr = torch.rand(3, 32, 40)
    lr = torch.rand(3, *lr_size)
    save_image(hr, hr_dir / "0001.png")
    save_image(lr, lr_dir / lr_name)
    return hr_dir, lr_dir, load_image(hr_dir / "0001.png"), load_image(lr_dir / lr_name)


def test_train_lr_gives_the_training_patches_their_lr_images(tmp_path):
    hr_dir, lr_dir, hr, lr = _pairs(tmp_path)
    cfg = parse_config({"data": {"train": str(hr_dir), "train_lr": str(lr_dir)}, "training": {"patch_size": 16}})
    ds = train_patches(cfg, 4, 0)  # the training loop's own data path
    assert [p.name for p in ds.lr_paths] == ["0001x4.png"]
    for i in range(4):
        item = ds[i]
        assert item["lr"].shape == (3, 4, 4) and item["hr"].shape == (3, 16, 16)
        # every LR patch is a crop of the given LR image (up to flips / transposes), not a bicubic downscale
        views = [lr, lr.flip(-1), lr.flip(-2), lr.flip(-1).flip(-2)]
        views += [v.transpose(-1, -2) for v in views]
        assert any(_contains(v, item["lr"]) for v in views)
    assert not _contains(make_lr(hr, 4), ds[0]["lr"])
    # without train_lr the LR is made from HR
    bicubic = train_patches(parse_config({"data": {"train": str(hr_dir)}, "training": {"patch_size": 16}}), 4, 0)
    assert bicubic.lr_paths is None


def _contains(img: torch.Tensor, patch: torch.Tensor) -> bool:
    ph, pw = patch.shape[-2:]
    return any(torch.equal(img[:, t:t + ph, x:x + pw], patch) for t in range(img.shape[-2] - ph + 1)
               for x in range(img.shape[-1] - pw + 1))


def test_train_lr_with_the_wrong_scale_is_named(tmp_path):
    hr_dir, lr_dir, _, _ = _pairs(tmp_path, lr_size=(16, 20))
    hr_paths, lr_paths = training_pairs(str(hr_dir), str(lr_dir), 4)
    with pytest.raises(DataError, match=r"0001x4.png is 20x16 but its HR image 0001.png is 40x32: at scale x4 the LR "
                                        r"image must be 10x8; check data.train_lr holds the x4 LR set"):
        TrainPatches(hr_paths, 4, 16, lr_paths=lr_paths)


def test_train_lr_without_a_matching_name_is_named(tmp_path):
    hr_dir, lr_dir, _, _ = _pairs(tmp_path, lr_name="other.png")
    with pytest.raises(DataError, match=r"data.train_lr: no LR image for 0001.png in .*lr \(tried 0001x4, 0001_LR"):
        training_pairs(str(hr_dir), str(lr_dir), 4)
    with pytest.raises(DataError, match=r"data.train_lr pairs LR images with a folder of HR images, but data.train is "
                                        r"'offline'"):
        training_pairs("offline", str(lr_dir), 4)
    with pytest.raises(DataError, match=r"1 LR images for 2 HR images"):
        TrainPatches([hr_dir / "0001.png"] * 2, 4, 16, lr_paths=[lr_dir / "other.png"])
