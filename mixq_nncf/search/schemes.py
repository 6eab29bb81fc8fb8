"""Which activation scheme a sweep measures on: the configured one, or the other one when it is closer to fp32
at (almost) the same all-int8 latency.

Why: a symmetric activation quantizer spends half its levels on negative values that LeakyReLU outputs barely
use; an asymmetric one (a zero point) runs on the same int8 kernels. Which is better is measured, not assumed.
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Callable, Optional

from mixq_nncf.config.schema import Config, parse_config, to_dict
from mixq_nncf.ir.bench import Target, benchmark
from mixq_nncf.search.context import Context
from mixq_nncf.search.costs import export_plan
from mixq_nncf.search.fidelity import ir_fidelity
from mixq_nncf.search.spec import SCHEME_LATENCY_TOLERANCE, SweepSpec, context_key, make_job, paper_plan
from mixq_nncf.search.store import ResultStore, finished_record, is_finished

SCHEMES = ("symmetric", "asymmetric")


def activation_mode(cfg: Config) -> str:
    """The activation scheme nncf.quantize uses for this config: its mode, else the preset's (performance:
    symmetric, mixed: asymmetric)."""
    mode = cfg.compression.activations.mode
    return mode or ("asymmetric" if cfg.compression.preset == "mixed" else "symmetric")


def with_activation_mode(cfg: Config, mode: str) -> Config:
    d = to_dict(cfg)
    d["compression"]["activations"]["mode"] = mode
    return parse_config(d)


def measure_schemes(cfg: Config, spec: SweepSpec, out: Path, log: Callable[[str], None]) -> dict:
    """Both activation schemes, each with its own calibration: the all-int8 and paper-recipe IRs' fidelity on the
    eval photos and their latency, interleaved in one run. Only the configured scheme must work."""
    configured = activation_mode(cfg)
    modes = [configured] + [m for m in SCHEMES if m != configured]
    folder = out / "schemes"
    rows: dict[str, dict] = {}
    xml: dict[str, Path] = {}
    fp32_xml: Optional[Path] = None
    for mode in modes:
        ctx = Context(cfg if mode == configured else with_activation_mode(cfg, mode), spec, folder / mode, log)
        log(f"activation scheme {mode}: calibrating and exporting the all-int8 and paper-recipe IRs")
        try:
            int8_xml = export_plan(ctx, ctx.base_plan, folder / mode / "int8.xml")
            paper_xml = export_plan(ctx, paper_plan(ctx.base_plan), folder / mode / "paper.xml")
            fp32_xml = fp32_xml or export_plan(ctx, None, out / "irs" / "fp32.xml")
            rows[mode] = _scheme_fidelity(ctx, int8_xml, paper_xml, fp32_xml)
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:  # noqa: BLE001 - the configured scheme must work; the other one is optional
            if mode == configured:
                raise
            log(f"activation scheme {mode} failed ({type(exc).__name__}: {exc}); keeping {configured}")
            rows[mode] = {"error": f"{type(exc).__name__}: {exc}"}
            continue
        xml[f"int8_{mode}"], xml[f"paper_{mode}"] = int8_xml, paper_xml
    h, w = spec.input_size
    wall = {s.name: s.median_ms for s in benchmark([Target(k, "openvino", v) for k, v in xml.items()],
                                                     input_size=(h, w), iterations=spec.bench_iterations, warmup=2,
                                                     progress=False)}
    base_ms = wall[f"int8_{configured}"]
    for mode, row in rows.items():
        if "error" not in row:
            row.update({"int8_ms": wall[f"int8_{mode}"], "paper_ms": wall[f"paper_{mode}"],
                        "int8_ratio": wall[f"int8_{mode}"] / base_ms, "paper_ratio": wall[f"paper_{mode}"] / base_ms})
    ok = [m for m in modes if "error" not in rows[m] and rows[m]["int8_ratio"] <= SCHEME_LATENCY_TOLERANCE]
    chosen = configured if spec.activations == "configured" else max(ok, key=lambda m: rows[m]["int8_fidelity_db"])
    return {"configured": configured, "chosen": chosen, "schemes": rows, "input_size": [h, w],
            "latency_tolerance": SCHEME_LATENCY_TOLERANCE}


def _scheme_fidelity(ctx: Context, int8_xml: Path, paper_xml: Path, fp32_xml: Path) -> dict:
    pairs = ctx.eval_pairs()
    int8 = ir_fidelity(int8_xml, fp32_xml, pairs, ctx.crop_border)
    paper = ir_fidelity(paper_xml, fp32_xml, pairs, ctx.crop_border)
    return {"int8_fidelity_db": int8["psnr"], "paper_fidelity_db": paper["psnr"], "int8_fidelity_ssim": int8["ssim"],
            "eval_images": len(pairs)}


def adopt_scheme(out: Path, chosen: str) -> None:
    """Make the chosen scheme's calibration and reference IRs the sweep's own (no second calibration)."""
    src = out / "schemes" / chosen
    (out / "irs").mkdir(parents=True, exist_ok=True)
    for name in ("calibrated.pt", "calibrated.json"):
        if (src / name).is_file():
            shutil.copyfile(src / name, out / name)
    for stem in ("int8", "paper"):
        for f in src.glob(f"{stem}.*"):
            shutil.copyfile(f, out / "irs" / f.name)


def choose_scheme(cfg: Config, spec: SweepSpec, out: Path, log: Callable[[str], None] = print,
                  shard: tuple[int, int] = (0, 1)) -> tuple[Config, dict]:
    """The config the sweep measures on (the configured activation scheme or the better other one) and the
    measurement behind the choice; recorded once in results.jsonl like every other job."""
    job = make_job(context_key(cfg, spec), "schemes")
    store = ResultStore(out, shard)
    done = store.load()
    if not is_finished(done, job):
        t0 = time.perf_counter()
        done[job.id] = finished_record(job, measure_schemes(cfg, spec, out, log), time.perf_counter() - t0)
        store.append(done[job.id])
    result = done[job.id]["result"]
    chosen = result["chosen"]
    if (out / "schemes" / chosen).is_dir():
        adopt_scheme(out, chosen)
    effective = cfg if chosen == result["configured"] else with_activation_mode(cfg, chosen)
    return effective, result
