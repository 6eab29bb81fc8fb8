"""`mixq allocate`: solve on a sweep's measurements, build the chosen config's IR, measure it, step back on a miss.

The written config is an ordinary one: the sweep's config with ``scope_overrides`` naming the layers kept at
16 bits (which run as fp32 convolutions on the CPU plugin) and those run in bf16 ('bf16': unquantized, bf16 on
CPUs with AVX512-BF16/AMX). 16-bit rather than 'fp32' for the f32 choice keeps the calibration the sweep measured
with (an unquantized layer is an ignored scope, which changes what nncf.quantize produces).
"""
from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from mixq_nncf.config.plan import resolve_plan
from mixq_nncf.config.schema import Config, parse_config
from mixq_nncf.errors import ConfigError
from mixq_nncf.io_utils import atomic_write_json, atomic_write_text
from mixq_nncf.ir.audit import audit_runtime
from mixq_nncf.ir.bench import Target, benchmark
from mixq_nncf.ir.export import export_ir, ir_size
from mixq_nncf.search.allocate import CEILING_DB, Allocation, Base, Budget, BudgetError, Item, solve
from mixq_nncf.search.allocate_report import CONFIG_BITS, allocation_markdown, describe, unit_choices
from mixq_nncf.search.context import Context
from mixq_nncf.search.fidelity import ir_fidelity
from mixq_nncf.search.spec import SweepSpec
from mixq_nncf.search.sweep_report import allocation_base, allocation_items, plot_pareto


def read_sweep(sweep_dir: Path) -> dict:
    path = Path(sweep_dir) / "sweep.json"
    if not path.is_file():
        raise BudgetError(f"{path} not found: run `mixq sweep CONFIG --out {sweep_dir}` to the end first (a sharded "
                          "sweep writes it once every shard's results.jsonl is in the folder)")
    return json.loads(path.read_text())


def sweep_config(sweep_dir: Path) -> dict:
    """The config the sweep measured on: its effective config (the activation scheme it chose), else the one given."""
    d = Path(sweep_dir)
    path = d / "effective_config.json" if (d / "effective_config.json").is_file() else d / "config.json"
    return json.loads(path.read_text())


def _config_with(base_cfg: dict, overrides: dict[str, dict], activations: Optional[str] = None) -> dict:
    """A copy of the sweep's config with these layers' scope overrides first (so they win) and, if given, another
    activation scheme."""
    cfg = json.loads(json.dumps(base_cfg))
    comp = cfg.setdefault("compression", {})
    if activations:
        comp.setdefault("activations", {})["mode"] = activations
    comp["scope_overrides"] = {**overrides, **{k: v for k, v in (comp.get("scope_overrides") or {}).items()
                                               if k not in overrides}}
    cfg["name"] = cfg.get("name", "experiment") + "-allocated"
    return cfg


def allocation_config(base_cfg: dict, chosen: list[Item], description: str,
                      precisions: Optional[dict[str, str]] = None) -> dict:
    """The sweep's config with the chosen units at their precision (``precisions``: unit -> "f32" / "bf16",
    f32 where absent): f32 as 16 bits, bf16 as 'bf16'; on weights and input ("bits") or the weights alone."""
    precisions = precisions or {}
    cfg = _config_with(base_cfg, {layer: {"bits" if item.override == "bits" else "weights":
                                          CONFIG_BITS[precisions.get(item.name, "f32")]}
                                  for item in chosen for layer in item.layers})
    cfg["description"] = description
    return cfg


def _budget_miss(budget: Budget, base: Base, measured: dict) -> float:
    """How far the measured model misses the budget (0 = met), in the solver's slack units."""
    v = budget.value
    if budget.kind == "latency_ratio":
        return max(0.0, measured["latency_ratio"] - v) * base.latency_ms
    if budget.kind == "latency_ms":
        return max(0.0, measured["latency_ratio"] * base.latency_ms - v)
    if budget.kind == "size_mb":
        return max(0.0, measured["size_bytes"] - v * 1e6)
    target = v if budget.kind == "min_fidelity_db" else CEILING_DB - v
    return max(0.0, target - measured["fidelity_db"])


