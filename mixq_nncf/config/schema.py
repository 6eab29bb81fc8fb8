"""The JSON config: a tree of small frozen dataclasses with one JSON round trip.

The shape follows the legacy NNCF JSON config that NNCF users know (input_info, compression with
algorithm / weights / activations / scope_overrides / ignored_scopes / initializer), which NNCF 3.x
no longer reads; mixq-nncf translates it onto the NNCF 3.4 API. Stage names are shorthand for the
layers a generator declares in its ``STAGES``.

Every unknown key, wrong type or bad value raises ConfigError naming the key path and the choices.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Annotated, Any, Optional

from mixq_nncf.config.dataclass_json import UNSET, from_dict, to_dict
from mixq_nncf.config.values import PRECISION_NAMES, bits_name  # noqa: F401  (re-exported)
from mixq_nncf.config.values import (Choice, NonNegFloat, NonNegInt, PositiveFloat, PositiveInt, PrecisionValue,
                                     Range, Seed, is_bf16, parse_bits)
from mixq_nncf.errors import ConfigError
from mixq_nncf.models.detect import fill_model_section

STAGE_NAMES = ("feature_extraction", "body", "upsampling", "reconstruction")


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
    calibration_samples: PositiveInt = 32
    calibration_patch: PositiveInt = 64  # LR pixels
    eval_max_images: Optional[PositiveInt] = None
    eval_crop: Optional[PositiveInt] = None  # HR centre crop for speed; null = whole image
    # a second eval set nothing was tuned on, scored and reported beside the eval photos ('offline': the embedded
    # held-out photos; a folder; null: none) and its HR centre crop
    heldout: Optional[str] = None
    heldout_crop: Optional[PositiveInt] = None
    seed: Seed = 0


@dataclass(frozen=True)
class InputInfo:
    sample_size: list[PositiveInt] = field(default_factory=lambda: [1, 3, 64, 64])
    range: list[float] = field(default_factory=lambda: [0.0, 1.0])  # true data range of the image input

    def __post_init__(self):
        if len(self.sample_size) != 4:
            raise ConfigError(f"input_info.sample_size: expected [N, C, H, W], got {self.sample_size}")
        if len(self.range) != 2 or self.range[0] >= self.range[1]:
            raise ConfigError(f"input_info.range: expected [low, high] with low < high, got {self.range}")


@dataclass(frozen=True)
class QuantizerSpec:
    """Default quantizer for weights or activations. bits: 'int8', 'int16', 'int4', 'fp32' or 2..16."""
    bits: PrecisionValue = "int8"
    mode: Optional[Annotated[str, Choice(("symmetric", "asymmetric"))]] = None  # null = NNCF preset default
    per_channel: Optional[bool] = None
    signed: Optional[bool] = None  # force signed / unsigned ranges; null = decided by the calibration statistics


@dataclass(frozen=True)
class PrecisionOverride:
    """Precision for a stage or a scope. ``bits`` sets weights and activations together; ``weights`` /
    ``activations`` set one side. 'bf16' leaves the layer unquantized and runs it bf16 on CPUs with AVX512-BF16 or
    AMX (f32 elsewhere); 'fp32' and 'int16' layers run f32 everywhere."""
    bits: PrecisionValue = UNSET
    weights: PrecisionValue = UNSET
    activations: PrecisionValue = UNSET

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

    def float_kind(self, default: str) -> str:
        """'bf16' where the weights' precision (or ``bits``) says bf16, 'f32' where it names another, else default:
        a conv whose weights are not quantized runs at the float precision its weights are given."""
        for value in (self.weights, self.bits):
            if value != UNSET:
                return "bf16" if is_bf16(value) else "f32"
        return default


RANGE_TYPES = ("mean_min_max", "min_max", "mean_percentile")
Percentile = Annotated[float, Range(ge=0, le=100, use="a percentile 0..100")]


@dataclass(frozen=True)
class RangeInit:
    """How activation ranges are calibrated. Percentiles (0..100) apply to mean_percentile; null keeps NNCF 3.4's
    MEAN_QUANTILE preset (0.01 / 99.99)."""
    num_init_samples: PositiveInt = 32
    # with asymmetric activations (preset mixed) mean-min-max beats percentiles 0.01 / 99.99 on every model with
    # real weights: x4plus +1.85 dB, x4plus-anime +0.3 dB, Compact +1.4 dB PTQ int8 fidelity (RESULTS section 2);
    # percentiles had won only with symmetric activations
    type: Annotated[str, Choice(RANGE_TYPES)] = "mean_min_max"
    min_percentile: Optional[Percentile] = None
    max_percentile: Optional[Percentile] = None

    def __post_init__(self):
        low, high = self.percentiles()
        if low >= high:
            raise ConfigError(f"compression.initializer.range: min_percentile {low} is not below max_percentile "
                              f"{high}; use e.g. 0.1 and 99.9")

    def percentiles(self) -> tuple[float, float]:
        """(min, max) percentiles of mean_percentile, a null one at NNCF 3.4's MEAN_QUANTILE preset (0.01 / 99.99)."""
        return (0.01 if self.min_percentile is None else self.min_percentile,
                99.99 if self.max_percentile is None else self.max_percentile)


