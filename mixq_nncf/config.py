"""The JSON config: a tree of small frozen dataclasses with one JSON round trip.

The shape follows the legacy NNCF JSON config that NNCF users know (input_info, compression with
algorithm / weights / activations / scope_overrides / ignored_scopes / initializer), which NNCF 3.x
no longer reads; mixq-nncf translates it onto the NNCF 3.4 API. Stage names are shorthand for the
layers a generator declares in its ``STAGES``.

Every unknown key, wrong type or bad value raises ConfigError naming the key path and the choices.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

STAGE_NAMES = ("feature_extraction", "body", "upsampling", "reconstruction")
PRECISION_NAMES = {"fp32": None, "int16": 16, "int8": 8, "int6": 6, "int5": 5, "int4": 4, "int3": 3, "int2": 2}


class ConfigError(ValueError):
    """A config problem the user can fix; the message names the key and the valid choices."""


UNSET = "__unset__"  # marks a PrecisionOverride side the user did not set


def parse_bits(value: Any, where: str) -> Optional[int]:
    """'int8' | 'fp32' | 8 | None -> bits (None means not quantized)."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ConfigError(f"{where}: expected a precision, got {value!r}; use one of {list(PRECISION_NAMES)} or 2..16")
    if isinstance(value, int):
        if 2 <= value <= 16:
            return value
        raise ConfigError(f"{where}: {value} bits is out of range; use 2..16 bits or 'fp32'")
    if isinstance(value, str) and value.lower() in PRECISION_NAMES:
        return PRECISION_NAMES[value.lower()]
    raise ConfigError(f"{where}: unknown precision {value!r}; use one of {list(PRECISION_NAMES)} or an int 2..16")


def bits_name(bits: Optional[int]) -> str:
    return "fp32" if bits is None else f"int{bits}"


# ----------------------------------------------------------------------------------------------
# generic dict <-> dataclass with precise errors

def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


