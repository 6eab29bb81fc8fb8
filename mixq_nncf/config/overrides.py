"""`--set key.path=value` overrides on a config dict, before it is validated."""
from __future__ import annotations

import copy
import json
from typing import Any

from mixq_nncf.config.dataclass_json import default_at
from mixq_nncf.config.schema import Config
from mixq_nncf.config.values import NonFinite, check_json_values
from mixq_nncf.errors import ConfigError


def _parse_override_value(item: str, raw: str) -> Any:
    try:
        return json.loads(raw, parse_constant=NonFinite)
    except json.JSONDecodeError:
        return raw  # bare strings: --set model.arch=rrdbnet_x4
    except RecursionError:
        raise ConfigError(f"--set {item!r}: the value is nested far too deeply to be a config value") from None


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply ``section.key=value`` strings (value parsed as JSON when it parses)."""
    out = copy.deepcopy(data)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected section.key=value, e.g. training.iterations=100")
        path, raw = item.split("=", 1)
        keys = [k for k in path.strip().split(".") if k]
        if not keys:
            raise ConfigError(f"--set {item!r}: empty key")
        node = out
        for key in keys[:-1]:
            if node.get(key) is None:
                node[key] = {}
            if not isinstance(node[key], dict):
                raise ConfigError(f"--set {item!r}: '{key}' is not a section")
            node = node[key]
        value = _parse_override_value(item, raw)
        try:
            check_json_values(value, ".".join(keys), example=lambda key: default_at(Config, key))
        except ConfigError as exc:
            raise ConfigError(f"--set {item!r}: {exc}") from None
        node[keys[-1]] = value
    if overrides:
        try:  # long key paths nest too
            check_json_values(out)
        except ConfigError as exc:
            raise ConfigError(f"--set: {exc}") from None
    return out