def _export_allocation(sweep_dir: Path, summary: dict, cfg: Config, tag: str,
                       log: Callable[[str], None]) -> tuple[Path, float, dict, dict[str, str]]:
    """The config's plan applied to the sweep's calibrated model (re-planned, not calibrated again), exported with
    each float layer's f32 / bf16 in the IR (as `mixq run` exports it) and scored on the eval photos: (xml, export
    seconds, fidelity, the precision requested of each conv)."""
    sw = summary["sweep"]
    spec = SweepSpec(**{**sw, "input_size": tuple(sw["input_size"])})
    ctx = Context(parse_config(sweep_config(sweep_dir)), spec, sweep_dir, log)
    plan = resolve_plan(ctx.fp32, cfg.compression, tuple(cfg.input_info.range))
    xml = sweep_dir / "allocations" / tag / "model.xml"
    t0 = time.perf_counter()
    floats = None if cfg.export.float_deployment == "f32" else plan.float_kinds()
    export_ir(ctx.apply(plan, scored=False), xml, example_input=ctx.eval_pairs()[0]["lr"][None, :, :32, :32],
              compact_16bit=cfg.export.compact_16bit, float_precision=floats)
    export_s = time.perf_counter() - t0
    fid = ir_fidelity(xml, sweep_dir / "irs" / "fp32.xml", ctx.eval_pairs(), ctx.crop_border)
    requested = {n: "int8" if p.runs_int8 else p.float_kind for n, p in plan.layers.items()}
    return xml, export_s, fid, requested


def _measure(sweep_dir: Path, summary: dict, cfg_dict: dict, tag: str, bench_iterations: int,
             log: Callable[[str], None], existing: Optional[tuple[Path, dict]] = None) -> dict:
    """Latency of the config's IR vs all-int8 and the paper recipe (interleaved, one run), fidelity on the eval
    photos, runtime precision. The IR is exported from the sweep's calibrated model, or ``existing``: one the
    sweep already built and scored (xml, fidelity), whose latency and runtime precision are measured again."""
    cfg = parse_config({k: v for k, v in cfg_dict.items() if k != "description"})
    if existing:
        (xml, fid), export_s, requested = existing, 0.0, None
    else:
        xml, export_s, fid, requested = _export_allocation(sweep_dir, summary, cfg, tag, log)
    h, w = summary["input_size"]
    irs = sweep_dir / "irs"
    targets = [Target("int8", "openvino", irs / "int8.xml"), Target("allocated", "openvino", xml),
               Target("paper", "openvino", irs / "paper.xml")]
    sc = summary.get("activation_scheme")
    other = next((m for m in (sc or {}).get("schemes", {}) if m != sc["chosen"]
                  and "error" not in sc["schemes"][m]), None)
    if other:  # the other scheme's references, in the same interleaved run
        targets += [Target(f"{k}_other", "openvino", sweep_dir / "schemes" / other / f"{k}.xml")
                    for k in ("int8", "paper")]
    stats = {s.name: s.median_ms for s in benchmark(targets, input_size=(h, w), iterations=bench_iterations,
                                                      warmup=2, progress=False)}
    audit = audit_runtime(xml, (1, 3, h, w), requested=requested)
    ref = summary["ir_fidelity"]
    # the budget's "all-int8" is the fastest all-int8 IR of the run: the other scheme's one may be faster
    ref_ms = min(stats["int8"], stats.get("int8_other", stats["int8"]))
    out = {"xml": str(xml), "latency_ms": stats["allocated"], "int8_ms": stats["int8"], "paper_ms": stats["paper"],
           "latency_ratio": stats["allocated"] / ref_ms, "paper_ratio": stats["paper"] / stats["int8"],
           "size_bytes": ir_size(xml).bin_bytes, "fidelity_db": fid["psnr"],
           "fidelity_ssim": fid["ssim"], "int8_fidelity_db": ref["int8"]["psnr"],
           "paper_fidelity_db": ref["paper"]["psnr"], "eval_images": summary["eval_images"],
           "runtime_convs": {"int8": audit.conv_int8, "fp32": audit.conv_fp32, "bf16": audit.conv_bf16},
           "fp32_convs": audit.fp32_convs, "export_s": round(export_s, 1),
           "mismatches": list(getattr(audit, "mismatches", []) or [])}
    if other:
        row = sc["schemes"][other]
        out["other_scheme"] = {"activations": other, "int8_ratio": stats["int8_other"] / stats["int8"],
                               "paper_ratio": stats["paper_other"] / stats["int8"],
                               "latency_ratio_vs_its_int8": stats["allocated"] / stats["int8_other"],
                             "int8_fidelity_db": row["int8_fidelity_db"], "paper_fidelity_db": row["paper_fidelity_db"]}
    return out


