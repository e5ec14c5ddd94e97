"""Typed, validated view of `params.yaml`: the types and bounds of its keys only; the file
itself explains what each key does and what `auto` resolves to.

The file is parsed once, before any work: an unknown key, a wrong type or an out-of-range value
stops the stage with a message naming the key, instead of failing halfway through training.
"""

import re
from pathlib import Path
from typing import Annotated, Literal, Self

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from pipeline.common.log import PipelineError
from pipeline.common.names import registered_model_name
from pipeline.paths import PARAMS_FILE

# split.max_image_pixels' bound (params.yaml says why); imagedata.images.PILLOW_PIXEL_LIMIT,
# tested equal
PILLOW_PIXEL_LIMIT = 178_956_970


class ParamsError(PipelineError, ValueError):
    """`params.yaml` is missing, unreadable or holds a bad value."""


class _Section(BaseModel):
    # strict: a quoted number ("0.003") is not a number, nor is true; NaN and infinity are no
    # value at all. Unknown keys are refused.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


AUTO = "auto"


class BaseParams(_Section):
    """Types and constraints of params.yaml's `base:` section; params.yaml explains each key."""

    seed: int = Field(ge=0)
    image_size: Literal["auto"] | Annotated[int, Field(ge=8, le=1024)]
    channels: Literal["auto", 1, 3]


class IngestParams(_Section):
    """Types and constraints of params.yaml's `ingest:`; params.yaml explains each key."""

    source: str = Field(min_length=1)
    classes: list[str] = []

    @field_validator("classes", mode="before")
    @classmethod
    def _names(cls, value: object) -> object:
        return [str(v) for v in value] if isinstance(value, list) else value


class SplitParams(_Section):
    """Types and constraints of params.yaml's `split:`; params.yaml explains each key."""

    validation: float = Field(gt=0, lt=1)
    test: float = Field(gt=0, lt=1)
    small_classes: Literal["error", "train_only", "drop"]
    conflicting_labels: Literal["exclude", "error"]
    max_rejected_fraction: float = Field(ge=0, le=1)
    max_image_pixels: int = Field(ge=1, le=PILLOW_PIXEL_LIMIT)
    near_duplicate_distance: int = Field(ge=0, le=64)
    near_duplicate_correlation: float = Field(gt=0, le=1)
    inseparable_groups: Literal["error", "train_only", "split"]
    min_images_per_split: int = Field(ge=1)
    class_fraction_tolerance: float = Field(gt=0, lt=1)
    min_image_size: int = Field(ge=1)
    max_image_size: int = Field(ge=1)
    jpeg_quality: int = Field(ge=1, le=100)
    background: Annotated[  # a YAML list of three (the values themselves strict)
        tuple[
            Annotated[int, Field(ge=0, le=255, strict=True)],
            Annotated[int, Field(ge=0, le=255, strict=True)],
            Annotated[int, Field(ge=0, le=255, strict=True)],
        ],
        Field(strict=False),
    ]

    @model_validator(mode="after")
    def _leaves_training_data(self) -> Self:
        if self.validation + self.test >= 1:
            raise ValueError(
                f"validation + test = {self.validation + self.test:g} must stay below 1 "
                "so that some images are left for training"
            )
        if self.min_image_size > self.max_image_size:
            raise ValueError(
                f"min_image_size = {self.min_image_size} is above "
                f"max_image_size = {self.max_image_size}"
            )
        return self

    @property
    def fractions(self) -> dict[str, float]:
        return {
            "train": 1 - self.validation - self.test,
            "validation": self.validation,
            "test": self.test,
        }


class ValidateParams(_Section):
    """Types and constraints of params.yaml's `validate:`; params.yaml explains each key."""

    fraction_tolerance: float = Field(gt=0, lt=1)
    max_near_duplicate_share: float = Field(ge=0, le=1)
    max_class_imbalance: float = Field(ge=1)
    class_imbalance: Literal["report", "error"]
    given_split_leaks: Literal["report", "error"]


