"""What `mixq allocate` tells the user: which precision each unit got and why (each option's gain and cost, and
what the chosen one saved or gave up against the others), the config's description, and the Markdown summary.
"""
from __future__ import annotations

from typing import Optional

from mixq_nncf.search.allocate import Allocation, Base, Budget, Item, Option
from mixq_nncf.search.sweep_report import UNTIMED_BF16, bf16_offered

# the config value written for each chosen precision: 16-bit keeps the sweep's calibration and runs f32 on the CPU
# plugin ('fp32' would make the layer an ignored scope, which changes what nncf.quantize produces)
CONFIG_BITS = {"f32": "int16", "bf16": "bf16"}


def _cost_text(o: Option) -> str:
    return f"{o.latency_ms:.2f} ms, {o.size_bytes / 1e3:.1f} KB"


def _option_text(o: Option) -> str:
    return f"{o.precision}: {o.gain_db:+.3f} dB for {_cost_text(o)}"


def _unavailable_bf16(row: dict, summary: dict) -> Optional[str]:
    """Why a unit has no bf16 option here (None where it has one)."""
    if bf16_offered(summary) and "bf16_gain_db" in row:
        return None
    if "bf16_gain_db" not in row:
        return "bf16: not measured by this sweep"
    note = (summary.get("bf16") or UNTIMED_BF16).get("note") or "bf16 not offered"
    return f"bf16: not offered ({note}; emulated {row['bf16_gain_db']:+.3f} dB where bf16 runs)"


def _why(options: tuple[Option, ...], chosen: str, unavailable: Optional[str], budget: Budget) -> str:
    """'f32: +0.420 dB for 2.90 ms, 1.0 KB; bf16: +0.410 dB for 0.80 ms, 3.0 KB; chose bf16 (f32 would change
    that by +0.010 dB for +2.10 ms)': the cost compared is the budget's (KB for size budgets, ms otherwise)."""
    parts = [_option_text(o) for o in options] + ([unavailable] if unavailable else [])
    axis_ms = budget.kind != "size_mb"
    if chosen == "int8":
        parts.append(f"kept int8 (not in the best choice under {budget.describe()})")
        return "; ".join(parts)
    pick = next(o for o in options if o.precision == chosen)
    others = []
    for o in options:
        if o is pick:
            continue
        dg = o.gain_db - pick.gain_db
        dc = (o.latency_ms - pick.latency_ms) if axis_ms else (o.size_bytes - pick.size_bytes) / 1e3
        unit = "ms" if axis_ms else "KB"
        others.append(f"{o.precision} would change that by {dg:+.3f} dB for {dc:+.2f} {unit}")
    parts.append(f"chose {chosen}" + (f" ({', '.join(others)})" if others else ""))
    return "; ".join(parts)


def unit_choices(summary: dict, items: list[Item], alloc: Allocation, budget: Budget,
                 reference: Optional[str] = None) -> list[dict]:
    """Per measured unit: the precision it got, the config value written for it, each option's gain and cost (as
    the final solve saw them, verify corrections included) and why, as text."""
    rows = {r["name"]: r for r in (summary["units"] or summary["stages"])}
    kept = set(alloc.chosen)
    out = []
    for item in items:
        row = rows.get(item.name, {})
        if reference:  # the answer is a reference model: its chosen names are layers
            chosen = "f32" if set(item.layers) <= kept else "int8"
        else:
            chosen = alloc.precision_of(item.name)
        options = item.options()
        unavailable = None if item.bf16 is not None else _unavailable_bf16(row, summary)
        why = _why(options, chosen, unavailable, budget)
        if reference:
            why += f"; the answer is the sweep's reference model '{reference}'"
        entry = {"name": item.name, "layers": list(item.layers), "override": item.override, "precision": chosen,
                 "config_bits": CONFIG_BITS.get(chosen),
                 "options": {o.precision: {"gain_db": o.gain_db, "latency_ms": o.latency_ms,
                                           "size_bytes": o.size_bytes} for o in options},
                 "why": why}
        if "bf16_gain_db" in row:
            entry["bf16_emulated_gain_db"] = row["bf16_gain_db"]
        out.append(entry)
    return out


def kept_text(alloc: Allocation) -> str:
    """'a, b (f32 as int16); c (bf16)' or 'none (all-int8)'."""
    groups: dict[str, list[str]] = {}
    for n in alloc.chosen:
        groups.setdefault(alloc.precision_of(n), []).append(n)
    text = "; ".join(f"{', '.join(ns)} ({'f32 as int16' if p == 'f32' else p})" for p, ns in sorted(groups.items()))
    return text or "none (all-int8)"


