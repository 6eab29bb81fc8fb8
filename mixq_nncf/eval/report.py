"""The paper-style report: one row per variant (size, quality, CPU latency, runtime precision), ratios to fp32.

Pure formatting over plain dicts (the content of report.json), so a report can be re-rendered from JSON.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from mixq_nncf.io_utils import atomic_write
from mixq_nncf.ir.precision import NO_BF16_NOTE

INT16_NOTE = ("OpenVINO's CPU plugin removes every 65536-level (16-bit) FakeQuantize when it compiles the model: "
              "layers quantized to 16 bits run as fp32 convolutions. 'int16 first/last + int8' therefore runs "
              "exactly like 'first/last fp32 + int8' on this backend; the runtime column shows what really runs.")

DEPLOY_NOTE = ("this CPU has AVX512-BF16/AMX, so plain OpenVINO (benchmark_app, the model server, compile_model "
               "without a config) runs every layer that is not int8 in bf16, and int8 convolutions hand their "
               "outputs (residual sums included) on in bf16. IRs whose plan asks bf16 of some layer carry an f32 "
               "mark on each convolution that must stay f32 and were measured with no hint, as deployed (their "
               ".json `deployment` says \"no hint: per-layer precision is in the IR\"). The others were measured "
               "with INFERENCE_PRECISION_HINT=f32 and must be deployed with it (Real-ESRGAN x4plus all-int8 on a Zen "
               "4: 0.26 dB fidelity lost under the default, at the same speed); under the default a mixed "
               "variant's 16-bit layers lose the precision they were kept for (Real-ESRGAN x4plus QAT mixed: 33.97 dB "
               "fidelity with f32, 31.87 dB with the default, below all-int8); each IR's .json `deployment` entry and "
               ".ovms.json carry the hint; `mixq bench --default-precision` times both settings.")


def _fmt(value: Any, spec: str = ".2f", missing: str = "-") -> str:
    if value is None:
        return missing
    if isinstance(value, (int, float)):
        return format(value, spec)
    return str(value)


def _ratio(value: float | None, base: float | None) -> float | None:
    if value is None or not base:
        return None
    return value / base


def _quality_cell(key: str, value: Any) -> str:
    # pyiqa caps PSNR at 80 dB for identical images: an fp32 IR reproduces the torch model exactly
    if key == "fidelity_psnr" and isinstance(value, (int, float)) and value >= 79.99:
        return "exact"
    return _fmt(value, ".4f" if "ssim" in key or "gmsd" in key or "nlpd" in key else ".3f")


def variant_table(report: dict) -> str:
    """Markdown table in the layout of the mixed-quantization paper's Tables 2/3."""
    variants = report["variants"]
    base = variants.get(report.get("baseline", "fp32"), {})
    base_bytes = base.get("bin_bytes")
    base_ms = base.get("latency_median_ms")
    quality_keys: list[str] = []
    for v in variants.values():
        for key in v.get("quality", {}):
            if key not in quality_keys:
                quality_keys.append(key)
    baselines = report.get("baselines") or {}
    default_ms = (baselines.get("default") or {}).get("latency_median_ms")
    f32_ms = (baselines.get("f32_hint") or {}).get("latency_median_ms")
    if default_ms:
        prec = (baselines.get("default") or {}).get("precision") or "?"
        lead = [f"speed-up vs OV fp32 IR, defaults ({prec} here)", "vs OV fp32 IR, f32 hint"]
    else:
        lead = ["speed-up vs OV fp32"]
    head = (["variant"] + lead + ["recipe", "IR .bin MB", "size vs fp32", "convs int8/fp32 at runtime",
                                  "latency ms (median)", "p90 ms"] + quality_keys)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, v in variants.items():
        counts = v.get("runtime_precision", {})
        conv = f"{counts.get('conv_int8', '-')}/{counts.get('conv_fp32', '-')}" if counts else "-"
        if counts.get("conv_bf16"):
            conv += f" (+{counts['conv_bf16']} bf16)"
        size_ratio = _ratio(v.get("bin_bytes"), base_bytes)
        ratios = [_ratio(b, v.get("latency_median_ms")) for b in ((default_ms, f32_ms) if default_ms else (base_ms,))]
        row = [name] + [_fmt(r, ".2f") + ("x" if r else "") for r in ratios]
        row += [v.get("recipe", ""), _fmt(v.get("bin_bytes") and v["bin_bytes"] / 1e6, ".3f"),
                _fmt(size_ratio and 100 * size_ratio, ".1f") + ("%" if size_ratio else ""), conv,
                _fmt(v.get("latency_median_ms"), ".1f"), _fmt(v.get("latency_p90_ms"), ".1f")]
        row += [_quality_cell(k, v.get("quality", {}).get(k)) for k in quality_keys]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def heldout_table(report: dict) -> str:
    """Every variant's quality on the held-out photos, fidelity gains over PTQ's beside it, as on the eval photos."""
    variants = report["variants"]
    keys: list[str] = []
    for v in variants.values():
        keys += [k for k in v.get("quality_heldout", {}) if k not in keys]
    if not keys:
        return ""
    lines = ["| variant | " + " | ".join(keys) + " |", "|" + "---|" * (len(keys) + 1)]
    bicubic = (report.get("heldout") or {}).get("bicubic")
    rows = list(variants.items()) + ([("bicubic", {"quality_heldout": bicubic})] if bicubic else [])
    for name, v in rows:
        q = v.get("quality_heldout", {})
        lines.append(f"| {name} | " + " | ".join(_quality_cell(k, q.get(k)) for k in keys) + " |")
    return "\n".join(lines)


