"""What this CPU's int8 and bf16 units can do: the facts that decide how a model must be quantized and compiled.

Without an int8 dot-product instruction (AVX512-VNNI, AVX-VNNI or AMX) oneDNN multiplies u8 x s8 pairs with
AVX2's vpmaddubsw, which saturates their sum at int16: full-range 8-bit weights then overflow and the IR no longer
computes what the quantized model does. NNCF's overflow fix (7-bit weight range) avoids that on such CPUs; the
default here ("pairs", quant/pair_safe.py) widens each output channel's range only as far as its own weights need.
"""
from __future__ import annotations

import functools
from pathlib import Path

INT8_DOT_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")
BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The flags of the first processor in /proc/cpuinfo (empty where there is none, e.g. not Linux)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return frozenset(value.split())
    return frozenset()


def has_int8_dot_product(flags: frozenset[str] | None = None) -> bool:
    """True where int8 convolutions accumulate without int16 saturation (VNNI or AMX)."""
    flags = cpu_flags() if flags is None else flags
    return any(f in flags for f in INT8_DOT_FLAGS)


def has_bf16(flags: frozenset[str] | None = None) -> bool:
    """True where OpenVINO's CPU plugin runs bf16 natively (and makes it the default inference precision)."""
    flags = cpu_flags() if flags is None else flags
    return any(f in flags for f in BF16_FLAGS)


def resolve_overflow_fix(setting: str, flags: frozenset[str] | None = None) -> str:
    """'auto' -> 'disable' on CPUs with an int8 dot product, 'pairs' (each channel's 8-bit range widened just enough
    that no u8 x s8 pair saturates) on the others."""
    if setting != "auto":
        return setting
    return "disable" if has_int8_dot_product(flags) else "pairs"


AVX2_INT8_PARITY_SLACK_DB = 0.3


def int8_parity_slack_db(flags: frozenset[str] | None = None) -> float:
    """How much further a quantized IR may fall below NNCF's emulation of it on this CPU. Without VNNI/AMX the int8
    path with NNCF's 7-bit fix ("enable") measured 0.20 dB (Real-ESRGAN x4plus) to 0.44 dB (Compact x4) below the
    emulation; with "pairs" (the default there) and on VNNI CPUs the IR stays within 0.1 dB."""
    return 0.0 if has_int8_dot_product(flags) else AVX2_INT8_PARITY_SLACK_DB