def _convert(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin is Union:
        if value is None and type(None) in args:
            return None
        concrete = [a for a in args if a is not type(None)]
        if len(concrete) == 1:
            return _convert(value, concrete[0], where)
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"{where}: {value!r} does not fit {' or '.join(_type_name(a) for a in args)}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected an object, got {type(value).__name__}")
        return from_dict(tp, value, where)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__} {value!r}")
        inner = args[0] if args else Any
        items = [_convert(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected an object, got {type(value).__name__}")
        vt = args[1] if len(args) == 2 else Any
        return {str(k): _convert(v, vt, f"{where}.{k}") for k, v in value.items()}
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    return value


def from_dict(cls: type, data: dict, where: str = "") -> Any:
    """Build dataclass ``cls`` from ``data``; unknown keys are errors listing the valid keys."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in data if k not in names]
    if unknown:
        prefix = f"{where}." if where else ""
        raise ConfigError(f"unknown config key '{prefix}{unknown[0]}'; valid keys{' in ' + where if where else ''}: "
                          f"{', '.join(names)}")
    kwargs = {}
    for name in names:
        if name in data:
            kwargs[name] = _convert(data[name], hints[name], f"{where}.{name}" if where else name)
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where or 'config'}: {exc}") from None


def to_dict(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)
                if getattr(obj, f.name) is not UNSET}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def _check_choice(value: Any, choices: tuple, where: str) -> None:
    if value not in choices:
        raise ConfigError(f"{where}: {value!r} is not valid; choose one of {list(choices)}")


# ----------------------------------------------------------------------------------------------
# sections

@dataclass(frozen=True)
class ModelSection:
    """Which generator, with which weights.

    weights: a checkpoint path (any layout of models.checkpoint), 'embedded' for the preset's
    bundled weights, or null for random init (only useful for tests and from-scratch training).
    """
    arch: str = "realesrgan_x4plus"
    args: dict[str, Any] = field(default_factory=dict)
    weights: Optional[str] = "embedded"


@dataclass(frozen=True)
class DataSection:
    """Where images come from. 'offline' is the embedded photo set (its train / eval split);
    otherwise a folder of HR images (LR made by MATLAB-style bicubic) or, with *_lr, paired folders."""
    train: str = "offline"
    train_lr: Optional[str] = None
    eval: str = "offline"
    eval_lr: Optional[str] = None
    calibration: Optional[str] = None  # default: the train images
    calibration_samples: int = 32
    calibration_patch: int = 64  # LR pixels
    eval_max_images: Optional[int] = None
    eval_crop: Optional[int] = None  # HR centre crop for speed; null = whole image
    seed: int = 0


@dataclass(frozen=True)
class InputInfo:
    sample_size: list[int] = field(default_factory=lambda: [1, 3, 64, 64])
    range: list[float] = field(default_factory=lambda: [0.0, 1.0])  # true data range of the image input

    def __post_init__(self):
        if len(self.sample_size) != 4:
            raise ConfigError(f"input_info.sample_size: expected [N, C, H, W], got {self.sample_size}")
        if len(self.range) != 2 or self.range[0] >= self.range[1]:
            raise ConfigError(f"input_info.range: expected [low, high] with low < high, got {self.range}")


@dataclass(frozen=True)
class QuantizerSpec:
    """Default quantizer for weights or activations. bits: 'int8', 'int16', 'int4', 'fp32' or 2..16."""
    bits: Any = "int8"
    mode: Optional[str] = None  # symmetric | asymmetric; null = NNCF preset default
    per_channel: Optional[bool] = None

    def __post_init__(self):
        parse_bits(self.bits, "bits")
        if self.mode is not None:
            _check_choice(self.mode, ("symmetric", "asymmetric"), "mode")


@dataclass(frozen=True)
class PrecisionOverride:
    """Precision for a stage or a scope. ``bits`` sets weights and activations together; ``weights`` /
    ``activations`` set one side."""
    bits: Any = UNSET
    weights: Any = UNSET
    activations: Any = UNSET

    def __post_init__(self):
        for name in ("bits", "weights", "activations"):
            value = getattr(self, name)
            if value != UNSET:
                parse_bits(value, name)

    def weight_bits(self, default: Optional[int]) -> Optional[int]:
        for value in (self.weights, self.bits):
            if value != UNSET:
                return parse_bits(value, "weights")
        return default

    def activation_bits(self, default: Optional[int]) -> Optional[int]:
        for value in (self.activations, self.bits):
            if value != UNSET:
                return parse_bits(value, "activations")
        return default


@dataclass(frozen=True)
class RangeInit:
    num_init_samples: int = 32
    type: str = "mean_min_max"

    def __post_init__(self):
        _check_choice(self.type, ("mean_min_max", "min_max", "mean_percentile"), "initializer.range.type")


@dataclass(frozen=True)
class Initializer:
    range: RangeInit = field(default_factory=RangeInit)
    fast_bias_correction: bool = True


@dataclass(frozen=True)
class CompressionSection:
    """Quantization. Precedence for each layer: weights/activations defaults < stages <
    scope_overrides (first matching pattern wins) < ignored_scopes (fp32).

    Scope patterns are module names; a pattern starting with '{re}' is a full-match regex.
    """
    algorithm: str = "quantization"
    preset: str = "performance"
    weights: QuantizerSpec = field(default_factory=lambda: QuantizerSpec(mode="symmetric", per_channel=True))
    activations: QuantizerSpec = field(default_factory=QuantizerSpec)
    stages: dict[str, PrecisionOverride] = field(default_factory=dict)
    scope_overrides: dict[str, PrecisionOverride] = field(default_factory=dict)
    ignored_scopes: list[str] = field(default_factory=list)
    initializer: Initializer = field(default_factory=Initializer)
    overflow_fix: str = "disable"

    def __post_init__(self):
        _check_choice(self.algorithm, ("quantization",), "compression.algorithm")
        _check_choice(self.preset, ("performance", "mixed"), "compression.preset")
        _check_choice(self.overflow_fix, ("disable", "enable", "first_layer_only"), "compression.overflow_fix")
        for stage in self.stages:
            if stage not in STAGE_NAMES:
                raise ConfigError(f"compression.stages: unknown stage '{stage}'; valid stages: {', '.join(STAGE_NAMES)}")


@dataclass(frozen=True)
class TrainingSection:
    """Quantization-aware training. Defaults: BasicSR's SRGAN/ESRGAN fine-tuning recipe."""
    iterations: int = 0  # 0 = no QAT (post-training quantization only)
    batch_size: int = 16
    patch_size: int = 128  # HR pixels
    lr_g: float = 1e-4
    lr_d: float = 1e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.99])
    milestones: list[int] = field(default_factory=lambda: [50000, 100000, 200000, 300000])
    gamma: float = 0.5
    pixel_weight: float = 1e-2
    perceptual_weight: float = 1.0
    gan_weight: float = 5e-3
    gan_type: str = "ragan"  # vanilla (SRGAN) | ragan (ESRGAN)
    distill_weight: float = 0.0  # L1 to the fp32 teacher's output on the same LR input
    distill_only: bool = False  # train on teacher outputs only (no GT, no GAN): the offline default
    ema_decay: float = 0.0  # 0 disables generator EMA; BasicSR uses 0.999
    vgg_weights: Optional[str] = None
    discriminator_weights: Optional[str] = None  # start D from a BasicSR net_d file instead of from scratch
    checkpoint_every: int = 500
    log_every: int = 10
    tensorboard: bool = False  # also log the loss terms to DIR/tensorboard (needs the tensorboard package)
    device: str = "auto"
    amp: bool = True
    seed: int = 0
    num_workers: int = 0
    # Texture-preserving terms against the fp32 teacher's output (README "QAT loss recipes"); 0 = off
    adv_distill_weight: float = 0.0  # GAN term whose discriminator tells teacher outputs (real) from student's
    adv_discriminator: str = "patch"  # patch (small PatchGAN, any size) | vgg (VGGStyleDiscriminator)
    adv_warmup_steps: int = 0  # discriminator-only steps before the generator's first step
    feature_distill_weight: float = 0.0  # L1 on intermediate block outputs, student vs teacher
    feature_distill_blocks: list[str] = field(default_factory=list)  # module names; empty = every body.N block
    gradient_weight: float = 0.0  # L1 on image gradients, student vs teacher
    fft_weight: float = 0.0  # L1 on FFT magnitudes, student vs teacher

    def __post_init__(self):
        _check_choice(self.gan_type, ("vanilla", "ragan"), "training.gan_type")
        _check_choice(self.adv_discriminator, ("patch", "vgg"), "training.adv_discriminator")
        if self.adv_warmup_steps < 0:
            raise ConfigError("training.adv_warmup_steps: must be >= 0")
        if self.iterations < 0:
            raise ConfigError("training.iterations: must be >= 0")
        weights = (self.pixel_weight, self.perceptual_weight, self.gan_weight, self.distill_weight,
                   self.adv_distill_weight, self.feature_distill_weight, self.gradient_weight, self.fft_weight)
        if self.iterations > 0 and not self.distill_only and not any(w > 0 for w in weights):
            raise ConfigError("training: the loss weights (pixel, perceptual, gan, distill, adv_distill, "
                              "feature_distill, gradient, fft) are all 0, so "
                              "training would not change the model; set one above 0 (e.g. training.distill_weight=1 "
                              "to distil the fp32 model) or training.iterations to 0")