WEIGHT_RANGES = ("auto", "min_max", "mse")


@dataclass(frozen=True)
class WeightRounding:
    """Low-bit weights rounded block by block to reproduce the fp32 model's outputs on calibration crops (GPTQ with
    the fp32 model's inputs as target, quant/rounding.py) instead of each to its nearest level. Applies to weights
    of at most max_bits; 8-bit weights keep round-to-nearest."""
    method: Annotated[str, Choice(("gptq",))] = "gptq"
    samples: PositiveInt = 16  # calibration crops used
    patch: PositiveInt = 40  # LR centre crop of each, pixels
    damp: PositiveFloat = 0.01  # added to the input moments' diagonal, relative to its mean
    max_bits: PositiveInt = 7
    # the order input columns are rounded in: "input" (as stored) or "act" (largest input second moment first)
    order: Annotated[str, Choice(("input", "act"))] = "input"


@dataclass(frozen=True)
class Initializer:
    """weight_range: how weight quantizer ranges start. min_max (NNCF's: each output channel's largest |w|, clips
    nothing), mse (per output channel, the clipping range with the least squared weight error) or auto: mse for
    weights below 8 bits, where min-max wastes most of the few levels, min_max otherwise."""
    range: RangeInit = field(default_factory=RangeInit)
    # NNCF's fast bias correction lowers Real-ESRGAN x4plus fidelity (RESULTS section 4): off unless asked
    fast_bias_correction: bool = False
    weight_range: Annotated[str, Choice(WEIGHT_RANGES)] = "auto"
    # null: every weight rounds to its nearest level; {} (or settings): low-bit weights are rounded block by block
    weight_rounding: Optional[WeightRounding] = None


@dataclass(frozen=True)
class FullyQuantizedSection:
    """Fully quantized mode (FQSR): every convolution, first and last included, and every input of a residual or
    long-skip addition is quantized; nothing stays fp32 between layers. Bits per tensor kind: conv weights,
    conv input activations, and the inputs of additions (skips, model-output paths). A quantizer that feeds both
    a conv and an addition takes the larger of the two widths. Stages / scope_overrides still apply on top of
    these defaults, but no layer may be fp32."""
    weights: PrecisionValue = "int8"
    activations: PrecisionValue = "int8"
    skips: PrecisionValue = "int8"

    def __post_init__(self):
        for name in ("weights", "activations", "skips"):
            if parse_bits(getattr(self, name), f"compression.fully_quantized.{name}") is None:
                raise ConfigError(f"compression.fully_quantized.{name}: fp32 contradicts the fully quantized mode; "
                                  "use a bit width (e.g. 'int8', 'int4') or drop the fully_quantized section")

    def bits(self) -> tuple[int, int, int]:
        return tuple(parse_bits(getattr(self, n), n) for n in ("weights", "activations", "skips"))


OVERFLOW_FIX = ("auto", "pairs", "disable", "enable", "first_layer_only")


