"""Images, LR/HR pairs and the embedded offline photo set.

LR images are made with a MATLAB-compatible bicubic ``imresize`` (antialiased cubic kernel, a = -0.5, mirrored
borders), the convention of BasicSR's matlab_functions.imresize and of published SR results; LR tensors are
rounded to 8 bits as if saved to PNG. torch's ``F.interpolate(mode='bicubic', antialias=True)`` uses a = -0.75
and differs by about 1 grey level.

The offline photo set: natural RGB photos inside installed wheels (nothing is downloaded).
  eval  (8): pyiqa's Kodak images I03 I04 I06 I08 I19 (ResultsCalibra/ref_dir), astronaut, chelsea, grace_hopper
  train (6): coffee, rocket, motorcycle_left, motorcycle_right, china, flower
  heldout (8): photos nothing in this project was tuned, calibrated, trained or evaluated on: pyiqa's four test
    photos (one SPAQ phone photo, three video frames; tests/test_efficiency_img_dir beside the pyiqa package) and
    scikit-image's gravel, brick, grass (grey, read as RGB) and hubble_deep_field
Licences: Kodak PhotoCD images (released by Kodak for unrestricted use); scikit-image data: astronaut (NASA,
public domain), chelsea (CC0, Stefan van der Walt), coffee (CC0, Rachel Michetti), rocket (SpaceX, CC0),
motorcycle (Middlebury stereo 2014, research use); scikit-learn china.jpg / flower.jpg (CC BY 2.0, see
sklearn/datasets/images/README.txt); matplotlib grace_hopper.jpg (US Navy, public domain); pyiqa test photos (SPAQ
and video frames, distributed with pyiqa for research use); scikit-image gravel, brick, grass (CC0, Stefan van der
Walt), hubble_deep_field (NASA / STScI, public domain).
"""
from __future__ import annotations

import importlib.util
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from mixq_nncf.data.imageio import IMAGE_EXTENSIONS, read_image
from mixq_nncf.errors import DataError
from mixq_nncf.io_utils import atomic_write


# ----------------------------------------------------------------------------------------------
# image I/O

def load_image(path: str | Path) -> torch.Tensor:
    """(3, H, W) float32 RGB in [0, 1]: 16-bit files keep their depth, grayscale is repeated, alpha dropped."""
    return torch.from_numpy(read_image(path).rgb.copy()).permute(2, 0, 1).contiguous()


def to_uint8(img: torch.Tensor) -> np.ndarray:
    return (img.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255.0).round().astype(np.uint8)


def save_image(img: torch.Tensor, path: str | Path) -> Path:
    """Write a (3, H, W) [0, 1] tensor as PNG, atomically."""
    pil = Image.fromarray(to_uint8(img))
    return atomic_write(Path(path), lambda p: pil.save(p, format="PNG"))


# ----------------------------------------------------------------------------------------------
# MATLAB bicubic

def _cubic(x: torch.Tensor) -> torch.Tensor:
    a = x.abs()
    a2, a3 = a * a, a * a * a
    return ((1.5 * a3 - 2.5 * a2 + 1) * (a <= 1) +
            (-0.5 * a3 + 2.5 * a2 - 4 * a + 2) * ((a > 1) & (a <= 2))).to(x.dtype)


def _resize_matrix(in_len: int, out_len: int, scale: float) -> torch.Tensor:
    """(out_len, in_len) weights of MATLAB imresize's bicubic along one axis."""
    kernel_width = 4.0 / scale if scale < 1 else 4.0
    x = torch.arange(1, out_len + 1, dtype=torch.float64)
    u = x / scale + 0.5 * (1 - 1 / scale)
    left = torch.floor(u - kernel_width / 2)
    taps = int(math.ceil(kernel_width)) + 2
    idx = left.unsqueeze(1) + torch.arange(taps, dtype=torch.float64).unsqueeze(0)
    dist = u.unsqueeze(1) - idx
    w = scale * _cubic(dist * scale) if scale < 1 else _cubic(dist)
    w = w / w.sum(1, keepdim=True)
    mirror = torch.cat([torch.arange(in_len), torch.arange(in_len - 1, -1, -1)])
    cols = mirror[((idx - 1).long()) % (2 * in_len)]
    mat = torch.zeros(out_len, in_len, dtype=torch.float64)
    mat.scatter_add_(1, cols, w)
    return mat


