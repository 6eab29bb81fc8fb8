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

from .config import Config, config_changes, to_dict
from .errors import MixqError, OutputError, TrainingDiverged
from .io_utils import atomic_torch_save, atomic_write_text, ensure_writable, fault_point

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


# config keys a resumed run may change: they do not change what is trained (iterations may grow to extend a run)
RESUME_HARMLESS = ("training.iterations", "training.log_every", "training.checkpoint_every", "training.tensorboard",
                   "training.device", "training.num_workers", "data.eval", "data.eval_lr", "data.eval_max_images",
                   "data.eval_crop")
RESUME_IGNORED_SECTIONS = ("name", "description", "variants", "export", "benchmark", "eval")


def resume_changes(saved: dict, cfg: Config) -> list[str]:
    """'key: old -> new' for every config change that makes a resumed run another experiment."""
    return [c for c in config_changes(saved, to_dict(cfg), RESUME_IGNORED_SECTIONS)
            if c.split(":")[0] not in RESUME_HARMLESS]


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


def _device_of(m: nn.Module) -> torch.device:
    first = next(iter(list(m.parameters()) + list(m.buffers())), None)
    return first.device if first is not None else torch.device("cpu")


def _snapshot(m: nn.Module) -> tuple:
    """Where a caller's model lives and how it is set (device, train mode, requires_grad per parameter)."""
    return _device_of(m), m.training, [p.requires_grad for p in m.parameters()]


def _restore(m: nn.Module, snap: tuple) -> None:
    device, training, grads = snap
    m.to(device)
    m.train(training)
    for p, g in zip(m.parameters(), grads):
        p.requires_grad_(g)


def train(cfg: Config, *, model: nn.Module, teacher: Optional[nn.Module], out_dir: str | Path,
          resume: bool = False, plan=None, progress: bool = True,
          on_step: Optional[Callable[[int, dict], None]] = None) -> TrainResult:
    """Train ``model`` in place for cfg.training.iterations steps; writes checkpoints/last.pt and final.pt.

    Training runs on training.device; the caller's models stay where they were: ``model`` comes back on its own
    device in eval mode, ``teacher`` (often shared with later steps) on its device with its mode and
    requires_grad flags unchanged. Without ``resume`` an out_dir that already holds a run is refused.
    """
    model_snap = _snapshot(model)
    teacher_snap = _snapshot(teacher) if teacher is not None else None
    try:
        return _train(cfg, model=model, teacher=teacher, out_dir=out_dir, resume=resume, plan=plan,
                      progress=progress, on_step=on_step)
    finally:
        model.to(model_snap[0])
        if teacher is not None:
            _restore(teacher, teacher_snap)