@dataclass(frozen=True)
class CompressionSection:
    """Quantization. Precedence for each layer: weights/activations defaults < stages <
    scope_overrides (first matching pattern wins) < ignored_scopes (fp32).

    Scope patterns are module names; a pattern starting with '{re}' is a full-match regex (with regex_search, the
    NNCF 2.x rule: re.search over the module name and the layer's NNCF 2.x scope name). target_scopes, when set,
    leaves every layer they do not match fp32. activation_outputs gives the activation bits of every conv that
    reads a producer op's output (NNCF 2.x '<op scope>|OUTPUT' quantizer ids, '/nncf_model_input_0' = the image).
    """
    algorithm: Annotated[str, Choice(("quantization",))] = "quantization"
    # mixed: symmetric weights, asymmetric activations. SR generators' activations are LeakyReLU / ReLU outputs,
    # so a symmetric quantizer wastes most of its negative half: asymmetric int8 runs on the same int8 kernels and
    # measured +2.06 dB (Real-ESRGAN x4plus) / +2.55 dB (x4plus-anime) over "performance" (symmetric, the paper's)
    preset: Annotated[str, Choice(("performance", "mixed"))] = "mixed"
    weights: QuantizerSpec = field(default_factory=lambda: QuantizerSpec(mode="symmetric", per_channel=True))
    activations: QuantizerSpec = field(default_factory=QuantizerSpec)
    stages: dict[str, PrecisionOverride] = field(default_factory=dict)
    scope_overrides: dict[str, PrecisionOverride] = field(default_factory=dict)
    ignored_scopes: list[str] = field(default_factory=list)
    initializer: Initializer = field(default_factory=Initializer)
    # auto: off where the CPU has VNNI/AMX; "pairs" where it has not (8-bit ranges widened per channel just enough
    # for AVX2's int16 pair sums, quant/pair_safe.py); "enable" is NNCF's fix (7-bit weights everywhere)
    overflow_fix: Annotated[str, Choice(OVERFLOW_FIX)] = "auto"
    fully_quantized: Optional[FullyQuantizedSection] = None  # FQSR mode: weights/activations defaults come from here
    target_scopes: list[str] = field(default_factory=list)
    validate_scopes: bool = True  # a scope pattern that matches no layer is an error
    regex_search: bool = False
    activation_outputs: dict[str, PrecisionValue] = field(default_factory=dict)

    def __post_init__(self):
        if self.fully_quantized is not None and self.ignored_scopes:
            raise ConfigError("compression.ignored_scopes: the fully quantized mode leaves no layer fp32; remove "
                              "ignored_scopes or the fully_quantized section")
        for stage in self.stages:
            if stage not in STAGE_NAMES:
                raise ConfigError(f"compression.stages: unknown stage '{stage}'; valid stages: {', '.join(STAGE_NAMES)}")


LearningRate = Annotated[float, Range(ge=0, use="a learning rate >= 0")]
LossWeight = Annotated[float, Range(ge=0, why="which would reward the error it measures",
                                    use="a weight >= 0 (0 turns the term off)")]


