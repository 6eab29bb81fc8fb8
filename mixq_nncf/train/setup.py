"""Everything the training loop needs before its first step: device and ranks, data, teacher, discriminator,
optimizers, DDP wrappers, mixed precision, the EMA update, and the discriminator warm-up."""
from __future__ import annotations

import os
import random
import signal
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Optional

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Sampler
from tqdm import tqdm

from mixq_nncf.config.schema import Config, TrainingSection
from mixq_nncf.data.datasets import TrainPatches, training_pairs
from mixq_nncf.errors import MixqError
from mixq_nncf.models.checkpoint import load_checkpoint
from mixq_nncf.quant.nncf_adapter import is_quantized, quantizer_modules
from mixq_nncf.train.discriminator import PatchDiscriminator, VGGStyleDiscriminator
from mixq_nncf.train.losses import discriminator_accuracy, gan_loss_d

Batches = Iterator[tuple[torch.Tensor, torch.Tensor]]


# --- where training runs, and leaving the caller's models where they were ---------------------------------------

def pick_device(choice: str) -> torch.device:
    if choice == "auto":
        if torch.cuda.is_available():
            local = int(os.environ.get("LOCAL_RANK", "0"))
            return torch.device(f"cuda:{local}")
        return torch.device("cpu")
    dev = torch.device(choice)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise MixqError(f"training.device is {choice!r} but no CUDA device is available; use 'auto' or 'cpu'")
    return dev


def init_distributed(device: torch.device) -> tuple[int, int]:
    """(rank, world size): under torchrun joins the process group, else (0, 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), world


def wrap_ddp(model: nn.Module, disc: Optional[nn.Module], device: torch.device,
             world: int) -> tuple[nn.Module, Optional[nn.Module]]:
    """The modules the loop calls: DistributedDataParallel wrappers across ranks, the models themselves alone."""
    if world <= 1:
        return model, disc
    ids = [device.index] if device.type == "cuda" else None
    return (DistributedDataParallel(model, device_ids=ids),
            DistributedDataParallel(disc, device_ids=ids) if disc is not None else None)


def amp_autocast(amp: bool, device: torch.device) -> Callable[[], AbstractContextManager]:
    """bf16 autocast for the perceptual and GAN forwards on CUDA; a no-op context elsewhere."""
    if amp and device.type == "cuda":
        return lambda: torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext


def snapshot_placement(m: nn.Module) -> tuple:
    """Where a caller's model lives and how it is set (device, train mode, requires_grad per parameter)."""
    first = next(iter(list(m.parameters()) + list(m.buffers())), None)
    device = first.device if first is not None else torch.device("cpu")
    return device, m.training, [p.requires_grad for p in m.parameters()]


def restore_placement(m: nn.Module, snap: tuple) -> None:
    device, training, grads = snap
    m.to(device)
    m.train(training)
    for p, g in zip(m.parameters(), grads):
        p.requires_grad_(g)


@contextmanager
def caller_placement(model: nn.Module, teacher: Optional[nn.Module]):
    """Training moves both models to the training device; afterwards ``model`` goes back to its device (in the
    eval mode training leaves it in) and ``teacher``, often shared with later steps, comes back as it was."""
    model_device = snapshot_placement(model)[0]
    teacher_snap = snapshot_placement(teacher) if teacher is not None else None
    try:
        yield
    finally:
        model.to(model_device)
        if teacher is not None:
            restore_placement(teacher, teacher_snap)


# --- data ----------------------------------------------------------------------------------------------------

def train_patches(cfg: Config, scale: int, rank: int) -> TrainPatches:
    """The (LR, HR) patch dataset of this rank; item i is a pure function of (seed, rank, i)."""
    t = cfg.training
    if t.patch_size % scale:
        raise MixqError(f"training.patch_size {t.patch_size} must be a multiple of the scale {scale}")
    if t.num_workers < 0:
        raise MixqError(f"training.num_workers: {t.num_workers} is negative; use 0 to load patches in the training "
                        "process, or the number of loader processes")
    hr_paths, lr_paths = training_pairs(cfg.data.train, cfg.data.train_lr, scale)
    return TrainPatches(hr_paths, scale, t.patch_size,
                        lr_paths=lr_paths, augment=True, seed=t.seed * 7919 + rank * 104729)


class _StepIndices(Sampler):
    """Batch ``s`` of ``steps`` is items s * batch_size ... s * batch_size + batch_size - 1: a batch depends on its
    step alone, so a resumed run sees exactly the batches an uninterrupted one would."""

    def __init__(self, steps: range, batch_size: int):
        self.steps, self.batch_size = steps, batch_size

    def __iter__(self) -> Iterator[list[int]]:
        for s in self.steps:
            yield [s * self.batch_size + j for j in range(self.batch_size)]

    def __len__(self) -> int:
        return len(self.steps)


def _stack_patches(items: list[dict]) -> dict:
    return {k: torch.stack([it[k] for it in items]) for k in ("lr", "hr")}


def patch_batches(ds: TrainPatches, steps: range, batch_size: int, device: torch.device,
                  num_workers: int = 0) -> Batches:
    """(lr, hr) batches for ``steps`` on ``device``, loaded by ``num_workers`` processes (0 = this one). Items
    are pure functions of their index, so the worker count never changes a batch."""
    # workers are spawned, not forked: a fork of a process that already runs OpenMP / oneDNN / OpenVINO threads
    # can crash the child or the parent later
    loader = DataLoader(ds, batch_sampler=_StepIndices(steps, batch_size), collate_fn=_stack_patches,
                        num_workers=num_workers, pin_memory=device.type == "cuda",
                        multiprocessing_context="spawn" if num_workers > 0 else None,
                        generator=torch.Generator())  # its own seed draw leaves the global torch RNG alone
    with _sigchld_handler_while_loading(num_workers):
        for batch in loader:
            yield batch["lr"].to(device, non_blocking=True), batch["hr"].to(device, non_blocking=True)


