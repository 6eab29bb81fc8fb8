"""Per-CPU decisions: the overflow fix and the parity slack follow the int8 dot-product instructions."""
import pytest

from mixq_nncf.cpu import has_bf16, has_int8_dot_product, int8_parity_slack_db, resolve_overflow_fix

AVX2 = frozenset({"avx2", "fma"})
ZEN4 = frozenset({"avx2", "avx512f", "avx512_vnni", "avx512_bf16"})
SPR = frozenset({"avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_int8", "amx_bf16"})
ALDER = frozenset({"avx2", "avx_vnni"})


@pytest.mark.parametrize("flags,dot,bf16", [(AVX2, False, False), (ZEN4, True, True), (SPR, True, True),
                                            (ALDER, True, False)])
def test_capabilities_follow_the_flags(flags, dot, bf16):
    assert has_int8_dot_product(flags) is dot
    assert has_bf16(flags) is bf16
    assert resolve_overflow_fix("auto", flags) == ("disable" if dot else "pairs")
    assert int8_parity_slack_db(flags) == (0.0 if dot else 0.3)


@pytest.mark.parametrize("setting", ["pairs", "disable", "enable", "first_layer_only"])
def test_an_explicit_overflow_fix_is_kept_on_every_cpu(setting):
    for flags in (AVX2, ZEN4, SPR, ALDER):
        assert resolve_overflow_fix(setting, flags) == setting
