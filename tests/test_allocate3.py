"""The three-precision allocator (int8 / bf16 / f32 per unit): exact against brute force, bf16 where only it
fits, the two-option behaviour where units carry no bf16 option, and the written config's float kinds."""
import json
import random

import pytest

from allocation_checks import assert_meets_budget

from mixq_nncf.config.files import load_config
from mixq_nncf.config.plan import resolve_plan
from mixq_nncf.models import build_generator
from mixq_nncf.search.allocate import Base, Budget, BudgetError, Item, Option, brute_force, pareto_front, solve
from mixq_nncf.search.verify import allocation_config
from tiny_models import TINY

BASE = Base(latency_ms=20.0, size_bytes=1e6, fidelity_db=30.0)


def _items(rng: random.Random, bf16_share: float) -> list[Item]:
    """Random units; about ``bf16_share`` of them also offer bf16 (cheaper, usually a little less gain)."""
    out = []
    for i in range(rng.randint(3, 7)):
        gain, ms, size = rng.uniform(-0.05, 0.4), rng.uniform(0.1, 5.0), rng.uniform(1e3, 5e4)
        bf16 = None
        if rng.random() < bf16_share:
            bf16 = Option("bf16", gain + rng.uniform(-0.1, 0.02), ms * rng.uniform(0.1, 1.2),
                          size * rng.uniform(1.0, 3.0))
        out.append(Item(f"u{i}", (f"l{i}",), gain, ms, size, "bits" if i % 3 else "weights", bf16))
    return out


def _budgets(rng: random.Random) -> list[Budget]:
    return [Budget("latency_ratio", 1 + rng.uniform(0.0, 0.4)), Budget("latency_ms", 20 + rng.uniform(0.2, 9)),
            Budget("size_mb", 1 + rng.uniform(0.002, 0.1)), Budget("min_fidelity_db", 30 + rng.uniform(0.1, 0.9)),
            Budget("max_drop_db", 50 - 30 - rng.uniform(0.1, 0.9))]


def _chosen_options(items: list[Item], alloc) -> list[Option]:
    by_name = {i.name: i for i in items}
    return [next(o for o in by_name[n].options() if o.precision == alloc.precision_of(n)) for n in alloc.chosen]


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("bf16_share", [0.0, 0.5, 1.0])
def test_multiple_choice_solver_equals_brute_force(seed, bf16_share):
    rng = random.Random(seed * 7 + int(bf16_share * 10))
    items = _items(rng, bf16_share)
    for budget in _budgets(rng):
        try:
            ref = brute_force(items, BASE, budget)
        except BudgetError:
            with pytest.raises(BudgetError):
                solve(items, BASE, budget)
            continue
        got = solve(items, BASE, budget)
        assert len(set(got.chosen)) == len(got.chosen)  # at most one option per unit
        options = _chosen_options(items, got)
        gain = sum(o.gain_db for o in options)
        assert got.fidelity_db - BASE.fidelity_db == pytest.approx(gain, abs=1e-9)
        assert got.latency_ms - BASE.latency_ms == pytest.approx(sum(max(0, o.latency_ms) for o in options))
        assert got.size_bytes - BASE.size_bytes == pytest.approx(sum(max(0, o.size_bytes) for o in options))
        assert_meets_budget(got, BASE, budget, ref)
        if bf16_share == 0.0:
            assert set(got.precisions.values()) <= {"f32"}


def test_the_front_is_the_subset_front_when_no_unit_offers_bf16():
    rng = random.Random(3)
    items = _items(rng, 0.0)
    front = pareto_front(items, "latency")
    assert all(k == 0 for _, _, picks in front for _, k in picks)
    # a best-gain point per cost level, gains rising with cost: the 0/1 knapsack's front
    assert all(b[0] >= a[0] and b[1] > a[1] for a, b in zip(front, front[1:]))


