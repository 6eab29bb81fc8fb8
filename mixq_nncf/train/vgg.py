"""VGG19 features for the perceptual loss (ESRGAN: conv5_4 before ReLU, ImageNet normalisation).

Weights are a user file with torchvision's key names (vgg19-dcbb9e9d.pth); nothing is downloaded.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from mixq_nncf.errors import MissingFileError
from mixq_nncf.models.checkpoint import load_state_dict_strict

VGG19_FILE = "vgg19-dcbb9e9d.pth"
# torchvision vgg19 'E' configuration; index 34 is conv5_4
_CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"]
_LAYER_END = {"conv5_4": 35, "relu5_4": 36, "conv4_4": 26, "relu4_4": 27}


def find_vgg19_weights(path: str | Path | None = None) -> Path | None:
    """The given file, else the torch hub cache (torch.hub.get_dir()/checkpoints/vgg19-dcbb9e9d.pth)."""
    if path is not None:
        return Path(path) if Path(path).is_file() else None
    cached = Path(torch.hub.get_dir()) / "checkpoints" / VGG19_FILE
    return cached if cached.is_file() else None


def vgg19_missing_message(path: str | Path | None = None) -> str:
    where = Path(torch.hub.get_dir()) / "checkpoints" / VGG19_FILE
    given = f"{path} does not exist. " if path else ""
    return (f"{given}The VGG19 perceptual loss needs torchvision's ImageNet VGG19 weights ({VGG19_FILE}). Put the file "
            f"at {where} or pass its path as training.vgg_weights; or set training.perceptual_weight to 0.")


def vgg19_layers(end: int) -> nn.Sequential:
    """The first ``end`` modules of torchvision's vgg19().features (index N is key 'features.N'), untrained."""
    layers: list[nn.Module] = []
    ch = 3
    for v in _CFG:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(ch, v, 3, padding=1), nn.ReLU(inplace=False)]
            ch = v
    return nn.Sequential(*layers[:end])




class VGGFeatureExtractor(nn.Module):
    """Frozen VGG19 prefix; keys 'features.N.*' as in torchvision."""

    def __init__(self, weights: str | Path | None = None, layer: str = "conv5_4", use_input_norm: bool = True):
        super().__init__()
        if layer not in _LAYER_END:
            raise ValueError(f"layer {layer!r} not supported; choose one of {list(_LAYER_END)}")
        found = find_vgg19_weights(weights)
        if found is None:
            raise MissingFileError(vgg19_missing_message(weights))
        self.features = vgg19_layers(_LAYER_END[layer])
        sd = torch.load(found, map_location="cpu", weights_only=True)
        own = {k: v for k, v in sd.items() if k.startswith("features.") and k in self.state_dict()}
        load_state_dict_strict(self, own, str(found))
        self.use_input_norm = use_input_norm
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_input_norm:
            x = (x - self.mean) / self.std
        return self.features(x)