@contextmanager
def _sigchld_handler_while_loading(num_workers: int) -> Iterator[None]:
    """torch installs a SIGCHLD handler with its first worker process and never removes it. Left in place, every
    later child exit (a subprocess, an encoder) interrupts whichever thread the kernel picks, OpenVINO's and
    oneDNN's included, and a process that later ran OpenVINO was seen to crash with its memory corrupted.
    The process's own handler is put back when the loader is done, and torch re-arms its own for the next one."""
    if num_workers == 0 or threading.current_thread() is not threading.main_thread():
        yield
        return
    before = signal.getsignal(signal.SIGCHLD)
    try:
        yield
    finally:
        signal.signal(signal.SIGCHLD, before if before is not None else signal.SIG_DFL)
        from torch.utils.data._utils import signal_handling

        if hasattr(signal_handling, "_SIGCHLD_handler_set"):
            signal_handling._SIGCHLD_handler_set = False


# --- models and optimizers -----------------------------------------------------------------------------------

def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)


def frozen_teacher(teacher: Optional[nn.Module], device: torch.device) -> Optional[nn.Module]:
    if teacher is None:
        return None
    teacher = teacher.to(device).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


def build_discriminator(t: TrainingSection, adversarial_distill: bool, device: torch.device) -> nn.Module:
    """The patch discriminator for adversarial distillation (unless adv_discriminator is 'vgg'), else the
    VGG-style one of SRGAN/ESRGAN; from training.discriminator_weights when set."""
    disc = PatchDiscriminator(3, 32) if adversarial_distill and t.adv_discriminator == "patch" else \
        VGGStyleDiscriminator(3, 64, input_size=t.patch_size)
    if t.discriminator_weights:
        load_checkpoint(disc, t.discriminator_weights)
    return disc.to(device).train()


def generator_param_groups(model: nn.Module, lr: float, lr_quantizers: Optional[float]) -> list[dict]:
    """Weights at lr; NNCF's quantizer intervals (scale, input_low / input_range) at lr_quantizers when set. At a
    fine-tuning lr an interval of magnitude ~1-10 moves ~1e-3 in a short run, i.e. not at all: the rounding noise
    it sets (the grain NIQE sees) can only shrink if the intervals get their own, larger step. With lr 0 and
    lr_quantizers set, the weights stop requiring gradients (in place) and only the intervals are returned."""
    params = [p for p in model.parameters() if p.requires_grad]
    if lr_quantizers is None or not is_quantized(model):  # fp32 models have no intervals (and no NNCF hooks)
        return [{"params": params, "lr": lr}]
    q_ids = {id(p) for m in quantizer_modules(model).values() for p in m.parameters()}
    if lr == 0:
        # intervals alone: the weights are frozen, so backward skips every conv's weight gradient
        for p in params:
            if id(p) not in q_ids:
                p.requires_grad_(False)
        params = [p for p in params if id(p) in q_ids]
    groups = [{"params": [p for p in params if id(p) not in q_ids], "lr": lr},
              {"params": [p for p in params if id(p) in q_ids], "lr": lr_quantizers}]
    return [g for g in groups if g["params"]]


def adam_with_milestones(groups, lr: float, t: TrainingSection):
    """BasicSR's recipe: Adam, learning rate multiplied by training.gamma at each of training.milestones."""
    opt = torch.optim.Adam(groups, lr=lr, betas=tuple(t.betas))
    return opt, torch.optim.lr_scheduler.MultiStepLR(opt, milestones=list(t.milestones), gamma=t.gamma)


def update_ema(ema: nn.Module, model: nn.Module, decay: float) -> None:
    with torch.no_grad():
        for pe, pm in zip(ema.parameters(), model.parameters()):
            pe.lerp_(pm.detach(), 1 - decay) if pe.dtype.is_floating_point else pe.copy_(pm)
        for be, bm in zip(ema.buffers(), model.buffers()):
            be.copy_(bm)


def warm_up_discriminator(disc: nn.Module, opt_d, student: nn.Module, teacher: nn.Module,
                          lr_batches: Iterable[torch.Tensor], gan_type: str, progress: bool = False) -> list[float]:
    """Train the discriminator alone on teacher (real) vs student (fake) outputs, so that the generator's first
    adversarial gradient comes from a discriminator that can already tell them apart (one trained from scratch
    alongside the generator stays at chance for hundreds of steps). Returns its accuracy at each step."""
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


def warm_up_on_patches(t: TrainingSection, disc: nn.Module, opt_d, student: nn.Module, teacher: nn.Module,
                       patches: TrainPatches, device: torch.device, progress: bool = False) -> float:
    """training.adv_warmup_steps warm-up steps on batches no training step sees (steps -1, -2, ...); returns
    the discriminator's mean accuracy over the last five."""
    batches = patch_batches(patches, range(-1, -1 - t.adv_warmup_steps, -1), t.batch_size, device, t.num_workers)
    acc = warm_up_discriminator(disc, opt_d, student, teacher, (lr for lr, _ in batches), t.gan_type, progress)
    return sum(acc[-5:]) / len(acc[-5:])