def test_a_budget_that_only_fits_bf16_picks_bf16_over_f32():
    unit = Item("u", ("u",), 0.42, 2.9, 1e3, "bits", Option("bf16", 0.41, 0.8, 3e3))
    tight = solve([unit], BASE, Budget("latency_ms", BASE.latency_ms + 1.0))
    assert tight.chosen == ("u",) and tight.precisions == {"u": "bf16"}
    assert tight.latency_ms == pytest.approx(BASE.latency_ms + 0.8)
    roomy = solve([unit], BASE, Budget("latency_ms", BASE.latency_ms + 3.0))
    assert roomy.precisions == {"u": "f32"}  # both fit: the 0.01 dB more wins
    # on the size axis bf16 is the dearer one (its IR stores f32 weights): a tight size budget takes f32
    small = solve([unit], BASE, Budget("size_mb", (BASE.size_bytes + 2e3) / 1e6))
    assert small.precisions == {"u": "f32"}
    # a fidelity target bf16 reaches is met at bf16's latency
    least = solve([unit], BASE, Budget("min_fidelity_db", BASE.fidelity_db + 0.4))
    assert least.precisions == {"u": "bf16"}
    # with a second unit the budget is shared: bf16 on one leaves room for the other
    other = Item("v", ("v",), 0.3, 1.0, 1e3)
    both = solve([unit, other], BASE, Budget("latency_ms", BASE.latency_ms + 2.0))
    assert both.precisions == {"u": "bf16", "v": "f32"}


def test_corrections_scale_every_option():
    unit = Item("u", ("u",), 0.4, 2.0, 1e3, "bits", Option("bf16", 0.3, 1.0, 3e3))
    fixed = unit.scaled(latency=1.5, gain=0.5)
    assert (fixed.latency_ms, fixed.bf16.latency_ms) == pytest.approx((3.0, 1.5))
    assert (fixed.gain_db, fixed.bf16.gain_db) == pytest.approx((0.2, 0.15))
    assert fixed.size_bytes == 1e3 and fixed.bf16.size_bytes == 3e3


def test_allocated_config_carries_each_precision_into_the_plan(tmp_path):
    cfg = {"name": "tiny", "model": {"arch": "msrresnet_x4", "args": TINY, "weights": None},
           "compression": {"initializer": {"fast_bias_correction": False}}}
    items = [Item("conv_first", ("conv_first",), 0.3, 1.0, 1e3), Item("conv_hr", ("conv_hr",), 0.2, 1.0, 1e3),
             Item("body.0.conv1", ("body.0.conv1",), 0.1, 1.0, 1e3, "weights"),
             Item("upconv1", ("upconv1",), 0.1, 1.0, 1e3, "weights")]
    precisions = {"conv_first": "f32", "conv_hr": "bf16", "body.0.conv1": "bf16", "upconv1": "f32"}
    written = allocation_config(cfg, items, "test", precisions)
    overrides = written["compression"]["scope_overrides"]
    assert overrides == {"conv_first": {"bits": "int16"}, "conv_hr": {"bits": "bf16"},
                         "body.0.conv1": {"weights": "bf16"}, "upconv1": {"weights": "int16"}}
    path = tmp_path / "alloc.json"
    path.write_text(json.dumps(written))
    plan = resolve_plan(build_generator("msrresnet_x4", **TINY), load_config(path).compression)
    assert plan.float_kinds() == {"conv_first": "f32", "conv_hr": "bf16", "body.0.conv1": "bf16", "upconv1": "f32"}
    assert (plan.layers["conv_hr"].weight_bits, plan.layers["conv_hr"].act_bits) == (None, None)
    assert (plan.layers["body.0.conv1"].weight_bits, plan.layers["body.0.conv1"].act_bits) == (None, 8)
    assert (plan.layers["conv_first"].weight_bits, plan.layers["conv_first"].act_bits) == (16, 16)
    assert plan.layers["upconv1"].weight_bits == 16 and plan.layers["upconv1"].act_bits == 8
    assert all(plan.layers[n].runs_int8 for n in ("body.0.conv2", "upconv2", "conv_last"))