def imresize(img: torch.Tensor, scale: float) -> torch.Tensor:
    """MATLAB-compatible bicubic resize of (..., C, H, W) by ``scale`` (e.g. 1/4 down, 4 up)."""
    h, w = img.shape[-2:]
    out_h, out_w = int(math.ceil(h * scale)), int(math.ceil(w * scale))
    mh = _resize_matrix(h, out_h, scale).to(img.dtype)
    mw = _resize_matrix(w, out_w, scale).to(img.dtype)
    return torch.matmul(torch.matmul(mh, img), mw.t())


def crop_to_multiple(img: torch.Tensor, scale: int) -> torch.Tensor:
    h, w = img.shape[-2:]
    return img[..., : h - h % scale, : w - w % scale]


def make_lr(hr: torch.Tensor, scale: int) -> torch.Tensor:
    """HR (cropped to a multiple of scale) -> LR by MATLAB bicubic, rounded to 8 bits like a saved PNG."""
    lr = imresize(crop_to_multiple(hr, scale), 1.0 / scale)
    return (lr.clamp(0, 1) * 255.0).round() / 255.0


# ----------------------------------------------------------------------------------------------
# the offline photo set

@dataclass(frozen=True)
class Photo:
    name: str
    package: str
    relpath: str
    split: str
    licence: str


PHOTOS = (
    Photo("kodak_I03", "ResultsCalibra", "ref_dir/I03.bmp", "eval", "Kodak PhotoCD, unrestricted use"),
    Photo("kodak_I04", "ResultsCalibra", "ref_dir/I04.bmp", "eval", "Kodak PhotoCD, unrestricted use"),
    Photo("kodak_I06", "ResultsCalibra", "ref_dir/I06.bmp", "eval", "Kodak PhotoCD, unrestricted use"),
    Photo("kodak_I08", "ResultsCalibra", "ref_dir/I08.bmp", "eval", "Kodak PhotoCD, unrestricted use"),
    Photo("kodak_I19", "ResultsCalibra", "ref_dir/I19.bmp", "eval", "Kodak PhotoCD, unrestricted use"),
    Photo("astronaut", "skimage", "data/astronaut.png", "eval", "NASA, public domain"),
    Photo("chelsea", "skimage", "data/chelsea.png", "eval", "CC0, Stefan van der Walt"),
    Photo("grace_hopper", "matplotlib", "mpl-data/sample_data/grace_hopper.jpg", "eval", "US Navy, public domain"),
    Photo("coffee", "skimage", "data/coffee.png", "train", "CC0, Rachel Michetti"),
    Photo("rocket", "skimage", "data/rocket.jpg", "train", "SpaceX, CC0"),
    Photo("motorcycle_left", "skimage", "data/motorcycle_left.png", "train", "Middlebury stereo 2014, research use"),
    Photo("motorcycle_right", "skimage", "data/motorcycle_right.png", "train", "Middlebury stereo 2014, research use"),
    Photo("china", "sklearn", "datasets/images/china.jpg", "train", "CC BY 2.0 (see sklearn README.txt)"),
    Photo("flower", "sklearn", "datasets/images/flower.jpg", "train", "CC BY 2.0 (see sklearn README.txt)"),
    Photo("spaq_10241", "pyiqa", "../tests/test_efficiency_img_dir/SPAQ_10241.jpg", "heldout",
          "SPAQ, distributed with pyiqa for research use"),
    Photo("frame_4wrwr48c", "pyiqa", "../tests/test_efficiency_img_dir/frame_4wrwr48cdk6rbcjl.jpg", "heldout",
          "video frame, distributed with pyiqa for research use"),
    Photo("frame_7gzdcz9s", "pyiqa", "../tests/test_efficiency_img_dir/frame_7gzdcz9sif0ekg31.jpg", "heldout",
          "video frame, distributed with pyiqa for research use"),
    Photo("frame_9ogwhvvy", "pyiqa", "../tests/test_efficiency_img_dir/frame_9ogwhvvy7gfj6jzh.jpg", "heldout",
          "video frame, distributed with pyiqa for research use"),
    Photo("gravel", "skimage", "data/gravel.png", "heldout", "CC0, Stefan van der Walt"),
    Photo("brick", "skimage", "data/brick.png", "heldout", "CC0, Stefan van der Walt"),
    Photo("grass", "skimage", "data/grass.png", "heldout", "CC0, Stefan van der Walt"),
    Photo("hubble_deep_field", "skimage", "data/hubble_deep_field.jpg", "heldout", "NASA / STScI, public domain"),
)
SPLITS = ("train", "eval", "heldout")