def peers_table(report: dict) -> str:
    peers = report.get("peers", {})
    if not peers:
        return ""
    lines = ["| peer | latency ms (median) | p90 ms |", "|---|---|---|"]
    for name, p in peers.items():
        lines.append(f"| {name} | {_fmt(p.get('latency_median_ms'), '.1f')} | {_fmt(p.get('latency_p90_ms'), '.1f')} |")
    return "\n".join(lines)


def render_markdown(report: dict) -> str:
    machine = report.get("machine", {})
    bench = report.get("benchmark", {})
    parts = [f"# mixq-nncf report: {report.get('name', '')}", ""]
    parts.append(f"Model: `{report.get('model', {}).get('arch')}` (weights: {report.get('model', {}).get('weights')}), "
                 f"x{report.get('scale')}. Eval images: {report.get('eval', {}).get('images')} "
                 f"({report.get('eval', {}).get('source')}).")
    parts.append("")
    parts.append(f"Latency: OpenVINO {machine.get('openvino', '?')} on {machine.get('cpu', '?')} "
                 f"({machine.get('cores', '?')} cores), input 1x3x{bench.get('input_size', ['?', '?'])[0]}x"
                 f"{bench.get('input_size', ['?', '?'])[1]}, {bench.get('threads') or 'all'} threads, "
                 f"median of {bench.get('iterations', '?')} interleaved runs; every time in this table was measured in "
                 "the same run as its fp32 baseline.")
    parts += ["", variant_table(report), ""]
    peers = peers_table(report)
    if peers:
        parts += ["Peers measured in the same run:", "", peers, ""]
    parts += ["Quality: `fidelity_*` compares each variant's OpenVINO output with the fp32 model's output on the same "
              "inputs (the cost of quantization alone; GMSD and NLPD: lower is better); `laplacian_ratio` is the "
              "variant's fine-detail energy over fp32's (1 = same, above = added grain, below = smoothing); NIQE / PI "
              "are no-reference (lower is better); `niqe_gap` is the mean over photos of |NIQE - fp32's NIQE| on the "
              "same photo (0 = as natural as fp32 by NIQE on every photo; steadier than the gap of the means, where "
              "per-photo errors of opposite sign cancel); PSNR/SSIM against ground truth appear only when the "
              "ground truth matches the model's training degradation.", ""]
    heldout = heldout_table(report)
    if heldout:
        h = report.get("heldout", {})
        crop = f", HR centre crop {h['crop']} px" if h.get("crop") else ""
        parts += [f"Held-out photos: {h.get('images')} ({h.get('source')}{crop}), which no calibration, training, "
                  "tuning or choice of defaults saw; the same metrics, so an edge that holds only on the eval photos "
                  "shows here.", "", heldout, ""]
    parts += [f"**Runtime precision.** {INT16_NOTE}", ""]
    if any(f in machine.get("flags", []) for f in ("avx512_bf16", "amx_bf16", "amx_int8")):
        parts += [f"**Deploying.** {DEPLOY_NOTE}", ""]
    parts += _kernel_and_precision_lines(report)
    for name, v in report["variants"].items():
        fp32_layers = v.get("runtime_fp32_convs") or []
        if fp32_layers and name != report.get("baseline", "fp32"):
            shown = ", ".join(fp32_layers[:8]) + (" ..." if len(fp32_layers) > 8 else "")
            share = v.get("fp32_time_share")
            share_txt = f"; {100 * share:.1f}% of inference time is spent in them" if share is not None else ""
            parts.append(f"- `{name}`: {len(fp32_layers)} conv(s) run fp32: {shown}{share_txt}.")
    if report.get("training"):
        parts += ["", "## Quantization-aware training", "",
                  "| variant | steps | fidelity PSNR before (PTQ) | after | gain dB | wall s |",
                  "|---|---|---|---|---|---|"]
        for name, t in report["training"].items():
            gain = None
            if t.get("fidelity_before") is not None and t.get("fidelity_after") is not None:
                gain = t["fidelity_after"] - t["fidelity_before"]
            parts.append(f"| {name} | {t.get('steps')} | {_fmt(t.get('fidelity_before'), '.3f')} | "
                         f"{_fmt(t.get('fidelity_after'), '.3f')} | {_fmt(gain, '+.3f')} | {_fmt(t.get('wall_s'), '.0f')} |")
    if report.get("figures"):
        parts += ["", "## Figures", ""]
        for title, path in report["figures"].items():
            parts.append(f"![{title}]({path})")
    if report.get("notes"):
        parts += ["", "## Notes", ""] + [f"- {n}" for n in report["notes"]]
    return "\n".join(parts) + "\n"


