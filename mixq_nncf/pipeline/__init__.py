"""`mixq run`: config -> quantize -> train -> export -> audit -> benchmark -> evaluate -> report.

Every step writes its artifacts atomically into the run folder. A result is reused only when the content hash
of what it measured still matches (the IR's .xml + .bin, the config section, the checkpoint, the eval images),
so an interrupted run resumes where it stopped (training resumes from its own checkpoint) and a re-exported IR
is never reported with the old IR's latency or quality.

runner (the numbered steps), stages (per variant: quantize, train, export, audit), measure (benchmark,
evaluate), report and figures, artifacts (what is kept and its content keys), probe (torch fidelity crops).
"""
from __future__ import annotations

from mixq_nncf.pipeline.artifacts import VariantArtifacts
from mixq_nncf.pipeline.measure import benchmark_variants, evaluate_variants
from mixq_nncf.pipeline.probe import CachedOutputs, probe_inputs, torch_fidelity
from mixq_nncf.pipeline.runner import run
from mixq_nncf.pipeline.stages import audit_variant, export_variant, quantized_model, recipe_of, train_variant

__all__ = ["CachedOutputs", "VariantArtifacts", "audit_variant", "benchmark_variants", "evaluate_variants",
           "export_variant", "probe_inputs", "quantized_model", "recipe_of", "run", "torch_fidelity",
           "train_variant"]