def _train(cfg: Config, *, model: nn.Module, teacher: Optional[nn.Module], out_dir: str | Path,
           resume: bool, plan, progress: bool, on_step: Optional[Callable[[int, dict], None]]) -> TrainResult:
    from tqdm import tqdm

    from .data import TrainPatches, resolve_images
    from .losses import (PerceptualLoss, detail_gain_loss, discriminator_accuracy, distill_loss, fft_loss, gan_loss_d,
                         gan_loss_g, gradient_loss, mscn_loss, mscn_statistics_loss, pixel_loss)
    from .qcheckpoint import save_quantized

    t = cfg.training
    out_dir = Path(out_dir)
    device = pick_device(t.device)
    rank, world = _dist_setup(device)
    is_main = rank == 0
    ckpt_path = out_dir / "checkpoints" / "last.pt"
    if is_main:
        check_out_dir(out_dir, resume, model)

    use_gan = t.gan_weight > 0 and not t.distill_only
    use_perceptual = t.perceptual_weight > 0 and not t.distill_only
    use_pixel = t.pixel_weight > 0 and not t.distill_only
    distill_w = (t.distill_weight or 1.0) if t.distill_only else t.distill_weight
    use_adv = t.adv_distill_weight > 0
    if use_adv and use_gan:
        raise MixqError("training.adv_distill_weight and training.gan_weight both ask for a discriminator: the first "
                        "judges against the fp32 teacher, the second against ground truth; set one of them to 0")
    needs_teacher = distill_w > 0 or use_adv or t.feature_distill_weight > 0 or t.gradient_weight > 0 or \
        t.fft_weight > 0 or t.mscn_weight > 0 or t.mscn_stats_weight > 0 or t.detail_gain_weight > 0
    if needs_teacher and teacher is None:
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
    if use_gan or use_adv:
        from .models.discriminator import PatchDiscriminator, VGGStyleDiscriminator

        disc = PatchDiscriminator(3, 32) if use_adv and t.adv_discriminator == "patch" else \
            VGGStyleDiscriminator(3, 64, input_size=t.patch_size)
        if t.discriminator_weights:
            from .models.checkpoint import load_checkpoint

            load_checkpoint(disc, t.discriminator_weights)
        disc = disc.to(device).train()
    ema = copy.deepcopy(model).eval() if t.ema_decay > 0 else None

    opt_g = torch.optim.Adam(_generator_param_groups(model, t.lr_g, t.lr_quantizers), lr=t.lr_g,
                             betas=tuple(t.betas))
    sched_g = torch.optim.lr_scheduler.MultiStepLR(opt_g, milestones=list(t.milestones), gamma=t.gamma)
    opt_d = sched_d = None
    if disc is not None:
        opt_d = torch.optim.Adam(disc.parameters(), lr=t.lr_d, betas=tuple(t.betas))
        sched_d = torch.optim.lr_scheduler.MultiStepLR(opt_d, milestones=list(t.milestones), gamma=t.gamma)

    taps = feature_taps(model, teacher, t.feature_distill_blocks) if t.feature_distill_weight > 0 else None

    start = 0
    if resume and ckpt_path.is_file():
        state = load_train_state(ckpt_path, device)
        if state.get("format") != CHECKPOINT_FORMAT:
            raise MixqError(f"{ckpt_path} is not a mixq training checkpoint; remove it or use another --out")
        changed = resume_changes(state.get("config") or {}, cfg)
        if changed:
            shown = "; ".join(changed[:6]) + (f"; and {len(changed) - 6} more" if len(changed) > 6 else "")
            raise OutputError(f"{ckpt_path} was trained with another config ({shown}); resuming would mix two "
                              "experiments: restore those values, or use another --out to start this one")
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
    if use_adv and start == 0 and t.adv_warmup_steps > 0:
        acc = warm_up_discriminator(disc, opt_d, model, teacher,
                                    (_batch(ds, -1 - k, t.batch_size, device)["lr"] for k in range(t.adv_warmup_steps)),
                                    t.gan_type, progress=progress and is_main)
        log.add({"step": 0, "d_warmup_acc": sum(acc[-5:]) / len(acc[-5:])})
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
        if taps is not None:
            taps.clear()  # drop features of forwards outside this step (discriminator warm-up, evaluation)
        sr = g_model(lr_img)
        terms: dict[str, torch.Tensor] = {}
        if quant_error is not None:
            terms["quant_error"] = t.quant_error_weight * quant_error.take()
        target = None
        if needs_teacher:
            with torch.no_grad():
                target = teacher(lr_img)
        if distill_w > 0:
            terms["distill"] = distill_w * distill_loss(sr, target, t.distill_lowpass_sigma)
        if t.gradient_weight > 0:
            terms["gradient"] = t.gradient_weight * gradient_loss(sr, target)
        if t.fft_weight > 0:
            terms["fft"] = t.fft_weight * fft_loss(sr, target)
        if t.mscn_weight > 0:
            terms["mscn"] = t.mscn_weight * mscn_loss(sr, target)
        if t.mscn_stats_weight > 0:
            terms["mscn_stats"] = t.mscn_stats_weight * mscn_statistics_loss(sr, target)
        if t.detail_gain_weight > 0:
            terms["detail_gain"] = t.detail_gain_weight * detail_gain_loss(sr, target, tuple(t.detail_gain_bands))
        if taps is not None:
            terms["feature"] = t.feature_distill_weight * taps.loss()
        if use_pixel:
            terms["pixel"] = t.pixel_weight * pixel_loss(sr, hr_img)
        if perceptual is not None:
            with (autocast() if autocast else _null()):
                terms["perceptual"] = t.perceptual_weight * perceptual(sr, hr_img).float()
        if d_model is not None and not use_adv:
            with (autocast() if autocast else _null()):
                real = d_model(hr_img).detach().float()
                fake = d_model(sr).float()
            terms["gan_g"] = t.gan_weight * gan_loss_g(real, fake, t.gan_type)
        if use_adv:
            real = d_model(target).detach().float()
            fake = d_model(sr).float()
            terms["adv_distill"] = t.adv_distill_weight * gan_loss_g(real, fake, t.gan_type)
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
                real = d_model(target if use_adv else hr_img).float()
                fake = d_model(sr.detach()).float()
            loss_d = gan_loss_d(real, fake, t.gan_type)
            terms["gan_d"] = loss_d
            d_acc = discriminator_accuracy(real, fake, t.gan_type)
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
        if d_model is not None:
            losses["d_acc"] = d_acc
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
            fault_point("train.checkpoint")
    bar.close()
    if quant_error is not None:
        quant_error.close()
    if taps is not None:
        taps.close()
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


