"""Image quality through pyiqa, fully offline.

- PSNR / SSIM on Y (BT.601, as MATLAB rgb2ycbcr) with a border crop (SR convention: crop = scale).
- Fidelity: PSNR / SSIM of a variant's output against the fp32 model's output (the cost of quantization alone).
- NIQE with the LIVE pristine parameters shipped in this package (from BasicSR, Apache-2.0).
- NRQM (Ma) and PI the PIRM way: PI = 0.5 * ((10 - mean Ma) + mean NIQE) over a set, 4-pixel shave, Y.
- LPIPS (AlexNet).
- Texture to fp32, no download needed: MS-SSIM, GMSD (gradient-magnitude similarity deviation) and NLPD
  (normalised Laplacian pyramid distance) of a variant's output against the fp32 output, and the Laplacian energy
  ratio (1.0 = as much fine detail as fp32; above = added grain, below = smoothing).
pyiqa is imported lazily, and a metric whose weight file is absent stops with a message naming the file and
the folder to put it in: nothing here downloads.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import torch

from mixq_nncf.errors import DataError, MissingFileError

NIQE_MIN_SIZE = 96
NRQM_FILE = "NRQM_model.mat"
LPIPS_FILE = "LPIPS_v0.1_alex-df73285e.pth"
ALEXNET_FILE = "alexnet-owt-7be5be79.pth"
TEXTURE = ("fidelity_ms_ssim", "fidelity_gmsd", "fidelity_nlpd", "laplacian_ratio")
FULL_REFERENCE = ("psnr", "ssim", "fidelity_psnr", "fidelity_ssim", "lpips") + TEXTURE
LOWER_IS_BETTER = ("fidelity_gmsd", "fidelity_nlpd", "lpips", "niqe", "pi")
NO_REFERENCE = ("niqe", "nrqm", "pi")
ALL_METRICS = FULL_REFERENCE + NO_REFERENCE


def pyiqa_cache_dir() -> Path:
    return Path(torch.hub.get_dir()) / "pyiqa"


def _batch(img: torch.Tensor) -> torch.Tensor:
    img = img.detach().float().clamp(0, 1)
    return img.unsqueeze(0) if img.dim() == 3 else img


def _metric(name: str, **kwargs):
    import pyiqa

    return pyiqa.create_metric(name, device=torch.device("cpu"), **kwargs)


_CACHE: dict[tuple, object] = {}


def _cached(name: str, **kwargs):
    key = (name, tuple(sorted(kwargs.items())))
    if key not in _CACHE:
        _CACHE[key] = _metric(name, **kwargs)
    return _CACHE[key]


SSIM_MIN_SIZE = 11  # pyiqa's Gaussian window


def _check_pair(pred: torch.Tensor, ref: torch.Tensor, crop_border: int, what: str, min_size: int) -> None:
    """Sizes that pyiqa would answer with an assertion or a nan: one line naming the sizes and the fix."""
    if pred.shape[-2:] != ref.shape[-2:]:
        ph, pw = pred.shape[-2:]
        rh, rw = ref.shape[-2:]
        raise DataError(f"{what}: the image is {pw}x{ph} but its reference is {rw}x{rh}; compare images of the same "
                        "size (crop the ground truth to scale x the LR size, or check the --scale)")
    h, w = pred.shape[-2:]
    if min(h, w) - 2 * crop_border < min_size:
        raise DataError(f"{what} needs at least {min_size}x{min_size} pixels after the {crop_border}px border crop; "
                        f"got {w}x{h}. Use larger images or a smaller crop border (--crop-border / eval.crop_border)")


def psnr_y(pred: torch.Tensor, ref: torch.Tensor, crop_border: int = 0) -> float:
    _check_pair(pred, ref, crop_border, "PSNR", 1)
    m = _cached("psnr", test_y_channel=True, color_space="ycbcr", crop_border=crop_border)
    return float(m(_batch(pred), _batch(ref)).mean())


def ssim_y(pred: torch.Tensor, ref: torch.Tensor, crop_border: int = 0) -> float:
    _check_pair(pred, ref, crop_border, "SSIM", SSIM_MIN_SIZE)
    m = _cached("ssim", test_y_channel=True, color_space="ycbcr", crop_border=crop_border)
    return float(m(_batch(pred), _batch(ref)).mean())


def fidelity(pred: torch.Tensor, ref: torch.Tensor, crop_border: int = 0) -> dict[str, float]:
    """PSNR/SSIM-Y of a quantized model's output against the fp32 model's output on the same input."""
    return {"psnr": psnr_y(pred, ref, crop_border), "ssim": ssim_y(pred, ref, crop_border)}


def _shave(img: torch.Tensor, crop_border: int) -> torch.Tensor:
    img = _batch(img)
    return img[..., crop_border:img.shape[-2] - crop_border, crop_border:img.shape[-1] - crop_border] \
        if crop_border else img


def texture_fidelity(name: str, pred: torch.Tensor, ref: torch.Tensor, crop_border: int = 0) -> float:
    """One of TEXTURE against the fp32 output (pyiqa's MS-SSIM / GMSD / NLPD on Y; all offline)."""
    pred, ref = _shave(pred, crop_border), _shave(ref, crop_border)
    if name == "laplacian_ratio":
        return laplacian_energy(pred) / max(laplacian_energy(ref), 1e-12)
    if name == "fidelity_ms_ssim" and min(pred.shape[-2:]) < 161:
        raise DataError(f"MS-SSIM needs images of at least 161 px a side after the border crop; got "
                        f"{tuple(pred.shape[-2:])}. Evaluate on larger images or leave fidelity_ms_ssim out.")
    m = _cached(name.removeprefix("fidelity_"))
    return float(m(pred, ref).mean())


def laplacian_energy(img: torch.Tensor) -> float:
    """Mean squared 3x3 Laplacian of the luma: how much fine detail (or grain) an image carries."""
    import torch.nn.functional as F

    from mixq_nncf.data.luma import luma

    y = luma(_batch(img))
    k = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]]).view(1, 1, 3, 3)
    return float(F.conv2d(y, k).pow(2).mean())


