"""The report's figures: side-by-side crops, the most textured region, latency vs fidelity."""
from __future__ import annotations

from pathlib import Path

from mixq_nncf.data.datasets import load_image
from mixq_nncf.pipeline.artifacts import VariantArtifacts, sample_path


def add_figures(report: dict, arts: dict[str, VariantArtifacts], eval_pairs: list, out_dir: Path) -> None:
    """Draw the figures into out_dir/figures and name them in ``report['figures']``."""
    from mixq_nncf.eval.report import save_side_by_side, save_tradeoff_plot

    figs = out_dir / "figures"
    report["figures"] = {}
    if eval_pairs:
        # evaluation kept every variant's output on the first eval image
        panels = [(n, load_image(sample_path(out_dir, n))) for n in ["bicubic"] + list(arts)]
        h, w = panels[0][1].shape[-2:]
        size = min(160, h, w)
        save_side_by_side(panels, figs / "crops.png", crop=((h - size) // 2, (w - size) // 2, size))
        report["figures"]["side-by-side crops"] = "figures/crops.png"
        _texture_figure(report, panels, figs)
    save_tradeoff_plot(report, figs / "tradeoff.png")
    report["figures"]["latency vs fidelity"] = "figures/tradeoff.png"


def _texture_figure(report: dict, panels: list, figs: Path) -> None:
    """The most textured region of the fp32 output, per variant: crop, zoomed inset, difference to fp32."""
    from mixq_nncf.eval.report import most_textured_crop, save_texture_grid

    named = dict(panels)
    reference = report.get("baseline") or "fp32"
    if reference not in named:
        return
    crop = most_textured_crop(named[reference], 128)
    save_texture_grid(panels, figs / "texture.png", reference=reference, crop=crop)
    report["figures"]["most textured region: crop, 4x inset, |difference to fp32| x4"] = "figures/texture.png"
