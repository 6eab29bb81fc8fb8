"""The paper-style report: one row per variant (size, quality, CPU latency, runtime precision), ratios to fp32.

Pure formatting over plain dicts (the content of report.json), so a report can be re-rendered from JSON.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .io_utils import atomic_write

INT16_NOTE = ("OpenVINO's CPU plugin removes every 65536-level (16-bit) FakeQuantize when it compiles the model: "
              "layers quantized to 16 bits run as fp32 convolutions. 'int16 first/last + int8' therefore runs "
              "exactly like 'first/last fp32 + int8' on this backend; the runtime column shows what really runs.")

DEPLOY_NOTE = ("every latency and quality figure here was measured with INFERENCE_PRECISION_HINT=f32. This CPU has "
               "AVX512-BF16/AMX, so plain OpenVINO (benchmark_app, the model server, compile_model without a config) "
               "runs every layer that is not int8 in bf16 instead: a mixed variant's 16-bit layers lose the "
               "precision they were kept for (Real-ESRGAN x4plus QAT mixed: 33.97 dB fidelity with f32, 31.87 dB "
               "with the default, below all-int8). Deploy with the hint: each IR's .json `deployment` entry and "
               ".ovms.json carry it; `mixq bench --default-precision` times both settings.")


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
    return _fmt(value, ".4f" if "ssim" in key else ".3f")


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
    head = (["variant", "recipe", "IR .bin MB", "size vs fp32", "convs int8/fp32 at runtime", "latency ms (median)",
             "p90 ms", "speed-up vs OV fp32"] + quality_keys)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, v in variants.items():
        counts = v.get("runtime_precision", {})
        conv = f"{counts.get('conv_int8', '-')}/{counts.get('conv_fp32', '-')}" if counts else "-"
        size_ratio = _ratio(v.get("bin_bytes"), base_bytes)
        speedup = _ratio(base_ms, v.get("latency_median_ms"))
        row = [name, v.get("recipe", ""), _fmt(v.get("bin_bytes") and v["bin_bytes"] / 1e6, ".3f"),
               _fmt(size_ratio and 100 * size_ratio, ".1f") + ("%" if size_ratio else ""), conv,
               _fmt(v.get("latency_median_ms"), ".1f"), _fmt(v.get("latency_p90_ms"), ".1f"),
               _fmt(speedup, ".2f") + ("x" if speedup else "")]
        row += [_quality_cell(k, v.get("quality", {}).get(k)) for k in quality_keys]
        lines.append("| " + " | ".join(row) + " |")
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
              "inputs (the cost of quantization alone); NIQE / PI are no-reference (lower is better); PSNR/SSIM against "
              "ground truth appear only when the ground truth matches the model's training degradation.", ""]
    parts += [f"**Runtime precision.** {INT16_NOTE}", ""]
    if any(f in machine.get("flags", []) for f in ("avx512_bf16", "amx_bf16", "amx_int8")):
        parts += [f"**Deploying.** {DEPLOY_NOTE}", ""]
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


def save_side_by_side(panels: list[tuple[str, Any]], path: Path, *, crop: tuple[int, int, int] | None = None) -> Path:
    """Write labelled crops (name, (3,H,W) tensor in [0,1]) next to each other as one PNG."""
    from PIL import Image, ImageDraw

    from .data import to_uint8

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


def save_tradeoff_plot(report: dict, path: Path) -> Path:
    """Latency vs fidelity, one point per variant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4))
    for name, v in report["variants"].items():
        ms = v.get("latency_median_ms")
        fid = v.get("quality", {}).get("fidelity_psnr")
        if ms is None:
            continue
        y = fid if fid is not None else 60.0
        ax.scatter([ms], [y], s=40)
        ax.annotate(name, (ms, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xlabel("OpenVINO CPU latency, median ms (lower is better)")
    ax.set_ylabel("fidelity to fp32, PSNR-Y dB (fp32 plotted at 60)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    out = atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=120))
    plt.close(fig)
    return out