def describe(alloc: Allocation, measured: Optional[dict], summary: dict) -> str:
    """The config's description: the budget, the chosen precisions, predicted and verified figures."""
    text = (f"mixq allocate, budget: {alloc.budget.describe()}. Kept high (int16 runs fp32 on the CPU; bf16 runs "
            f"bf16 on CPUs with AVX512-BF16/AMX, f32 elsewhere): {kept_text(alloc)}. Predicted: latency "
            f"{alloc.latency_ms:.2f} ms ({alloc.latency_ms / summary['latency_ms']['int8']:.3f} x all-int8), "
            f"fidelity {alloc.fidelity_db:.2f} dB, IR {alloc.size_bytes / 1e6:.2f} MB.")
    sc = summary.get("activation_scheme")
    if sc:
        text += (f" Activations: {sc['chosen']} (measured against {', '.join(m for m in sc['schemes'] if m != sc['chosen'])}"
                 f" by the sweep; configured: {sc['configured']}).")
    if measured:
        rc = measured["runtime_convs"]
        text += (f" Verified on {summary['machine']['cpu']} at LR {summary['input_size'][0]}x{summary['input_size'][1]}: "
                 f"latency {measured['latency_ms']:.2f} ms = {measured['latency_ratio']:.3f} x all-int8 "
                 f"(interleaved medians; paper recipe {measured['paper_ratio']:.3f} x), fidelity to fp32 "
                 f"{measured['fidelity_db']:.2f} dB on {measured['eval_images']} eval photos (all-int8 "
                 f"{measured['int8_fidelity_db']:.2f}, paper recipe {measured['paper_fidelity_db']:.2f}), IR "
                 f"{measured['size_bytes'] / 1e6:.2f} MB, convs int8/fp32/bf16 at runtime "
                 f"{rc['int8']}/{rc['fp32']}/{rc.get('bf16', 0)}.")
        c = measured.get("other_scheme")
        if c:
            text += (f" Against the {c['activations']}-activation references, same run: all-int8 "
                     f"{c['int8_fidelity_db']:.2f} dB, paper recipe {c['paper_fidelity_db']:.2f} dB at "
                     f"{c['paper_ratio'] / c['int8_ratio']:.3f} x their all-int8; this config "
                     f"{c['latency_ratio_vs_its_int8']:.3f} x that all-int8.")
    return text


def allocation_markdown(alloc: Allocation, measured: Optional[dict], met: bool, rounds: int, summary: dict,
                        base: Base, budget: Budget, units: list[dict]) -> str:
    """Predicted vs verified figures against the references, then each unit's precision and why."""
    lines = [f"Budget: {budget.describe()}", f"Kept high: {kept_text(alloc)}", "",
             "| | latency ms | vs int8 | fidelity dB | IR MB |", "|---|---|---|---|---|",
             f"| predicted | {alloc.latency_ms:.2f} | {alloc.latency_ms / base.latency_ms:.3f} | "
             f"{alloc.fidelity_db:.2f} | {alloc.size_bytes / 1e6:.2f} |"]
    if measured:
        int8_mb, paper_mb = summary["size_bytes"]["int8"] / 1e6, summary["size_bytes"]["paper"] / 1e6
        lines += [f"| verified | {measured['latency_ms']:.2f} | {measured['latency_ratio']:.3f} | "
                  f"{measured['fidelity_db']:.2f} | {measured['size_bytes'] / 1e6:.2f} |",
                  f"| all-int8 | {measured['int8_ms']:.2f} | 1.000 | {measured['int8_fidelity_db']:.2f} | "
                  f"{int8_mb:.2f} |",
                  f"| paper recipe | {measured['paper_ms']:.2f} | {measured['paper_ratio']:.3f} | "
                  f"{measured['paper_fidelity_db']:.2f} | {paper_mb:.2f} |"]
        c = measured.get("other_scheme")
        if c:
            base_ms = measured["int8_ms"]
            lines += [f"| all-int8, {c['activations']} act. | {c['int8_ratio'] * base_ms:.2f} | "
                      f"{c['int8_ratio']:.3f} | {c['int8_fidelity_db']:.2f} | {int8_mb:.2f} |",
                      f"| paper recipe, {c['activations']} act. | {c['paper_ratio'] * base_ms:.2f} | "
                      f"{c['paper_ratio']:.3f} | {c['paper_fidelity_db']:.2f} | {paper_mb:.2f} |"]
        lines.append(f"\nBudget {'met' if met else 'MISSED'} after {rounds} verify round(s).")
        for m in measured.get("mismatches") or []:
            lines.append(f"Warning: {m}")
    info = summary.get("bf16") or UNTIMED_BF16
    lines += ["", "Per unit (gain over all-int8, added latency and IR bytes of each option; bf16 gains are emulated "
              "in torch" + (f"; {info['note']}" if info.get("note") else "") + "):", "",
              "| unit | precision | config | why |", "|---|---|---|---|"]
    for u in units:
        lines.append(f"| {u['name']} | {u['precision']} | {u['config_bits'] or '-'} | {u['why']} |")
    return "\n".join(lines)
