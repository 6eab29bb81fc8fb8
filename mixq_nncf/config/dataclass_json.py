"""One JSON round trip for trees of frozen dataclasses: ``from_dict`` checks every value against its type hint
(and the checks an ``Annotated`` hint carries) and names the full key path of what is wrong; ``to_dict`` is the
inverse."""
from __future__ import annotations

import dataclasses
import math
import typing
from typing import Annotated, Any, Union

from mixq_nncf.config.values import not_finite
from mixq_nncf.errors import ConfigError

UNSET = "__unset__"  # a field the user did not set; left out of to_dict


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


def _item_example(example: Any, i: int) -> Any:
    if isinstance(example, (list, tuple)) and example:
        return example[i] if i < len(example) else example[-1]
    return None


def _convert_union(value: Any, args: tuple, where: str, example: Any) -> Any:
    if value is None and type(None) in args:
        return None
    concrete = [a for a in args if a is not type(None)]
    if len(concrete) == 1:
        return convert(value, concrete[0], where, example)
    for arg in concrete:
        try:
            return convert(value, arg, where, example)
        except ConfigError:
            continue
    raise ConfigError(f"{where}: {value!r} does not fit {' or '.join(_type_name(a) for a in args)}")


def _convert_scalar(value: Any, tp: Any, where: str, example: Any) -> Any:
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise not_finite(where, value, example)
            return float(value)
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    return value


def convert(value: Any, tp: Any, where: str, example: Any = None) -> Any:
    """``value`` checked against type hint ``tp``; ``example`` (the field's default) is shown as the fix for a
    non-finite number."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin is Annotated:
        out = convert(value, args[0], where, example)
        for check in tp.__metadata__:
            check.check(out, where)
        return out
    if origin is Union:
        return _convert_union(value, args, where, example)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected an object, got {type(value).__name__}")
        return from_dict(tp, value, where)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__} {value!r}")
        inner = args[0] if args else Any
        items = [convert(v, inner, f"{where}[{i}]", _item_example(example, i)) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected an object, got {type(value).__name__}")
        vt = args[1] if len(args) == 2 else Any
        return {str(k): convert(v, vt, f"{where}.{k}") for k, v in value.items()}
    return _convert_scalar(value, tp, where, example)


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def from_dict(cls: type, data: dict, where: str = "") -> Any:
    """Build dataclass ``cls`` from ``data``; unknown keys are errors listing the valid keys."""
    hints = typing.get_type_hints(cls, include_extras=True)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [k for k in data if k not in fields]
    if unknown:
        prefix = f"{where}." if where else ""
        raise ConfigError(f"unknown config key '{prefix}{unknown[0]}'; valid keys{' in ' + where if where else ''}: "
                          f"{', '.join(fields)}")
    kwargs = {}
    for name, f in fields.items():
        if name in data:
            kwargs[name] = convert(data[name], hints[name], f"{where}.{name}" if where else name, _default(f))
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where or 'config'}: {exc}") from None


def to_dict(obj: Any) -> Any:
    """A dataclass tree -> plain JSON data (fields left UNSET are left out)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)
                if getattr(obj, f.name) is not UNSET}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def default_at(cls: type, path: str) -> Any:
    """The default value at a dotted key path such as 'input_info.range[1]' of dataclass ``cls`` (None if the
    path is not one of its fields)."""
    node: Any = to_dict(cls())
    for part in path.replace("[", ".").replace("]", "").split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    return node
