"""Quantization-aware training of an NNCF-quantized generator with the SR GAN losses.

One loop, read top to bottom: a generator step (pixel, perceptual, adversarial and distillation terms) and a
discriminator step. Quantizer scales are ordinary parameters and train with the weights. Batches are a pure
function of (seed, rank, step), so a resumed run sees exactly the batches an uninterrupted one would.
Under torchrun each rank trains on its own batches with DistributedDataParallel; only rank 0 writes.
"""
from __future__ import annotations

import copy
import csv
import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
from torch import nn

from .config import Config, to_dict
from .errors import MixqError, TrainingDiverged
from .io_utils import atomic_torch_save, atomic_write_text

CHECKPOINT_FORMAT = "mixq-nncf/train-state-v1"


@dataclass
class TrainResult:
    steps: int
    final_path: str
    wall_s: float
    images_per_s: float
    last_losses: dict[str, float] = field(default_factory=dict)
    resumed_from: int = 0
    device: str = "cpu"
    world_size: int = 1


def pick_device(choice: str) -> torch.device:
    if choice == "auto":
        if torch.cuda.is_available():
            local = int(os.environ.get("LOCAL_RANK", 0))
            return torch.device(f"cuda:{local}")
        return torch.device("cpu")
    dev = torch.device(choice)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise MixqError(f"training.device is {choice!r} but no CUDA device is available; use 'auto' or 'cpu'")
    return dev


def _dist_setup(device: torch.device) -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), world


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
    from collections import Counter

    return {k: (dict(v) if isinstance(v, Counter) else v) for k, v in sched.state_dict().items()}


def _load_sched_state(sched, state: dict) -> None:
    from collections import Counter

    sched.load_state_dict({k: (Counter({int(m): int(c) for m, c in v.items()}) if k == "milestones" else v)
                           for k, v in state.items()})


def _batch(ds, step: int, batch_size: int, device: torch.device) -> dict:
    items = [ds[step * batch_size + j] for j in range(batch_size)]
    return {k: torch.stack([it[k] for it in items]).to(device, non_blocking=True) for k in ("lr", "hr")}