def reference_candidates(sweep_dir: Path, summary: dict, base_cfg: dict) -> list[dict]:
    """Models the sweep already built and measured (all-int8 and the paper recipe under each activation scheme):
    an allocation never ends worse than one of them that meets the budget."""
    sc = summary.get("activation_scheme")
    rows = {m: r for m, r in (sc["schemes"] if sc else {}).items() if "error" not in r}
    paper = summary.get("paper_layers", [])
    out = []
    if not rows:  # the sweep kept the configured scheme: its own references
        fastest = summary["latency_ms"]["int8"]
        for k in ("int8", "paper"):
            out.append({"name": f"{'all-int8' if k == 'int8' else 'paper recipe'}",
                        "xml": Path(sweep_dir) / "irs" / f"{k}.xml", "mode": None, "paper": k == "paper",
                        "latency_ratio": summary["latency_ms"][k] / fastest,
                        "fidelity": summary["ir_fidelity"][k], "size_bytes": summary["size_bytes"][k]})
    else:
        fastest = min(r["int8_ms"] for r in rows.values())
        for mode, r in rows.items():
            for k in ("int8", "paper"):
                out.append({"name": f"{'all-int8' if k == 'int8' else 'paper recipe'}, {mode} activations",
                            "xml": Path(sweep_dir) / "schemes" / mode / f"{k}.xml", "mode": mode, "paper": k == "paper",
                            "latency_ratio": r[f"{k}_ms"] / fastest,
                            "fidelity": {"psnr": r[f"{k}_fidelity_db"],
                                         "ssim": r.get(f"{k}_fidelity_ssim", float("nan"))},
                            "size_bytes": summary["size_bytes"][k]})
    for c in out:
        c["config"] = _config_with(base_cfg, {n: {"bits": "int16"} for n in paper} if c["paper"] else {}, c["mode"])
    return [c for c in out if c["xml"].is_file()]


def _meets(budget: Budget, base: Base, ratio: float, size_bytes: float, fidelity_db: float) -> bool:
    v = budget.value
    if budget.kind == "latency_ratio":
        return ratio <= v
    if budget.kind == "latency_ms":
        return ratio * base.latency_ms <= v
    if budget.kind == "size_mb":
        return size_bytes <= v * 1e6
    return fidelity_db >= (v if budget.kind == "min_fidelity_db" else CEILING_DB - v)


def _better(budget: Budget, a: tuple[float, float], b: tuple[float, float]) -> bool:
    """Is (latency ratio, fidelity) a better answer to the budget than b? Cost budgets: more fidelity; fidelity
    budgets: less latency."""
    if budget.kind in ("min_fidelity_db", "max_drop_db"):
        return a[0] < b[0] - 1e-9
    return a[1] > b[1] + 1e-9


