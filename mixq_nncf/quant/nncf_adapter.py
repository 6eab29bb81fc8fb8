"""The NNCF adapter's public names in one import.

Each concern that touches NNCF 3.4 internals lives in one module: sites (hook storage and NNCF graph: where
quantizers sit), quantizers (a quantizer's own bits / signedness / range fields), apply (a precision plan set on
a calibrated model, input-range pinning), skips (fully quantized mode), weight_ranges (fitted weight clipping),
probe (QAT intervals and the quantization-error term).
"""
from __future__ import annotations

from mixq_nncf.quant.apply import (ApplyResult, apply_plan, apply_skip_bits, force_signed, input_extremes,
                                   input_range_problems, refresh_levels)
from mixq_nncf.quant.probe import QuantErrorProbe, interval_parameters
from mixq_nncf.quant.quantizers import QuantizerState, pin_input_range, quantizer_state, set_bits
from mixq_nncf.quant.sites import (QuantizerSite, example_input, hook_storage, is_quantized, quantizer_modules,
                                   quantizer_sites)
from mixq_nncf.quant.skips import TensorInput, plan_with_skips, skip_inputs
from mixq_nncf.quant.weight_ranges import fit_weight_ranges

__all__ = ["ApplyResult", "QuantErrorProbe", "QuantizerSite", "QuantizerState", "TensorInput", "apply_plan",
           "apply_skip_bits", "example_input", "fit_weight_ranges", "force_signed", "hook_storage",
           "input_extremes", "input_range_problems", "interval_parameters", "is_quantized", "pin_input_range",
           "plan_with_skips", "quantizer_modules", "quantizer_sites", "quantizer_state", "refresh_levels",
           "set_bits", "skip_inputs"]
