"""Latency-aware precision allocation: which precision each unit gets, given measured costs and one budget.
Pure, no NNCF.

On the OpenVINO CPU plugin a conv runs int8, bf16 (CPUs with AVX512-BF16 / AMX) or f32 (16-bit layers run f32),
so an allocation picks, per unit on an all-int8 base, at most one of its non-int8 options. Each option carries
its measured fidelity gain (dB) and its measured latency and size costs; the solver is an exact multiple-choice
knapsack over them (a dynamic programme over the Pareto front of (cost, gain), exact for real-valued costs).
Units without a bf16 option reduce to the 0/1 knapsack of int8 vs f32. Gains are taken as additive in dB, which
the verify step checks on the real IR.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from itertools import product
from typing import Iterable, Optional

from mixq_nncf.errors import MixqError

# fidelity of fp32 to itself: outputs closer than this are rounding noise (export.LOSSLESS_DB); --max-drop-db D
# means fidelity >= CEILING_DB - D
CEILING_DB = 50.0
BUDGET_KINDS = ("latency_ratio", "latency_ms", "size_mb", "min_fidelity_db", "max_drop_db")


class BudgetError(MixqError):
    """A budget no allocation can meet, or a malformed one."""


@dataclass(frozen=True)
class Option:
    """One non-int8 precision a unit may take, with what it gains and costs over keeping it int8."""
    precision: str  # "f32" (16-bit weights, run f32 by the plugin) or "bf16" (unquantized, run bf16)
    gain_db: float
    latency_ms: float
    size_bytes: float


@dataclass(frozen=True)
class Item:
    """A unit the allocator may keep high: layers that move together, with measured gain and costs. The
    gain / latency / size fields are its f32 option; ``bf16`` is its bf16 option where this CPU offers one."""
    name: str
    layers: tuple[str, ...]
    gain_db: float  # fidelity gained by keeping it high (f32) on the all-int8 base
    latency_ms: float  # latency added (fp32 - int8 conv time + precision-boundary nodes)
    size_bytes: float  # IR bytes added
    override: str = "bits"  # config key raised: "bits" (weights + input) or "weights"
    bf16: Optional[Option] = None

    def options(self) -> tuple[Option, ...]:
        """The unit's non-int8 choices, f32 first (on exact ties the solver keeps the earlier one)."""
        f32 = Option("f32", self.gain_db, self.latency_ms, self.size_bytes)
        return (f32,) if self.bf16 is None else (f32, self.bf16)

    def scaled(self, *, latency: float = 1.0, gain: float = 1.0) -> "Item":
        """Every option's latency and gain scaled (a verify round's correction)."""
        bf16 = None if self.bf16 is None else replace(self.bf16, latency_ms=self.bf16.latency_ms * latency,
                                                      gain_db=self.bf16.gain_db * gain)
        return replace(self, latency_ms=self.latency_ms * latency, gain_db=self.gain_db * gain, bf16=bf16)


@dataclass(frozen=True)
class Base:
    """The all-int8 model the allocation starts from."""
    latency_ms: float
    size_bytes: float
    fidelity_db: float


@dataclass(frozen=True)
class Budget:
    kind: str
    value: float

    def __post_init__(self):
        if self.kind not in BUDGET_KINDS:
            raise BudgetError(f"unknown budget {self.kind!r}; choose one of {', '.join(BUDGET_KINDS)}")

    def describe(self) -> str:
        return {"latency_ratio": f"latency <= {self.value:g} x all-int8", "latency_ms": f"latency <= {self.value:g} ms",
                "size_mb": f"IR size <= {self.value:g} MB", "min_fidelity_db": f"fidelity >= {self.value:g} dB",
                "max_drop_db": f"fidelity >= {CEILING_DB - self.value:g} dB (drop <= {self.value:g} dB below the "
                               f"{CEILING_DB:g} dB lossless ceiling)"}[self.kind]


@dataclass(frozen=True)
class Allocation:
    chosen: tuple[str, ...]
    latency_ms: float
    size_bytes: float
    fidelity_db: float
    budget: Budget
    front_size: int = 0
    notes: tuple[str, ...] = field(default_factory=tuple)
    precisions: dict[str, str] = field(default_factory=dict)  # unit -> "f32" / "bf16"; absent: f32

    def precision_of(self, name: str) -> str:
        """'int8' for a unit not chosen, else the chosen option's precision."""
        return self.precisions.get(name, "f32") if name in self.chosen else "int8"

    @property
    def picks(self) -> frozenset[tuple[str, str]]:
        """(unit, precision) pairs: what identifies a measured allocation."""
        return frozenset((n, self.precision_of(n)) for n in self.chosen)


def _cost(option: Option | Item, axis: str) -> float:
    return max(0.0, option.size_bytes if axis == "size" else option.latency_ms)  # a negative cost is noise: free


