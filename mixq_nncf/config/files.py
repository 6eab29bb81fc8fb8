"""Config files: read JSON (comments allowed), apply --set overrides, dispatch NNCF 2.x configs, and refuse to
reuse a folder that a different config made."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mixq_nncf.config.dataclass_json import default_at
from mixq_nncf.config.nncf2 import is_nncf_config, load_nncf_config
from mixq_nncf.config.overrides import apply_overrides
from mixq_nncf.config.schema import Config, parse_config, to_dict
from mixq_nncf.config.values import MAX_DEPTH, NonFinite, check_json_values
from mixq_nncf.errors import ConfigError
from mixq_nncf.io_utils import atomic_write_text


def strip_json_comments(text: str) -> str:
    """JSON with // and /* */ comments (NNCF's own configs have them) -> plain JSON. Comment characters inside
    strings stay; comments become spaces so error line and column numbers still point into the file."""
    out: list[str] = []
    i, n = 0, len(text)
    in_string = False
    while i < n:
        c = text[i]
        if in_string:
            out.append(c)
            if c == "\\" and i + 1 < n:
                out.append(text[i + 1])
                i += 2
                continue
            if c == '"':
                in_string = False
            i += 1
        elif c == '"':
            in_string = True
            out.append(c)
            i += 1
        elif text.startswith("//", i):
            end = text.find("\n", i)
            end = n if end < 0 else end
            out.append(" " * (end - i))
            i = end
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            if end < 0:
                raise ConfigError("unterminated /* comment")
            out.append("".join(ch if ch == "\n" else " " for ch in text[i:end + 2]))
            i = end + 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def _read_text(path: Path) -> str:
    """The file's text as UTF-8 (a BOM is allowed), or a ConfigError naming the file."""
    if path.is_dir():
        raise ConfigError(f"{path} is a directory, not a config file; give a JSON file (see configs/)")
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config ({exc.strerror or exc}); check the file's permissions") \
            from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start}); a config is "
                          "a JSON object saved as UTF-8 (see configs/)") from None


def read_json(path: str | Path) -> Any:
    """A JSON file that may carry // and /* */ comments, with one clear error naming the file for anything that
    is not a config: a folder, an empty or binary file, bad JSON, NaN / Infinity, absurd nesting."""
    path = Path(path)
    text = _read_text(path)
    try:
        text = strip_json_comments(text)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    if not text.strip():
        raise ConfigError(f"{path} is empty; a config is a JSON object {{...}} (see configs/)")
    try:
        data = json.loads(text, parse_constant=NonFinite)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
    except RecursionError:
        raise ConfigError(f"{path}: nested more than {MAX_DEPTH} levels deep; a config is a few levels of objects "
                          "(see configs/)") from None
    try:
        check_json_values(data, example=lambda key: default_at(Config, key))
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return data


def load_config(path: str | Path, overrides: list[str] | None = None, notes: list[str] | None = None) -> Config:
    """Read, override and validate a JSON config file: our own format or an NNCF 2.x quantization config
    (translated by nncf_config; what it ignored or changed is appended to ``notes``)."""
    path = Path(path)
    data = read_json(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the config must be a JSON object {{...}}, got {json.dumps(data)[:40]}; "
                          "start from one of the files in configs/")
    try:
        if is_nncf_config(data):
            return load_nncf_config(data, overrides or [], name=path.stem, source=str(path), notes=notes)
        data.pop("$schema", None)
        data.pop("description", None)
        return parse_config(calibration_follows_init_samples(apply_overrides(data, overrides or [])))
    except ConfigError as exc:
        if str(exc).startswith(str(path)):
            raise
        raise ConfigError(f"{path}: {exc}") from None


def calibration_follows_init_samples(data: dict) -> dict:
    """A given initializer.range.num_init_samples sets the number of calibration crops unless
    data.calibration_samples is given too (then a smaller calibration set is warned about before work starts)."""
    comp = data.get("compression")
    rng = comp.get("initializer", {}).get("range", {}) if isinstance(comp, dict) and isinstance(
        comp.get("initializer"), dict) else {}
    n = rng.get("num_init_samples") if isinstance(rng, dict) else None
    if isinstance(n, int) and not isinstance(n, bool) and n >= 1 and isinstance(data.get("data", {}), dict) \
            and "calibration_samples" not in data.get("data", {}):
        data = {**data, "data": {**data.get("data", {}), "calibration_samples": n}}
    return data


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out or {prefix.rstrip("."): {}}
    return {prefix.rstrip("."): d}


def config_changes(old: dict, new: dict, ignore: tuple[str, ...] = ()) -> list[str]:
    """'key: old -> new' for every leaf that differs between two config dicts (sections or dotted keys in ignore
    skipped)."""
    a, b = _flatten(old), _flatten(new)

    def ignored(key: str) -> bool:
        return any(key == i or key.startswith(i + ".") for i in ignore)

    return [f"{k}: {a.get(k, '(unset)')} -> {b.get(k, '(unset)')}" for k in sorted(set(a) | set(b))
            if a.get(k, "(unset)") != b.get(k, "(unset)") and not ignored(k)]


def dump_config(cfg: Config, path: str | Path, *, check_unchanged: bool = False,
                ignore: tuple[str, ...] = ()) -> None:
    """Write the resolved config; with check_unchanged, refuse to reuse a folder made by a different config
    (sections in ``ignore`` do not matter to what the folder holds)."""
    path = Path(path)
    if check_unchanged and path.is_file():
        try:
            old = json.loads(path.read_text())
        except ValueError:
            old = None
        try:  # fields added since that folder was made count as their defaults
            old = to_dict(parse_config(old)) if isinstance(old, dict) else old
        except ConfigError:
            pass
        changes = config_changes(old, to_dict(cfg), ignore) if isinstance(old, dict) else ["(unreadable config.json)"]
        if changes:
            shown = "; ".join(changes[:6]) + (f"; and {len(changes) - 6} more" if len(changes) > 6 else "")
            raise ConfigError(f"{path.parent} holds results of a different config ({shown}). Resuming would mix "
                              "them: use another --out, or delete that folder to start it over.")

    atomic_write_text(path, json.dumps(to_dict(cfg), indent=2) + "\n")