class OptimizerParams(_Section):
    """Types and constraints of `train.optimizer`; params.yaml explains each key."""

    learning_rate: float = Field(gt=0)
    schedule: Literal["inverse_time", "cosine", "warmup_cosine", "plateau", "constant"]
    decay_rate: float = Field(ge=0)
    decay_steps: int = Field(ge=1)
    warmup_epochs: float = Field(ge=0)
    plateau_factor: float = Field(gt=0, lt=1)
    plateau_patience: int = Field(ge=1)
    weight_decay: float = Field(ge=0, lt=1)
    ema_momentum: float = Field(ge=0, lt=1)


class AugmentationParams(_Section):
    """Types and constraints of `train.augmentation`; params.yaml explains each key."""

    rotation: float = Field(ge=0, le=0.5)
    zoom: float = Field(ge=0, lt=1)
    translation: float = Field(ge=0, lt=1)
    flip: Literal["none", "horizontal", "vertical", "horizontal_and_vertical"]
    contrast: float = Field(ge=0, lt=1)
    erasing: float = Field(ge=0, le=1)
    mixup: float = Field(ge=0)
    cutmix: float = Field(ge=0)


class DeviceParams(_Section):
    """Types and constraints of `train.device`; params.yaml explains each key."""

    mixed_precision: Literal["auto", "float32", "mixed_float16", "mixed_bfloat16"]
    jit_compile: Literal["auto", "on", "off"]
    memory_growth: Literal["auto", "on", "off"]


class ModelParams(_Section):
    """Types and constraints of `train.model`; params.yaml explains each key."""

    filters: list[int] = Field(min_length=1)
    convs_per_block: Annotated[int, Field(ge=1)] | list[Annotated[int, Field(ge=1)]]
    kernel_size: int = Field(ge=1)
    padding: Literal["valid", "same"]
    pool_size: int = Field(ge=1)
    pool: Literal["after_block", "after_first_conv"] = "after_block"
    dense_units: list[int]
    batch_norm: bool
    dropout: float = Field(ge=0, lt=1)
    head: Literal["flatten", "global_average"]
    residual: bool

    @model_validator(mode="after")
    def _positive_widths(self) -> Self:
        for name in ("filters", "dense_units"):
            if any(width < 1 for width in getattr(self, name)):
                raise ValueError(f"every entry of {name} must be at least 1")
        if isinstance(self.convs_per_block, list) and len(self.convs_per_block) != len(
            self.filters
        ):
            raise ValueError(
                f"convs_per_block has {len(self.convs_per_block)} entries for "
                f"{len(self.filters)} blocks (filters): give one count, or one per block"
            )
        if self.residual and self.padding != "same":
            raise ValueError(
                "residual: true needs padding: same (a shortcut adds a convolution's input to "
                "its output, which 'valid' padding makes smaller)"
            )
        return self

    @property
    def convs(self) -> list[int]:
        """The convolution count of each block."""
        counts = self.convs_per_block
        return list(counts) if isinstance(counts, list) else [counts] * len(self.filters)

    def min_input_size(self, last_map: int = 1) -> int:
        """The smallest square input that leaves the last feature map at least
        `last_map` x `last_map`."""
        return next(size for size in range(1, 4097) if self.output_size(size) >= last_map)

    def output_size(self, image_size: int) -> int:
        """Height (= width) of the last feature map for a square input, 0 if it vanishes."""
        size = image_size
        shrink = self.kernel_size - 1 if self.padding == "valid" else 0
        for convs in self.convs:
            if self.pool == "after_first_conv":
                size = (size - shrink) // self.pool_size - (convs - 1) * shrink
            else:
                size = (size - convs * shrink) // self.pool_size
            if size < 1:
                return 0
        return size


class PhaseParams(_Section):
    """One entry of `train.transfer.phases`; params.yaml explains each key."""

    epochs: int = Field(ge=1)
    unfreeze: int = Field(ge=0)
    learning_rate: float = Field(gt=0)