def corrected_items(items: list[Item], chosen: set[str], predicted: Allocation, base: Base, measured: dict,
                    budget: Budget) -> tuple[list[Item], float]:
    """The items with what a verify round taught: the chosen units' latency scaled by measured / predicted added
    latency (their Reorder/Convert boundaries inside an int8 chain are what the sweep's estimate misses), and for
    fidelity budgets their gain by measured / predicted gain (gains measured one unit at a time do not add up).
    Unchosen units of the same kind (weights-only or weights+input) get the same factor: the estimate errs alike
    for them, and otherwise the next round only swaps in units whose error has not been seen yet."""
    kinds = {i.override for i in items if i.name in chosen}
    chosen = {i.name for i in items if i.override in kinds}
    # every option of those units carries the factor: the boundaries and the one-at-a-time gains err alike for them

    if budget.kind in ("latency_ratio", "latency_ms"):
        pred = predicted.latency_ms - base.latency_ms
        meas = (measured["latency_ratio"] - 1.0) * base.latency_ms
        factor = meas / pred if pred > 1e-9 else 1.0
        factor = max(factor, 1.0)  # a miss never makes the chosen units cheaper
        return [i.scaled(latency=factor) if i.name in chosen else i for i in items], factor
    if budget.kind in ("min_fidelity_db", "max_drop_db"):
        pred = predicted.fidelity_db - base.fidelity_db
        meas = measured["fidelity_db"] - measured["int8_fidelity_db"]
        factor = min(1.0, max(0.0, meas / pred)) if pred > 1e-9 else 1.0
        return [i.scaled(gain=factor) if i.name in chosen else i for i in items], factor
    return items, 1.0


# ----------------------------------------------------------------------------------------------
# solve, verify, step back

@dataclass(frozen=True)
class _Problem:
    """One allocation to find: the finished sweep, the budget, and how a candidate is measured."""
    sweep_dir: Path
    summary: dict
    base_cfg: dict  # the config the sweep measured on
    base: Base
    budget: Budget  # as the user gave it: what a measured model must meet
    target: Budget  # as the solver takes it (a latency ratio to the chosen scheme's all-int8)
    bench_iterations: int
    log: Callable[[str], None]

    def measure(self, cfg_dict: dict, tag: str, existing: Optional[tuple[Path, dict]] = None) -> dict:
        return _measure(self.sweep_dir, self.summary, cfg_dict, tag, self.bench_iterations, self.log, existing)

    def miss(self, measured: dict) -> float:
        return _budget_miss(self.budget, self.base, measured)


@dataclass
class _Answer:
    """The allocation so far, its config, and what measuring it said."""
    alloc: Allocation
    config: dict
    measured: Optional[dict] = None
    history: list[dict] = field(default_factory=list)
    met: bool = True
    reference: Optional[str] = None  # the name of the sweep's reference model, when it is the answer
    items: list[Item] = field(default_factory=list)  # as the last solve saw them (verify corrections included)


def _solver_budget(summary: dict, budget: Budget, log: Callable[[str], None]) -> Budget:
    """The budget the solver takes: a latency ratio is to the fastest all-int8, which may be the other activation
    scheme's, while the solver's costs are relative to the chosen scheme's all-int8."""
    sc = summary.get("activation_scheme")
    if not (sc and budget.kind == "latency_ratio"):
        return budget
    speeds = [r["int8_ms"] for r in sc["schemes"].values() if "int8_ms" in r]
    slower = sc["schemes"][sc["chosen"]]["int8_ms"] / min(speeds)
    if slower <= 1.0:
        return budget
    log(f"the {sc['chosen']} all-int8 base runs {slower:.3f}x the fastest all-int8: solving for "
        f"{budget.value / slower:.4f}x of it")
    return Budget(budget.kind, budget.value / slower)


def _step_back(budget: Budget, base: Base) -> float:
    """How much to tighten the budget to move off a set of units that already missed."""
    if budget.kind.startswith("latency"):
        return 0.02 * base.latency_ms
    return 0.02 * base.size_bytes if budget.kind == "size_mb" else 0.05


