"""Tiny generators and real photo crops that keep the suite fast on 2 cores."""
from __future__ import annotations

import torch

from mixq_nncf.config import parse_config
from mixq_nncf.data import load_image, make_lr, offline_photos
from mixq_nncf.models import build_generator

TINY = {"num_feat": 8, "num_block": 1}
FAMILIES = ["msrresnet_x4", "rrdbnet_x4", "edsr_m_x4"]


def photo_lr_crops() -> list[torch.Tensor]:
    """Four real LR crops (1, 3, 24, 24) from the offline eval photos."""
    out = []
    for path in offline_photos("eval")[:4]:
        hr = load_image(path)[:, 100:196, 100:196]
        out.append(make_lr(hr, 4).unsqueeze(0))
    return out


def calibration_tensors() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [torch.rand(1, 3, 16, 16, generator=g) for _ in range(4)]


def tiny(arch: str = "msrresnet_x4") -> torch.nn.Module:
    torch.manual_seed(0)
    return build_generator(arch, **TINY).eval()


def tiny_config(**sections) -> object:
    data = {"model": {"arch": "msrresnet_x4", "args": TINY, "weights": None}}
    data.update(sections)
    return parse_config(data)