def niqe_params_mat() -> Path:
    """The shipped LIVE parameters as the .mat pyiqa reads (written once into a cache folder)."""
    import numpy as np
    import scipy.io

    src = Path(__file__).resolve().parent.parent / "data_files" / "niqe_pris_params.npz"
    out = Path(os.environ.get("MIXQ_CACHE", Path.home() / ".cache" / "mixq_nncf")) / "niqe_pris_params.mat"
    if not out.is_file():
        params = np.load(src)
        from mixq_nncf.io_utils import atomic_write

        atomic_write(out, lambda p: scipy.io.savemat(p, {"mu_prisparam": params["mu_pris_param"],
                                                          "cov_prisparam": params["cov_pris_param"]},
                                                     appendmat=False))
    return out


def _check_size(img: torch.Tensor, crop_border: int, what: str) -> None:
    h, w = img.shape[-2:]
    if min(h, w) - 2 * crop_border < NIQE_MIN_SIZE:
        raise DataError(f"{what} needs images of at least {NIQE_MIN_SIZE}x{NIQE_MIN_SIZE} after the {crop_border}px "
                        f"border crop; got {w}x{h} ({w - 2 * crop_border}x{h - 2 * crop_border} after the crop). "
                        "Evaluate on larger images (data.eval_crop) or whole images.")


def niqe(img: torch.Tensor, crop_border: int = 0) -> float:
    _check_size(img, crop_border, "NIQE")
    m = _cached("niqe", crop_border=crop_border, pretrained_model_path=str(niqe_params_mat()))
    return float(m(_batch(img)).mean())


def find_nrqm_model(path: str | Path | None = None) -> Path:
    candidates = [Path(p) for p in (path, os.environ.get("MIXQ_NRQM_MODEL")) if p]
    candidates.append(pyiqa_cache_dir() / NRQM_FILE)
    for c in candidates:
        if c.is_file():
            return c
    raise MissingFileError(f"NRQM (Ma) and PI need {NRQM_FILE}, which is not on PyPI. Put it at "
                           f"{pyiqa_cache_dir() / NRQM_FILE} (or set MIXQ_NRQM_MODEL to its path); it is distributed "
                           "with pyiqa's released weights and the PIRM2018 challenge code.")


