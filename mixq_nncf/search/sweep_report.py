"""A finished sweep as data (sweep.json), a table (sweep.md) and plots: per stage (the paper's Figure 7), per
layer along the depth, and the latency / size vs fidelity Pareto front."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Optional

from scipy.stats import spearmanr

from mixq_nncf.config.schema import Config
from mixq_nncf.eval.report import label_points
from mixq_nncf.io_utils import atomic_write, atomic_write_json, atomic_write_text
from mixq_nncf.search.allocate import Base, Item, Option, pareto_front
from mixq_nncf.search.spec import Job, SweepSpec

PAPER_STAGE_ORDER = ["reconstruction", "feature_extraction", "upsampling", "body"]  # most sensitive first (SRGAN)
# sweeps whose costs job predates bf16 timing: bf16 is priced as f32 and offered nowhere
UNTIMED_BF16 = {"native": False, "timed": False,
                "note": "the sweep's costs hold no bf16 timing (an older sweep): bf16 priced as f32, not offered"}


def _added_ms(lc: dict, kind: str) -> float:
    """What running a layer at ``kind`` ("fp32" / "bf16") instead of int8 adds, with its boundary nodes. A layer
    cost without bf16_ms (an older sweep, or a CPU without bf16 units) runs bf16 as f32."""
    ms = lc.get("bf16_ms", lc["fp32_ms"]) if kind == "bf16" else lc["fp32_ms"]
    return ms - lc["int8_ms"] + lc["boundary_ms"]


def _bf16_size(lc: dict) -> float:
    """IR bytes a bf16 layer adds (stored f32: 3 per weight over int8); older sweeps: from the f32 figure."""
    return lc["bf16_size_bytes"] if "bf16_size_bytes" in lc else lc["size_bytes"]


def _proxy_db(total_mse: float, removed_mse: float) -> float:
    """Predicted fidelity gain (dB) of removing ``removed_mse`` of the predicted output noise."""
    if total_mse <= 0 or removed_mse <= 0:
        return 0.0
    return 10 * math.log10(total_mse / max(total_mse - removed_mse, 1e-3 * total_mse))


def summarize(cfg: Config, spec: SweepSpec, stage_of: dict[str, str], jobs: list[Job], done: dict[str, dict]) -> dict:
    """Every finished job's result joined into one summary: references, costs, and a row per measured unit with
    its gain and loss against the references (``stage_of``: layer -> stage of the sweep's plan)."""
    by_kind: dict[str, Any] = {}
    for j in jobs:
        if j.unit is None:
            by_kind[j.kind] = done[j.id]["result"]
    base, costs, proxy = by_kind["base"], by_kind["costs"], by_kind["proxy"]
    layer_costs, prox = costs["layers"], proxy["layers"]
    int8_q, high_q = base["int8"], base["high"]
    units: dict[str, dict] = {}
    for j in jobs:
        if j.unit is None or j.kind not in ("gain", "loss", "qat"):
            continue
        u = j.unit
        row = units.setdefault(u.kind + ":" + u.name, {
            "name": u.name, "kind": u.kind, "layers": list(u.layers), "override": u.override,
            "stage": u.name if u.kind == "stage" else "",
            "latency_ms": sum(_added_ms(layer_costs[n], "fp32") for n in u.layers),
            "size_bytes": sum(layer_costs[n]["size_bytes"] for n in u.layers),
            "bf16_latency_ms": sum(_added_ms(layer_costs[n], "bf16") for n in u.layers),
            "bf16_size_bytes": sum(_bf16_size(layer_costs[n]) for n in u.layers),
            "proxy_gain_db": _proxy_db(proxy["predicted_out_mse"], sum(prox[n]["gain_mse"] for n in u.layers)),
            "proxy_loss_mse": sum(prox[n]["loss_mse"] for n in u.layers),
            "depth": min(list(layer_costs).index(n) for n in u.layers)})
        r = done[j.id]["result"]
        if j.kind == "gain":
            row["gain_db"] = r["psnr"] - int8_q["psnr"]
            row["gain_ssim"] = r["ssim"] - int8_q["ssim"]
            if "bf16" in r:  # emulated in torch; older sweeps have no such figure
                row["bf16_gain_db"] = r["bf16"]["psnr"] - int8_q["psnr"]
                row["bf16_gain_ssim"] = r["bf16"]["ssim"] - int8_q["ssim"]
        elif j.kind == "loss":
            row["loss_db"] = high_q["psnr"] - r["psnr"]
            row["loss_ssim"] = high_q["ssim"] - r["ssim"]
        else:
            row["qat_psnr"] = r["psnr"]
    qat_base = by_kind.get("qat")
    native = bool((costs.get("bf16") or UNTIMED_BF16).get("native"))
    for row in units.values():
        if "qat_psnr" in row and qat_base:
            row["qat_gain_db"] = row.pop("qat_psnr") - qat_base["psnr"]
        if "bf16_gain_db" in row and "gain_db" in row:  # what bf16 gives here: f32's gain where bf16 runs f32
            row["bf16_deployed_gain_db"] = row["bf16_gain_db"] if native else row["gain_db"]
    stages = sorted((r for r in units.values() if r["kind"] == "stage"), key=lambda r: -r.get("gain_db", 0))
    fine_kind = spec.granularity
    fine = [r for r in units.values() if r["kind"] == fine_kind]
    agree = {}
    if fine_kind == "layer":
        agree["gain"] = spearman([r["proxy_gain_db"] for r in fine], [r["gain_db"] for r in fine])
        agree["loss"] = spearman([r["proxy_loss_mse"] for r in fine], [r["loss_db"] for r in fine])
    wall = costs["wall_ms"]
    ir_fid = costs["ir_fidelity"]
    summary = {
        "config": cfg.name, "arch": cfg.model.arch, "weights": cfg.model.weights, "sweep": spec.key(),
        "machine": costs["machine"], "input_size": costs["input_size"],
        "ranking": {"crops": base["ranking_crops"], "int8_psnr": int8_q["psnr"], "high_psnr": high_q["psnr"],
                    "paper_psnr": base["paper"]["psnr"], "int8_ssim": int8_q["ssim"]},
        "latency_ms": wall, "size_bytes": costs["size_bytes"], "runtime_convs": costs["runtime_convs"],
        "ir_fidelity": {k: {"psnr": v["psnr"], "ssim": v["ssim"]} for k, v in ir_fid.items()},
        "eval_images": costs["eval_images"],
        "boundary": {"paper_ms": costs["boundary_ms_paper"], "per_elem_ms": costs["boundary_ms_per_elem"]},
        "paper_layers": costs["paper_layers"],
        "stage_ranking": [r["name"] for r in stages], "paper_stage_ranking": PAPER_STAGE_ORDER,
        "stages": stages, "units": sorted(fine, key=lambda r: -r.get("gain_db", 0)) if fine_kind != "stage" else [],
        "granularity": fine_kind, "proxy_agreement_spearman": agree,
        "proxy_layers": {n: {"gain_db": _proxy_db(proxy["predicted_out_mse"], p["gain_mse"]),
                             "latency_ms": _added_ms(layer_costs[n], "fp32"), "stage": stage_of.get(n, "")}
                         for n, p in prox.items()},
        "layer_costs": layer_costs, "bf16": costs.get("bf16") or UNTIMED_BF16,
        "qat": {"base_psnr": qat_base["psnr"], "steps": spec.qat_steps} if qat_base else None,
        "failed_jobs": [done[j.id]["error"] for j in jobs if not done[j.id].get("ok")],
        "jobs": len(jobs), "job_wall_s": round(sum(done[j.id].get("wall_s", 0) for j in jobs), 1),
    }
    summary["pareto"] = pareto_points(summary)
    return summary


def bf16_offered(summary: dict) -> bool:
    """Whether the allocator offers bf16: only where the sweep's CPU ran it (elsewhere bf16 runs f32, with f32's
    gain and time and a larger IR, so it never beats the f32 option)."""
    return bool((summary.get("bf16") or UNTIMED_BF16).get("native"))


def bf16_option(row: dict) -> Optional[Option]:
    """A unit row's bf16 option (emulated gain, measured cost); None for rows of sweeps without the figures."""
    if "bf16_gain_db" not in row or "bf16_latency_ms" not in row:
        return None
    return Option("bf16", float(row["bf16_gain_db"]), float(row["bf16_latency_ms"]), float(row["bf16_size_bytes"]))


def allocation_items(summary: dict) -> list[Item]:
    """The measured fine units as knapsack items (stages when the sweep was stage-only), each with its f32 option
    and, where the sweep's CPU runs bf16, its bf16 option."""
    rows = summary["units"] or summary["stages"]
    offered = bf16_offered(summary)
    return [Item(r["name"], tuple(r["layers"]), float(r.get("gain_db", 0.0)), float(r["latency_ms"]),
                 float(r["size_bytes"]), r.get("override", "bits"), bf16_option(r) if offered else None)
            for r in rows if "gain_db" in r]


def allocation_base(summary: dict) -> Base:
    """All-int8: wall-clock latency, IR bytes, and the IR's fidelity on the eval photos (gains are added to it)."""
    return Base(summary["latency_ms"]["int8"], summary["size_bytes"]["int8"], summary["ir_fidelity"]["int8"]["psnr"])


def pareto_points(summary: dict) -> list[dict]:
    base = allocation_base(summary)
    items = allocation_items(summary)
    return [{"latency_ms": base.latency_ms + c, "fidelity_db": base.fidelity_db + g,
             "units": [items[i].name for i, _ in chosen],
             "precisions": {items[i].name: items[i].options()[k].precision for i, k in chosen}}
            for c, g, chosen in pareto_front(items, "latency")]


# ----------------------------------------------------------------------------------------------
# outputs

def _fmt(v: Optional[float], spec: str = ".3f") -> str:
    return "-" if v is None else format(v, spec)


def sweep_markdown(s: dict) -> str:
    lat, fid = s["latency_ms"], s["ir_fidelity"]
    lines = [f"# Sensitivity sweep: {s['arch']} ({s['config']})", "",
             f"Machine: {s['machine']['cpu']}, {s['machine']['cores']} cores, OpenVINO {s['machine']['openvino']}; "
             f"latency at LR {s['input_size'][0]}x{s['input_size'][1]}, interleaved medians; f32 inference precision "
             "for non-int8 layers. 16-bit layers run as fp32 convolutions on this plugin, so 'high' means fp32 "
             "time.", "",
             "| model | latency ms | vs int8 | IR MB | convs int8/fp32 at runtime | fidelity on eval photos dB (IR) |",
             "|---|---|---|---|---|---|"]
    for k in ("int8", "paper", "fp32"):
        rc = s["runtime_convs"][k]
        lines.append(f"| {k} | {lat[k]:.2f} | {lat[k] / lat['int8']:.3f} | {s['size_bytes'][k] / 1e6:.2f} | "
                     f"{rc['int8']}/{rc['fp32']} | {_fmt(fid.get(k, {}).get('psnr'), '.2f') if k != 'fp32' else '-'} |")
    lines += scheme_markdown(s.get("activation_scheme"))
    r = s["ranking"]
    lines += ["", f"Ranking subset ({len(r['crops'])} LR crops, half the worst under all-int8): all-int8 "
              f"{r['int8_psnr']:.2f} dB, paper recipe {r['paper_psnr']:.2f} dB, all-high {r['high_psnr']:.2f} dB "
              "(fake-quant in torch, fidelity to fp32).", "",
              "## Stages (the paper's Figure 7)", "",
              f"Measured order (gain when kept high on all-int8): {' > '.join(s['stage_ranking'])}; "
              f"the paper's (SRGAN): {' > '.join(s['paper_stage_ranking'])}.", "",
              "| stage | layers | gain kept high dB | loss dropped to int8 dB | latency cost ms | size cost KB | "
              "bf16 gain dB (emulated) |", "|---|---|---|---|---|---|---|"]
    for row in s["stages"]:
        lines.append(f"| {row['name']} | {len(row['layers'])} | {_fmt(row.get('gain_db'))} | "
                     f"{_fmt(row.get('loss_db'))} | {row['latency_ms']:.2f} | {row['size_bytes'] / 1e3:.1f} | "
                     f"{_fmt(row.get('bf16_gain_db'))} |")
    if s["units"]:
        agree = s["proxy_agreement_spearman"]
        lines += ["", f"## Measured {s['granularity']} units (best gain first)", ""]
        if agree:
            lines.append(f"Proxy vs measured rank agreement (Spearman, {len(s['units'])} measured units): gain "
                         f"{_fmt(agree.get('gain'), '.2f')}, loss {_fmt(agree.get('loss'), '.2f')}.")
            lines.append("")
        lines += bf16_lines(s)
        lines += ["| unit | kept high | gain dB | gain dSSIM | loss dB | proxy gain dB | latency ms | dB per ms | "
                  "bf16 gain dB | bf16 latency ms |" + (" QAT gain dB |" if s.get("qat") else ""),
                  "|---|---|---|---|---|---|---|---|---|---|" + ("---|" if s.get("qat") else "")]
        for row in s["units"]:
            eff = row.get("gain_db", 0) / row["latency_ms"] if row["latency_ms"] > 0 else float("inf")
            lines.append(f"| {row['name']} | {'weights+input' if row['override'] == 'bits' else 'weights'} | "
                         f"{_fmt(row.get('gain_db'))} | {_fmt(row.get('gain_ssim'), '.5f')} | {_fmt(row.get('loss_db'))} | "
                         f"{row['proxy_gain_db']:.3f} | {row['latency_ms']:.2f} | {eff:.3f} | "
                         f"{_fmt(row.get('bf16_gain_db'))} | {_fmt(row.get('bf16_latency_ms'), '.2f')} |"
                         + (f" {_fmt(row.get('qat_gain_db'))} |" if s.get("qat") else ""))
    lines += ["", f"Boundary (Reorder/Convert) overhead measured on the paper-recipe IR: "
              f"{s['boundary']['paper_ms']:.2f} ms for its {len(s['paper_layers'])} high layers; attributed per layer in "
              "proportion to the layer's input+output elements.", ""]
    if s["failed_jobs"]:
        lines += [f"Failed jobs: {len(s['failed_jobs'])} (see results.jsonl)", ""]
    lines.append("Plots: stages.png, layers.png, pareto.png. Allocate with `mixq allocate DIR --max-latency-ratio R "
                 "--out CONFIG.json`.")
    return "\n".join(lines) + "\n"


def bf16_lines(s: dict) -> list[str]:
    """How the bf16 columns were obtained on this sweep's CPU."""
    info = s.get("bf16") or UNTIMED_BF16
    how = ("bf16 latency from the fp32 IR compiled with the bf16 hint" if info.get("timed")
           else f"bf16 latency = f32 latency ({info.get('note')})")
    return [f"bf16 gain: the unit unquantized, its weights and inputs rounded to bf16 in torch (emulated); {how}; "
            f"the allocator {'offers' if bf16_offered(s) else 'does not offer'} bf16 on this CPU.", ""]


def scheme_markdown(sc: Optional[dict]) -> list[str]:
    """The activation-scheme measurement that chose the sweep's base (empty when the scheme was given)."""
    if not sc:
        return []
    lines = ["", "## Activation scheme (each calibrated on its own; IRs on the eval photos, interleaved latency)", "",
             "| activations | all-int8 dB | all-int8 vs configured latency | paper recipe dB | paper recipe latency |",
             "|---|---|---|---|---|"]
    for mode, row in sc["schemes"].items():
        tag = mode + (" (configured)" if mode == sc["configured"] else "") + (" **chosen**" if mode == sc["chosen"] else "")
        if "error" in row:
            lines.append(f"| {tag} | failed: {row['error']} | | | |")
            continue
        lines.append(f"| {tag} | {row['int8_fidelity_db']:.2f} | {row['int8_ratio']:.3f} | "
                     f"{row['paper_fidelity_db']:.2f} | {row['paper_ratio']:.3f} |")
    lines += ["", f"The sweep below measures on the {sc['chosen']} calibration: the scheme closest to fp32 whose "
              f"all-int8 latency is within {sc['latency_tolerance']:g}x the configured one's. Both run every conv on "
              "the int8 kernels (an asymmetric activation adds a zero point, not a precision change)."]
    return lines


def scheme_points(s: dict) -> dict[str, tuple[float, float, float]]:
    """All-int8 / paper recipe under the scheme not chosen, for the Pareto plot (latency scaled by the ratio
    measured in the scheme run to the sweep's own all-int8 latency)."""
    sc = s.get("activation_scheme")
    if not sc:
        return {}
    chosen = sc["schemes"][sc["chosen"]]
    out = {}
    for mode, row in sc["schemes"].items():
        if mode == sc["chosen"] or "error" in row:
            continue
        for k, name in (("int8", "all-int8"), ("paper", "paper recipe")):
            ms = s["latency_ms"]["int8"] * row[f"{k}_ms"] / chosen["int8_ms"]
            out[f"{name}, {mode} act."] = (ms, s["size_bytes"][k], row[f"{k}_fidelity_db"])
    return out


def write_outputs(summary: dict, out: Path) -> None:
    atomic_write_json(out / "sweep.json", summary)
    atomic_write_text(out / "sweep.md", sweep_markdown(summary))
    plot_stages(summary, out / "stages.png")
    plot_layers(summary, out / "layers.png")
    plot_pareto(summary, out / "pareto.png")


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    out = atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=120))
    _plt().close(fig)
    return out