def _kernel_and_precision_lines(report: dict) -> list[str]:
    """Per variant: the kernels that ran, and the plan's requested precision against what ran."""
    machine = report.get("machine", {})
    baselines = report.get("baselines") or {}
    lines = []
    if (baselines.get("default") or {}).get("latency_median_ms"):
        prec = baselines["default"].get("precision") or machine.get("default_precision") or "?"
        lines += [f"**Baseline.** Speed-ups lead with the ratio to the fp32 IR compiled with OpenVINO's defaults (no "
                  f"precision hint: {prec} on this CPU; {machine.get('units', '')}), the baseline a user of this "
                  "machine already has; the ratio to the same IR under INFERENCE_PRECISION_HINT=f32 is beside it."
                  + (" Here both settings compile the same f32 graph, timed once, so the two columns agree."
                     if baselines["default"].get("same_as_f32_hint") else ""), ""]
    for name, v in report["variants"].items():
        check = v.get("precision_check") or {}
        if v.get("kernels"):
            lines.append(f"- `{name}` kernels: {v['kernels']}.")
        weights = v.get("int8_weights") or {}
        if weights.get("channels"):
            lines.append(f"- `{name}`: 8-bit weights widened for AVX2's int16 pair sums (overflow_fix pairs) in "
                         f"{weights['widened']} of {weights['channels']} channels, {weights['mean_bits']:.2f} bits "
                         "kept on average (NNCF's overflow fix: 7).")
        notes = list(check.get("notes", []))
        bf16 = sorted(k for k, p in (v.get("float_precision") or {}).items() if p == "bf16")
        if bf16 and machine.get("default_precision") == "f32" and NO_BF16_NOTE not in notes:
            notes.append(f"{NO_BF16_NOTE}: {', '.join(bf16[:8])}" + (" ..." if len(bf16) > 8 else ""))
        lines += [f"- `{name}`: {note}." for note in notes]
        if check.get("mismatches"):
            lines.append(f"- `{name}`: {len(check['mismatches'])} conv(s) do not run the precision the plan asked: "
                         + "; ".join(check["mismatches"][:8]) + (" ..." if len(check["mismatches"]) > 8 else "") + ".")
    return lines + ([""] if lines else [])


