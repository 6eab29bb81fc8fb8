"""Sweeps and allocation on a tiny MSRResNet: resume, crash records, shard merge, exact solver, config round trip."""
import json
import math
import random
import runpy
import shutil
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from allocation_checks import assert_meets_budget

from mixq_nncf.cli import main as mixq_main
from mixq_nncf.config.files import load_config
from mixq_nncf.config.plan import resolve_plan
from mixq_nncf.config.schema import parse_config
from mixq_nncf.cpu import has_bf16
from mixq_nncf.ir.audit import audit_runtime
from mixq_nncf.models import build_generator
from mixq_nncf.search import sweep as sweep_mod
from mixq_nncf.search.allocate import Base, Budget, BudgetError, Item, brute_force, solve
from mixq_nncf.search.context import worst_and_spread
from mixq_nncf.search.costs import NO_BF16_NOTE
from mixq_nncf.search.spec import SCHEME_LATENCY_TOLERANCE, SweepError, SweepSpec, parse_shard
from mixq_nncf.search.store import ResultStore
from mixq_nncf.search.sweep import run_sweep
from mixq_nncf.search.sweep_report import allocation_items
from mixq_nncf.search.verify import (_export_allocation, allocate_and_verify, corrected_items, reference_candidates,
                                     sweep_config)
from tiny_models import TINY


def build_tiny():
    return build_generator("msrresnet_x4", **TINY)

SPEC = SweepSpec(granularity="layer", input_size=(16, 16), top_k=3, top_k_cheap=1, rank_images=2, rank_crop=16,
                 latency_runs=2, bench_iterations=3, activations="configured")


def _cfg():
    return parse_config({"name": "tiny", "model": {"arch": "msrresnet_x4", "args": TINY, "weights": None},
                         "data": {"calibration_samples": 4, "calibration_patch": 16, "eval_max_images": 2},
                         "compression": {"initializer": {"fast_bias_correction": False}}})


def _lines(folder):
    return [json.loads(line) for p in sorted(folder.glob("results*.jsonl")) for line in p.read_text().splitlines()]


def _quality_view(summary):
    """What must not depend on how jobs were split (latency is measured anew by whichever shard runs it)."""
    return {"stages": {r["name"]: (round(r["gain_db"], 6), round(r["loss_db"], 6)) for r in summary["stages"]},
            "units": {r["name"]: (round(r["gain_db"], 6), round(r["loss_db"], 6)) for r in summary["units"]},
            "ranking": summary["ranking"]["crops"]}


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """One sweep whose first run has a crashing job, then a resumed run that completes it."""
    out = tmp_path_factory.mktemp("sweep")
    cfg = _cfg()
    crash_unit = {}
    real = sweep_mod.measure_gain  # patched where run_job looks it up

    def crashing(ctx, unit):
        if unit.kind == "layer" and not crash_unit:
            crash_unit["name"] = unit.name
            raise RuntimeError("injected failure")
        return real(ctx, unit)

    sweep_mod.measure_gain = crashing
    try:
        first = run_sweep(cfg, out, SPEC, progress=False, log=lambda m: None)
    finally:
        sweep_mod.measure_gain = real
    after_first = _lines(out)
    report_after_first = (out / "sweep.json").exists()
    second = run_sweep(cfg, out, SPEC, progress=False, log=lambda m: None)
    return {"out": out, "cfg": cfg, "first": first, "second": second, "after_first": after_first,
            "crash": crash_unit["name"],
            "report_after_first": report_after_first}


def test_crashing_job_is_recorded_and_the_sweep_goes_on(swept):
    first, lines = swept["first"], swept["after_first"]
    assert not first.complete and first.failed == 1
    bad = [r for r in lines if not r["ok"]]
    assert len(bad) == 1 and bad[0]["unit"]["name"] == swept["crash"] and "injected failure" in bad[0]["error"]
    assert sum(r["ok"] for r in lines) == first.jobs - 1  # every other job finished
    assert not swept["report_after_first"]


