"""What every measurement of a sweep shares: the fp32 model, the one calibrated model every candidate re-plans,
its quantizer sites, the eval photos and the ranking crops.

Each is built on first use and kept: a re-run whose jobs are all finished never loads photos or calibrates.
One calibration serves every candidate: the calibrated all-int8 model is re-planned in place
(nncf_adapter.apply_plan with the quantizer sites found once), and saved beside the results so a resumed sweep
re-plans the very same calibration.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from torch import nn

from mixq_nncf.config.plan import PrecisionPlan, resolve_plan
from mixq_nncf.config.schema import Config
from mixq_nncf.data.datasets import EvalPairs, resolve_images
from mixq_nncf.io_utils import atomic_write_json
from mixq_nncf.models import load_generator
from mixq_nncf.quant.checkpoint import load_quantized, save_quantized
from mixq_nncf.quant.nncf_adapter import apply_plan, quantizer_sites
from mixq_nncf.quant.ptq import quantize_from_config
from mixq_nncf.search.fidelity import forward, psnr_each
from mixq_nncf.search.spec import SweepError, SweepSpec, all_high_plan, content_hash, context_key

EXAMPLE_INPUT = torch.zeros(1, 3, 16, 16)  # quantizer sites and input-range pinning depend on the graph, not the data


class Context:
    def __init__(self, cfg: Config, spec: SweepSpec, out_dir: Path, log: Callable[[str], None]):
        self.cfg, self.spec, self.out, self.log = cfg, spec, Path(out_dir), log
        self._cache: dict[str, Any] = {}

    def _get(self, name: str, make: Callable[[], Any]) -> Any:
        if name not in self._cache:
            self._cache[name] = make()
        return self._cache[name]

    @property
    def fp32(self) -> nn.Module:
        def make():
            torch.manual_seed(self.cfg.data.seed)  # random-init models (weights: null) must be the same in every shard
            return load_generator(self.cfg.model.arch, self.cfg.model.args, self.cfg.model.weights).eval()
        return self._get("fp32", make)

    @property
    def scale(self) -> int:
        return int(self.fp32.scale)

    @property
    def base_plan(self) -> PrecisionPlan:
        def make():
            if self.cfg.compression is None:
                raise SweepError("the config has compression: null (fp32); a sweep needs a quantization section")
            return resolve_plan(self.fp32, self.cfg.compression, tuple(self.cfg.input_info.range))
        return self._get("base_plan", make)

    @property
    def all_high(self) -> PrecisionPlan:
        return self._get("all_high", lambda: all_high_plan(self.base_plan))

    @property
    def qmodel(self) -> nn.Module:
        """The calibrated all-int8 model: loaded from DIR/calibrated.pt when it was calibrated for this context."""
        return self._get("qmodel", self._calibrated)

    def _calibrated(self) -> nn.Module:
        path = self.out / "calibrated.pt"
        stamp = self.out / "calibrated.json"
        key = content_hash({k: v for k, v in context_key(self.cfg, self.spec).items() if k != "sweep"})
        if path.is_file() and stamp.is_file() and json.loads(stamp.read_text()).get("key") == key:
            self.log("loading the calibrated model from calibrated.pt")
            return load_quantized(path).model
        self.log("calibrating (one nncf.quantize for every candidate)")
        t0 = time.perf_counter()
        model = quantize_from_config(self.cfg, fp32_model=self.fp32).model
        save_quantized(model, path, arch=self.cfg.model.arch, args=self.cfg.model.args, plan=self.base_plan)
        atomic_write_json(stamp, {"key": key, "calibration_s": round(time.perf_counter() - t0, 1)})
        return model

    @property
    def sites(self) -> dict:
        return self._get("sites", lambda: quantizer_sites(self.qmodel, EXAMPLE_INPUT))

    def apply(self, plan: PrecisionPlan, model: Optional[nn.Module] = None, *, scored: bool = True) -> nn.Module:
        """Re-plan the calibrated model (or ``model``) in place. ``scored=False``: the caller exports it and never
        scores it on the ranking crops, so they need not be chosen first."""
        if scored and "ranking" not in self._cache and not self._cache.get("_building_ranking"):
            self.ranking  # choosing the ranking crops re-plans the model: do it before, never between apply and use
        model = model if model is not None else self.qmodel
        apply_plan(model, plan, example=EXAMPLE_INPUT, sites=self.sites)
        return model

    @property
    def crop_border(self) -> int:
        return self.cfg.eval.crop_border if self.cfg.eval.crop_border is not None else self.scale

    def eval_pairs(self) -> list[dict]:
        def make():
            paths = resolve_images(self.cfg.data.eval, "eval")
            if self.cfg.data.eval_max_images:
                paths = paths[: self.cfg.data.eval_max_images]
            lr_paths = resolve_images(self.cfg.data.eval_lr, "eval") if self.cfg.data.eval_lr else None
            return list(EvalPairs(paths, self.scale, lr_paths=lr_paths, crop=self.cfg.data.eval_crop))
        return self._get("eval_pairs", make)

    @property
    def ranking(self) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
        """(LR batch, fp32 output batch, crop names): half the crops are the worst under all-int8."""
        return self._get("ranking", self._choose_ranking)

    def _choose_ranking(self) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
        x, names = ranking_candidates(self.eval_pairs(), self.spec.rank_crop)
        ref = forward(self.fp32, x)
        self._cache["_building_ranking"] = True
        scores = psnr_each(forward(self.apply(self.base_plan), x), ref, self.crop_border)
        pick = worst_and_spread(scores, self.spec.rank_images)
        return x[pick], ref[pick], [names[i] for i in pick]


def ranking_candidates(pairs: list[dict], size: int) -> tuple[torch.Tensor, list[str]]:
    """A centre and a corner crop of every eval image at least ``size`` LR pixels on each side."""
    crops, names = [], []
    for pair in pairs:
        lr = pair["lr"]
        h, w = lr.shape[-2:]
        if h < size or w < size:
            continue
        for tag, (top, left) in {"centre": ((h - size) // 2, (w - size) // 2), "corner": (h // 8, w // 8)}.items():
            crops.append(lr[:, top:top + size, left:left + size])
            names.append(f"{pair['name']}:{tag}")
    if not crops:
        raise SweepError(f"no eval image is at least {size} LR pixels on each side; lower --rank-crop")
    return torch.stack(crops), names


def worst_and_spread(scores: list[float], k: int) -> list[int]:
    """Indices of k crops, ascending: the worst half by score, the rest spread evenly over the others."""
    order = sorted(range(len(scores)), key=lambda i: scores[i])
    k = min(k, len(order))
    worst = order[: (k + 1) // 2]
    rest = order[len(worst):]
    step = max(1, len(rest) // max(1, k - len(worst)))
    return sorted(worst + rest[::step][: k - len(worst)])
