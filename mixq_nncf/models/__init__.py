"""Generator presets and their stage maps.

A *layer* is a Conv2d module addressed by its BasicSR module name; every layer belongs to exactly
one of the four stages (feature_extraction, body, upsampling, reconstruction) declared by its
generator class in ``STAGES``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from mixq_nncf.errors import MissingFileError

from mixq_nncf.models.blocks import STAGE_NAMES
from mixq_nncf.models.edsr import EDSR
from mixq_nncf.models.msrresnet import MSRResNet
from mixq_nncf.models.rrdbnet import RRDBNet
from mixq_nncf.models.srvgg import SRVGGNetCompact


@dataclass(frozen=True)
class ModelPreset:
    arch: type[nn.Module]
    kwargs: dict[str, Any]
    scale: int
    description: str
    embedded_weights: str | None = None  # name understood by models.pretrained
    extra: dict[str, Any] = field(default_factory=dict)


PRESETS: dict[str, ModelPreset] = {
    "msrresnet_x2": ModelPreset(MSRResNet, dict(upscale=2), 2, "SRGAN generator (MSRResNet 64ch/16 blocks) x2"),
    "msrresnet_x3": ModelPreset(MSRResNet, dict(upscale=3), 3, "SRGAN generator (MSRResNet 64ch/16 blocks) x3"),
    "msrresnet_x4": ModelPreset(MSRResNet, dict(upscale=4), 4, "SRGAN generator (MSRResNet 64ch/16 blocks) x4"),
    "rrdbnet_x1": ModelPreset(RRDBNet, dict(scale=1), 1,
                              "ESRGAN generator (RRDBNet 64ch/23 blocks/gc32) x1 (pixel-unshuffle input by 4)"),
    "rrdbnet_x2": ModelPreset(RRDBNet, dict(scale=2), 2, "ESRGAN generator (RRDBNet 64ch/23 blocks/gc32) x2"),
    "rrdbnet_x4": ModelPreset(RRDBNet, dict(scale=4), 4, "ESRGAN generator (RRDBNet 64ch/23 blocks/gc32) x4"),
    "realesrgan_x4plus": ModelPreset(RRDBNet, dict(scale=4), 4,
                                     "Real-ESRGAN x4plus (RRDBNet 23 blocks), embedded pretrained weights",
                                     embedded_weights="realesrgan-x4plus"),
    "realesrgan_x4plus_anime": ModelPreset(RRDBNet, dict(scale=4, num_block=6), 4,
                                           "Real-ESRGAN x4plus-anime (RRDBNet 6 blocks), embedded pretrained weights",
                                           embedded_weights="realesrgan-x4plus-anime"),
    "srvgg_compact_x1": ModelPreset(SRVGGNetCompact, dict(upscale=1), 1,
                                    "Real-ESRGAN Compact (SRVGGNetCompact 64ch/16 convs, PReLU) x1"),
    "srvgg_compact_x2": ModelPreset(SRVGGNetCompact, dict(upscale=2), 2,
                                    "Real-ESRGAN Compact (SRVGGNetCompact 64ch/16 convs, PReLU) x2"),
    "srvgg_compact_x3": ModelPreset(SRVGGNetCompact, dict(upscale=3), 3,
                                    "Real-ESRGAN Compact (SRVGGNetCompact 64ch/16 convs, PReLU) x3"),
    "srvgg_compact_x4": ModelPreset(SRVGGNetCompact, dict(upscale=4), 4,
                                    "Real-ESRGAN Compact (SRVGGNetCompact 64ch/16 convs, PReLU) x4"),
    "realesr_general_x4v3": ModelPreset(SRVGGNetCompact, dict(upscale=4, num_conv=32), 4,
                                        "realesr-general-x4v3 (SRVGGNetCompact 64ch/32 convs, PReLU) x4"),
    "realesr_animevideov3_x4": ModelPreset(SRVGGNetCompact, dict(upscale=4), 4,
                                           "realesr-animevideov3 (SRVGGNetCompact 64ch/16 convs) x4, embedded "
                                           "pretrained weights", embedded_weights="realesr-animevideov3-x4"),
    "realesr_animevideov3_x3": ModelPreset(SRVGGNetCompact, dict(upscale=4, out_scale=3), 3,
                                           "realesr-animevideov3 x3 (the x4 network, then a 0.75 bicubic resize), "
                                           "embedded pretrained weights", embedded_weights="realesr-animevideov3-x3"),
    "realesr_animevideov3_x2": ModelPreset(SRVGGNetCompact, dict(upscale=4, out_scale=2), 2,
                                           "realesr-animevideov3 x2 (the x4 network, then a 0.5 bicubic resize), "
                                           "embedded pretrained weights", embedded_weights="realesr-animevideov3-x2"),
    "edsr_m_x2": ModelPreset(EDSR, dict(upscale=2), 2, "EDSR-M baseline (64ch/16 blocks) x2"),
    "edsr_m_x3": ModelPreset(EDSR, dict(upscale=3), 3, "EDSR-M baseline (64ch/16 blocks) x3"),
    "edsr_m_x4": ModelPreset(EDSR, dict(upscale=4), 4, "EDSR-M baseline (64ch/16 blocks) x4"),
    "edsr_l_x2": ModelPreset(EDSR, dict(upscale=2, num_feat=256, num_block=32, res_scale=0.1), 2, "EDSR-L (256ch/32 blocks) x2"),
    "edsr_l_x3": ModelPreset(EDSR, dict(upscale=3, num_feat=256, num_block=32, res_scale=0.1), 3, "EDSR-L (256ch/32 blocks) x3"),
    "edsr_l_x4": ModelPreset(EDSR, dict(upscale=4, num_feat=256, num_block=32, res_scale=0.1), 4, "EDSR-L (256ch/32 blocks) x4"),
}


def build_generator(name: str, **overrides: Any) -> nn.Module:
    """Build a preset's architecture (random init); ``overrides`` change constructor args (e.g. tiny widths)."""
    if name not in PRESETS:
        from mixq_nncf.errors import ConfigError

        raise ConfigError(f"model.arch: unknown model '{name}'; choose one of: {', '.join(sorted(PRESETS))} "
                          "(`mixq models` lists them)")
    preset = PRESETS[name]
    return preset.arch(**{**preset.kwargs, **overrides})


