"""Tell a checkpoint's generator and its hyperparameters from its tensors, so a config may name only the weights.

One reader per family, each reading key names and tensor shapes as plain code: RRDBNet (ESRGAN / Real-ESRGAN,
incl. the pixel-unshuffle x2 / x1 variants), SRVGGNetCompact (Real-ESRGAN Compact), MSRResNet (SRGAN) and EDSR,
in every key layout models.checkpoint loads (BasicSR, old ESRGAN, old MMSR, EDSR-PyTorch; 'params_ema' /
'params' wrappers; 'module.' prefixes). The result is a preset name plus the full constructor args.
"""
from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

from mixq_nncf.errors import CheckpointError
from mixq_nncf.models import PRESETS
from mixq_nncf.models.checkpoint import read_state_dict

StateDict = dict[str, torch.Tensor]


@dataclass(frozen=True)
class Detected:
    """What a checkpoint holds: a preset of PRESETS, the full constructor args, and a one-line summary."""

    arch: str
    args: dict[str, Any]
    summary: str


def _indices(sd: StateDict, pattern: str) -> list[int]:
    """Sorted distinct integers captured by ``pattern`` (one group) over the keys."""
    return sorted({int(m.group(1)) for k in sd for m in [re.match(pattern, k)] if m})


def _shape(sd: StateDict, key: str) -> tuple[int, ...]:
    if key not in sd:
        raise CheckpointError(f"expected tensor {key!r} is missing")
    return tuple(sd[key].shape)


def _square_root(value: float, what: str) -> int:
    root = round(math.sqrt(value))
    if root < 1 or root * root != value:
        raise CheckpointError(f"{what}: {value} is not a square upscale factor")
    return root


def _rrdbnet(sd: StateDict) -> Detected | None:
    if "RRDB_trunk.0.RDB1.conv1.weight" in sd or "RRDB_trunk.0.RDB1.conv1.0.weight" in sd:  # old ESRGAN names
        blocks = _indices(sd, r"RRDB_trunk\.(\d+)\.")
        grow = next(v for k, v in sd.items() if re.match(r"RRDB_trunk\.0\.RDB1\.conv1\.(0\.)?weight$", k)).shape[0]
        up_keys = [k for k in sd if re.match(r"upconv\d\.", k)]
    elif "body.0.rdb1.conv1.weight" in sd:
        blocks = _indices(sd, r"body\.(\d+)\.rdb1\.")
        grow = sd["body.0.rdb1.conv1.weight"].shape[0]
        up_keys = [k for k in sd if re.match(r"conv_up\d\.", k)]
    else:
        return None
    if {re.match(r"\D+(\d)", k).group(1) for k in up_keys} != {"1", "2"}:
        raise CheckpointError("RRDBNet with other than two x2 upsampling convs (e.g. an x8 ESRGAN) is not supported")
    num_feat, in_ch = _shape(sd, "conv_first.weight")[:2]
    unshuffle_scale = {3: 4, 12: 2, 48: 1}
    if in_ch not in unshuffle_scale:
        raise CheckpointError(f"RRDBNet conv_first reads {in_ch} channels; supported are 3 (x4), 12 (x2, pixel "
                              "unshuffle by 2) and 48 (x1, pixel unshuffle by 4) for RGB images")
    scale = unshuffle_scale[in_ch]
    out_key = "conv_last.weight"
    args = {"scale": scale, "num_feat": num_feat, "num_block": len(blocks), "num_grow_ch": grow,
            "num_out_ch": _shape(sd, out_key)[0]}
    return Detected(f"rrdbnet_x{scale}", args, f"RRDBNet x{scale}, {num_feat} channels, {len(blocks)} RRDB blocks, "
                                               f"growth {grow}")


def _srvgg(sd: StateDict) -> Detected | None:
    body = [k for k in sd if k.startswith("body.")]
    if "body.0.weight" not in sd or not all(re.fullmatch(r"body\.\d+\.(weight|bias)", k) for k in body):
        return None
    convs = [i for i in _indices(sd, r"body\.(\d+)\.weight$") if sd[f"body.{i}.weight"].dim() == 4]
    acts = [i for i in _indices(sd, r"body\.(\d+)\.weight$") if sd[f"body.{i}.weight"].dim() == 1]
    last = convs[-1]
    if convs != list(range(0, last + 1, 2)) or last < 2:
        raise CheckpointError(f"body.N convs at {convs[:6]}...: a Compact (SRVGGNetCompact) model has convs at even "
                              "indices 0, 2, ..., the last one being the output conv")
    if not acts:
        raise CheckpointError("a Compact (SRVGGNetCompact) model without PReLU weights: its activation (relu or "
                              "leakyrelu) is not stored in the file; set model.arch=srvgg_compact_x4 and "
                              "model.args.act_type (and upscale) yourself")
    num_feat, in_ch = _shape(sd, "body.0.weight")[:2]
    upscale = _square_root(_shape(sd, f"body.{last}.weight")[0] / in_ch, f"body.{last} outputs / {in_ch} channels")
    num_conv = last // 2 - 1
    args = {"upscale": upscale, "num_feat": num_feat, "num_conv": num_conv, "num_in_ch": in_ch, "num_out_ch": in_ch,
            "act_type": "prelu"}
    return Detected(f"srvgg_compact_x{upscale}", args,
                    f"SRVGGNetCompact x{upscale}, {num_feat} channels, {num_conv} body convs, PReLU")


