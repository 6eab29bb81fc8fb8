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
    signed: Optional[bool] = None  # force signed / unsigned ranges; null = decided by the calibration statistics

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


RANGE_TYPES = ("mean_min_max", "min_max", "mean_percentile")


@dataclass(frozen=True)
class RangeInit:
    """How activation ranges are calibrated. Percentiles (0..100) apply to mean_percentile; null keeps NNCF 3.4's
    MEAN_QUANTILE preset (0.01 / 99.99)."""
    num_init_samples: int = 32
    type: str = "mean_min_max"
    min_percentile: Optional[float] = None
    max_percentile: Optional[float] = None

    def __post_init__(self):
        _check_choice(self.type, RANGE_TYPES, "initializer.range.type")
        if self.num_init_samples < 1:
            raise ConfigError("initializer.range.num_init_samples: must be >= 1")
        for name in ("min_percentile", "max_percentile"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value <= 100.0:
                raise ConfigError(f"initializer.range.{name}: {value} is not a percentile; use 0..100")

    def percentiles(self) -> tuple[float, float]:
        """(min, max) percentiles of mean_percentile, a null one at NNCF 3.4's MEAN_QUANTILE preset (0.01 / 99.99)."""
        return (0.01 if self.min_percentile is None else self.min_percentile,
                99.99 if self.max_percentile is None else self.max_percentile)


WEIGHT_RANGES = ("auto", "min_max", "mse")


@dataclass(frozen=True)
class Initializer:
    """weight_range: how weight quantizer ranges start. min_max (NNCF's: each output channel's largest |w|, clips
    nothing), mse (per output channel, the clipping range with the least squared weight error) or auto: mse for
    weights below 8 bits, where min-max wastes most of the few levels, min_max otherwise."""
    range: RangeInit = field(default_factory=RangeInit)
    fast_bias_correction: bool = True
    weight_range: str = "auto"

    def __post_init__(self):
        _check_choice(self.weight_range, WEIGHT_RANGES, "compression.initializer.weight_range")


@dataclass(frozen=True)
class FullyQuantizedSection:
    """Fully quantized mode (FQSR): every convolution, first and last included, and every input of a residual or
    long-skip addition is quantized; nothing stays fp32 between layers. Bits per tensor kind: conv weights,
    conv input activations, and the inputs of additions (skips, model-output paths). A quantizer that feeds both
    a conv and an addition takes the larger of the two widths. Stages / scope_overrides still apply on top of
    these defaults, but no layer may be fp32."""
    weights: Any = "int8"
    activations: Any = "int8"
    skips: Any = "int8"

    def __post_init__(self):
        for name in ("weights", "activations", "skips"):
            if parse_bits(getattr(self, name), f"compression.fully_quantized.{name}") is None:
                raise ConfigError(f"compression.fully_quantized.{name}: fp32 contradicts the fully quantized mode; "
                                  "use a bit width (e.g. 'int8', 'int4') or drop the fully_quantized section")

    def bits(self) -> tuple[int, int, int]:
        return tuple(parse_bits(getattr(self, n), n) for n in ("weights", "activations", "skips"))


@dataclass(frozen=True)
class CompressionSection:
    """Quantization. Precedence for each layer: weights/activations defaults < stages <
    scope_overrides (first matching pattern wins) < ignored_scopes (fp32).

    Scope patterns are module names; a pattern starting with '{re}' is a full-match regex (with regex_search, the
    NNCF 2.x rule: re.search over the module name and the layer's NNCF 2.x scope name). target_scopes, when set,
    leaves every layer they do not match fp32. activation_outputs gives the activation bits of every conv that
    reads a producer op's output (NNCF 2.x '<op scope>|OUTPUT' quantizer ids, '/nncf_model_input_0' = the image).
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
    fully_quantized: Optional[FullyQuantizedSection] = None  # FQSR mode: weights/activations defaults come from here
    target_scopes: list[str] = field(default_factory=list)
    validate_scopes: bool = True  # a scope pattern that matches no layer is an error
    regex_search: bool = False
    activation_outputs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        _check_choice(self.algorithm, ("quantization",), "compression.algorithm")
        if self.fully_quantized is not None and self.ignored_scopes:
            raise ConfigError("compression.ignored_scopes: the fully quantized mode leaves no layer fp32; remove "
                              "ignored_scopes or the fully_quantized section")
        _check_choice(self.preset, ("performance", "mixed"), "compression.preset")
        _check_choice(self.overflow_fix, ("disable", "enable", "first_layer_only"), "compression.overflow_fix")
        for stage in self.stages:
            if stage not in STAGE_NAMES:
                raise ConfigError(f"compression.stages: unknown stage '{stage}'; valid stages: {', '.join(STAGE_NAMES)}")
        for op, bits in self.activation_outputs.items():
            parse_bits(bits, f"compression.activation_outputs.{op}")


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
    # FQSR's quantization-aware calibration loss: weight of mean |q(x) - x| over every enabled quantizer's input
    # (weights and activations), which trains the quantizer intervals toward low rounding + clipping error
    quant_error_weight: float = 0.0
    lr_quantizers: Optional[float] = None  # learning rate of the quantizer intervals; None = lr_g
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
    distill_lowpass_sigma: float = 0.0  # blur (px) of the distillation difference; 0 = plain L1 (losses.distill_loss)
    mscn_weight: float = 0.0  # L1 on contrast-normalised luma (what NIQE reads), student vs teacher
    mscn_stats_weight: float = 0.0  # L1 on per-tile moments of that luma and its neighbour products (NIQE's features)
    detail_gain_weight: float = 0.0  # charges the student for shrinking the teacher's detail, per band (losses.py)
    detail_gain_bands: list[float] = field(default_factory=lambda: [0.0, 1.0, 2.0, 4.0])  # Gaussian sigmas, px

    def __post_init__(self):
        _check_choice(self.gan_type, ("vanilla", "ragan"), "training.gan_type")
        _check_choice(self.adv_discriminator, ("patch", "vgg"), "training.adv_discriminator")
        if self.adv_warmup_steps < 0:
            raise ConfigError("training.adv_warmup_steps: must be >= 0")
        if self.iterations < 0:
            raise ConfigError("training.iterations: must be >= 0")
        bands = self.detail_gain_bands
        if (not isinstance(bands, list) or len(bands) < 2 or any(not isinstance(b, (int, float)) or b < 0 for b in bands)
                or any(b >= c for b, c in zip(bands[:-1], bands[1:]))):
            raise ConfigError(f"training.detail_gain_bands: {bands!r} must be at least two increasing Gaussian sigmas "
                              ">= 0 in pixels, each pair one band (0 = the image itself), e.g. [0, 1, 2, 4]")
        if self.distill_lowpass_sigma < 0:
            raise ConfigError(f"training.distill_lowpass_sigma: {self.distill_lowpass_sigma} must be >= 0 (a Gaussian "
                              "blur in output pixels; 0 compares the outputs unblurred)")
        for name in ("lr_g", "lr_d"):
            if getattr(self, name) < 0:
                raise ConfigError(f"training.{name}: {getattr(self, name)} is negative; use a learning rate >= 0")
        trains_discriminator = (self.gan_weight > 0 and not self.distill_only) or self.adv_distill_weight > 0
        if self.iterations > 0 and self.lr_g == 0 and not self.lr_quantizers and not trains_discriminator:
            raise ConfigError("training.lr_g is 0, training.lr_quantizers is unset and no discriminator trains, so "
                              "training would change nothing; set lr_quantizers (e.g. 1e-2) to train only the "
                              "quantizer intervals, or lr_g > 0")
        if self.lr_quantizers is not None and self.lr_quantizers <= 0:
            raise ConfigError("training.lr_quantizers: must be > 0, or null to train the intervals at training.lr_g")
        named = {n: getattr(self, n) for n in ("pixel_weight", "perceptual_weight", "gan_weight", "distill_weight",
                                               "adv_distill_weight", "feature_distill_weight", "gradient_weight",
                                               "fft_weight", "mscn_weight", "mscn_stats_weight",
                                               "detail_gain_weight", "quant_error_weight")}
        for name, value in named.items():
            if value is not None and value < 0:
                raise ConfigError(f"training.{name}: {value} is negative, which would reward the error it measures; "
                                  "use a weight >= 0 (0 turns the term off)")
        if self.iterations > 0 and not self.distill_only and not any(w is not None and w > 0 for w in named.values()):
            raise ConfigError("training: every loss weight (pixel, perceptual, gan, distill, adv_distill, "
                              "feature_distill, gradient, fft, mscn, mscn_stats, detail_gain, quant_error) is 0, so "
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
    # 4-bit weights: OpenVINO stores them as i4 but runs such convs fp32; "int8_kernels" widens the i4 constants
    # to i8 inside the IR (a Convert folded at compile time), so the .bin keeps i4 and the convs run int8.
    # "as_converted" leaves ov.convert_model's graph as it is.
    int4_weights: str = "int8_kernels"

    def __post_init__(self):
        _check_choice(self.int4_weights, ("int8_kernels", "as_converted"), "export.int4_weights")


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
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key not in ("stages", "scope_overrides",
                                                                                        "activation_outputs"):
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


def strip_json_comments(text: str) -> str:
    """JSON with // and /* */ comments (NNCF's own configs have them) -> plain JSON. Comment characters inside
    strings stay; comments become spaces so error line and column numbers still point into the file."""
    out: list[str] = []
    i, n = 0, len(text)
    in_string = False
    while i < n:
        c = text[i]
        if in_string:
            out.append(c)
            if c == "\\" and i + 1 < n:
                out.append(text[i + 1])
                i += 2
                continue
            if c == '"':
                in_string = False
            i += 1
        elif c == '"':
            in_string = True
            out.append(c)
            i += 1
        elif text.startswith("//", i):
            end = text.find("\n", i)
            end = n if end < 0 else end
            out.append(" " * (end - i))
            i = end
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            if end < 0:
                raise ConfigError("unterminated /* comment")
            out.append("".join(ch if ch == "\n" else " " for ch in text[i:end + 2]))
            i = end + 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def read_json(path: str | Path) -> Any:
    """A JSON file that may carry // and /* */ comments, with a clear error for bad JSON."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        text = strip_json_comments(path.read_text())
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file; a config is a JSON object (see configs/)") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None


def load_config(path: str | Path, overrides: list[str] | None = None, notes: list[str] | None = None) -> Config:
    """Read, override and validate a JSON config file: our own format or an NNCF 2.x quantization config
    (translated by nncf_config; what it ignored or changed is appended to ``notes``)."""
    path = Path(path)
    data = read_json(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the config must be a JSON object {{...}}, got {json.dumps(data)[:40]}; "
                          "start from one of the files in configs/")
    from .nncf_config import is_nncf_config, load_nncf_config

    if is_nncf_config(data):
        return load_nncf_config(data, overrides or [], name=path.stem, source=str(path), notes=notes)
    data.pop("$schema", None)
    data.pop("description", None)
    return parse_config(calibration_follows_init_samples(apply_overrides(data, overrides or [])))


def calibration_follows_init_samples(data: dict) -> dict:
    """A given initializer.range.num_init_samples sets the number of calibration crops unless
    data.calibration_samples is given too (then a smaller calibration set is warned about before work starts)."""
    comp = data.get("compression")
    rng = comp.get("initializer", {}).get("range", {}) if isinstance(comp, dict) and isinstance(
        comp.get("initializer"), dict) else {}
    n = rng.get("num_init_samples") if isinstance(rng, dict) else None
    if isinstance(n, int) and not isinstance(n, bool) and isinstance(data.get("data", {}), dict) \
            and "calibration_samples" not in data.get("data", {}):
        data = {**data, "data": {**data.get("data", {}), "calibration_samples": n}}
    return data


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
        try:  # fields added since that folder was made count as their defaults
            old = to_dict(parse_config(old)) if isinstance(old, dict) else old
        except ConfigError:
            pass
        changes = config_changes(old, to_dict(cfg), ignore) if isinstance(old, dict) else ["(unreadable config.json)"]
        if changes:
            shown = "; ".join(changes[:6]) + (f"; and {len(changes) - 6} more" if len(changes) > 6 else "")
            raise ConfigError(f"{path.parent} holds results of a different config ({shown}). Resuming would mix "
                              "them: use another --out, or delete that folder to start it over.")

    atomic_write_text(path, json.dumps(to_dict(cfg), indent=2) + "\n")