def conv_layers(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]


def stage_map(model: nn.Module) -> dict[str, list[str]]:
    """Stage -> conv layer names, from the generator's STAGES regexes. Every conv must land in one stage."""
    stages = getattr(model, "STAGES", None)  # a class attribute, or a per-instance property (SRVGGNetCompact)
    if stages is None:
        raise TypeError(f"{type(model).__name__} declares no STAGES")
    out: dict[str, list[str]] = {s: [] for s in STAGE_NAMES}
    for layer in conv_layers(model):
        hits = [s for s in STAGE_NAMES if any(re.fullmatch(p, layer) for p in stages[s])]
        if len(hits) != 1:
            raise AssertionError(f"layer {layer} matches stages {hits}; STAGES of {type(model).__name__} is wrong")
        out[hits[0]].append(layer)
    return out


def layer_stages(model: nn.Module) -> dict[str, str]:
    """Conv layer name -> stage name."""
    return {layer: stage for stage, layers in stage_map(model).items() for layer in layers}


def load_generator(arch: str | None, args: dict | None = None, weights: str | None = "embedded") -> nn.Module:
    """A preset with its weights, in eval mode. weights: 'embedded' (bundled Real-ESRGAN weights), a
    checkpoint path (.pth / .pt / .safetensors, any layout of models.checkpoint), or None for random init.
    arch None: the generator and its hyperparameters are read from the checkpoint (models.detect).

    Random init is seeded (without touching the global RNG): torch's default seed differs per process, and a
    resumed run must rebuild the same model that its cached artefacts came from."""
    import torch

    if arch is None:
        if weights in (None, "embedded"):
            from mixq_nncf.errors import ConfigError

            raise ConfigError("model.arch: name a preset (`mixq models` lists them), or set model.weights to a "
                              "checkpoint file to read the generator from")
        from mixq_nncf.models.detect import detect_checkpoint

        found = detect_checkpoint(weights)
        arch, args = found.arch, {**found.args, **(args or {})}

    if weights is None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            return build_generator(arch, **(args or {})).eval()
    model = build_generator(arch, **(args or {}))
    if weights == "embedded":
        name = PRESETS[arch].embedded_weights
        if name is None:
            have = ", ".join(n for n, p in PRESETS.items() if p.embedded_weights)
            raise MissingFileError(f"model '{arch}' has no embedded weights (only {have} do); set model.weights to "
                                   "a checkpoint path (BasicSR, old ESRGAN/MMSR or EDSR-PyTorch layouts load) or null")
        from mixq_nncf.models.checkpoint import load_state_dict_strict
        from mixq_nncf.models.ncnn import find_embedded, ncnn_to_state_dict

        param, binf = find_embedded(name)
        load_state_dict_strict(model, ncnn_to_state_dict(param, binf, model), f"embedded weights {name}")
    elif weights is not None:
        from mixq_nncf.models.checkpoint import load_checkpoint

        load_checkpoint(model, weights)
    return model.eval()


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


__all__ = ["PRESETS", "ModelPreset", "STAGE_NAMES", "build_generator", "conv_layers", "stage_map",
           "layer_stages", "count_parameters", "load_generator", "MSRResNet", "RRDBNet", "EDSR", "SRVGGNetCompact"]