def save_side_by_side(panels: list[tuple[str, Any]], path: Path, *, crop: tuple[int, int, int] | None = None) -> Path:
    """Write labelled crops (name, (3,H,W) tensor in [0,1]) next to each other as one PNG."""
    from PIL import Image, ImageDraw

    from mixq_nncf.data.datasets import to_uint8

    tiles = []
    for label, img in panels:
        arr = to_uint8(img)
        if crop is not None:
            top, left, size = crop
            arr = arr[top:top + size, left:left + size]
        tile = Image.fromarray(arr)
        tile = tile.resize((tile.width * 2, tile.height * 2), Image.NEAREST) if tile.width < 200 else tile
        canvas = Image.new("RGB", (tile.width, tile.height + 18), "white")
        canvas.paste(tile, (0, 18))
        ImageDraw.Draw(canvas).text((4, 3), label, fill="black")
        tiles.append(canvas)
    width = sum(t.width for t in tiles) + 4 * (len(tiles) - 1)
    sheet = Image.new("RGB", (width, max(t.height for t in tiles)), "white")
    x = 0
    for t in tiles:
        sheet.paste(t, (x, 0))
        x += t.width + 4
    return atomic_write(path, lambda p: sheet.save(p, format="PNG"))


def label_points(ax, points: list[tuple[str, float, float]], min_gap: float = 0.06) -> None:
    """Name each (label, x, y) point with a text kept at least ``min_gap`` (axes fraction) from the others
    vertically, joined to its point by a thin line, so close points stay readable."""
    if not points:
        return
    ax.figure.canvas.draw()
    y0, y1 = ax.get_ylim()
    span = (y1 - y0) or 1.0
    x0, x1 = ax.get_xlim()
    dx = 0.02 * ((x1 - x0) or 1.0)
    placed: list[float] = []
    for name, x, y in sorted(points, key=lambda p: p[2]):
        frac = (y - y0) / span
        for other in placed:
            if abs(frac - other) < min_gap:
                frac = other + min_gap
        placed.append(frac)
        ax.annotate(name, (x, y), xytext=(x + dx, y0 + frac * span), textcoords="data", fontsize=7,
                    ha="left", va="center", arrowprops={"arrowstyle": "-", "lw": 0.5, "color": "grey"},
                    bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.8})