@dataclass(frozen=True)
class ExportSection:
    compact_16bit: bool = True
    dynamic_shape: bool = True
    parity_images: int = 4
    parity_tolerance_db: float = 0.2  # how far the IR's fidelity may fall below the torch model's
    parity_max_gain_db: float = 1.0  # how far it may rise above (rounding differences; more means another model)
    fp32_tolerance: float = 1e-4


@dataclass(frozen=True)
class BenchmarkSection:
    input_size: list[int] = field(default_factory=lambda: [64, 64])  # LR H, W
    threads: int = 0  # 0 = all cores
    streams: int = 1
    iterations: int = 100
    warmup: int = 10
    peers: list[str] = field(default_factory=lambda: ["torch_fp32", "ov_fp32"])


@dataclass(frozen=True)
class EvalSection:
    metrics: list[str] = field(default_factory=lambda: ["fidelity_psnr", "fidelity_ssim", "niqe"])
    crop_border: Optional[int] = None  # null = the model's scale
    tile: int = 0  # 0 = whole image


@dataclass(frozen=True)
class Config:
    name: str = "experiment"
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    input_info: InputInfo = field(default_factory=InputInfo)
    compression: Optional[CompressionSection] = field(default_factory=CompressionSection)  # null = fp32
    training: TrainingSection = field(default_factory=TrainingSection)
    export: ExportSection = field(default_factory=ExportSection)
    benchmark: BenchmarkSection = field(default_factory=BenchmarkSection)
    eval: EvalSection = field(default_factory=EvalSection)
    # name -> partial config merged onto this one; `mixq run` reports every variant side by side
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)

    def variant_names(self) -> list[str]:
        return list(self.variants) or [self.name]

    def variant(self, name: str) -> "Config":
        """This config with variant ``name``'s overrides merged in (variants dropped)."""
        if not self.variants and name == self.name:
            return self
        if name not in self.variants:
            raise ConfigError(f"unknown variant '{name}'; this config defines: {', '.join(self.variants)}")
        base = to_dict(self)
        base["variants"] = {}
        base["name"] = name
        return parse_config(deep_merge(base, self.variants[name]))


