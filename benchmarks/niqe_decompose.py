"""Why a variant's NIQE differs from fp32's: the shift of the mean patch features, or their covariance.

    python benchmarks/niqe_decompose.py runs/demo/eval/samples/fp32.png runs/demo/eval/samples/qat_mixed.png ...

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
    p.add_argument("images", nargs="+", help="PNG outputs; the first is the reference (fp32)")
    args = p.parse_args(argv)

    import scipy.io
    import torch

    from mixq_nncf.metrics import niqe_params_mat

    params = scipy.io.loadmat(str(niqe_params_mat()))
    mu_p = torch.tensor(params["mu_prisparam"]).double().reshape(-1)
    cov_p = torch.tensor(params["cov_prisparam"]).double()

    def score(mu, cov) -> float:
        d = mu_p - mu
        return math.sqrt(float(d @ torch.linalg.pinv((cov_p + cov) / 2) @ d))

    feats = {path: patch_features(path) for path in args.images}
    ref = feats[args.images[0]]
    mu_r, cov_r = ref.mean(0), torch.cov(ref.T)
    rows = {}
    for path, f in feats.items():
        mu, cov = f.mean(0), torch.cov(f.T)
        rows[path] = {"patches": f.shape[0], "niqe": score(mu, cov), "own_mean_ref_cov": score(mu, cov_r),
                      "ref_mean_own_cov": score(mu_r, cov),
                      "mean_shift_l2": float((mu - mu_r).norm())}
    print(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