def _solve_and_verify(p: _Problem, items: list[Item], *, verify: bool, rounds: int) -> _Answer:
    """Solve; when verifying, build and measure the answer, and on a miss correct the chosen units' costs (or
    gains) by what was measured and solve again. A set that missed once is never tried again."""
    slack, history, tried = 0.0, [], set()
    measured = None
    alloc = solve(items, p.base, p.target)
    for r in range(max(1, rounds)):
        try:
            alloc = solve(items, p.base, p.target, slack=slack)
            while alloc.picks in tried and alloc.chosen:  # never re-measure a choice that missed
                slack += _step_back(p.budget, p.base)
                alloc = solve(items, p.base, p.target, slack=slack)
        except BudgetError as exc:  # the corrected gains cannot reach a fidelity target any more
            p.log(f"stepping back stopped: {exc}")
            break
        chosen = [i for i in items if i.name in alloc.chosen]
        cfg_dict = allocation_config(p.base_cfg, chosen, describe(alloc, None, p.summary), alloc.precisions)
        if not verify:
            break
        tried.add(alloc.picks)
        p.log(f"verifying round {r + 1}: {len(alloc.chosen)} units kept high "
              f"({sum(v == 'bf16' for v in alloc.precisions.values())} of them bf16) "
              f"(predicted {alloc.latency_ms / p.base.latency_ms:.3f}x all-int8, {alloc.fidelity_db:.2f} dB)")
        measured = p.measure(cfg_dict, f"{p.budget.kind}-{p.budget.value:g}-r{r}")
        miss = p.miss(measured)
        entry = {"round": r, "chosen": list(alloc.chosen), "precisions": dict(alloc.precisions),
                 "predicted_latency_ms": alloc.latency_ms,
                 "predicted_fidelity_db": alloc.fidelity_db, "measured": measured, "miss": miss}
        history.append(entry)
        if miss <= 0 or not alloc.chosen:
            break
        items, factor = corrected_items(items, set(alloc.chosen), alloc, p.base, measured, p.target)
        entry["correction"] = factor
        p.log(f"budget missed by {miss:.3g}: chosen units corrected x{factor:.2f} by the measurement, solving again")
    met = not verify or bool(history and history[-1]["miss"] <= 0)
    return _Answer(alloc, cfg_dict, measured, history, met, items=items)


def _best_reference(budget: Budget, base: Base, candidates: list[dict]) -> Optional[dict]:
    """The reference model that meets the budget and answers it best, by the sweep's own figures."""
    best = None
    for c in candidates:
        if not _meets(budget, base, c["latency_ratio"], c["size_bytes"], c["fidelity"]["psnr"]):
            continue
        if best is None or _better(budget, (c["latency_ratio"], c["fidelity"]["psnr"]),
                                   (best["latency_ratio"], best["fidelity"]["psnr"])):
            best = c
    return best


def _prefer_reference(p: _Problem, answer: _Answer, candidates: list[dict]) -> None:
    """Replace the answer by a model the sweep already built when that one answers the budget better (or the
    answer missed it) and, measured again in the same run as the references, meets it."""
    best = _best_reference(p.budget, p.base, candidates)
    if best is None:
        return
    mine = (answer.measured["latency_ratio"], answer.measured["fidelity_db"]) \
        if answer.measured and answer.met else None
    if mine is not None and not _better(p.budget, (best["latency_ratio"], best["fidelity"]["psnr"]), mine):
        return
    p.log(f"{best['name']} (built and measured by the sweep: {best['latency_ratio']:.3f}x, "
          f"{best['fidelity']['psnr']:.2f} dB) answers the budget better: measuring it again")
    candidate = p.measure(best["config"], "reference", existing=(best["xml"], best["fidelity"]))
    miss = p.miss(candidate)
    answer.history.append({"round": len(answer.history), "reference": best["name"], "chosen": [],
                           "predicted_latency_ms": best["latency_ratio"] * p.base.latency_ms,
                           "predicted_fidelity_db": best["fidelity"]["psnr"], "measured": candidate, "miss": miss})
    if miss <= 0 or not answer.met:
        answer.reference, answer.measured, answer.met = best["name"], candidate, miss <= 0
        answer.config = best["config"]
        answer.alloc = Allocation(tuple(p.summary.get("paper_layers", [])) if best["paper"] else (),
                                  best["latency_ratio"] * p.base.latency_ms, best["size_bytes"],
                                  best["fidelity"]["psnr"], p.target)


# ----------------------------------------------------------------------------------------------
# outputs