def _generator_param_groups(model: nn.Module, lr: float, lr_quantizers: Optional[float]) -> list[dict]:
    """Weights at lr; NNCF's quantizer intervals (scale, input_low / input_range) at lr_quantizers when set. At a
    fine-tuning lr an interval of magnitude ~1-10 moves ~1e-3 in a short run, i.e. not at all: the rounding noise
    it sets (the grain NIQE sees) can only shrink if the intervals get their own, larger step."""
    from .nncf_adapter import is_quantized, quantizer_modules

    params = [p for p in model.parameters() if p.requires_grad]
    if lr_quantizers is None or not is_quantized(model):  # fp32 models have no intervals (and no NNCF hooks)
        return [{"params": params, "lr": lr}]
    q_ids = {id(p) for m in quantizer_modules(model).values() for p in m.parameters()}
    groups = [{"params": [p for p in params if id(p) not in q_ids], "lr": lr},
              {"params": [p for p in params if id(p) in q_ids], "lr": lr_quantizers}]
    return [g for g in groups if g["params"]]


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


class FeatureTaps:
    """Forward hooks that keep the outputs of the same named blocks in the student and the fp32 teacher, for
    feature distillation. Both generators name their blocks body.N, so the default taps every body block."""

    def __init__(self, student: nn.Module, teacher: nn.Module, names: list[str]):
        self.student: list[torch.Tensor] = []
        self.teacher: list[torch.Tensor] = []
        s_mods, t_mods = dict(student.named_modules()), dict(teacher.named_modules())
        missing = [n for n in names if n not in s_mods or n not in t_mods]
        if not names or missing:
            raise MixqError(f"training.feature_distill_blocks: no block named {missing or names} in both models; "
                            "use module names such as body.0 (see `mixq models --json`), or leave the list empty "
                            "for every body block")
        self._handles = [s_mods[n].register_forward_hook(lambda m, i, o: self.student.append(o)) for n in names] + \
            [t_mods[n].register_forward_hook(lambda m, i, o: self.teacher.append(o)) for n in names]

    def clear(self) -> None:
        self.student, self.teacher = [], []

    def loss(self) -> torch.Tensor:
        """Distillation over the features of the last student and teacher forward; clears them."""
        from .losses import feature_distill_loss

        try:
            return feature_distill_loss(self.student, self.teacher)
        finally:
            self.student, self.teacher = [], []

    def close(self) -> None:
        for h in self._handles:
            h.remove()


def feature_taps(student: nn.Module, teacher: nn.Module, blocks: list[str]) -> FeatureTaps:
    """Taps on ``blocks``, or on every direct child of the student's ``body`` when the list is empty."""
    if not blocks:
        body = dict(student.named_modules()).get("body")
        blocks = [f"body.{name}" for name, _ in body.named_children()] if body is not None else []
    return FeatureTaps(student, teacher, list(blocks))


def warm_up_discriminator(disc: nn.Module, opt_d, student: nn.Module, teacher: nn.Module, lr_batches,
                          gan_type: str, progress: bool = False) -> list[float]:
    """Train the discriminator alone on teacher (real) vs student (fake) outputs, so that the generator's first
    adversarial gradient comes from a discriminator that can already tell them apart (one trained from scratch
    alongside the generator stays at chance for hundreds of steps). Returns its accuracy at each step."""
    from tqdm import tqdm

    from .losses import discriminator_accuracy, gan_loss_d

    acc: list[float] = []
    disc.train().requires_grad_(True)
    batches = list(lr_batches)
    for lr_img in tqdm(batches, desc="D warm-up", disable=not progress):
        with torch.no_grad():
            real_img, fake_img = teacher(lr_img), student(lr_img)
        real, fake = disc(real_img).float(), disc(fake_img).float()
        loss = gan_loss_d(real, fake, gan_type)
        opt_d.zero_grad(set_to_none=True)
        loss.backward()
        opt_d.step()
        acc.append(discriminator_accuracy(real, fake, gan_type))
    return acc
