"""The one luma (Y) of the losses, the texture metrics and the report's crop choice."""
from __future__ import annotations

import torch


def luma(image: torch.Tensor) -> torch.Tensor:
    """(N, 1, H, W) luma of an (N, 3, H, W) RGB batch (BT.601 weights, full range); one-channel input as it is.
    The single luma of the losses, the texture metrics and the report's crop choice."""
    if image.shape[1] != 3:
        return image.float()
    w = torch.tensor([0.299, 0.587, 0.114], device=image.device, dtype=torch.float32).view(1, 3, 1, 1)
    return (image.float() * w).sum(1, keepdim=True)
