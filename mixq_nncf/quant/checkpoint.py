"""Quantized checkpoints: one file per stage (arch + args + plan + NNCF quantizer config + state_dict).

Files are data, never code. The file is read with torch.load(weights_only=True), and nothing in it is used to
import or call anything: the architecture is a key of the literal PRESETS dict, its arguments must be plain
numbers / strings, enum values are plain strings mapped through an allow-list written here, and the NNCF
quantizer config is checked field by field (only NNCF's two quantizer classes, from their one module) before
NNCF sees it.
"""
from __future__ import annotations

import enum
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

import nncf.torch
import torch
from nncf.common.quantization.structs import QuantizationScheme
from torch import nn

from mixq_nncf.config.plan import PrecisionPlan
from mixq_nncf.errors import CheckpointError, ConfigError
from mixq_nncf.io_utils import atomic_torch_save
from mixq_nncf.models import PRESETS, build_generator
from mixq_nncf.quant.apply import refresh_levels

FORMAT = "mixq-nncf/quantized-v1"
QUANTIZER_MODULE = "nncf.torch.quantization.layers"
QUANTIZER_CLASSES = ("SymmetricQuantizer", "AsymmetricQuantizer")
# keys of a quantizer's module_config and the plain types they may hold
_QUANTIZER_CONFIG_TYPES = {"num_bits": int, "mode": str, "signedness_to_force": (bool, type(None)),
                           "narrow_range": bool, "half_range": bool, "scale_shape": list, "logarithm_scale": bool,
                           "is_quantized_on_export": bool, "compression_lr_multiplier": (int, float, type(None))}


def _enum_types() -> dict[str, type]:
    """The only enums a checkpoint may name (by this short name; never imported from a name in a file)."""
    return {"QuantizationScheme": QuantizationScheme}


# checkpoints written before the allow-list named the enum by module:qualname; these exact strings are accepted
_LEGACY_ENUM_NAMES = {"nncf.common.quantization.structs:QuantizationScheme": "QuantizationScheme"}


