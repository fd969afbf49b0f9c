"""Run configuration: frozen dataclasses per concern, loaded from YAML with overrides.

A config file holds any subset of the sections below; what it leaves out keeps its default.
`--set section.key=value` overrides one key, the value parsed as YAML (`--set
wgan.iterations=200`, `--set model.channels=[16,32,64,128]`). An unknown section or key is a
ConfigError naming it. Every run saves the resolved config beside its outputs.
"""

import dataclasses
import logging
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from anogan.errors import ConfigError

logger = logging.getLogger(__name__)

IntensityMode = Literal["zscore", "percentile", "minmax"]
Sampling = Literal["uniform", "balanced"]
Aggregation = Literal["max", "mean", "topk"]
ImageResidual = Literal["squared", "luminance"]
Precision = Literal["fp32", "bf16"]


@dataclass(frozen=True)
class DataConfig:
    """How slices become model inputs.

    Attributes:
        image_size: pixels of a slice's longer side on the model grid, after resampling to
            square pixels where the spacing is known.
        patch_size: side of the square window the networks see; equal to image_size for
            whole-slice models.
        patches_per_image: foreground windows drawn from each training slice per pass.
        intensity: per-slice normalisation. `zscore` standardises over the foreground and maps
            +-`zscore_clip` standard deviations to [-1, 1]; `percentile` maps the foreground's
            1st-99th percentiles to [-1, 1]; `minmax` the slice's range.
        sampling: how training slices are drawn: `uniform`, or `balanced`, each slice in
            inverse proportion to the number of training slices like it (see
            `anogan.data.balance`), so that rare healthy kinds and single copies are learnt
            as well as common kinds and slices stored many times over.
        zscore_clip: standard deviations mapped to the ends of [-1, 1] by `zscore`.
        foreground_threshold: fraction of the slice's robust intensity range above which a
            pixel counts as body rather than air.
        validation_fraction: healthy images held back for calibration when the data has no
            validation split of its own.
        window: DICOM window preset name (brain, subdural, lung, soft_tissue, bone) or None for
            the file's own window.
        slice_axis: NIfTI slicing axis after reorientation to RAS+.
        max_images: cap on training images read (0: all), for quick trials.
    """

    image_size: int = 64
    patch_size: int = 64
    patches_per_image: int = 1
    intensity: IntensityMode = "zscore"
    sampling: Sampling = "uniform"
    zscore_clip: float = 3.0
    foreground_threshold: float = 0.08
    validation_fraction: float = 0.15
    window: str | None = None
    slice_axis: str = "axial"
    max_images: int = 0


@dataclass(frozen=True)
class ModelConfig:
    """Network widths; one residual block per entry of `channels`.

    Attributes:
        latent_dim: Z, the dimension of the generator's standard normal input.
        channels: feature maps per resolution, finest first: the critic and encoder go
            down through them, the generator up through them in reverse. The paper's
            recipe is [64, 128, 256, 512] at 64 x 64.
        latent_bound: the encoder's output is latent_bound * tanh(.), so that it covers the
            bulk of a standard normal (3 standard deviations) while staying bounded.
    """

    latent_dim: int = 128
    channels: tuple[int, ...] = (64, 128, 256, 512)
    latent_bound: float = 3.0


@dataclass(frozen=True)
class WGANConfig:
    """WGAN-GP training of generator and critic on healthy windows."""

    iterations: int = 100000
    batch_size: int = 64
    n_critic: int = 5
    gp_weight: float = 10.0
    lr: float = 1e-4
    betas: tuple[float, float] = (0.0, 0.9)
    diffaugment: bool = False
    diffaugment_policy: tuple[str, ...] = ("color", "translation", "cutout")
    sample_every: int = 500
    quality_every: int = 500
    checkpoint_every: int = 1000
    max_minutes: float = 0.0


@dataclass(frozen=True)
class EncoderConfig:
    """izi_f encoder training with generator and critic frozen."""

    iterations: int = 50000
    batch_size: int = 64
    lr: float = 5e-5
    kappa: float = 1.0
    checkpoint_every: int = 1000
    max_minutes: float = 0.0


