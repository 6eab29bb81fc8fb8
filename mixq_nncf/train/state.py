"""What a training run writes and reads back: the resume checkpoint (checkpoints/last.pt) and final.pt.

The checkpoint holds everything a resumed run needs to continue bit for bit (weights, EMA, discriminator,
optimizers, schedulers, RNG states, the config), stored as plain data so it loads with weights_only=True.
"""
from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch import nn

from mixq_nncf.config.files import config_changes
from mixq_nncf.config.schema import SCORING_ONLY_DATA, Config, to_dict
from mixq_nncf.errors import MixqError, OutputError
from mixq_nncf.io_utils import atomic_torch_save, ensure_writable
from mixq_nncf.quant.checkpoint import save_quantized
from mixq_nncf.quant.nncf_adapter import is_quantized

CHECKPOINT_FORMAT = "mixq-nncf/train-state-v1"

# config keys a resumed run may change: they do not change what is trained (iterations may grow to extend a run)
RESUME_HARMLESS = ("training.iterations", "training.log_every", "training.checkpoint_every", "training.tensorboard",
                   "training.device", "training.num_workers", "data.eval", "data.eval_lr", "data.eval_max_images",
                   "data.eval_crop") + tuple(f"data.{k}" for k in SCORING_ONLY_DATA)
RESUME_IGNORED_SECTIONS = ("name", "description", "variants", "export", "benchmark", "eval")


def check_out_dir(out_dir: str | Path, resume: bool, model: Optional[nn.Module] = None) -> Path:
    """Before any work: refuse to overwrite a run without --resume, and a folder we cannot write or fill."""
    out_dir = Path(out_dir)
    existing = [p for p in (out_dir / "final.pt", out_dir / "checkpoints" / "last.pt") if p.is_file()]
    if existing and not resume:
        raise OutputError(f"{out_dir} already holds a training run ({', '.join(p.name for p in existing)}); "
                          "continue it with --resume, or use another --out (or delete that folder) to start over")
    # model, EMA copy and two Adam moments per parameter, written twice (temp file + the one it replaces)
    need = 8 * 4 * sum(p.numel() for p in model.parameters()) if model is not None else 0
    return ensure_writable(out_dir, need_bytes=need)


def resume_changes(saved: dict, cfg: Config) -> list[str]:
    """'key: old -> new' for every config change that makes a resumed run another experiment."""
    return [c for c in config_changes(saved, to_dict(cfg), RESUME_IGNORED_SECTIONS)
            if c.split(":")[0] not in RESUME_HARMLESS]


def load_train_state(path: Path, device: torch.device | str = "cpu") -> dict:
    """A training checkpoint, read as plain data (weights_only): a crafted file cannot run code."""
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - truncated, foreign or code-carrying files are the same user problem
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise MixqError(f"{path}: not a readable mixq training checkpoint ({type(exc).__name__}: {first}). "
                        "Delete it to restart training from the beginning, or use another --out.") from None
    if not isinstance(state, dict):
        raise MixqError(f"{path} is not a mixq training checkpoint; remove it or use another --out")
    return state


@dataclass
class TrainState:
    """The objects a resume checkpoint saves and restores; the discriminator side is None without one."""
    model: nn.Module
    ema: Optional[nn.Module]
    disc: Optional[nn.Module]
    opt_g: torch.optim.Optimizer
    sched_g: torch.optim.lr_scheduler.LRScheduler
    opt_d: Optional[torch.optim.Optimizer]
    sched_d: Optional[torch.optim.lr_scheduler.LRScheduler]

    def save(self, path: Path, step: int, cfg: Config) -> None:
        atomic_torch_save(path, {
            "format": CHECKPOINT_FORMAT, "step": step, "generator": self.model.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "disc": self.disc.state_dict() if self.disc is not None else None,
            "opt_g": self.opt_g.state_dict(), "sched_g": _sched_state(self.sched_g),
            "opt_d": self.opt_d.state_dict() if self.opt_d else None,
            "sched_d": _sched_state(self.sched_d) if self.sched_d else None,
            "rng": _rng_state(), "config": to_dict(cfg)})

    def restore(self, path: Path, cfg: Config, device: torch.device) -> int:
        """Load ``path`` into these objects and the RNGs; returns the step it was saved at. Refuses a checkpoint
        of another config, except for the keys in RESUME_HARMLESS."""
        state = load_train_state(path, device)
        if state.get("format") != CHECKPOINT_FORMAT:
            raise MixqError(f"{path} is not a mixq training checkpoint; remove it or use another --out")
        changed = resume_changes(state.get("config") or {}, cfg)
        if changed:
            shown = "; ".join(changed[:6]) + (f"; and {len(changed) - 6} more" if len(changed) > 6 else "")
            raise OutputError(f"{path} was trained with another config ({shown}); resuming would mix two "
                              "experiments: restore those values, or use another --out to start this one")
        self.model.load_state_dict(state["generator"])
        self.opt_g.load_state_dict(state["opt_g"])
        _load_sched_state(self.sched_g, state["sched_g"])
        if self.disc is not None and state.get("disc") is not None:
            self.disc.load_state_dict(state["disc"])
            self.opt_d.load_state_dict(state["opt_d"])
            _load_sched_state(self.sched_d, state["sched_d"])
        if self.ema is not None and state.get("ema") is not None:
            self.ema.load_state_dict(state["ema"])
        _set_rng_state(state["rng"])
        return int(state["step"])


def save_final(path: Path, cfg: Config, model: nn.Module, ema: Optional[nn.Module], plan) -> None:
    """final.pt: the EMA generator when there is one, else the trained one, with its precision plan."""
    keep = (ema if ema is not None else model).cpu().eval()
    save_quantized(keep, path, arch=cfg.model.arch, args=cfg.model.args,
                   plan=plan if is_quantized(keep) else None,
                   meta={"trained_steps": cfg.training.iterations, "ema": ema is not None, "variant": cfg.name})


def _rng_state() -> dict:
    """RNG states as tensors and plain numbers, so a training checkpoint loads with weights_only=True."""
    version, mt, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": {"version": int(version), "state": torch.tensor(mt, dtype=torch.int64),
                        "gauss": None if gauss is None else float(gauss)},
             "numpy": {"name": str(name), "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "cached": float(cached)},
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    py, npy = state["python"], state["numpy"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss"]))
    np.random.set_state((npy["name"], npy["keys"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"],
                         npy["cached"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _sched_state(sched) -> dict:
    """MultiStepLR keeps its milestones in a Counter, which weights_only loading refuses: store a plain dict."""
    return {k: (dict(v) if isinstance(v, Counter) else v) for k, v in sched.state_dict().items()}


def _load_sched_state(sched, state: dict) -> None:
    sched.load_state_dict({k: (Counter({int(m): int(c) for m, c in v.items()}) if k == "milestones" else v)
                           for k, v in state.items()})
