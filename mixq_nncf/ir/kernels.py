"""Which kernels ran: runtime ops grouped by instruction-set family and precision, named in one line.

The CPU plugin's runtime graph names each node's oneDNN primitive (primitiveType, e.g. ``brgconv_avx512_amx_i8``,
``brgconv_avx2_f32``, ``jit_avx2_I8``, ``ref_i8``) and the precision it runs (runtimePrecision). The primitive
name says the ISA: that is what tells whether a speed-up came from AMX, AVX-512, VNNI or plain AVX2.
"""
from __future__ import annotations

from dataclasses import dataclass

# checked in this order: an AMX kernel's name also says avx512
ISA_FAMILIES = (("amx", "AMX"), ("avx512_core_vnni", "AVX-512 VNNI"), ("avx512", "AVX-512"), ("avx2_vnni", "AVX-VNNI"),
                ("vnni", "VNNI"), ("avx2", "AVX2"), ("avx", "AVX"), ("sse41", "SSE4.1"), ("ref", "ref"),
                ("gemm", "gemm"), ("acl", "ACL"))


@dataclass
class KernelGroup:
    count: int
    isa: str  # AMX / AVX-512 / AVX2 / VNNI / ref / ...
    precision: str  # int8 / bf16 / f32 / f16 / other
    primitive: str
    layer: str = "conv"


def isa_family(primitive: str) -> str:
    """'brgconv_avx512_amx_i8' -> 'AMX', 'jit_avx2_I8' -> 'AVX2', 'ref_any_f32' -> 'ref'."""
    p = primitive.lower()
    return next((label for key, label in ISA_FAMILIES if key in p), primitive or "?")


def precision_kind(precision: str, primitive: str) -> str:
    p, prim = precision.lower(), primitive.lower()
    if p in ("i8", "u8") or prim.endswith("_i8") or "int8" in prim:
        return "int8"
    if p in ("bf16", "f32", "f16"):
        return p
    return "f32" if p == "fp32" else (p or "?")


def kernel_groups(ops: list[tuple[str, str]], layer: str = "conv") -> list[KernelGroup]:
    """(runtimePrecision, primitiveType) pairs -> groups, largest first."""
    counts: dict[tuple[str, str, str], int] = {}
    for precision, primitive in ops:
        key = (isa_family(primitive), precision_kind(precision, primitive), primitive)
        counts[key] = counts.get(key, 0) + 1
    groups = [KernelGroup(n, isa, prec, prim, layer) for (isa, prec, prim), n in counts.items()]
    return sorted(groups, key=lambda g: (-g.count, g.isa, g.precision))


def kernel_summary(groups: list[KernelGroup]) -> str:
    """'348 conv AMX int8 (brgconv_avx512_amx_i8), 3 conv AVX-512 f32 (brgconv_avx512_f32)'."""
    return ", ".join(f"{g.count} {g.layer} {g.isa} {g.precision} ({g.primitive})" for g in groups)