def deep_merge(base: dict, update: dict) -> dict:
    """Recursive merge; a None in ``update`` replaces (e.g. "compression": null = fp32)."""
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key not in ("stages", "scope_overrides"):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def parse_config(data: dict) -> Config:
    if not isinstance(data, dict):
        raise ConfigError("the config must be a JSON object")
    cfg = from_dict(Config, data)
    for name, partial in cfg.variants.items():
        if not isinstance(partial, dict):
            raise ConfigError(f"variants.{name}: expected an object of config overrides")
        merged = deep_merge({k: v for k, v in data.items() if k != "variants"}, partial)
        try:
            from_dict(Config, merged)
        except ConfigError as exc:
            raise ConfigError(f"variants.{name}: {exc}") from None
    return cfg


def _parse_override_value(raw: str) -> Any:
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw  # bare strings: --set model.arch=rrdbnet_x4


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply ``section.key=value`` strings (value parsed as JSON when it parses)."""
    out = copy.deepcopy(data)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected section.key=value, e.g. training.iterations=100")
        path, raw = item.split("=", 1)
        keys = [k for k in path.strip().split(".") if k]
        if not keys:
            raise ConfigError(f"--set {item!r}: empty key")
        node = out
        for key in keys[:-1]:
            if node.get(key) is None:
                node[key] = {}
            if not isinstance(node[key], dict):
                raise ConfigError(f"--set {item!r}: '{key}' is not a section")
            node = node[key]
        node[keys[-1]] = _parse_override_value(raw)
    return out


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    """Read, override and validate a JSON config file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file; a config is a JSON object (see configs/)") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the config must be a JSON object {{...}}, got {json.dumps(data)[:40]}; "
                          "start from one of the files in configs/")
    data.pop("$schema", None)
    data.pop("description", None)
    return parse_config(apply_overrides(data, overrides or []))


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out or {prefix.rstrip("."): {}}
    return {prefix.rstrip("."): d}


def config_changes(old: dict, new: dict, ignore: tuple[str, ...] = ()) -> list[str]:
    """'key: old -> new' for every leaf that differs between two config dicts (top-level sections in ignore
    skipped)."""
    a, b = _flatten(old), _flatten(new)
    return [f"{k}: {a.get(k, '(unset)')} -> {b.get(k, '(unset)')}" for k in sorted(set(a) | set(b))
            if a.get(k, "(unset)") != b.get(k, "(unset)") and k.split(".")[0] not in ignore]


def dump_config(cfg: Config, path: str | Path, *, check_unchanged: bool = False,
                ignore: tuple[str, ...] = ()) -> None:
    """Write the resolved config; with check_unchanged, refuse to reuse a folder made by a different config
    (sections in ``ignore`` do not matter to what the folder holds)."""
    from .io_utils import atomic_write_text

    path = Path(path)
    if check_unchanged and path.is_file():
        try:
            old = json.loads(path.read_text())
        except ValueError:
            old = None
        changes = config_changes(old, to_dict(cfg), ignore) if isinstance(old, dict) else ["(unreadable config.json)"]
        if changes:
            shown = "; ".join(changes[:6]) + (f"; and {len(changes) - 6} more" if len(changes) > 6 else "")
            raise ConfigError(f"{path.parent} holds results of a different config ({shown}). Resuming would mix "
                              "them: use another --out, or delete that folder to start it over.")

    atomic_write_text(path, json.dumps(to_dict(cfg), indent=2) + "\n")