MIN_BASE_SIZE = 32  # the smallest input keras.applications' architectures take
AUTO_BASE = "efficientnet_lite0"  # train.transfer.base auto's pretrained base
BASES = (
    "efficientnet_lite0",
    "mobilenet_v2",
    "mobilenet_v3_small",
    "efficientnet_b0",
    "resnet50",
    "vgg16",
)


class TransferParams(_Section):
    """Types and constraints of `train.transfer`; params.yaml explains each key."""

    base: Literal["auto", "none", "pipeline", *BASES]
    weights: str = Field(min_length=1)
    dense_units: list[Annotated[int, Field(ge=1)]]
    dropout: float = Field(ge=0, lt=1)
    schedule: Literal["manual", "auto"]
    phases: list[PhaseParams]
    patience: int = Field(ge=1)
    learning_rate_factor: float = Field(gt=0, le=1)

    @model_validator(mode="after")
    def _complete(self) -> Self:
        if self.schedule == "manual" and not self.phases:
            raise ValueError("schedule manual needs at least one entry in phases")
        if self.base == "pipeline" and self.weights in ("imagenet", "none"):
            raise ValueError(
                "base pipeline needs weights: the earlier model's .keras file or MLflow URI"
            )
        return self


class EarlyStoppingParams(_Section):
    """Types and constraints of `train.early_stopping`; params.yaml explains each key."""

    monitor: Literal["val_loss", "val_accuracy"]
    patience: int = Field(ge=1)
    restore_best_weights: bool
    start_from_epoch: Literal["auto"] | Annotated[int, Field(ge=0)]


class TrainParams(_Section):
    """Types and constraints of params.yaml's `train:`; params.yaml explains each key."""

    epochs: Literal["auto"] | Annotated[int, Field(ge=1)]
    label_smoothing: float = Field(ge=0, lt=1)
    test_time_views: Literal["auto", "none", "flip", "shift", "flip_shift"] = "none"
    batch_size: Literal["auto"] | Annotated[int, Field(ge=1)]
    batch_size_scope: Literal["global", "replica"]
    distribute: Literal["auto", "none", "mirrored", "multi_worker"]
    scale_learning_rate: Literal["none", "linear", "sqrt"]
    deterministic: bool
    cache: Literal["auto", "memory", "disk", "off"]
    class_weight: Literal["none", "balanced", "auto"]
    registered_model: str = Field(min_length=1, pattern=r"^[^/@:]+$")
    allow_failed_validation: bool
    optimizer: OptimizerParams
    augmentation: AugmentationParams
    model: ModelParams
    early_stopping: EarlyStoppingParams
    device: DeviceParams
    transfer: TransferParams

    @field_validator("registered_model")
    @classmethod
    def _a_name_mlflow_takes(cls, name: str) -> str:
        # mlflow.utils.validation._validate_model_name's rule (params.yaml states it); the
        # field's pattern refuses '/' and ':', and '@', which starts an alias in a models:/ URI
        if not name.strip() or name in (".", "..") or name != name.strip():
            raise ValueError(
                f"{name!r} is not a name MLflow's model registry takes (blank, '.', '..' or "
                "space at either end)"
            )
        return name


class EvaluateParams(_Section):
    """Types and constraints of params.yaml's `evaluate:`; params.yaml explains each key."""

    batch_size: int = Field(ge=1)
    tta: Literal["none", "flip", "shift", "flip_shift"]
    top_k: int = Field(ge=2)
    calibration_bins: int = Field(ge=2, le=100)
    gallery_size: int = Field(ge=0)
    promote_on: Literal[
        "macro_f1", "accuracy", "weighted_f1", "log_loss", "expected_calibration_error"
    ]


IMAGE_CHECKS = (
    "dark",
    "light",
    "blurry",
    "low_information",
    "odd_size",
    "odd_aspect_ratio",
    "grayscale",
    "exact_duplicates",
    "near_duplicates",
)  # cleanvision's