def _package_dir(name: str) -> Optional[Path]:
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    if spec.submodule_search_locations:
        return Path(list(spec.submodule_search_locations)[0])
    return Path(spec.origin).parent if spec.origin else None


def photo_manifest() -> list[dict]:
    """Every photo of the set with its source, licence, split, and whether it is installed here."""
    rows = []
    for p in PHOTOS:
        root = _package_dir(p.package)
        path = (root / p.relpath).resolve() if root else None
        rows.append({"name": p.name, "package": p.package, "path": str(path) if path else None, "split": p.split,
                     "licence": p.licence, "available": bool(path and path.is_file())})
    return rows


def offline_photos(split: str = "all") -> list[Path]:
    if split not in SPLITS + ("all",):
        raise ValueError(f"split must be one of {', '.join(SPLITS)} or all, got {split!r}")
    rows = [r for r in photo_manifest() if split == "all" or r["split"] == split]
    paths = [Path(r["path"]) for r in rows if r["available"]]
    if not paths:
        missing = sorted({r["package"] for r in rows})
        raise DataError(f"no offline photos found for split '{split}': install {', '.join(missing)} "
                        "(pip install scikit-image scikit-learn matplotlib pyiqa)")
    return paths


# ----------------------------------------------------------------------------------------------
# folders and dataset layouts

def list_images(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"image folder not found: {folder}")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    if not files:
        raise DataError(f"{folder} holds no images (looked for {', '.join(IMAGE_EXTENSIONS)})")
    return files


# Sub-folders that hold the HR images in the usual SR dataset layouts, tried in order.
_HR_LAYOUTS = {
    "train": ("DIV2K_train_HR", "HR", "GTmod12", "GT", "Original", "hr"),
    "eval": ("DIV2K_valid_HR", "HR", "GTmod12", "GT", "Original", "hr"),
}


def resolve_images(spec: str, split: str = "train") -> list[Path]:
    """'offline' (the embedded set), a folder of images, or a dataset root in a known layout (DIV2K,
    Set5/Set14/B100/Urban100 as BasicSR distributes them (GTmod12/, HR/), PIRM (Original/))."""
    if spec == "offline":
        return offline_photos(split)
    root = Path(spec)
    if not root.exists():
        raise DataError(f"dataset not found: {root} (use 'offline' for the embedded photos)")
    if root.is_file():
        return [root]
    direct = [p for p in root.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS]
    if direct:
        hr = [p for p in sorted(direct) if not p.stem.upper().endswith(("_LR", "X2", "X3", "X4"))]
        srf = [p for p in hr if "_HR" in p.stem]
        return srf or hr
    for sub in _HR_LAYOUTS.get(split, ()) + _HR_LAYOUTS["train"]:
        if (root / sub).is_dir():
            return list_images(root / sub)
    srf = sorted(root.glob("image_SRF_*"))
    if srf:
        return sorted(p for p in srf[0].iterdir() if "_HR" in p.stem)
    return list_images(root)


