"""What a single config value may be: a precision name, a number inside its range, a finite number, a tree
only a few levels deep. Each check names the full key path of the value and what to write instead."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Annotated, Any, Iterator, Optional

from mixq_nncf.errors import ConfigError

# fp32 and bf16 (not quantized: the layer runs in floating point) and every bit width NNCF 3.4 quantizers take
PRECISION_NAMES: dict[str, Optional[int]] = {"fp32": None, "bf16": None,
                                             **{f"int{b}": b for b in range(16, 1, -1)}}
PRECISION_HINT = "use 'fp32', 'bf16', a name 'int2'..'int16' or an integer 2..16"
# what an unquantized layer runs at on the CPU: f32, or bf16 (on CPUs with AVX512-BF16 / AMX; f32 elsewhere)
FLOAT_KINDS = ("f32", "bf16")
# a config is a handful of nested objects; anything far deeper is a broken or hostile file
MAX_DEPTH = 32


def parse_bits(value: Any, where: str) -> Optional[int]:
    """'int8' | 'fp32' | 8 | 8.0 | None -> bits (None means not quantized); anything else names ``where``."""
    if value is None:
        return None
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    if isinstance(value, bool):
        raise ConfigError(f"{where}: expected a precision, got {value!r}; {PRECISION_HINT}")
    if isinstance(value, int):
        if 2 <= value <= 16:
            return value
        raise ConfigError(f"{where}: {value} bits is out of range; {PRECISION_HINT}")
    if isinstance(value, str):
        name = value.strip().lower()
        if name in PRECISION_NAMES:
            return PRECISION_NAMES[name]
        if re.fullmatch(r"int\d+", name):
            raise ConfigError(f"{where}: {value!r} is out of range; {PRECISION_HINT}")
    raise ConfigError(f"{where}: unknown precision {value!r}; {PRECISION_HINT}")


def bits_name(bits: Optional[int], float_kind: str = "f32") -> str:
    if bits is None:
        return "bf16" if float_kind == "bf16" else "fp32"
    return f"int{bits}"


def is_bf16(value: Any) -> bool:
    """True for the precision name 'bf16' (an unquantized layer that runs bf16 where the CPU has it)."""
    return isinstance(value, str) and value.strip().lower() == "bf16"


class NonFinite:
    """A JSON NaN / Infinity / -Infinity literal as read (json's parse_constant), kept so the key path can be
    named; no config value may be one."""

    def __init__(self, literal: str):
        self.literal = literal

    def __repr__(self) -> str:
        return self.literal


def number_text(value: Any) -> str:
    """How a number is written in JSON (NaN / Infinity / -Infinity for the non-finite ones)."""
    if isinstance(value, NonFinite):
        return value.literal
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    return repr(value)


def not_finite(where: str, value: Any, example: Any = None) -> ConfigError:
    ok = isinstance(example, (int, float)) and not isinstance(example, bool) and math.isfinite(example)
    return ConfigError(f"{where}: {number_text(value)} is not a finite number; use a number such as "
                       f"{example if ok else 1.0}")


def _walk(data: Any, where: str) -> Iterator[tuple[str, Any, int]]:
    """(key path, value, depth) of every node, iteratively (a deep tree cannot exhaust the Python stack)."""
    stack = [(where, data, 0)]
    while stack:
        path, value, depth = stack.pop()
        yield path, value, depth
        if isinstance(value, dict):
            items = [(f"{path}.{k}" if path else str(k), v) for k, v in value.items()]
        elif isinstance(value, (list, tuple)):
            items = [(f"{path}[{i}]", v) for i, v in enumerate(value)]
        else:
            continue
        stack.extend((p, v, depth + 1) for p, v in reversed(items))


def check_json_values(data: Any, where: str = "", example=None) -> None:
    """Refuse a tree nested deeper than MAX_DEPTH or holding a non-finite number, naming its key path.
    ``example(path)`` may give the default at that path, shown as the number to use instead."""
    for path, value, depth in _walk(data, where):
        if depth > MAX_DEPTH:
            raise ConfigError(f"{path or 'config'}: nested more than {MAX_DEPTH} levels deep; a config is a few "
                              "levels of objects (see configs/)")
        if isinstance(value, NonFinite) or (isinstance(value, float) and not math.isfinite(value)):
            raise not_finite(path or "value", value, example(path) if example else None)


@dataclass(frozen=True)
class Range:
    """Bounds of a number field, checked with its key path (``Annotated[float, Range(ge=0)]``)."""
    ge: Optional[float] = None
    gt: Optional[float] = None
    le: Optional[float] = None
    lt: Optional[float] = None
    use: str = ""  # what to write instead, e.g. "a learning rate >= 0"
    why: str = ""  # why a value outside the range is wrong

    def rule(self) -> str:
        low = f">= {self.ge}" if self.ge is not None else f"> {self.gt}" if self.gt is not None else ""
        high = f"<= {self.le}" if self.le is not None else f"< {self.lt}" if self.lt is not None else ""
        return " and ".join(filter(None, (low, high)))

    def check(self, value: Any, where: str) -> None:
        if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
            return
        bad = ((self.ge is not None and value < self.ge) or (self.gt is not None and value <= self.gt)
               or (self.le is not None and value > self.le) or (self.lt is not None and value >= self.lt))
        if not bad:
            return
        if (self.ge == 0 or self.gt == 0) and value < 0:
            problem = "is negative"
        elif self.ge is not None and value < self.ge:
            problem = f"is below {self.ge}"
        elif self.gt is not None and value <= self.gt:
            problem = f"is not above {self.gt}"
        elif self.le is not None and value > self.le:
            problem = f"is above {self.le}"
        else:
            problem = f"is not below {self.lt}"
        why = f", {self.why}" if self.why else ""
        raise ConfigError(f"{where}: {value} {problem}{why}; use {self.use or 'a value ' + self.rule()}")


class Precision:
    """Marks a precision field ('fp32', 'int2'..'int16' or 2..16), checked with its key path."""

    @staticmethod
    def check(value: Any, where: str) -> None:
        parse_bits(value, where)


PRECISION = Precision()
PrecisionValue = Annotated[Any, PRECISION]
PositiveInt = Annotated[int, Range(ge=1, use="an integer >= 1")]
NonNegInt = Annotated[int, Range(ge=0, use="an integer >= 0")]
NonNegFloat = Annotated[float, Range(ge=0, use="a number >= 0")]
PositiveFloat = Annotated[float, Range(gt=0, use="a number > 0")]
Seed = Annotated[int, Range(ge=0, lt=2 ** 32, use="a seed 0..4294967295")]


@dataclass(frozen=True)
class Choice:
    """The values a string field may take, checked with its key path (``Annotated[str, Choice(("a", "b"))]``)."""
    choices: tuple

    def check(self, value: Any, where: str) -> None:
        if value is not None and value not in self.choices:
            raise ConfigError(f"{where}: {value!r} is not valid; choose one of {list(self.choices)}")