class AuditParams(_Section):
    """Types and constraints of params.yaml's `audit:`; params.yaml explains each key."""

    folds: int = Field(ge=2, le=20)
    epochs: Literal["auto"] | Annotated[int, Field(ge=1)]
    batch_size: Literal["auto"] | Annotated[int, Field(ge=1)]
    image_size: Literal["auto"] | Annotated[int, Field(ge=8, le=256)]
    filters: list[Annotated[int, Field(ge=1)]] = Field(min_length=1, max_length=4)
    learning_rate: float = Field(gt=0, le=1)
    precision: Literal["auto", "float32", "mixed_bfloat16", "mixed_float16"]
    filter_by: Literal[
        "prune_by_noise_rate",
        "prune_by_class",
        "both",
        "confident_learning",
        "predicted_neq_given",
        "low_normalized_margin",
        "low_self_confidence",
    ]
    rank_by: Literal["self_confidence", "normalized_margin", "confidence_weighted_entropy"]
    image_checks: list[Literal[IMAGE_CHECKS]]  # type: ignore[valid-type]
    review_size: int = Field(ge=1)

    @model_validator(mode="after")
    def _fits(self) -> Self:
        if self.image_size != AUTO and self.image_size < 2 ** len(self.filters):
            raise ValueError(
                f"image_size = {self.image_size} is too small for {len(self.filters)} blocks "
                f"of 2x2 pooling (filters): it takes {2 ** len(self.filters)} or more"
            )
        if len(set(self.image_checks)) != len(self.image_checks):
            raise ValueError("image_checks names a check twice")
        return self


EXPORT_FORMATS = ("onnx", "tflite", "tflite_int8", "saved_model")


class ExportParams(_Section):
    """Types and constraints of params.yaml's `export:`; params.yaml explains each key."""

    formats: list[Literal[EXPORT_FORMATS]]  # type: ignore[valid-type]
    calibration_images: int = Field(ge=1)
    int8_max_accuracy_drop: float = Field(ge=0, le=1)
    max_probability_difference: float = Field(gt=0, le=1)
    batch_size: int = Field(ge=1)

    @model_validator(mode="after")
    def _once(self) -> Self:
        if len(set(self.formats)) != len(self.formats):
            raise ValueError("formats names a format twice")
        return self


class CardParams(_Section):
    """Types and constraints of params.yaml's `card:`; params.yaml explains each key."""

    intended_use: str


class VisualizeParams(_Section):
    """Types and constraints of params.yaml's `visualize:`; params.yaml explains each key."""

    feature_maps: int = Field(ge=1, le=64)
    gradcam_layers: list[str]
    tolerance: float = Field(gt=0, lt=1)


class Params(_Section):
    """The whole of params.yaml, and the constraints between its sections."""

    base: BaseParams
    ingest: IngestParams
    split: SplitParams
    validate_: ValidateParams = Field(alias="validate")
    train: TrainParams
    audit: AuditParams
    evaluate: EvaluateParams
    export: ExportParams
    card: CardParams
    visualize: VisualizeParams

    @property
    def registered_model(self) -> str:
        """The registered model this training is kept under (`train.registered_model`)."""
        ingest = self.ingest
        return registered_model_name(self.train.registered_model, ingest.source, ingest.classes)

    @model_validator(mode="after")
    def _image_fits_architecture(self) -> Self:
        transfer = self.train.transfer
        size = self.base.image_size
        if transfer.base in BASES and self.base.channels == 1:
            raise ValueError(
                f"train.transfer.base = {transfer.base} takes RGB images: set base.channels: 3"
            )
        if transfer.base in BASES and size != AUTO and size < MIN_BASE_SIZE:
            raise ValueError(
                f"train.transfer.base = {transfer.base} needs base.image_size of at least "
                f"{MIN_BASE_SIZE}"
            )
        if transfer.schedule == "manual" and transfer.base != "none":
            planned = sum(phase.epochs for phase in transfer.phases)
            if self.train.epochs != AUTO and planned > self.train.epochs:
                raise ValueError(
                    f"train.transfer.phases add up to {planned} epochs, more than "
                    f"train.epochs = {self.train.epochs} (the cap on every schedule)"
                )
        scratch = transfer.base in ("none", AUTO)  # auto may train train.model from scratch
        if scratch and size != AUTO and self.train.model.output_size(size) < 1:
            raise ValueError(
                f"base.image_size = {size} is too small for train.model: "
                f"{len(self.train.model.filters)} blocks of {self.train.model.convs_per_block} "
                f"{self.train.model.padding} {self.train.model.kernel_size}x"
                f"{self.train.model.kernel_size} convolutions and {self.train.model.pool_size}x"
                f"{self.train.model.pool_size} pooling shrink it to nothing (it takes "
                f"{self.train.model.min_input_size()} or more)"
            )
        return self