def match_lr(hr_paths: list[Path], lr_folder: str | Path, scale: int) -> list[Path]:
    """LR files for HR files by stem ('0001' <- '0001x4', 'baby' <- 'baby_LR' or 'baby')."""
    lr = {p.stem: p for p in list_images(lr_folder)}
    out = []
    for hr in hr_paths:
        stem = hr.stem.replace("_HR", "")
        for cand in (f"{stem}x{scale}", f"{stem}_LR", f"{stem}_LRBI", stem):
            if cand in lr:
                out.append(lr[cand])
                break
        else:
            raise DataError(f"no LR image for {hr.name} in {lr_folder} (tried {stem}x{scale}, {stem}_LR, {stem})")
    return out


def training_pairs(train: str, train_lr: Optional[str], scale: int) -> tuple[list[Path], Optional[list[Path]]]:
    """HR images of data.train and, with data.train_lr, their LR partners matched by name (None: LR is made from
    HR by MATLAB bicubic). TrainPatches checks that each pair's sizes differ by exactly the scale."""
    hr = resolve_images(train, "train")
    if not train_lr:
        return hr, None
    if train == "offline":
        raise DataError("data.train_lr pairs LR images with a folder of HR images, but data.train is 'offline' (whose "
                        "LR images are made by bicubic); set data.train to the HR folder or remove data.train_lr")
    try:
        return hr, match_lr(hr, train_lr, scale)
    except DataError as exc:
        raise DataError(f"data.train_lr: {exc}") from None


# ----------------------------------------------------------------------------------------------
# datasets

class _ImageCache:
    def __init__(self):
        self._cache: dict[Path, torch.Tensor] = {}

    def get(self, path: Path) -> torch.Tensor:
        if path not in self._cache:
            self._cache[path] = load_image(path)
        return self._cache[path]


