"""Load official checkpoints in every layout seen in the wild onto BasicSR-named generators, strictly.

Files: torch pickles read with weights_only=True, or .safetensors (the `safetensors` package; data only).
Layouts: raw state_dict; {'params': sd}; {'params_ema': sd} (preferred when both exist, as BasicSR does);
'module.' prefixes; old ESRGAN (RRDB_trunk / trunk_conv / upconv / HRconv); old MMSR MSRResNet
(recon_trunk / HRconv); original EDSR-PyTorch (head / body / tail, mean-shift buffers dropped).
"""
from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import nn

from mixq_nncf.errors import CheckpointError


def _unwrap(obj: object, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, dict):
        for key in ("params_ema", "params", "state_dict", "model"):
            if key in obj and isinstance(obj[key], dict):
                return obj[key]
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return obj
    raise CheckpointError(f"{path}: no state_dict found (expected a dict of tensors, or one under 'params_ema', "
                          "'params', 'state_dict' or 'model')")


def _rename_old_esrgan(key: str) -> str:
    key = re.sub(r"^RRDB_trunk\.(\d+)\.RDB(\d)\.conv(\d)\.0\.", r"body.\1.rdb\2.conv\3.", key)
    key = re.sub(r"^RRDB_trunk\.(\d+)\.RDB(\d)\.conv(\d)\.", r"body.\1.rdb\2.conv\3.", key)
    key = key.replace("trunk_conv.", "conv_body.").replace("upconv1.", "conv_up1.").replace("upconv2.", "conv_up2.")
    return key.replace("HRconv.", "conv_hr.")


def _rename_old_mmsr(key: str) -> str:
    key = re.sub(r"^recon_trunk\.(\d+)\.", r"body.\1.", key)
    return key.replace("HRconv.", "conv_hr.")


def _rename_edsr_pytorch(key: str, num_block: int) -> str | None:
    if key.startswith(("sub_mean.", "add_mean.")):
        return None
    key = key.replace("head.0.", "conv_first.")
    m = re.match(r"^body\.(\d+)\.body\.([02])\.(.*)$", key)
    if m:
        return f"body.{m.group(1)}.conv{1 if m.group(2) == '0' else 2}.{m.group(3)}"
    key = re.sub(rf"^body\.{num_block}\.", "conv_after_body.", key)
    key = re.sub(r"^tail\.0\.(\d+)\.", r"upsample.\1.", key)
    return key.replace("tail.1.", "conv_last.")


def convert_state_dict(sd: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Rename a foreign layout onto the model's BasicSR names (detected from the keys)."""
    sd = {k[7:] if k.startswith("module.") else k: v for k, v in sd.items()}
    keys = set(sd)
    if any(k.startswith("RRDB_trunk.") for k in keys):
        return {_rename_old_esrgan(k): v for k, v in sd.items()}
    if any(k.startswith("recon_trunk.") for k in keys):
        return {_rename_old_mmsr(k): v for k, v in sd.items()}
    if any(k.startswith("head.0.") for k in keys) and any(k.startswith("tail.") for k in keys):
        num_block = len(getattr(model, "body", []))
        out = {}
        for k, v in sd.items():
            new = _rename_edsr_pytorch(k, num_block)
            if new is not None:
                out[new] = v
        return out
    return sd


def _mismatch_report(sd: dict[str, torch.Tensor], model: nn.Module) -> str:
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    shapes = [f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)]
    parts = []
    for title, items in (("missing keys", missing), ("unexpected keys", unexpected), ("shape differences", shapes)):
        if items:
            shown = ", ".join(items[:10]) + (f", ... ({len(items) - 10} more)" if len(items) > 10 else "")
            parts.append(f"{len(items)} {title}: {shown}")
    return "; ".join(parts)


def load_state_dict_strict(model: nn.Module, sd: dict[str, torch.Tensor], source: str) -> nn.Module:
    report = _mismatch_report(sd, model)
    if report:
        raise CheckpointError(f"{source} does not fit {type(model).__name__}: {report}. Check the model preset "
                              "(arch and args such as num_block / num_feat / scale) matches the checkpoint.")
    model.load_state_dict(sd, strict=True)
    return model


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint file, unwrapped and without 'module.' prefixes, in the file's own key layout.
    Both readers are data-only: nothing in the file is imported or run."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: the file is empty (0 bytes; an interrupted download or copy?); download or "
                              "copy the checkpoint again")
    if path.suffix.lower() == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise CheckpointError(f"{path}: reading .safetensors needs the safetensors package: "
                                  "pip install 'mixq-nncf[checkpoints]'") from None
        try:
            obj = load_file(str(path), device="cpu")
        except Exception as exc:  # noqa: BLE001 - every unreadable file is the same user problem
            raise CheckpointError(f"{path}: not a readable safetensors file ({type(exc).__name__}: "
                                  f"{str(exc).splitlines()[0][:200] if str(exc) else ''})") from None
    else:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - every unreadable file is the same user problem
            first = (str(exc).strip().splitlines() or [""])[0][:200]
            if first.startswith("Weights only load failed"):  # torch's advice there would run code from the file
                first = "not a torch checkpoint, or one holding objects other than tensors and plain data"
            raise CheckpointError(f"{path}: not a readable torch checkpoint ({type(exc).__name__}: {first}); the "
                                  "file is truncated or not a PyTorch .pth/.pt: download or copy it again") from None
    sd = _unwrap(obj, path)
    return {k[7:] if k.startswith("module.") else k: v for k, v in sd.items()}


def load_checkpoint(model: nn.Module, path: str | Path) -> nn.Module:
    """Load ``path`` (.pth / .pt / .safetensors) into ``model`` strictly; any mismatch raises CheckpointError."""
    sd = convert_state_dict(read_state_dict(path), model)
    return load_state_dict_strict(model, sd, str(path))