Pick = tuple[int, int]  # (item index, option index into item.options())


def pareto_front(items: list[Item], axis: str, cap: float = float("inf")
                 ) -> list[tuple[float, float, tuple[Pick, ...]]]:
    """Every non-dominated (cost, gain, picks) over choices of at most one option per item with cost <= cap,
    cheapest first.

    Exact: a choice is dropped only when another costs no more and gains at least as much."""
    states: list[tuple[float, float, tuple[Pick, ...]]] = [(0.0, 0.0, ())]
    for i, item in enumerate(items):
        grown = []
        for k, option in enumerate(item.options()):
            c, g = _cost(option, axis), option.gain_db
            grown += [(sc + c, sg + g, chosen + ((i, k),)) for sc, sg, chosen in states if sc + c <= cap + 1e-12]
        merged = sorted(states + grown, key=lambda s: (s[0], -s[1], len(s[2])))
        states, best = [], float("-inf")
        for s in merged:
            if s[1] > best + 1e-12:
                states.append(s)
                best = s[1]
    return states


def _limits(base: Base, budget: Budget) -> tuple[str, float, Optional[float]]:
    """(cost axis, cost cap, needed gain) for a budget."""
    v = budget.value
    if budget.kind == "latency_ratio":
        if v < 1.0:
            raise BudgetError(f"--max-latency-ratio {v:g}: the all-int8 model is the fastest this allocator builds "
                              "(ratio 1.0); give a ratio >= 1")
        return "latency", base.latency_ms * (v - 1.0), None
    if budget.kind == "latency_ms":
        if v < base.latency_ms:
            raise BudgetError(f"--max-latency-ms {v:g}: even all-int8 takes {base.latency_ms:.2f} ms at this input "
                              "size; raise the budget or use a smaller --input-size in the sweep")
        return "latency", v - base.latency_ms, None
    if budget.kind == "size_mb":
        if v * 1e6 < base.size_bytes:
            raise BudgetError(f"--max-size-mb {v:g}: the all-int8 IR is already {base.size_bytes / 1e6:.3f} MB")
        return "size", v * 1e6 - base.size_bytes, None
    target = v if budget.kind == "min_fidelity_db" else CEILING_DB - v
    return "latency", float("inf"), target - base.fidelity_db


def solve(items: Iterable[Item], base: Base, budget: Budget, *, slack: float = 0.0) -> Allocation:
    """The best precision per unit under the budget (at most one non-int8 option each).

    Cost budgets (latency, size): the most fidelity gain whose summed cost fits. Fidelity budgets: the least latency
    whose summed gain reaches the target. ``slack`` tightens the budget (cost units, or dB for fidelity budgets):
    the verify step uses it to step back after a miss."""
    items = list(items)
    axis, cap, need = _limits(base, budget)
    notes = []
    if need is None:
        front = pareto_front(items, axis, cap - slack)
        cost, gain, chosen = front[-1]  # cheapest-first with rising gain: the last is the best gain
    else:
        need += slack
        front = pareto_front(items, axis)
        fits = [s for s in front if s[1] >= need - 1e-12]
        if not fits:
            best = base.fidelity_db + front[-1][1]
            raise BudgetError(f"{budget.describe()}: keeping every measured unit high reaches only {best:.2f} dB "
                              f"(predicted); lower the target or sweep more units (--top-k)")
        cost, gain, chosen = fits[0]
    picked = [(items[i], items[i].options()[k]) for i, k in chosen]
    if not picked:
        notes.append("no unit fits the budget: the allocation is all-int8")
    options = [o for _, o in picked]
    return Allocation(tuple(it.name for it, _ in picked), base.latency_ms + sum(_cost(o, "latency") for o in options),
                      base.size_bytes + sum(_cost(o, "size") for o in options),
                      base.fidelity_db + sum(o.gain_db for o in options), budget, len(front), tuple(notes),
                      {it.name: o.precision for it, o in picked})


def brute_force(items: list[Item], base: Base, budget: Budget) -> tuple[float, float]:
    """(best objective, its cost) by trying every choice of at most one option per item: the solver's reference
    on small instances."""
    axis, cap, need = _limits(base, budget)
    best: Optional[tuple[float, float]] = None
    for choice in product(*[(None,) + it.options() for it in items]):
        subset = [o for o in choice if o is not None]
        cost = sum(_cost(o, axis) for o in subset)
        gain = sum(o.gain_db for o in subset)
        if need is None:
            if cost <= cap + 1e-12 and (best is None or gain > best[0] + 1e-12):
                best = (gain, cost)
        elif gain >= need - 1e-12 and (best is None or cost < best[0] - 1e-12):
            best = (cost, gain)
    if best is None:
        raise BudgetError("no choice meets the budget")
    return best