def nrqm(img: torch.Tensor, crop_border: int = 4, model_path: str | Path | None = None) -> float:
    path = find_nrqm_model(model_path)
    m = _cached("nrqm", crop_border=crop_border, pretrained_model_path=str(path))
    return float(m(_batch(img)).mean())


def perceptual_index(mean_ma: float, mean_niqe: float) -> float:
    """PIRM 2018: computed from set means, not averaged per image."""
    return 0.5 * ((10.0 - mean_ma) + mean_niqe)


def lpips(pred: torch.Tensor, ref: torch.Tensor) -> float:
    weights = pyiqa_cache_dir() / LPIPS_FILE
    alexnet = Path(torch.hub.get_dir()) / "checkpoints" / ALEXNET_FILE
    for f in (weights, alexnet):
        if not f.is_file():
            raise MissingFileError(f"LPIPS needs {f.name}; put it at {f} (LPIPS weights in the pyiqa cache, the "
                                   "AlexNet ImageNet weights in the torch hub checkpoints folder)")
    _check_pair(pred, ref, 0, "LPIPS", 1)
    m = _cached("lpips", pretrained_model_path=str(weights))
    return float(m(_batch(pred), _batch(ref)).mean())


class MetricSuite:
    """Scores images with a fixed list of metrics; pyiqa models are created once."""

    def __init__(self, names: list[str], crop_border: int, nrqm_model: str | Path | None = None):
        unknown = [n for n in names if n not in ALL_METRICS]
        if unknown:
            raise DataError(f"unknown metric(s) {unknown}; choose from {list(ALL_METRICS)}")
        self.names, self.crop_border = list(names), crop_border
        self.nrqm_model = None
        if "nrqm" in names or "pi" in names:
            self.nrqm_model = find_nrqm_model(nrqm_model)  # fail before any work
        if "niqe" in names or "pi" in names:
            niqe_params_mat()

    def score(self, pred: torch.Tensor, *, reference: Optional[torch.Tensor] = None,
              gt: Optional[torch.Tensor] = None) -> dict[str, float]:
        out: dict[str, float] = {}
        c = self.crop_border
        for n in self.names:
            if n == "fidelity_psnr" and reference is not None:
                out[n] = psnr_y(pred, reference, c)
            elif n == "fidelity_ssim" and reference is not None:
                out[n] = ssim_y(pred, reference, c)
            elif n in TEXTURE and reference is not None:
                out[n] = texture_fidelity(n, pred, reference, c)
            elif n == "psnr" and gt is not None:
                out[n] = psnr_y(pred, gt, c)
            elif n == "ssim" and gt is not None:
                out[n] = ssim_y(pred, gt, c)
            elif n == "lpips" and gt is not None:
                out[n] = lpips(pred, gt)
            elif n in ("niqe", "pi") and "niqe" not in out:
                out["niqe"] = niqe(pred, 4 if n == "pi" else c)
            if n in ("nrqm", "pi") and "nrqm" not in out:
                out["nrqm"] = nrqm(pred, 4, self.nrqm_model)
        return out

    def summarize(self, rows: list[dict]) -> dict[str, float]:
        """Means over images; PI from the set means (PIRM)."""
        keys = [k for k in rows[0] if isinstance(rows[0][k], (int, float))] if rows else []
        out = {k: sum(r[k] for r in rows) / len(rows) for k in keys}
        if "pi" in self.names and "nrqm" in out and "niqe" in out:
            out["pi"] = perceptual_index(out["nrqm"], out["niqe"])
        return out


def per_image_gap(rows: list[dict], metric: str, variant: str, reference: str) -> float | None:
    """Mean over images of |metric(variant) - metric(reference)| on the same image. The gap of two set means lets
    per-image errors of opposite sign cancel; on a few photos a no-reference score such as NIQE swings by a whole
    point per image between near-identical models, so the per-image gap is the steadier 'closer to fp32'."""
    ref = {r["image"]: r[metric] for r in rows if r["variant"] == reference and metric in r}
    gaps = [abs(r[metric] - ref[r["image"]]) for r in rows
            if r["variant"] == variant and metric in r and r["image"] in ref]
    return sum(gaps) / len(gaps) if gaps else None