class TrainPatches(Dataset):
    """Random aligned (LR, HR) patches with flips / 90-degree rotations. Item ``i`` is a pure function of
    (seed, i), so a resumed run sees the same batches. LR images are ``lr_paths`` (paired with ``hr_paths`` one
    to one, each exactly 1/scale of its HR image) or, without them, made from HR by MATLAB bicubic."""

    def __init__(self, hr_paths: list[Path], scale: int, patch_size: int, lr_paths: list[Path] | None = None,
                 augment: bool = True, seed: int = 0, length: int = 1_000_000):
        if patch_size % scale:
            raise DataError(f"patch_size {patch_size} must be a multiple of the scale {scale}")
        self.hr_paths, self.lr_paths = list(hr_paths), lr_paths
        self.scale, self.patch, self.augment, self.seed, self.length = scale, patch_size, augment, seed, length
        self._cache = _ImageCache()
        self._lr_cache: dict[int, torch.Tensor] = {}
        if lr_paths is not None and len(lr_paths) != len(self.hr_paths):
            raise DataError(f"{len(lr_paths)} LR images for {len(self.hr_paths)} HR images; give one LR image per "
                            "HR image (data.train_lr)")
        for k, p in enumerate(self.hr_paths):
            h, w = self._cache.get(p).shape[-2:]
            if h < patch_size or w < patch_size:
                raise DataError(f"{p} is {w}x{h}, smaller than the {patch_size}px training patch; remove it or "
                                "lower training.patch_size")
            if lr_paths is not None:
                self._lr_cache[k] = self._paired_lr(k)

    def _paired_lr(self, k: int) -> torch.Tensor:
        """The LR partner of HR image ``k``, checked to be exactly 1/scale of it (HR cropped to a multiple)."""
        lr, hr = load_image(self.lr_paths[k]), self._cache.get(self.hr_paths[k])
        want_h, want_w = hr.shape[-2] // self.scale, hr.shape[-1] // self.scale
        if tuple(lr.shape[-2:]) != (want_h, want_w):
            raise DataError(f"{self.lr_paths[k]} is {lr.shape[-1]}x{lr.shape[-2]} but its HR image "
                            f"{self.hr_paths[k].name} is {hr.shape[-1]}x{hr.shape[-2]}: at scale x{self.scale} the LR "
                            f"image must be {want_w}x{want_h}; check data.train_lr holds the x{self.scale} LR set")
        return lr

    def __len__(self) -> int:
        return self.length

    def _pair(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        hr = crop_to_multiple(self._cache.get(self.hr_paths[k]), self.scale)
        if k not in self._lr_cache:
            self._lr_cache[k] = (load_image(self.lr_paths[k]) if self.lr_paths else make_lr(hr, self.scale))
        return self._lr_cache[k], hr

    def __getitem__(self, i: int) -> dict:
        rng = random.Random(self.seed * 1_000_003 + i)
        k = rng.randrange(len(self.hr_paths))
        lr, hr = self._pair(k)
        lp = self.patch // self.scale
        top = rng.randrange(lr.shape[-2] - lp + 1)
        left = rng.randrange(lr.shape[-1] - lp + 1)
        lr_p = lr[:, top:top + lp, left:left + lp]
        hr_p = hr[:, top * self.scale:(top + lp) * self.scale, left * self.scale:(left + lp) * self.scale]
        if self.augment:
            if rng.random() < 0.5:
                lr_p, hr_p = lr_p.flip(-1), hr_p.flip(-1)
            if rng.random() < 0.5:
                lr_p, hr_p = lr_p.flip(-2), hr_p.flip(-2)
            if rng.random() < 0.5:
                lr_p, hr_p = lr_p.transpose(-1, -2), hr_p.transpose(-1, -2)
        return {"lr": lr_p.contiguous(), "hr": hr_p.contiguous()}


class EvalPairs(Dataset):
    """Whole images (HR cropped to a multiple of scale, optionally centre-cropped) and their LR."""

    def __init__(self, hr_paths: list[Path], scale: int, lr_paths: list[Path] | None = None,
                 crop: int | None = None):
        self.hr_paths, self.lr_paths, self.scale, self.crop = list(hr_paths), lr_paths, scale, crop
        if not self.hr_paths:
            raise DataError("no evaluation images")

    def __len__(self) -> int:
        return len(self.hr_paths)

    def __getitem__(self, i: int) -> dict:
        hr = crop_to_multiple(load_image(self.hr_paths[i]), self.scale)
        if self.crop:
            c = self.crop - self.crop % self.scale
            h, w = hr.shape[-2:]
            if h < c or w < c:
                raise DataError(f"{self.hr_paths[i]} is {w}x{h}, smaller than the centre crop {c} (data.eval_crop or "
                                "data.heldout_crop): lower the crop or leave it out to score whole images")
            top, left = (h - c) // 2 // self.scale * self.scale, (w - c) // 2 // self.scale * self.scale
            hr = hr[:, top:top + c, left:left + c]
        lr = load_image(self.lr_paths[i]) if self.lr_paths else make_lr(hr, self.scale)
        return {"lr": lr, "hr": hr, "name": self.hr_paths[i].stem}


def calibration_inputs(spec: str, n: int, lr_patch: int, scale: int, seed: int = 0) -> list[torch.Tensor]:
    """``n`` random LR crops (1, 3, p, p) for NNCF range calibration."""
    paths = resolve_images(spec, "train")
    ds = TrainPatches(paths, scale, lr_patch * scale, augment=True, seed=seed + 7919)
    return [ds[i]["lr"].unsqueeze(0) for i in range(n)]