def save_tradeoff_plot(report: dict, path: Path) -> Path:
    """Latency vs fidelity of the quantized variants, zoomed on them; fp32 (lossless, no finite fidelity) is a
    reference line at its latency, and labels are spread apart."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    points, refs = [], []
    for name, v in report["variants"].items():
        ms = v.get("latency_median_ms")
        fid = v.get("quality", {}).get("fidelity_psnr")
        if ms is None:
            continue
        if fid is None or fid >= 60:
            refs.append((name, ms))
            continue
        ax.scatter([ms], [fid], s=40, zorder=3)
        points.append((name, ms, fid))
    xlim = None
    if points:
        ys, xs = [p[2] for p in points], [p[1] for p in points]
        pad = max(0.1, (max(ys) - min(ys)) * 0.2)
        ax.set_ylim(min(ys) - pad, max(ys) + pad)
        xpad = max(1.0, (max(xs) - min(xs)) * 0.3)
        xlim = (min(xs) - xpad, max(xs) + 2 * xpad)
        ax.set_xlim(*xlim)
    for name, ms in refs:
        if xlim is None or xlim[0] <= ms <= xlim[1]:
            ax.axvline(ms, color="grey", ls="--", lw=1)
            ax.text(ms, 0.02, f" {name} (reference) {ms:.1f} ms", transform=ax.get_xaxis_transform(), fontsize=7,
                    color="grey", rotation=90, va="bottom")
        else:  # zoomed on the variants: name the reference instead of stretching the axis to it
            ax.text(0.99, 0.02, f"{name} (lossless reference): {ms:.1f} ms, off this axis", transform=ax.transAxes,
                    fontsize=7, color="grey", ha="right", va="bottom")
    label_points(ax, points)
    ax.set_xlabel("OpenVINO CPU latency, median ms (lower is better)")
    ax.set_ylabel("fidelity to fp32, PSNR-Y dB (higher is better)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    out = atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=120))
    plt.close(fig)
    return out


def most_textured_crop(img: Any, size: int) -> tuple[int, int, int]:
    """(top, left, size) of the ``size`` px window with the highest luma variance: where quantization grain and
    smoothing show (a centre crop often lands on sky or skin)."""
    import torch.nn.functional as F

    from mixq_nncf.data.luma import luma

    y = luma(img.unsqueeze(0))
    h, w = y.shape[-2:]
    size = min(size, h, w)
    stride = max(1, size // 4)
    mean = F.avg_pool2d(y, size, stride)
    var = F.avg_pool2d(y * y, size, stride) - mean * mean
    idx = int(var.flatten().argmax())
    top, left = (idx // var.shape[-1]) * stride, (idx % var.shape[-1]) * stride
    return min(top, h - size), min(left, w - size), size


def save_texture_grid(panels: list[tuple[str, Any]], path: Path, *, reference: str, crop: tuple[int, int, int],
                      zoom: int = 4, gain: float = 4.0) -> Path:
    """Per variant (columns): the crop, a ``zoom``x nearest-neighbour inset of its centre, and |variant - reference|
    x ``gain`` as a heat map, so grain (bright speckle) and smoothing (bright edges) show at a glance."""
    import numpy as np
    from PIL import Image, ImageDraw

    from mixq_nncf.data.datasets import to_uint8

    ref = dict(panels)[reference]
    top, left, size = crop
    inset = max(8, size // zoom)
    i_top, i_left = top + (size - inset) // 2, left + (size - inset) // 2
    label_h, pad = 16, 4
    cols = []
    for label, img in panels:
        arr = to_uint8(img)
        tile = Image.fromarray(arr[top:top + size, left:left + size])
        box = Image.fromarray(arr[i_top:i_top + inset, i_left:i_left + inset]).resize((size, size), Image.NEAREST)
        diff = (img - ref)[..., top:top + size, left:left + size].abs().mean(0).mul(gain).clamp(0, 1).numpy()
        heat = np.stack([diff, diff ** 2, np.zeros_like(diff)], -1)  # black -> red -> yellow
        heat_img = Image.fromarray((heat * 255).round().astype(np.uint8))
        col = Image.new("RGB", (size, 3 * size + 2 * pad + label_h), "white")
        col.paste(tile, (0, label_h))
        ImageDraw.Draw(col).rectangle([(i_left - left, label_h + i_top - top),
                                       (i_left - left + inset, label_h + i_top - top + inset)], outline="cyan")
        col.paste(box, (0, label_h + size + pad))
        col.paste(heat_img, (0, label_h + 2 * (size + pad)))
        ImageDraw.Draw(col).text((3, 2), label, fill="black")
        cols.append(col)
    sheet = Image.new("RGB", (sum(c.width for c in cols) + pad * (len(cols) - 1), cols[0].height), "white")
    x = 0
    for c in cols:
        sheet.paste(c, (x, 0))
        x += c.width + pad
    return atomic_write(path, lambda p: sheet.save(p, format="PNG"))