def to_plain(obj: Any) -> Any:
    """Make an object loadable with torch.load(weights_only=True) and restorable without imports."""
    if isinstance(obj, dict):
        return {str(k): to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    if isinstance(obj, enum.Enum):
        name = type(obj).__name__
        if _enum_types().get(name) is not type(obj):
            raise TypeError(f"cannot store enum {type(obj).__module__}.{name} in a checkpoint: not in the allow-list")
        return {"__enum__": name, "value": obj.value}
    if isinstance(obj, (str, int, float, bool)) or obj is None or isinstance(obj, torch.Tensor):
        return obj
    if hasattr(obj, "__dataclass_fields__"):
        return to_plain(asdict(obj))
    return str(obj)


def from_plain(obj: Any, where: str = "checkpoint") -> Any:
    """Inverse of to_plain; an enum outside the allow-list is refused, never imported."""
    if isinstance(obj, dict):
        if set(obj) == {"__enum__", "value"}:
            name = _LEGACY_ENUM_NAMES.get(obj["__enum__"], obj["__enum__"])
            cls = _enum_types().get(name) if isinstance(name, str) else None
            if cls is None:
                raise CheckpointError(f"{where}: names {obj['__enum__']!r}, which is not an allowed value type "
                                      f"(allowed: {', '.join(_enum_types())}); the file was not written by mixq or "
                                      "was tampered with, and is refused")
            try:
                return cls(obj["value"])
            except ValueError:
                raise CheckpointError(f"{where}: {obj['value']!r} is not a valid {name}") from None
        return {k: from_plain(v, where) for k, v in obj.items()}
    if isinstance(obj, list):
        return [from_plain(v, where) for v in obj]
    return obj


def _plain_value(value: Any) -> bool:
    if isinstance(value, (list, tuple)):
        return all(_plain_value(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain_value(v) for k, v in value.items())
    return value is None or isinstance(value, (str, int, float, bool))


def check_nncf_config(cfg: Any, where: str) -> dict:
    """Validate NNCF's serialized quantizer config before NNCF imports the classes it names."""
    if not isinstance(cfg, dict) or set(cfg) != {"compression_state"} or not isinstance(cfg["compression_state"], list):
        raise CheckpointError(f"{where}: nncf_config must be {{'compression_state': [...]}}")
    for i, cmd in enumerate(cfg["compression_state"]):
        at = f"{where}: nncf_config.compression_state[{i}]"
        if not isinstance(cmd, dict) or set(cmd) - {"hook_names_in_model", "module_path", "module_cls_name",
                                                     "module_config"}:
            raise CheckpointError(f"{at}: unexpected fields {sorted(set(cmd) if isinstance(cmd, dict) else [])}")
        if cmd.get("module_path", QUANTIZER_MODULE) != QUANTIZER_MODULE or \
                cmd.get("module_cls_name") not in QUANTIZER_CLASSES:
            raise CheckpointError(f"{at}: names {cmd.get('module_path')}.{cmd.get('module_cls_name')}; only "
                                  f"{QUANTIZER_MODULE}.{{{', '.join(QUANTIZER_CLASSES)}}} are accepted. Refused.")
        hooks = cmd.get("hook_names_in_model")
        if not isinstance(hooks, list) or not all(isinstance(h, str) for h in hooks):
            raise CheckpointError(f"{at}: hook_names_in_model must be a list of strings")
        mc = cmd.get("module_config")
        if not isinstance(mc, dict):
            raise CheckpointError(f"{at}: module_config must be an object")
        for key, value in mc.items():
            allowed = _QUANTIZER_CONFIG_TYPES.get(key)
            if key == "mode":
                if not (isinstance(value, enum.Enum) and type(value) is _enum_types()["QuantizationScheme"]):
                    raise CheckpointError(f"{at}: module_config.mode must be a QuantizationScheme")
            elif allowed is None or not isinstance(value, allowed) or not _plain_value(value):
                raise CheckpointError(f"{at}: module_config.{key} = {value!r} is not accepted")
    return cfg


def _check_args(arch: Any, args: Any, where: str) -> None:
    if not isinstance(arch, str) or arch not in PRESETS:
        raise CheckpointError(f"{where}: unknown arch {arch!r}; known: {', '.join(sorted(PRESETS))}")
    if not isinstance(args, dict) or not all(isinstance(k, str) and isinstance(v, (int, float, bool, str))
                                             for k, v in args.items()):
        raise CheckpointError(f"{where}: model args must be plain numbers or strings, got {args!r}")


@dataclass
class QuantizedCheckpoint:
    model: nn.Module
    plan: Optional[PrecisionPlan]
    arch: str
    args: dict
    meta: dict


def save_quantized(model: nn.Module, path: str | Path, *, arch: str, args: dict | None,
                   plan: PrecisionPlan | None, meta: dict | None = None) -> Path:
    """One file for every stage: arch + args + plan + NNCF config (None for fp32) + state_dict."""
    nncf_config = None
    if plan is not None:
        nncf_config = nncf.torch.get_config(model)
    payload = {"format": FORMAT, "arch": arch, "args": dict(args or {}), "plan": plan.to_dict() if plan else None,
               "nncf_config": to_plain(nncf_config), "state_dict": model.state_dict(), "meta": to_plain(meta or {})}
    return atomic_torch_save(Path(path), payload)


def load_quantized(path: str | Path, map_location: str = "cpu") -> QuantizedCheckpoint:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"quantized checkpoint not found: {path}; create one with `mixq quantize CONFIG --out DIR`")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: the file is empty (0 bytes; an interrupted copy?); re-create it with mixq")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user problem
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        raise CheckpointError(f"{path}: not a readable torch checkpoint, or one holding more than plain data "
                              f"({type(exc).__name__}: {first}); re-create it with mixq") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a mixq-nncf quantized checkpoint (format {FORMAT!r}); plain fp32 "
                              "weights load through the config's model.weights instead")
    where = str(path)
    _check_args(payload.get("arch"), payload.get("args"), where)
    try:
        model = build_generator(payload["arch"], **payload["args"]).eval()
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{where}: model args do not fit {payload['arch']}: {exc}") from None
    try:
        plan = PrecisionPlan.from_dict(payload["plan"]) if payload.get("plan") else None
    except (ConfigError, TypeError) as exc:
        raise CheckpointError(f"{where}: bad precision plan: {exc}") from None
    nncf_config = payload.get("nncf_config")
    if nncf_config is not None:
        nncf_config = check_nncf_config(from_plain(nncf_config, where), where)
        model = nncf.torch.load_from_config(model, nncf_config, allowed_modules=(QUANTIZER_MODULE,))
    state = payload.get("state_dict")
    if not isinstance(state, dict):
        raise CheckpointError(f"{where}: no state_dict")
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        raise CheckpointError(f"{where}: state does not fit {payload['arch']}: {str(exc)[:400]}") from None
    if missing or unexpected:
        raise CheckpointError(f"{where}: state does not fit {payload['arch']}: missing {missing[:8]}, "
                              f"unexpected {unexpected[:8]}")
    if nncf_config is not None:
        refresh_levels(model)
    meta = payload.get("meta", {})
    return QuantizedCheckpoint(model.eval(), plan, payload["arch"], payload["args"],
                               from_plain(meta, where) if isinstance(meta, dict) else {})