class _CsvLog:
    """train_log.csv (rewritten atomically at each checkpoint) and, optionally, TensorBoard scalars."""

    def __init__(self, path: Path, enabled: bool, resume_step: int, tensorboard: bool = False):
        self.path, self.enabled = path, enabled
        self.rows: list[dict] = []
        if enabled and resume_step and path.is_file():
            with path.open() as f:
                self.rows = [r for r in csv.DictReader(f) if int(r["step"]) <= resume_step]
        self.tb = None
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise MixqError("training.tensorboard is true but the tensorboard package is not installed: "
                                "pip install tensorboard, or set training.tensorboard to false") from None
            self.tb = SummaryWriter(str(path.parent / "tensorboard"),
                                    purge_step=resume_step + 1 if resume_step else None)

    def add(self, row: dict) -> None:
        if self.enabled:
            self.rows.append({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
        if self.tb is not None:
            for k, v in row.items():
                if k != "step" and isinstance(v, (int, float)):
                    self.tb.add_scalar(k, v, row["step"])

    def flush(self) -> None:
        if not self.enabled or not self.rows:
            return
        keys = list(dict.fromkeys(k for r in self.rows for k in r))
        lines = [",".join(keys)] + [",".join(str(r.get(k, "")) for k in keys) for r in self.rows]
        atomic_write_text(self.path, "\n".join(lines) + "\n")
        if self.tb is not None:
            self.tb.flush()


def train(cfg: Config, *, model: nn.Module, teacher: Optional[nn.Module], out_dir: str | Path,
          resume: bool = False, plan=None, progress: bool = True,
          on_step: Optional[Callable[[int, dict], None]] = None) -> TrainResult:
    """Train ``model`` in place for cfg.training.iterations steps; writes checkpoints/last.pt and final.pt."""
    from tqdm import tqdm

    from .data import TrainPatches, resolve_images
    from .losses import PerceptualLoss, distill_loss, gan_loss_d, gan_loss_g, pixel_loss
    from .qcheckpoint import save_quantized

    t = cfg.training
    out_dir = Path(out_dir)
    device = pick_device(t.device)
    rank, world = _dist_setup(device)
    is_main = rank == 0
    if is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = out_dir / "checkpoints" / "last.pt"

    use_gan = t.gan_weight > 0 and not t.distill_only
    use_perceptual = t.perceptual_weight > 0 and not t.distill_only
    use_pixel = t.pixel_weight > 0 and not t.distill_only
    distill_w = (t.distill_weight or 1.0) if t.distill_only else t.distill_weight
    if distill_w > 0 and teacher is None:
        raise MixqError("distillation needs the fp32 teacher model")
    perceptual = PerceptualLoss(t.vgg_weights).to(device) if use_perceptual else None  # fails up front

    scale = int(model.scale)
    if t.patch_size % scale:
        raise MixqError(f"training.patch_size {t.patch_size} must be a multiple of the scale {scale}")
    ds = TrainPatches(resolve_images(cfg.data.train, "train"), scale, t.patch_size,
                      lr_paths=None, augment=True, seed=t.seed * 7919 + rank * 104729)

    torch.manual_seed(t.seed)
    random.seed(t.seed)
    np.random.seed(t.seed)
    model.to(device).train()
    if teacher is not None:
        teacher = teacher.to(device).eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
    disc = None
    if use_gan:
        from .models.discriminator import VGGStyleDiscriminator

        disc = VGGStyleDiscriminator(3, 64, input_size=t.patch_size)
        if t.discriminator_weights:
            from .models.checkpoint import load_checkpoint

            load_checkpoint(disc, t.discriminator_weights)
        disc = disc.to(device).train()
    ema = copy.deepcopy(model).eval() if t.ema_decay > 0 else None

    g_params = [p for p in model.parameters() if p.requires_grad]
    opt_g = torch.optim.Adam(g_params, lr=t.lr_g, betas=tuple(t.betas))
    sched_g = torch.optim.lr_scheduler.MultiStepLR(opt_g, milestones=list(t.milestones), gamma=t.gamma)
    opt_d = sched_d = None
    if disc is not None:
        opt_d = torch.optim.Adam(disc.parameters(), lr=t.lr_d, betas=tuple(t.betas))
        sched_d = torch.optim.lr_scheduler.MultiStepLR(opt_d, milestones=list(t.milestones), gamma=t.gamma)

    start = 0
    if resume and ckpt_path.is_file():
        state = load_train_state(ckpt_path, device)
        if state.get("format") != CHECKPOINT_FORMAT:
            raise MixqError(f"{ckpt_path} is not a mixq training checkpoint; remove it or use another --out")
        model.load_state_dict(state["generator"])
        opt_g.load_state_dict(state["opt_g"])
        _load_sched_state(sched_g, state["sched_g"])
        if disc is not None and state.get("disc") is not None:
            disc.load_state_dict(state["disc"])
            opt_d.load_state_dict(state["opt_d"])
            _load_sched_state(sched_d, state["sched_d"])
        if ema is not None and state.get("ema") is not None:
            ema.load_state_dict(state["ema"])
        _set_rng_state(state["rng"])
        start = int(state["step"])

    g_model: nn.Module = model
    d_model = disc
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [device.index] if device.type == "cuda" else None
        g_model = DDP(model, device_ids=ids)
        if disc is not None:
            d_model = DDP(disc, device_ids=ids)

    amp = t.amp and device.type == "cuda"
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if amp else None

    def save_state(step: int) -> None:
        if not is_main:
            return
        atomic_torch_save(ckpt_path, {
            "format": CHECKPOINT_FORMAT, "step": step, "generator": model.state_dict(),
            "ema": ema.state_dict() if ema is not None else None,
            "disc": disc.state_dict() if disc is not None else None,
            "opt_g": opt_g.state_dict(), "sched_g": _sched_state(sched_g),
            "opt_d": opt_d.state_dict() if opt_d else None, "sched_d": _sched_state(sched_d) if sched_d else None,
            "rng": _rng_state(), "config": to_dict(cfg)})

    quant_error = None
    if t.quant_error_weight > 0:  # FQSR calibration loss; hooks added after the EMA copy so it has none
        from .nncf_adapter import QuantErrorProbe, is_quantized

        if not is_quantized(model):
            raise MixqError("training.quant_error_weight > 0 needs a quantized model (set a compression section)")
        quant_error = QuantErrorProbe(model)

    log = _CsvLog(out_dir / "train_log.csv", is_main, start, t.tensorboard)
    bar = tqdm(range(start, t.iterations), initial=start, total=t.iterations,
               desc="QAT" if plan is not None else "train",
               disable=not (progress and is_main))
    t0 = time.perf_counter()
    images = 0
    losses: dict[str, float] = {}
    for step in bar:
        batch = _batch(ds, step, t.batch_size, device)
        lr_img, hr_img = batch["lr"], batch["hr"]

        # generator step
        if disc is not None:
            disc.requires_grad_(False)
        sr = g_model(lr_img)
        terms: dict[str, torch.Tensor] = {}
        if quant_error is not None:
            terms["quant_error"] = t.quant_error_weight * quant_error.take()
        if distill_w > 0:
            with torch.no_grad():
                target = teacher(lr_img)
            terms["distill"] = distill_w * distill_loss(sr, target)
        if use_pixel:
            terms["pixel"] = t.pixel_weight * pixel_loss(sr, hr_img)
        if perceptual is not None:
            with (autocast() if autocast else _null()):
                terms["perceptual"] = t.perceptual_weight * perceptual(sr, hr_img).float()
        if d_model is not None:
            with (autocast() if autocast else _null()):
                real = d_model(hr_img).detach().float()
                fake = d_model(sr).float()
            terms["gan_g"] = t.gan_weight * gan_loss_g(real, fake, t.gan_type)
        loss_g = sum(terms.values())
        _check_finite(terms, step + 1, ckpt_path)
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        sched_g.step()

        # discriminator step
        if d_model is not None:
            disc.requires_grad_(True)
            with (autocast() if autocast else _null()):
                real = d_model(hr_img).float()
                fake = d_model(sr.detach()).float()
            loss_d = gan_loss_d(real, fake, t.gan_type)
            terms["gan_d"] = loss_d
            _check_finite({"gan_d": loss_d}, step + 1, ckpt_path)
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()
            sched_d.step()

        if ema is not None:
            with torch.no_grad():
                for pe, pm in zip(ema.parameters(), model.parameters()):
                    pe.lerp_(pm.detach(), 1 - t.ema_decay) if pe.dtype.is_floating_point else pe.copy_(pm)
                for be, bm in zip(ema.buffers(), model.buffers()):
                    be.copy_(bm)

        images += lr_img.shape[0] * world
        losses = {k: float(v.detach()) for k, v in terms.items()}
        done = step + 1
        if on_step is not None:
            on_step(done, losses)
        if done % max(1, t.log_every) == 0 or done == t.iterations:
            ips = images / max(time.perf_counter() - t0, 1e-9)
            bar.set_postfix({**{k: f"{v:.4g}" for k, v in losses.items()}, "img/s": f"{ips:.2f}"})
            log.add({"step": done, **losses, "lr_g": sched_g.get_last_lr()[0], "images_per_s": ips})
        if done % max(1, t.checkpoint_every) == 0 or done == t.iterations:
            save_state(done)
            log.flush()
    bar.close()
    if quant_error is not None:
        quant_error.close()
    wall = time.perf_counter() - t0
    final = out_dir / "final.pt"
    if is_main:
        from .nncf_adapter import is_quantized

        keep = (ema if ema is not None else model).cpu().eval()
        save_quantized(keep, final, arch=cfg.model.arch, args=cfg.model.args,
                       plan=plan if is_quantized(keep) else None,
                       meta={"trained_steps": t.iterations, "ema": ema is not None, "variant": cfg.name})
        log.flush()
    model.cpu().eval()
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
    return TrainResult(t.iterations, str(final), wall, images / max(wall, 1e-9), losses, start, str(device), world)


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


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _check_finite(terms: dict[str, torch.Tensor], step: int, ckpt_path: Path) -> None:
    for name, value in terms.items():
        v = float(value.detach())
        if not math.isfinite(v):
            kept = f"the last good checkpoint is {ckpt_path}" if ckpt_path.is_file() else "no checkpoint was written yet"
            raise TrainingDiverged(f"loss term '{name}' became {v} at step {step}; {kept}. Lower the learning rate "
                                   "(training.lr_g) or check the data.")
