"""Quantization-aware training of an NNCF-quantized generator with the SR GAN losses.

One loop, read top to bottom: set-up, then per step a generator step (the sum of the loss-term table, terms.py)
and a discriminator step. Quantizer scales are ordinary parameters and train with the weights. Batches are a pure
function of (seed, rank, step), so a resumed run sees exactly the batches an uninterrupted one would. Under
torchrun each rank trains on its own batches with DistributedDataParallel; only rank 0 writes.
"""
from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from mixq_nncf.config.schema import Config
from mixq_nncf.errors import MixqError
from mixq_nncf.io_utils import fault_point
from mixq_nncf.quant.ptq import overflow_safe
from mixq_nncf.train.log import TrainLog
from mixq_nncf.train.losses import PerceptualLoss, discriminator_accuracy, gan_loss_d
from mixq_nncf.train.setup import (adam_with_milestones, amp_autocast, build_discriminator, caller_placement,
                                   frozen_teacher, generator_param_groups, init_distributed, patch_batches,
                                   pick_device, seed_everything, train_patches, update_ema, warm_up_discriminator, warm_up_on_patches, wrap_ddp)
from mixq_nncf.train.state import TrainState, check_out_dir, load_train_state, save_final
from mixq_nncf.train.terms import (LossWeights, StepContext, check_finite, feature_taps, loss_terms,
                                   quant_error_probe)

__all__ = ["TrainResult", "check_out_dir", "feature_taps", "load_train_state", "train", "warm_up_discriminator"]



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


def train(cfg: Config, *, model: nn.Module, teacher: Optional[nn.Module], out_dir: str | Path,
          resume: bool = False, plan=None, progress: bool = True,
          on_step: Optional[Callable[[int, dict], None]] = None) -> TrainResult:
    """Train ``model`` in place for cfg.training.iterations steps; writes checkpoints/last.pt and final.pt.

    Runs on training.device; ``model`` comes back on its own device in eval mode, ``teacher`` (often shared with
    later steps) as it was. Without ``resume`` an out_dir that already holds a run is refused."""
    t, out_dir = cfg.training, Path(out_dir)
    ckpt_path = out_dir / "checkpoints" / "last.pt"
    with caller_placement(model, teacher):
        # set-up; everything that can fail on the config or the files fails here, before any training
        device = pick_device(t.device)
        rank, world = init_distributed(device)
        is_main = rank == 0
        if is_main:
            check_out_dir(out_dir, resume, model)
        weights = LossWeights.from_config(t)
        if weights.needs_teacher and teacher is None:
            raise MixqError("distillation needs the fp32 teacher model")
        perceptual = PerceptualLoss(t.vgg_weights).to(device) if weights.perceptual > 0 else None
        patches = train_patches(cfg, int(model.scale), rank)
        seed_everything(t.seed)  # before the discriminator, whose fresh weights are drawn from it
        model.to(device).train()
        teacher = frozen_teacher(teacher, device)
        disc = build_discriminator(t, weights.adv_distill > 0, device) if weights.needs_discriminator else None
        ema = copy.deepcopy(model).eval() if t.ema_decay > 0 else None
        opt_g, sched_g = adam_with_milestones(generator_param_groups(model, t.lr_g, t.lr_quantizers), t.lr_g, t)
        opt_d, sched_d = adam_with_milestones(disc.parameters(), t.lr_d, t) if disc is not None else (None, None)
        taps = feature_taps(model, teacher, t.feature_distill_blocks) if weights.feature > 0 else None
        state = TrainState(model, ema, disc, opt_g, sched_g, opt_d, sched_d)
        start = state.restore(ckpt_path, cfg, device) if resume and ckpt_path.is_file() else 0
        g_model, d_model = wrap_ddp(model, disc, device, world)
        autocast = amp_autocast(t.amp, device)
        probe = quant_error_probe(model) if weights.quant_error > 0 else None  # after the EMA copy: it gets no hooks
        terms = loss_terms(t, weights, perceptual=perceptual, taps=taps, probe=probe, disc=d_model, autocast=autocast)
        log = TrainLog(out_dir / "train_log.csv", is_main, start, t.tensorboard)
        if weights.adv_distill > 0 and start == 0 and t.adv_warmup_steps > 0:
            acc = warm_up_on_patches(t, disc, opt_d, model, teacher, patches, device, progress=progress and is_main)
            log.add({"step": 0, "d_warmup_acc": acc})

        bar = tqdm(range(start, t.iterations), initial=start, total=t.iterations,
                   desc="QAT" if plan is not None else "train", disable=not (progress and is_main))
        batches = patch_batches(patches, range(start, t.iterations), t.batch_size, device, t.num_workers)
        t0, images, losses = time.perf_counter(), 0, {}
        for step, (lr_img, hr_img) in zip(bar, batches):
            done = step + 1
            # generator step: every term of the table, weighted and summed
            if disc is not None:
                disc.requires_grad_(False)
            if taps is not None:
                taps.clear()  # drop features of forwards outside this step (discriminator warm-up, evaluation)
            sr = g_model(lr_img)
            with torch.no_grad():
                target = teacher(lr_img) if weights.needs_teacher else None
            ctx = StepContext(lr=lr_img, hr=hr_img, sr=sr, target=target)
            values = {term.name: term.weight * term.fn(ctx) for term in terms}
            check_finite(values, done, ckpt_path)
            _descend(sum(values.values()), opt_g, sched_g)

            # discriminator step: real = the teacher's output (adversarial distillation) or the ground truth
            if d_model is not None:
                disc.requires_grad_(True)
                with autocast():
                    real = d_model(target if weights.adv_distill > 0 else hr_img).float()
                    fake = d_model(sr.detach()).float()
                values["gan_d"] = loss_d = gan_loss_d(real, fake, t.gan_type)
                check_finite({"gan_d": loss_d}, done, ckpt_path)
                _descend(loss_d, opt_d, sched_d)
            if ema is not None:
                update_ema(ema, model, t.ema_decay)

            images += lr_img.shape[0] * world
            losses = {k: float(v.detach()) for k, v in values.items()}
            if d_model is not None:
                losses["d_acc"] = discriminator_accuracy(real, fake, t.gan_type)
            if on_step is not None:
                on_step(done, losses)
            if done % max(1, t.log_every) == 0 or done == t.iterations:
                ips = images / max(time.perf_counter() - t0, 1e-9)
                bar.set_postfix({**{k: f"{v:.4g}" for k, v in losses.items()}, "img/s": f"{ips:.2f}"})
                log.add({"step": done, **losses, "lr_g": sched_g.get_last_lr()[0], "images_per_s": ips})
            if done % max(1, t.checkpoint_every) == 0 or done == t.iterations:
                if is_main:
                    state.save(ckpt_path, done, cfg)
                log.flush()
                fault_point("train.checkpoint")
        bar.close()
        for hooks in (probe, taps):
            if hooks is not None:
                hooks.close()
        wall = time.perf_counter() - t0
        if plan is not None:  # training moved weights and ranges: 8-bit weights made AVX2-safe again, on every rank
            overflow_safe((ema if ema is not None else model).cpu().eval(), cfg.compression)
        if is_main:
            save_final(out_dir / "final.pt", cfg, model, ema, plan)
            log.flush()
        model.cpu().eval()
        if world > 1:
            dist.barrier()
    return TrainResult(t.iterations, str(out_dir / "final.pt"), wall, images / max(wall, 1e-9), losses, start,
                       str(device), world)


def _descend(loss: torch.Tensor, opt: torch.optim.Optimizer, sched) -> None:
    """One optimizer step down ``loss``, then one learning-rate schedule step."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    sched.step()
