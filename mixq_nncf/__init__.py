"""mixq-nncf: sensitivity-aware mixed-precision quantization of SR GAN generators on NNCF and OpenVINO."""
import os as _os

# NNCF gives its CPU extension 60 s to load and then raises; on a busy 2-core machine, or when several torchrun
# ranks wait on the same build lock, loading takes longer. A user's own setting wins.
_os.environ.setdefault("NNCF_EXTENSION_LOAD_TIMEOUT", "600")

__version__ = "0.1.0"

__all__ = ["Upscaler"]


def __getattr__(name: str):
    # `from mixq_nncf import Upscaler` works, and importing the package still needs neither OpenVINO nor torch
    if name == "Upscaler":
        from mixq_nncf.serve.upscale import Upscaler

        return Upscaler
    raise AttributeError(f"module 'mixq_nncf' has no attribute {name!r}")