def _write_config(answer: _Answer, summary: dict, out: Path) -> None:
    """The answer's config with the predicted and verified figures in its description; refused if it would not
    validate (never write a config the other commands would refuse)."""
    cfg_dict = answer.config
    cfg_dict["description"] = describe(answer.alloc, answer.measured, summary)
    if not answer.met:
        cfg_dict["description"] += f" BUDGET MISSED after {len(answer.history)} rounds."
    if answer.reference:
        cfg_dict["description"] += (f" This is the sweep's reference model '{answer.reference}': no measured set of "
                                    "units beat it.")
    try:
        parse_config({k: v for k, v in cfg_dict.items() if k != "description"})
    except ConfigError as exc:
        raise BudgetError(f"the allocated config does not validate: {exc}") from None
    atomic_write_text(out, json.dumps(cfg_dict, indent=2) + "\n")


def _record(answer: _Answer, base: Base, budget: Budget, out: Path, wall_s: float, units: list[dict],
            bf16: dict) -> dict:
    alloc = answer.alloc
    return {"budget": {"kind": budget.kind, "value": budget.value}, "chosen": list(alloc.chosen),
            "precisions": {n: alloc.precision_of(n) for n in alloc.chosen}, "units": units, "bf16": bf16,
            "predicted": {"latency_ms": alloc.latency_ms, "fidelity_db": alloc.fidelity_db,
                          "size_bytes": alloc.size_bytes, "latency_ratio": alloc.latency_ms / base.latency_ms},
            "verified": answer.measured, "rounds": answer.history, "budget_met": bool(answer.met),
            "reference": answer.reference, "wall_s": round(wall_s, 1), "config": str(out)}


def _add_pareto_point(sweep_dir: Path, summary: dict, budget: Budget, measured: dict) -> None:
    """Leave the verified allocation beside the sweep and redraw its Pareto plot with it."""
    atomic_write_json(sweep_dir / f"point_allocate_{budget.kind}_{budget.value:g}.json", {
        "name": f"mixq allocate ({budget.describe()})",
        "latency_ms": measured["latency_ratio"] * summary["latency_ms"]["int8"],
        "size_bytes": measured["size_bytes"], "fidelity_db": measured["fidelity_db"]})
    plot_pareto(summary, sweep_dir / "pareto.png")


def allocate_and_verify(sweep_dir: Path, budget: Budget, out: Path, *, verify: bool = True, rounds: int = 4,
                        bench_iterations: int = 30, log: Callable[[str], None] = print) -> dict:
    """Solve, build and measure; on a miss, correct the chosen units' costs (or gains) by what was measured and
    solve again, so each round steps back only as far as the measurement says; a set that missed once is never
    tried again. The answer is never worse than a model the sweep already built and measured that meets the
    budget (all-int8 and the paper recipe under each activation scheme): for a cost budget, all-int8 at worst."""
    t0 = time.perf_counter()
    summary = read_sweep(sweep_dir)
    sweep_dir, out = Path(sweep_dir), Path(out)
    base_cfg = sweep_config(sweep_dir)
    items, base = allocation_items(summary), allocation_base(summary)
    if not items:
        raise BudgetError(f"{sweep_dir}/sweep.json holds no measured units to allocate")
    problem = _Problem(sweep_dir, summary, base_cfg, base, budget, _solver_budget(summary, budget, log),
                       bench_iterations, log)

    # 1. solve, and while verifying, measure and step back on a miss
    answer = _solve_and_verify(problem, items, verify=verify, rounds=rounds)
    # 2. never worse than a reference model the sweep already built that meets the budget
    if verify:
        _prefer_reference(problem, answer, reference_candidates(sweep_dir, summary, base_cfg))
    answer.alloc = dataclasses.replace(answer.alloc, budget=budget)  # described by the budget the user gave

    # 3. the config, the record beside it, and the verified point on the sweep's Pareto plot
    _write_config(answer, summary, out)
    units = unit_choices(summary, answer.items, answer.alloc, budget, answer.reference)
    record = _record(answer, base, budget, out, time.perf_counter() - t0, units, summary.get("bf16") or {})
    record["markdown"] = allocation_markdown(answer.alloc, answer.measured, answer.met, len(answer.history),
                                             summary, base, budget, units)
    atomic_write_json(out.with_suffix(".allocation.json"), record)
    if answer.measured:
        _add_pareto_point(sweep_dir, summary, budget, answer.measured)
    return record