@dataclass(frozen=True)
class TrainingSection:
    """Quantization-aware training. Defaults: BasicSR's SRGAN/ESRGAN fine-tuning recipe."""
    iterations: NonNegInt = 0  # 0 = no QAT (post-training quantization only)
    batch_size: PositiveInt = 16
    patch_size: PositiveInt = 128  # HR pixels
    lr_g: LearningRate = 1e-4
    lr_d: LearningRate = 1e-4
    betas: list[Annotated[float, Range(ge=0, lt=1, use="Adam betas in [0, 1), e.g. [0.9, 0.99]")]] = field(
        default_factory=lambda: [0.9, 0.99])
    milestones: list[NonNegInt] = field(default_factory=lambda: [50000, 100000, 200000, 300000])
    gamma: Annotated[float, Range(gt=0, use="a learning-rate factor > 0, e.g. 0.5")] = 0.5
    pixel_weight: LossWeight = 1e-2
    perceptual_weight: LossWeight = 1.0
    gan_weight: LossWeight = 5e-3
    gan_type: Annotated[str, Choice(("vanilla", "ragan"))] = "ragan"  # vanilla (SRGAN) | ragan (ESRGAN)
    distill_weight: LossWeight = 0.0  # L1 to the fp32 teacher's output on the same LR input
    distill_only: bool = False  # train on teacher outputs only (no GT, no GAN): the offline default
    ema_decay: Annotated[float, Range(ge=0, lt=1, use="a decay in [0, 1), e.g. 0.999 (0 = off)")] = 0.0  # 0 disables generator EMA; BasicSR uses 0.999
    # FQSR's quantization-aware calibration loss: weight of mean |q(x) - x| over every enabled quantizer's input
    # (weights and activations), which trains the quantizer intervals toward low rounding + clipping error
    quant_error_weight: LossWeight = 0.0
    lr_quantizers: Optional[Annotated[float, Range(gt=0, use="a learning rate > 0, or null to train the intervals at "
                                                   "training.lr_g")]] = None  # learning rate of the quantizer intervals; None = lr_g
    vgg_weights: Optional[str] = None
    discriminator_weights: Optional[str] = None  # start D from a BasicSR net_d file instead of from scratch
    checkpoint_every: PositiveInt = 500
    log_every: PositiveInt = 10
    tensorboard: bool = False  # also log the loss terms to DIR/tensorboard (needs the tensorboard package)
    device: str = "auto"
    amp: bool = True
    seed: Seed = 0
    num_workers: NonNegInt = 0
    # Texture-preserving terms against the fp32 teacher's output (README "QAT loss recipes"); 0 = off
    adv_distill_weight: LossWeight = 0.0  # GAN term whose discriminator tells teacher outputs (real) from student's
    adv_discriminator: Annotated[str, Choice(("patch", "vgg"))] = "patch"  # patch (small PatchGAN, any size) | vgg (VGGStyleDiscriminator)
    adv_warmup_steps: NonNegInt = 0  # discriminator-only steps before the generator's first step
    feature_distill_weight: LossWeight = 0.0  # L1 on intermediate block outputs, student vs teacher
    feature_distill_blocks: list[str] = field(default_factory=list)  # module names; empty = every body.N block
    gradient_weight: LossWeight = 0.0  # L1 on image gradients, student vs teacher
    fft_weight: LossWeight = 0.0  # L1 on FFT magnitudes, student vs teacher
    distill_lowpass_sigma: Annotated[float, Range(ge=0, use="a Gaussian blur in output pixels >= 0 (0 compares the "
                                                        "outputs unblurred)")] = 0.0  # blur (px) of the distillation difference; 0 = plain L1 (losses.distill_loss)
    mscn_weight: LossWeight = 0.0  # L1 on contrast-normalised luma (what NIQE reads), student vs teacher
    mscn_stats_weight: LossWeight = 0.0  # L1 on per-tile moments of that luma and its neighbour products (NIQE's features)
    detail_gain_weight: LossWeight = 0.0  # charges the student for shrinking the teacher's detail, per band (losses.py)
    detail_gain_bands: list[float] = field(default_factory=lambda: [0.0, 1.0, 2.0, 4.0])  # Gaussian sigmas, px

    def __post_init__(self):
        if len(self.betas) != 2:
            raise ConfigError(f"training.betas: {self.betas} is not a pair; use Adam's two betas, e.g. [0.9, 0.99]")
        bands = self.detail_gain_bands
        if (not isinstance(bands, list) or len(bands) < 2 or any(not isinstance(b, (int, float)) or b < 0 for b in bands)
                or any(b >= c for b, c in zip(bands[:-1], bands[1:]))):
            raise ConfigError(f"training.detail_gain_bands: {bands!r} must be at least two increasing Gaussian sigmas "
                              ">= 0 in pixels, each pair one band (0 = the image itself), e.g. [0, 1, 2, 4]")
        trains_discriminator = (self.gan_weight > 0 and not self.distill_only) or self.adv_distill_weight > 0
        if self.iterations > 0 and self.lr_g == 0 and not self.lr_quantizers and not trains_discriminator:
            raise ConfigError("training.lr_g is 0, training.lr_quantizers is unset and no discriminator trains, so "
                              "training would change nothing; set lr_quantizers (e.g. 1e-2) to train only the "
                              "quantizer intervals, or lr_g > 0")
        named = {n: getattr(self, n) for n in ("pixel_weight", "perceptual_weight", "gan_weight", "distill_weight",
                                               "adv_distill_weight", "feature_distill_weight", "gradient_weight",
                                               "fft_weight", "mscn_weight", "mscn_stats_weight",
                                               "detail_gain_weight", "quant_error_weight")}
        if self.iterations > 0 and not self.distill_only and not any(w is not None and w > 0 for w in named.values()):
            raise ConfigError("training: every loss weight (pixel, perceptual, gan, distill, adv_distill, "
                              "feature_distill, gradient, fft, mscn, mscn_stats, detail_gain, quant_error) is 0, so "
                              "training would not change the model; set one above 0 (e.g. training.distill_weight=1 "
                              "to distil the fp32 model) or training.iterations to 0")


