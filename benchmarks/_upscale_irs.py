"""Real-ESRGAN x4plus IRs for bench_upscale.py (fp32, int8, mixed), made once and cached under benchmarks/out/."""
from __future__ import annotations

from pathlib import Path

MIXED_STAGES = {"feature_extraction": {"bits": "int16"}, "reconstruction": {"bits": "int16"}}


def make_irs(out: Path, arch: str = "realesrgan_x4plus", calib_n: int = 16, size: int = 64):
    """Returns ({name: xml}, fp32 torch model). One calibration serves int8 and mixed (bits change per layer)."""
    import torch

    from mixq_nncf.config.schema import parse_config
    from mixq_nncf.data.datasets import calibration_inputs
    from mixq_nncf.ir.export import export_ir
    from mixq_nncf.models import PRESETS, load_generator
    from mixq_nncf.quant.nncf_adapter import apply_plan
    from mixq_nncf.config.plan import resolve_plan
    from mixq_nncf.quant.ptq import quantize

    torch.manual_seed(0)
    fp32 = load_generator(arch, None, "embedded")
    sample = torch.rand(1, 3, size, size)
    folder = out / arch
    paths = {"fp32": folder / "fp32.xml", "int8": folder / "int8.xml", "mixed": folder / "mixed.xml"}
    meta = {"arch": arch, "scale": int(PRESETS[arch].scale)}
    if not paths["fp32"].exists():
        export_ir(fp32, paths["fp32"], example_input=sample, compact_16bit=False, meta=meta)
    if not (paths["int8"].exists() and paths["mixed"].exists()):
        calib = calibration_inputs("offline", calib_n, size, int(fp32.scale))
        base = parse_config({}).compression
        q = quantize(fp32, resolve_plan(fp32, base), calib, compression=base)
        export_ir(q, paths["int8"], example_input=sample, meta=meta)
        mixed = parse_config({"compression": {"stages": MIXED_STAGES}}).compression
        apply_plan(q, resolve_plan(fp32, mixed))
        export_ir(q, paths["mixed"], example_input=sample, meta=meta)
    return paths, fp32


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out", nargs="?", default="benchmarks/out/upscale_irs", help="folder for the cached IRs")
    print(make_irs(Path(parser.parse_args().out))[0])