def _msrresnet(sd: StateDict) -> Detected | None:
    if "recon_trunk.0.conv1.weight" in sd:
        blocks = _indices(sd, r"recon_trunk\.(\d+)\.")
    elif "body.0.conv1.weight" in sd and "upconv1.weight" in sd:
        blocks = _indices(sd, r"body\.(\d+)\.conv1\.")
    else:
        return None
    num_feat = _shape(sd, "conv_first.weight")[0]
    if "upconv2.weight" in sd:
        scale = 4
    else:
        scale = _square_root(_shape(sd, "upconv1.weight")[0] / num_feat, f"upconv1 outputs / {num_feat} channels")
    if scale not in (2, 3, 4):
        raise CheckpointError(f"MSRResNet upscale {scale} is not supported (2, 3 or 4)")
    args = {"upscale": scale, "num_feat": num_feat, "num_block": len(blocks)}
    return Detected(f"msrresnet_x{scale}", args, f"MSRResNet x{scale}, {num_feat} channels, {len(blocks)} blocks")


def _edsr(sd: StateDict) -> Detected | None:
    if "head.0.weight" in sd and any(k.startswith("tail.") for k in sd):  # EDSR-PyTorch
        first, blocks = "head.0.weight", _indices(sd, r"body\.(\d+)\.body\.")
        ups = [k for k in sd if re.match(r"tail\.0\.\d+\.weight$", k)]
    elif "conv_after_body.weight" in sd and "body.0.conv1.weight" in sd:
        first, blocks = "conv_first.weight", _indices(sd, r"body\.(\d+)\.conv1\.")
        ups = [k for k in sd if re.match(r"upsample\.\d+\.weight$", k)]
    else:
        return None
    num_feat = _shape(sd, first)[0]
    if len(ups) == 1 and sd[ups[0]].shape[0] == 9 * num_feat:
        scale = 3
    elif ups and all(sd[k].shape[0] == 4 * num_feat for k in ups):
        scale = 2 ** len(ups)
    else:
        raise CheckpointError(f"EDSR upsampler convs {[tuple(sd[k].shape) for k in ups]} fit neither x3 nor x2^n")
    # res_scale is not stored in the weights: EDSR-L (256 channels) was trained with 0.1, the baseline with 1
    res_scale = 0.1 if num_feat >= 256 else 1.0
    args = {"upscale": scale, "num_feat": num_feat, "num_block": len(blocks), "res_scale": res_scale}
    size = "l" if num_feat >= 256 else "m"
    return Detected(f"edsr_{size}_x{scale}", args, f"EDSR x{scale}, {num_feat} channels, {len(blocks)} blocks, "
                                                   f"res_scale {res_scale} (not stored; the EDSR-{size.upper()} value)")


READERS: tuple[Callable[[StateDict], Detected | None], ...] = (_rrdbnet, _srvgg, _msrresnet, _edsr)


def detect_state_dict(sd: StateDict, source: str = "checkpoint") -> Detected:
    """The generator a state dict belongs to; CheckpointError names what did not match."""
    for reader in READERS:
        try:
            found = reader(sd)
        except CheckpointError as exc:
            raise CheckpointError(f"{source}: {exc}") from None
        if found is not None:
            if found.arch not in PRESETS:
                raise CheckpointError(f"{source}: {found.summary}: this scale has no preset here "
                                      "(`mixq models` lists them)")
            return found
    keys = sorted(sd)
    shown = ", ".join(keys[:8]) + (f", ... ({len(keys) - 8} more)" if len(keys) > 8 else "")
    raise CheckpointError(f"{source}: not a checkpoint of a supported generator (RRDBNet / ESRGAN, SRVGGNetCompact, "
                          f"MSRResNet, EDSR) in a known key layout; its keys: {shown}. Name the model with "
                          "model.arch (`mixq models` lists them) if it is one of these under other names")


@lru_cache(maxsize=16)
def _detect_cached(path: str, mtime_ns: int, size: int) -> Detected:
    return detect_state_dict(read_state_dict(path), path)


def detect_checkpoint(path: str | Path) -> Detected:
    """detect_state_dict of a .pth / .pt / .safetensors file (read once per file version)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    st = path.stat()
    return _detect_cached(str(path), st.st_mtime_ns, st.st_size)


def fill_model_section(model: dict) -> dict:
    """A config's model section that names an existing checkpoint file but no arch, with the detected arch and
    args filled in (args the config gives win); anything else unchanged."""
    weights = model.get("weights")
    if "arch" in model or not isinstance(weights, str) or weights == "embedded" or not Path(weights).is_file():
        return model
    found = detect_checkpoint(weights)
    given = model.get("args") if isinstance(model.get("args"), dict) else {}
    return {**model, "arch": found.arch, "args": {**found.args, **given}}