@dataclass(frozen=True)
class ExportSection:
    compact_16bit: bool = True
    dynamic_shape: bool = True
    parity_images: PositiveInt = 4
    parity_tolerance_db: NonNegFloat = 0.2  # how far the IR's fidelity may fall below the torch model's
    parity_max_gain_db: NonNegFloat = 1.0  # how far it may rise above (rounding differences; more means another model)
    fp32_tolerance: NonNegFloat = 1e-4
    # 4-bit weights: OpenVINO stores them as i4 but runs such convs fp32; "int8_kernels" widens the i4 constants
    # to i8 inside the IR (a Convert folded at compile time), so the .bin keeps i4 and the convs run int8.
    # "as_converted" leaves ov.convert_model's graph as it is.
    int4_weights: Annotated[str, Choice(("int8_kernels", "as_converted"))] = "int8_kernels"
    # "per_layer": the IR carries each float layer's precision (f32 layers marked precise, bf16 layers not) and
    # runs as planned under OpenVINO's defaults with no hint; "f32": no marks, deployed with
    # INFERENCE_PRECISION_HINT=f32 (every non-int8 op f32, bf16 layers too). Same graph on CPUs without bf16.
    float_deployment: Annotated[str, Choice(("per_layer", "f32"))] = "per_layer"


@dataclass(frozen=True)
class BenchmarkSection:
    input_size: list[PositiveInt] = field(default_factory=lambda: [64, 64])  # LR H, W
    threads: NonNegInt = 0  # 0 = all cores
    streams: PositiveInt = 1
    iterations: PositiveInt = 100
    warmup: NonNegInt = 10
    peers: list[str] = field(default_factory=lambda: ["torch_fp32", "ov_fp32"])

    def __post_init__(self):
        if len(self.input_size) != 2:
            raise ConfigError(f"benchmark.input_size: expected [H, W] of the LR input, got {self.input_size}")


@dataclass(frozen=True)
class EvalSection:
    metrics: list[str] = field(default_factory=lambda: ["fidelity_psnr", "fidelity_ssim", "niqe"])
    crop_border: Optional[NonNegInt] = None  # null = the model's scale
    tile: NonNegInt = 0  # 0 = whole image


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
    if isinstance(data.get("model"), dict) and "arch" not in data["model"]:  # read from the checkpoint
        data = {**data, "model": fill_model_section(data["model"])}
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


def compression_key(cfg: "Config") -> dict | None:
    """The compression section as a cache key, with "auto" settings as this CPU resolves them: a result made where
    auto meant another overflow fix is not reused."""
    from mixq_nncf.cpu import resolve_overflow_fix

    comp = to_dict(cfg.compression)
    if comp is not None:
        comp["overflow_fix"] = resolve_overflow_fix(comp.get("overflow_fix", "auto"))
    return comp


# data keys that only choose what a finished model is scored on, never what is calibrated or trained
SCORING_ONLY_DATA = ("heldout", "heldout_crop")


def data_key(cfg: "Config") -> dict:
    """The data section as a cache key for calibrated, trained and exported results (held-out photos left out)."""
    return {k: v for k, v in to_dict(cfg.data).items() if k not in SCORING_ONLY_DATA}