def plot_stages(s: dict, path: Path) -> Path:
    plt = _plt()
    rows = {r["name"]: r for r in s["stages"]}
    names = [n for n in PAPER_STAGE_ORDER if n in rows]
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    xs = range(len(names))
    ax.bar([x - 0.2 for x in xs], [rows[n].get("gain_db", 0) for n in names], 0.4, label="gain kept high (int8 base)")
    ax.bar([x + 0.2 for x in xs], [rows[n].get("loss_db", 0) for n in names], 0.4,
           label="loss dropped to int8 (high base)")
    ax.set_xticks(list(xs), [n.replace("_", "\n") for n in names])
    ax.set_ylabel("fidelity change, PSNR-Y dB")
    ax.set_yscale("symlog", linthresh=0.05)
    ax.set_title(f"{s['arch']}: per-stage sensitivity (paper order, most sensitive first)", fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    return _save(fig, path)


def plot_layers(s: dict, path: Path) -> Path:
    plt = _plt()
    names = list(s["layer_costs"])
    prox = s["proxy_layers"]
    colors = {"feature_extraction": "tab:green", "body": "tab:blue", "upsampling": "tab:orange",
              "reconstruction": "tab:red"}
    fig, ax = plt.subplots(figsize=(8, 3.8))
    for stage, c in colors.items():
        idx = [i for i, n in enumerate(names) if n in prox and prox[n]["stage"] == stage]
        ax.scatter(idx, [max(prox[names[i]]["gain_db"], 1e-5) for i in idx], s=8, color=c, alpha=0.6,
                   label=f"proxy, {stage}")
    meas = [(names.index(r["layers"][0]), r["gain_db"]) for r in s["units"] if "gain_db" in r and r["layers"]]
    if meas:
        ax.scatter([m[0] for m in meas], [max(m[1], 1e-5) for m in meas], s=30, facecolors="none",
                   edgecolors="black", label="measured")
    ax.set_yscale("log")
    ax.set_xlabel("conv layer, input to output")
    ax.set_ylabel("fidelity gain kept high, dB")
    ax.set_title(f"{s['arch']}: per-layer sensitivity along the depth", fontsize=9)
    ax.legend(fontsize=7, ncol=3)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def plot_pareto(s: dict, path: Path, extra: Optional[dict[str, tuple[float, float, float]]] = None) -> Path:
    """Latency and size vs fidelity: the predicted front, all-int8, the paper recipe, NNCF accuracy control and
    verified allocations (``extra``: name -> (latency ms, size bytes, fidelity dB)); fp32 as reference lines."""
    plt = _plt()
    extra = dict(extra or {})
    extra.update(_sidecar_points(path.parent))
    extra.update(scheme_points(s))
    lat, size, fid = s["latency_ms"], s["size_bytes"], s["ir_fidelity"]
    sc = s.get("activation_scheme")
    tag = f", {sc['chosen']} act." if sc and len(sc["schemes"]) > 1 else ""
    pts = {f"all-int8{tag}": (lat["int8"], size["int8"], fid["int8"]["psnr"]),
           f"paper recipe{tag}": (lat["paper"], size["paper"], fid["paper"]["psnr"]), **extra}
    front = s["pareto"]
    base_size = size["int8"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, axis in zip(axes, ("latency", "size")):
        if axis == "latency":
            fx = [p["latency_ms"] for p in front]
            ax.set_xlabel("OpenVINO CPU latency, median ms")
            fy = [p["fidelity_db"] for p in front]
            xs = fx + [p[0] for p in pts.values()]
            lo, hi = min(xs), max(xs)
            pad = max(1e-3, (hi - lo) * 0.08)
            ax.set_xlim(lo - pad, hi + pad)  # zoom on the variants; fp32 is a reference, not a point
            if lat["fp32"] <= hi + pad:
                ax.axvline(lat["fp32"], color="grey", ls="--", lw=1)
            ax.text(0.99, 0.02, f"fp32: {lat['fp32']:.0f} ms ({lat['fp32'] / lat['int8']:.2f}x all-int8)",
                    transform=ax.transAxes, ha="right", fontsize=7, color="grey")
        else:  # the size panel has its own front: the best fidelity per byte, not the latency front re-plotted
            base = allocation_base(s)
            sfront = pareto_front(allocation_items(s), "size")
            fx = [(base_size + c) / 1e6 for c, _, _ in sfront]
            fy = [base.fidelity_db + g for _, g, _ in sfront]
            ax.set_xlabel("IR size, MB")
        ax.step(fx, fy, where="post", color="tab:blue", lw=1.2, label="predicted Pareto front (measured units)")
        ax.scatter(fx, fy, s=8, color="tab:blue")
        labelled = []
        for name, (ms, by, db) in pts.items():
            x = ms if axis == "latency" else by / 1e6
            ax.scatter([x], [db], s=40, zorder=3)
            labelled.append((name, x, db))
        label_points(ax, labelled)
        ys = fy + [p[2] for p in pts.values()]
        pad = max(0.1, (max(ys) - min(ys)) * 0.15)
        ax.set_ylim(min(ys) - pad, max(ys) + pad)
        ax.set_ylabel("fidelity to fp32, PSNR-Y dB (fp32 itself: lossless)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, loc="best")
    fig.suptitle(f"{s['arch']}: latency / size vs fidelity (LR {s['input_size'][0]}x{s['input_size'][1]})", fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def _sidecar_points(folder: Path) -> dict[str, tuple[float, float, float]]:
    """Points other commands leave beside the sweep: verified allocations and the NNCF accuracy-control run."""
    out = {}
    for p in sorted(folder.glob("point_*.json")):
        try:
            d = json.loads(p.read_text())
            out[str(d["name"])] = (float(d["latency_ms"]), float(d["size_bytes"]), float(d["fidelity_db"]))
        except (ValueError, KeyError, TypeError):
            continue
    return out


def spearman(a: list[float], b: list[float]) -> Optional[float]:
    """Rank correlation (average ranks for ties); None with fewer than 3 points or a constant side."""
    if len(a) < 3:
        return None
    rho = float(spearmanr(a, b).statistic)
    return None if math.isnan(rho) else rho