@dataclass(frozen=True)
class ScoringConfig:
    """How windows become slice scores, and the alarm threshold.

    Attributes:
        kappa: weight of the feature residual in the anomaly score.
        residual: the image term of the score. `squared`: the mean squared residual
            (x - G(E(x)))^2, as in f-AnoGAN. `luminance`: the mean of SSIM's luminance
            dissimilarity between x and G(E(x)) on the standardised intensities
            (`anogan.models.fanogan.luminance_dissimilarity`): bounded and scale-free, so
            that a region reconstructed darker than the slice's mean where it is brighter
            counts fully whatever the slice's contrast. Pixel maps stay |x - G(E(x))| either
            way, and latent refinement always lowers the squared score.
        overlap: fraction of a window shared with its neighbour when sliding.
        aggregation: slice score from its window scores: `max`, `mean`, or `topk` (the mean
            of the `top_k` highest windows).
        top_k: windows averaged by `topk`.
        target_fpr: false-positive rate on healthy validation images at the alarm threshold.
        batch_size: windows per forward pass.
        masked: compute residuals only inside the foreground mask.
        mask_erosion: pixels of the model grid by which the foreground is shrunk before
            windows are chosen, residuals taken and maps drawn (0: the mask as found). Its
            outermost pixels are where the foreground threshold cuts through the edge of the
            body, so that a reconstruction a pixel off leaves large residuals there on healthy
            slices. A foreground no wider than the erosion keeps its mask.
        map_sigma: standard deviation, in model-grid pixels, of the Gaussian that smooths
            pixel anomaly maps inside the foreground (0: raw |x - G(E(x))|). Lesions are
            blobs while reconstruction error is speckled, so smoothing ranks lesion pixels
            higher; slice scores do not change.
        flip: test-time augmentation: each window is also scored mirrored left to right,
            and scores, maps and reconstructions are the mean of both (mirrored back). It
            costs a second forward pass. Sensible where anatomy is near-symmetric about the
            vertical axis (axial brain, most CT); not for chest X-ray, where the mirrored
            heart is itself an anomaly.
        refine_steps: Adam steps that lower each window's score by moving its latent vector
            from E(x); pixel maps and reconstructions then come from the refined latent, while
            slice scores stay those of G(E(x)), which refinement made worse at telling tumours
            from healthy slices (0: no refinement). Each step costs about two plain scoring
            passes: 10 steps made `anogan score` 6 times slower at 64 px.
        refine_step_size: Adam's learning rate for those steps, in latent units (the latent
            prior is a standard normal).
        reference_k: subtract from each window's score the mean score of the k healthy
            training windows nearest to it in the encoder's latent space (0: off; see
            `anogan.scoring.reference`). Healthy anatomy the generator cannot draw then stops
            scoring like a lesion. Needs a model file with a healthy reference (trained by
            this version) and the masking and erosion it was trained with.
    """

    kappa: float = 1.0
    residual: ImageResidual = "squared"
    overlap: float = 0.5
    aggregation: Aggregation = "topk"
    top_k: int = 3
    target_fpr: float = 0.05
    batch_size: int = 64
    masked: bool = True
    mask_erosion: int = 0
    map_sigma: float = 0.0
    flip: bool = False
    refine_steps: int = 0
    refine_step_size: float = 0.05
    reference_k: int = 0


@dataclass(frozen=True)
class ComputeConfig:
    """Device, precision and memory layout of every forward and backward pass.

    Attributes:
        device: `auto` (the first CUDA GPU if there is one, else the CPU), `cpu`, `cuda` or
            `cuda:N`.
        precision: `fp32`, or `bf16` autocast (weights and optimiser state stay fp32;
            convolutions and matrix products run in bfloat16).
        channels_last: NHWC memory layout for images and convolution weights, which oneDNN
            and cuDNN convolve faster than NCHW.
        threads: CPU threads for intra-op parallelism (0: torch's default, one per core).
        compile: torch.compile (inductor) the networks that are never differentiated twice:
            the generator in WGAN-GP training, and in izi_f training the generator, encoder
            and critic trunk. The first steps pay the compilation; `make bench` shows what it
            buys. Needs a C++ compiler (CPU) or triton (CUDA).
    """

    device: str = "auto"
    precision: Precision = "fp32"
    channels_last: bool = False
    threads: int = 0
    compile: bool = False


@dataclass(frozen=True)
class TrackingConfig:
    """MLflow settings; the tracking URI comes from MLFLOW_TRACKING_URI, else this default."""

    tracking_uri: str = "sqlite:///mlflow.db"
    experiment: str = "anogan"