def test_resume_runs_only_the_unfinished_job(swept):
    lines = _lines(swept["out"])
    assert len(lines) == len(swept["after_first"]) + 1  # only the crashed job ran again
    assert lines[-1]["ok"] and lines[-1]["unit"]["name"] == swept["crash"]
    assert swept["second"].complete and swept["second"].failed == 0
    summary = json.loads((swept["out"] / "sweep.json").read_text())
    assert {r["name"] for r in summary["stages"]} == {"feature_extraction", "body", "upsampling", "reconstruction"}
    assert len(summary["units"]) == 4 and summary["proxy_agreement_spearman"]
    for png in ("stages.png", "layers.png", "pareto.png"):
        assert (swept["out"] / png).stat().st_size > 1000
    again = run_sweep(swept["cfg"], swept["out"], SPEC, progress=False, log=lambda m: None)
    assert len(_lines(swept["out"])) == len(lines) and again.complete  # nothing re-measured


def test_shards_merge_to_the_same_result(swept, tmp_path):
    cfg = _cfg()
    for i in range(2):
        run_sweep(cfg, tmp_path / f"s{i}", SPEC, shard=(i, 2), progress=False, log=lambda m: None)
    merged = tmp_path / "merged"
    merged.mkdir()
    text = "".join((tmp_path / f"s{i}" / f"results.shard{i}of2.jsonl").read_text() for i in range(2))
    (merged / "results.jsonl").write_text(text)
    outcome = run_sweep(cfg, merged, SPEC, progress=False, log=lambda m: None)
    assert outcome.complete and not (merged / "calibrated.pt").exists()  # nothing left to measure
    single = json.loads((swept["out"] / "sweep.json").read_text())
    assert _quality_view(outcome.summary) == _quality_view(single)


