"""Why a variant's NIQE differs from fp32's: the shift of the mean patch features, or their covariance.

    python research/niqe_decompose.py runs/demo/eval/samples/fp32.png runs/demo/eval/samples/qat_mixed.png ...
    python research/niqe_decompose.py --features OUT/fp32 OUT/ptq_int8 OUT/qat_int8   # folders: pooled patches

NIQE fits a Gaussian (mean, covariance) to 36 MSCN statistics of every 96 px patch of one image and measures its
distance to the pristine model, with the pooled covariance (pristine + the image's own) in the metric. A 512x384
output has 15 patches, so the image's own covariance has rank <= 14 in 36 dimensions and can move the score as much
as any change of the features themselves. This script scores every image as is, then with its mean features and
the first image's (the reference's) covariance, and with the reference's mean and its own covariance: the first
swap isolates what the variant's features changed, the second what its patch-to-patch spread changed.
"""
from __future__ import annotations

import argparse
import json
import math
import sys


def patch_features(path: str, crop_border: int = 4):
    """(patches, 36) NIQE features of a PNG, computed as pyiqa's NIQE does (Y of YIQ, 96 px blocks, two scales)."""
    import numpy as np
    import torch
    from PIL import Image
    from pyiqa.archs.func_util import diff_round
    from pyiqa.archs.niqe_arch import blockproc, compute_feature, imresize, normalize_img_with_gauss
    from pyiqa.utils.color_util import to_y_channel

    x = torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1)[None].double() / 255
    img = diff_round(to_y_channel(x, 255, "yiq")).double()
    if crop_border:
        img = img[..., crop_border:-crop_border, crop_border:-crop_border]
    h, w = img.shape[-2:]
    img = img[..., : h // 96 * 96, : w // 96 * 96]
    feats = []
    for scale in (1, 2):
        feats.append(blockproc(normalize_img_with_gauss(img, padding="replicate"), [96 // scale, 96 // scale],
                               fun=compute_feature))
        if scale == 1:
            img = imresize(img / 255.0, scale=0.5, antialiasing=True) * 255.0
    return torch.cat(feats, -1)[0]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("images", nargs="+", help="PNG outputs, or folders of them (their patches are pooled, images "
                   "matched by sorted name); the first is the reference (fp32)")
    p.add_argument("--features", action="store_true", help="also print, per NIQE feature, each input's mean shift "
                   "from the reference in units of the pristine model's standard deviation, and the reference's own "
                   "offset from the pristine mean: which statistic moved, and whether towards or away from "
                   "pristine; and each feature's share of the squared NIQE distance (reference covariance), which "
                   "says what the score reacts to")
    args = p.parse_args(argv)

    import scipy.io
    import torch

    from mixq_nncf.eval.metrics import niqe_params_mat

    params = scipy.io.loadmat(str(niqe_params_mat()))
    mu_p = torch.tensor(params["mu_prisparam"]).double().reshape(-1)
    cov_p = torch.tensor(params["cov_prisparam"]).double()

    def score(mu, cov) -> float:
        d = mu_p - mu
        return math.sqrt(float(d @ torch.linalg.pinv((cov_p + cov) / 2) @ d))

    from pathlib import Path

    def images(arg: str) -> list[str]:
        return sorted(str(f) for f in Path(arg).glob("*.png")) if Path(arg).is_dir() else [arg]

    per_image = {arg: [patch_features(f) for f in images(arg)] for arg in args.images}
    ref = per_image[args.images[0]]
    rows = {}
    for arg, feats in per_image.items():
        pairs = list(zip(feats, ref))
        mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
        rows[arg] = {"images": len(feats), "patches": sum(f.shape[0] for f in feats),
                     "niqe": mean([score(f.mean(0), torch.cov(f.T)) for f in feats]),
                     "own_mean_ref_cov": mean([score(f.mean(0), torch.cov(r.T)) for f, r in pairs]),
                     "ref_mean_own_cov": mean([score(r.mean(0), torch.cov(f.T)) for f, r in pairs]),
                     "mean_shift_l2": mean([float((f.mean(0) - r.mean(0)).norm()) for f, r in pairs])}
    if args.features:
        sd = cov_p.diag().sqrt()
        mu_ref = torch.cat(ref).mean(0)
        names = ["alpha", "sigma"] + [f"{o}_{k}" for o in ("h", "v", "d1", "d2")
                                      for k in ("shape", "mean", "lstd", "rstd")]
        names = [f"s{scale}_{n}" for scale in (1, 2) for n in names]
        rows["features"] = {n: {"ref_minus_pristine": float((mu_ref[j] - mu_p[j]) / sd[j]),
                                **{arg: float((torch.cat(f).mean(0)[j] - mu_ref[j]) / sd[j])
                                   for arg, f in per_image.items() if arg != args.images[0]}}
                            for j, n in enumerate(names)}

        def contributions(f, r):
            """Each feature's share d_j (S^-1 d)_j of the squared distance, with the reference's covariance: the
            shares sum to own_mean_ref_cov squared, so a feature's change shows what it adds to the score."""
            d = mu_p - f.mean(0)
            return d * (torch.linalg.pinv((cov_p + torch.cov(r.T)) / 2) @ d)

        shares = {arg: sum(contributions(f, r) for f, r in zip(feats, ref)) / len(feats)
                  for arg, feats in per_image.items()}
        rows["squared_distance_shares"] = {n: {arg: float(c[j]) for arg, c in shares.items()}
                                           for j, n in enumerate(names)}
    print(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