# how pydantic names the branches of a union such as `"auto" | int` in an error's location
UNION_BRANCH = re.compile(r"^(literal\[.*\]|list\[.*\]|constrained-\w+|int|float|str)$")


def _describe(error: ValidationError) -> str:
    """One line per bad key; a union's branches (`auto` or a number) in one line, joined."""
    messages: dict[str, list[str]] = {}
    for item in error.errors():
        parts = [str(part) for part in item["loc"] if not UNION_BRANCH.match(str(part))]
        messages.setdefault(".".join(parts) or "(top level)", []).append(item["msg"])
    return "\n".join(f"  {key}: {' or '.join(found)}" for key, found in messages.items())


def parse_params(raw: object, source: str = "params.yaml") -> Params:
    """Validate a parsed params mapping; raise ParamsError naming every bad key."""
    if not isinstance(raw, dict):
        raise ParamsError(f"{source}: expected a mapping of sections, got {type(raw).__name__}")
    try:
        return Params.model_validate(raw)
    except ValidationError as error:
        raise ParamsError(f"{source} has bad values:\n{_describe(error)}") from None


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (plain YAML keeps the
    last one silently, so an edit higher up would be overridden without a word)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"key {key!r} appears twice (first {seen[key]})",
                    key_node.start_mark,
                )
            seen[key] = str(key_node.start_mark).strip()
        return super().construct_mapping(node, deep)


def safe_yaml(text: str) -> object:
    """YAML data, with every mapping's keys unique (`_UniqueKeyLoader`)."""
    return yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader: no Python objects


def read_yaml(path: Path) -> object:
    """A YAML file's data; a missing or unparsable file, or one with a key given twice, is a
    ParamsError naming it."""
    try:
        return safe_yaml(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ParamsError(f"{path}: file not found") from None
    except yaml.YAMLError as error:
        raise ParamsError(f"{path}: not valid YAML: {error}") from None


def set_param(params: dict, key: str, value: object) -> dict:
    """`params` with the dotted `key` set; the key must already exist in params.yaml."""
    *parents, leaf = key.split(".")
    node = params
    for i, part in enumerate(parents):
        node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, dict):
            raise ParamsError(
                f"unknown param {key}: params.yaml has no {'.'.join(parents[: i + 1])}"
            )
    if leaf not in node:
        under = f" under {'.'.join(parents)}" if parents else ""
        raise ParamsError(f"unknown param {key}: params.yaml has no {leaf}{under}")
    node[leaf] = value
    return params


def set_params(params: dict, settings: list[str]) -> dict:
    """`params` with each `key=value` of `settings` set (`set_param`; the value read as
    YAML, so `3`, `0.5`, `[48, 96]` and `mixed_bfloat16` take their types)."""
    for item in settings:
        key, value = item.split("=", 1)
        set_param(params, key.strip(), yaml.safe_load(value))
    return params


def load_params(path: Path = PARAMS_FILE) -> Params:
    """Read and validate `params.yaml`."""
    return parse_params(read_yaml(path), source=str(path))


def load_raw_params(path: Path = PARAMS_FILE) -> dict:
    """The params file as plain data, for logging it whole."""
    return read_yaml(path)