def test_shard_argument(monkeypatch):
    assert parse_shard("1/3") == (1, 3)
    with pytest.raises(SweepError, match="I/N"):
        parse_shard("3/3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "2")
    assert parse_shard(None) == (2, 4)


def test_store_ignores_a_cut_line(tmp_path):
    store = ResultStore(tmp_path)
    store.append({"id": "a", "ok": True, "result": 1})
    with open(store.path, "a") as f:
        f.write('{"id": "b", "ok": tr')
    assert set(store.load()) == {"a"}


@pytest.mark.parametrize("k", range(1, 8))
def test_ranking_subset_holds_the_worst_crops_and_spreads_the_rest(k):
    rng = random.Random(k)
    scores = [rng.uniform(20, 40) for _ in range(7)]
    pick = worst_and_spread(scores, k)
    assert pick == sorted(set(pick)) and len(pick) == k
    order = sorted(range(len(scores)), key=lambda i: scores[i])
    assert set(order[: (k + 1) // 2]) <= set(pick)  # the worst half of the subset is the worst crops


@pytest.mark.parametrize("seed", range(6))
def test_solver_is_exact_for_every_budget(seed):
    rng = random.Random(seed)
    items = [Item(f"u{i}", (f"l{i}",), rng.uniform(-0.05, 0.4), rng.uniform(0.1, 5.0), rng.uniform(1e3, 5e4))
             for i in range(rng.randint(4, 11))]
    base = Base(latency_ms=20.0, size_bytes=1e6, fidelity_db=30.0)
    budgets = [Budget("latency_ratio", 1 + rng.uniform(0.02, 0.4)), Budget("latency_ms", 20 + rng.uniform(0.5, 9)),
               Budget("size_mb", 1 + rng.uniform(0.005, 0.1)), Budget("min_fidelity_db", 30 + rng.uniform(0.1, 0.8)),
               Budget("max_drop_db", 50 - 30 - rng.uniform(0.1, 0.8))]
    for budget in budgets:
        try:
            ref = brute_force(items, base, budget)
        except BudgetError:
            with pytest.raises(BudgetError):
                solve(items, base, budget)
            continue
        got = solve(items, base, budget)
        chosen = [i for i in items if i.name in got.chosen]
        assert_meets_budget(got, base, budget, ref)
        assert sum(i.gain_db for i in chosen) == pytest.approx(got.fidelity_db - base.fidelity_db)


def test_solver_refuses_impossible_budgets():
    base = Base(10.0, 1e6, 30.0)
    items = [Item("a", ("a",), 0.2, 1.0, 10.0)]
    for budget in (Budget("latency_ratio", 0.9), Budget("latency_ms", 5.0), Budget("size_mb", 0.5),
                   Budget("min_fidelity_db", 31.0)):
        with pytest.raises(BudgetError):
            solve(items, base, budget)
    with pytest.raises(BudgetError, match="unknown budget"):
        Budget("max_flops", 1.0)


def test_allocated_config_round_trips_and_is_verified(swept, tmp_path):
    out = tmp_path / "alloc.json"
    summary = json.loads((swept["out"] / "sweep.json").read_text())
    rec = allocate_and_verify(swept["out"], Budget("latency_ratio", 3.0), out, rounds=1, bench_iterations=3,
                              log=lambda m: None)
    cfg = load_config(out)
    data = json.loads(out.read_text())
    assert "Predicted" in data["description"] and "Verified" in data["description"]
    plan = resolve_plan(build_generator("msrresnet_x4", **TINY), cfg.compression)
    high = set(plan.high_precision_layers())
    layers = {l for r in summary["units"] if r["name"] in rec["chosen"] for l in r["layers"]}
    assert {n for n in layers if plan.layers[n].weight_bits == 16} == layers
    assert {n for n in high if plan.layers[n].act_bits == 16} <= layers
    assert rec["verified"]["runtime_convs"]["fp32"] >= len([n for n in layers])
    assert (swept["out"] / "point_allocate_latency_ratio_3.json").is_file()


@pytest.mark.parametrize("script", ["sweep_stages.py", "bitwidth_sweep.py", "resolution_sweep.py"])
def test_sweep_tools_explain_themselves(script, capsys):
    path = Path(__file__).parents[1] / "tools" / script
    old = sys.argv
    sys.argv = [str(path), "--help"]
    try:
        with pytest.raises(SystemExit) as exc:
            runpy.run_path(str(path), run_name="__main__")
    finally:
        sys.argv = old
    assert exc.value.code == 0 and "usage" in capsys.readouterr().out


def test_allocate_cli_refuses_two_budgets_and_a_missing_sweep(tmp_path, capsys):
    with pytest.raises(SystemExit):
        mixq_main(["allocate", str(tmp_path), "--out", str(tmp_path / "c.json"), "--max-latency-ratio", "1.05",
              "--max-size-mb", "3"])
    assert mixq_main(["allocate", str(tmp_path), "--out", str(tmp_path / "c.json"), "--max-latency-ratio", "1.05"]) == 2
    assert "sweep.json" in capsys.readouterr().err


def test_qat_mode_refines_the_top_candidates(tmp_path):
    cfg = parse_config({"name": "tiny", "model": {"arch": "msrresnet_x4", "args": TINY, "weights": None},
                        "data": {"calibration_samples": 4, "calibration_patch": 16, "eval_max_images": 2},
                        "compression": {"initializer": {"fast_bias_correction": False}},
                        "training": {"batch_size": 1, "patch_size": 32, "lr_g": 1e-4, "log_every": 1}})
    spec = SweepSpec(granularity="stage", mode="qat", input_size=(16, 16), rank_images=2, rank_crop=16,
                     latency_runs=2, bench_iterations=3, qat_top=1, qat_steps=2)
    outcome = run_sweep(cfg, tmp_path, spec, progress=False, log=lambda m: None)
    assert outcome.complete
    s = outcome.summary
    assert s["qat"]["steps"] == 2 and math.isfinite(s["qat"]["base_psnr"])
    refined = [r for r in s["stages"] if "qat_gain_db" in r]
    assert len(refined) == 1 and math.isfinite(refined[0]["qat_gain_db"])
    assert (tmp_path / "qat" / "_base" / "final.pt").is_file()


def test_auto_activation_scheme_is_measured_and_the_sweep_runs_on_the_better_one(tmp_path):
    logs = []
    cfg = parse_config({"name": "tiny", "model": {"arch": "msrresnet_x4", "args": TINY, "weights": None},
                        "data": {"calibration_samples": 4, "calibration_patch": 16, "eval_max_images": 2},
                        "compression": {"preset": "performance"}})  # the paper's symmetric scheme, configured
    outcome = run_sweep(cfg, tmp_path, replace(SPEC, activations="auto", granularity="stage"), progress=False,
                        log=logs.append)
    sc = outcome.summary["activation_scheme"]
    assert sc["configured"] == "symmetric" and set(sc["schemes"]) == {"symmetric", "asymmetric"}
    rows = sc["schemes"]
    allowed = [m for m, r in rows.items() if r["int8_ratio"] <= SCHEME_LATENCY_TOLERANCE]
    assert sc["chosen"] == max(allowed, key=lambda m: rows[m]["int8_fidelity_db"])
    effective = json.loads((tmp_path / "effective_config.json").read_text())
    assert (effective["compression"]["activations"]["mode"] or "symmetric") == sc["chosen"]
    # the chosen scheme's calibration is adopted, not repeated: three calibrations would mean it was
    assert sum(m.startswith("calibrating (one nncf.quantize") for m in logs) == 2
    # the sweep's own all-int8 IR is the chosen scheme's, with the fidelity the scheme run measured
    assert outcome.summary["ir_fidelity"]["int8"]["psnr"] == pytest.approx(rows[sc["chosen"]]["int8_fidelity_db"])
    assert "Activation scheme" in (tmp_path / "sweep.md").read_text()
    refs = reference_candidates(tmp_path, outcome.summary, sweep_config(tmp_path))
    assert {(r["mode"], r["paper"]) for r in refs} == {(m, p) for m in rows for p in (False, True)}
    for r in refs:  # each reference is an ordinary config that builds what the sweep measured
        cfg = parse_config(r["config"])
        assert cfg.compression.activations.mode == r["mode"]
        plan = resolve_plan(build_tiny(), cfg.compression)
        assert set(plan.high_precision_layers()) == (set(outcome.summary["paper_layers"]) if r["paper"] else set())
    out = tmp_path / "alloc.json"
    rec = allocate_and_verify(tmp_path, Budget("latency_ratio", 3.0), out, rounds=1, bench_iterations=2,
                              log=lambda m: None)
    mode = load_config(out).compression.activations.mode or "symmetric"
    assert mode == sc["chosen"] or rec["reference"].endswith(f"{mode} activations")
    # never worse than a reference the sweep measured within the budget (by the sweep's own figures)
    fits = [r["fidelity"]["psnr"] for r in refs if r["latency_ratio"] <= 3.0]
    assert rec["reference"] or rec["verified"]["fidelity_db"] >= max(fits) - 1e-6 or not rec["budget_met"]


def test_a_missed_budget_corrects_the_chosen_costs_and_steps_back_by_measurement():
    base = Base(100.0, 1e6, 30.0)
    items = [Item("a", ("a",), 0.5, 4.0, 10), Item("b", ("b",), 0.3, 1.0, 10), Item("c", ("c",), 0.2, 1.0, 10)]
    budget = Budget("latency_ratio", 1.05)
    first = solve(items, base, budget)
    assert set(first.chosen) == {"a", "b"}  # 5 ms predicted
    # measured: 1.09x, i.e. the chosen units cost 9 ms, not 5
    fixed, factor = corrected_items(items, set(first.chosen), first, base, {"latency_ratio": 1.09}, budget)
    assert factor == pytest.approx(9 / 5)
    # every unit of the kind the round measured (here all keep weights+input high) carries the correction
    assert [i.latency_ms for i in fixed] == pytest.approx([4.0 * 9 / 5, 1.0 * 9 / 5, 1.0 * 9 / 5])
    weights_only = [Item("a", ("a",), 0.5, 4.0, 10), Item("b", ("b",), 0.3, 1.0, 10, "weights")]
    other, _ = corrected_items(weights_only, {"a"}, solve(weights_only, base, budget), base, {"latency_ratio": 1.09},
                               budget)
    assert other[1].latency_ms == 1.0  # another kind of unit keeps its own estimate
    second = solve(fixed, base, budget)
    assert set(second.chosen) == {"b", "c"}  # a alone (7.2 ms) no longer fits; the cheap pair (3.6 ms) does
    # fidelity budgets: the chosen gains shrink to what was measured
    fb = Budget("min_fidelity_db", 30.6)
    pick = solve(items, base, fb)
    fixed, factor = corrected_items(items, set(pick.chosen), pick, base,
                                    {"fidelity_db": 30.3, "int8_fidelity_db": 30.0}, fb)
    assert factor == pytest.approx(0.3 / (pick.fidelity_db - 30.0))
    assert sum(i.gain_db for i in fixed if i.name in pick.chosen) == pytest.approx(0.3)


# ----------------------------------------------------------------------------------------------
# three precisions: int8, bf16, f32

def test_sweep_prices_bf16_and_measures_its_gain(swept):
    summary = json.loads((swept["out"] / "sweep.json").read_text())
    native = has_bf16()
    assert summary["bf16"]["native"] == native and summary["bf16"]["timed"] == native
    for lc in summary["layer_costs"].values():
        assert {"int8_ms", "bf16_ms", "fp32_ms"} <= set(lc)
        assert lc["bf16_size_bytes"] > lc["size_bytes"]  # the IR stores a bf16 layer's weights as f32
        if not native:  # not timed twice: bf16 runs f32 here
            assert lc["bf16_ms"] == lc["fp32_ms"]
    if not native:
        assert summary["bf16"]["note"] == NO_BF16_NOTE
    for row in summary["units"] + summary["stages"]:
        assert math.isfinite(row["bf16_gain_db"]) and row["bf16_gain_db"] != row["gain_db"]
        assert row["bf16_deployed_gain_db"] == (row["bf16_gain_db"] if native else row["gain_db"])
    gains = [r for r in _lines(swept["out"]) if r["ok"] and r["kind"] == "gain"]
    assert gains and all("psnr" in r["result"]["bf16"] for r in gains)
    items = allocation_items(summary)
    assert all((i.bf16 is not None) == native for i in items)
    assert "bf16 gain" in (swept["out"] / "sweep.md").read_text()


def _without_bf16(folder: Path) -> None:
    """Rewrite a sweep's results as a sweep from before bf16 pricing recorded them."""
    lines = []
    for rec in _lines(folder):
        res = rec.get("result")
        if isinstance(res, dict):
            res.pop("bf16", None)
            for lc in (res.get("layers") or {}).values() if rec["kind"] == "costs" else ():
                for k in ("bf16_ms", "bf16_exec", "bf16_size_bytes"):
                    lc.pop(k, None)
        lines.append(json.dumps(rec))
    for p in folder.glob("results*.jsonl"):
        p.unlink()
    (folder / "results.jsonl").write_text("\n".join(lines) + "\n")
    (folder / "sweep.json").unlink()


def test_old_results_without_bf16_still_summarize_and_allocate(swept, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(swept["out"], old)
    _without_bf16(old)
    outcome = run_sweep(swept["cfg"], old, SPEC, progress=False, log=lambda m: None)
    assert outcome.complete  # nothing re-measured: the old records are finished jobs
    s = outcome.summary
    assert s["bf16"]["native"] is False and "older sweep" in s["bf16"]["note"]
    for row in s["units"]:
        assert "bf16_gain_db" not in row and row["bf16_latency_ms"] == pytest.approx(row["latency_ms"])
    assert all(i.bf16 is None for i in allocation_items(s))
    out = tmp_path / "alloc.json"
    rec = allocate_and_verify(old, Budget("latency_ratio", 3.0), out, verify=False, log=lambda m: None)
    assert set(rec["precisions"].values()) <= {"f32"}
    assert {u["name"] for u in rec["units"]} == {r["name"] for r in s["units"]}
    assert all("bf16: not measured" in u["why"] for u in rec["units"])
    assert all(v in ({"bits": "int16"}, {"weights": "int16"})
               for k, v in json.loads(out.read_text())["compression"]["scope_overrides"].items())


def test_bf16_allocation_writes_and_builds_its_precisions(swept, tmp_path):
    """A sweep as a bf16 CPU records it (bf16 timed; the figures edited so one unit's bf16 is the only choice
    that fits): the allocation picks it, explains it, writes 'bits': 'bf16', and that config's IR carries it."""
    folder = tmp_path / "bf16cpu"
    shutil.copytree(swept["out"], folder)
    summary = json.loads((folder / "sweep.json").read_text())
    summary["bf16"] = {"native": True, "timed": True, "note": None}
    pick = max((r for r in summary["units"] if r["override"] == "bits"), key=lambda r: r["bf16_gain_db"])
    assert pick["bf16_gain_db"] > 0
    budget_ms = min(0.5, min(r["latency_ms"] for r in summary["units"] if r["latency_ms"] > 0) / 2)
    for row in summary["units"]:
        row["latency_ms"] = max(row["latency_ms"], 2 * budget_ms + 1.0)  # f32 never fits the budget
        row["bf16_latency_ms"] = budget_ms if row is pick else 2 * budget_ms + 1.0
    (folder / "sweep.json").write_text(json.dumps(summary))
    out = tmp_path / "alloc.json"
    base_ms = summary["latency_ms"]["int8"]
    rec = allocate_and_verify(folder, Budget("latency_ms", base_ms + 1.5 * budget_ms), out, verify=False,
                              log=lambda m: None)
    assert rec["precisions"] == {pick["name"]: "bf16"}
    row = next(u for u in rec["units"] if u["name"] == pick["name"])
    assert row["precision"] == "bf16" and row["config_bits"] == "bf16" and "chose bf16" in row["why"]
    assert "f32:" in row["why"] and "bf16:" in row["why"]
    assert all(u["precision"] == "int8" and "kept int8" in u["why"] for u in rec["units"] if u is not row)
    assert f"| {pick['name']} | bf16 | bf16 |" in rec["markdown"]
    # the config round-trips into a plan with that float kind, and its IR runs as requested on this CPU
    cfg = load_config(out)
    plan = resolve_plan(build_tiny(), cfg.compression)
    assert plan.float_kinds() == {n: "bf16" for n in pick["layers"]}
    assert all(plan.layers[n].weight_bits is None and plan.layers[n].act_bits is None for n in pick["layers"])
    xml, _, _, requested = _export_allocation(folder, summary, cfg, "bf16-test", lambda m: None)
    assert json.loads(xml.with_suffix(".json").read_text())["float_precision"] == {n: "bf16" for n in pick["layers"]}
    audit = audit_runtime(xml, (1, 3, 16, 16), requested=requested)
    assert not audit.mismatches
    ran = {r.module: r.ran for r in audit.layers}
    assert all(ran[n] == ("bf16" if has_bf16() else "f32") for n in pick["layers"])
