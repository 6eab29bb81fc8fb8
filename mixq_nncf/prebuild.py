"""Build NNCF's CPU quantizer extension once at install time.

A cold JIT build takes ~20-30 s on 2 cores; past NNCF_EXTENSION_LOAD_TIMEOUT (60 s) NNCF raises
instead of falling back, so a first quantized forward on a busy machine could fail without this.
"""
from __future__ import annotations

import time


def main() -> None:
    t0 = time.perf_counter()
    import nncf.torch  # noqa: F401
    import nncf.torch.quantization.extensions  # noqa: F401  (registers the loaders)

    nncf.torch.force_build_cpu_extensions()
    print(f"NNCF CPU extension ready ({time.perf_counter() - t0:.1f} s)")


if __name__ == "__main__":
    main()