@dataclass(frozen=True)
class Config:
    """Everything a run needs, one section per concern."""

    seed: int = 0
    output_dir: str = "runs"
    compute: ComputeConfig = field(default_factory=ComputeConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    wgan: WGANConfig = field(default_factory=WGANConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    scoring: ScoringConfig = field(default_factory=ScoringConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)


def load_config(
    path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()
) -> Config:
    """Read a YAML config and apply `key=value` overrides.

    Args:
        path: a YAML file, or None for the defaults.
        overrides: strings like `wgan.iterations=200`.

    Raises:
        ConfigError: the file is missing or not a mapping, a key is unknown, or a value has
            the wrong type.
    """
    raw: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        loaded = yaml.safe_load(path.read_text())
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(
                f"{path}: expected a mapping of sections, got {type(loaded).__name__}"
            )
        raw = loaded or {}
    for override in overrides:
        _apply_override(raw, override)
    return config_from_dict(raw)


def override_config(
    config: Config, overrides: list[str] | tuple[str, ...], sections: tuple[str, ...] = ()
) -> Config:
    """A copy of `config` with `key=value` overrides applied, checked like `load_config`.

    Args:
        config: the config to start from.
        overrides: strings like `scoring.flip=true`.
        sections: when given, the only sections an override may name.

    Raises:
        ConfigError: an override names a key outside `sections`, an unknown key, or a value
            of the wrong type.
    """
    raw = config_to_dict(config)
    for override in overrides:
        section = override.partition("=")[0].strip().split(".")[0]
        if sections and section not in sections:
            allowed = ", ".join(f"{name}.*" for name in sections)
            raise ConfigError(f"override {override!r}: only {allowed} keys can be changed here")
        _apply_override(raw, override)
    return config_from_dict(raw)


def config_from_dict(raw: dict[str, Any]) -> Config:
    """Build a Config from nested plain values, checking every key and type."""
    config = _build(Config, raw, prefix="")
    if config.scoring.residual == "luminance" and config.data.intensity != "zscore":
        # NOTE: a warning, not an error: the score is defined for any intensities, but it was
        # measured only where 0 is the slice's mean, and ranked far worse on shifted ones.
        logger.warning(
            "scoring.residual luminance is meant for data.intensity zscore, got %s: "
            "its local means are compared with 0, the standardised slice's mean",
            config.data.intensity,
        )
    return config


def config_to_dict(config: Config) -> dict[str, Any]:
    """Plain nested values (tuples as lists), ready for YAML, JSON or MLflow."""
    return _plain(dataclasses.asdict(config))


def flatten_config(config: Config) -> dict[str, str]:
    """`section.key` -> value as text, for MLflow params."""
    flat: dict[str, str] = {}
    for key, value in config_to_dict(config).items():
        if isinstance(value, dict):
            for inner_key, inner_value in value.items():
                flat[f"{key}.{inner_key}"] = str(inner_value)
        else:
            flat[key] = str(value)
    return flat


def save_config(config: Config, path: str | Path) -> Path:
    """Write the resolved config as YAML and return its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config_to_dict(config), sort_keys=False))
    return path


def _apply_override(raw: dict[str, Any], override: str) -> None:
    key, separator, text = override.partition("=")
    if not separator or not key.strip():
        raise ConfigError(f"override {override!r} is not of the form section.key=value")
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"override {override!r}: value is not valid YAML ({error})") from None
    parts = key.strip().split(".")
    target = raw
    for part in parts[:-1]:
        target = target.setdefault(part, {})
        if not isinstance(target, dict):
            raise ConfigError(f"override {override!r}: {part} is not a section")
    target[parts[-1]] = value


def _build(cls: type, raw: Any, prefix: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"config section {prefix or '<root>'} must be a mapping, got {raw!r}")
    fields = {item.name: item for item in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        known = ", ".join(sorted(fields))
        name = f"{prefix}{unknown[0]}"
        raise ConfigError(f"unknown config key {name!r}; known keys here: {known}")
    values = {}
    for name, value in raw.items():
        values[name] = _coerce(hints[name], value, f"{prefix}{name}")
    return cls(**values)


def _coerce(hint: Any, value: Any, key: str) -> Any:
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, prefix=f"{key}.")
    origin = typing.get_origin(hint)
    arguments = typing.get_args(hint)
    if origin is Literal:
        if value not in arguments:
            raise ConfigError(
                f"config key {key!r}: expected one of {list(arguments)}, got {value!r}"
            )
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in arguments:
            return None
        inner = [argument for argument in arguments if argument is not type(None)]
        return _coerce(inner[0], value, key)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"config key {key!r}: expected a list, got {value!r}")
        item_hint = arguments[0]
        return tuple(_coerce(item_hint, item, key) for item in value)
    return _coerce_scalar(hint, value, key)


def _coerce_scalar(hint: Any, value: Any, key: str) -> Any:
    accepted = {bool: (bool,), int: (int,), float: (int, float), str: (str,)}.get(hint, ())
    is_bool_for_number = isinstance(value, bool) and hint is not bool
    if isinstance(value, accepted) and not is_bool_for_number:
        return float(value) if hint is float else value
    if hint is float and isinstance(value, str):
        # NOTE: YAML 1.1 reads `2e-4` (no dot) as a string; a float key accepts it anyway.
        try:
            return float(value)
        except ValueError:
            pass
    expected = getattr(hint, "__name__", str(hint))
    raise ConfigError(f"config key {key!r}: expected {expected}, got {value!r}")


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _plain(inner) for key, inner in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(inner) for inner in value]
    return value
