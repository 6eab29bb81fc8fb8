"""The check every allocation test makes: the solver's answer meets its budget and matches the exact reference."""
import pytest


def assert_meets_budget(got, base, budget, ref) -> None:
    """Cost budgets: the best gain (ref[0]) within the limit; fidelity budgets: the least latency (ref[0]) reaching
    the target."""
    if budget.kind in ("latency_ratio", "latency_ms", "size_mb"):
        assert got.fidelity_db - base.fidelity_db == pytest.approx(ref[0], abs=1e-9)
        if budget.kind == "size_mb":
            assert got.size_bytes <= budget.value * 1e6 + 1e-6
        else:
            limit = base.latency_ms * budget.value if budget.kind == "latency_ratio" else budget.value
            assert got.latency_ms <= limit + 1e-9
    else:
        assert got.latency_ms - base.latency_ms == pytest.approx(ref[0], abs=1e-9)
        target = budget.value if budget.kind == "min_fidelity_db" else 50 - budget.value
        assert got.fidelity_db >= target - 1e-9
