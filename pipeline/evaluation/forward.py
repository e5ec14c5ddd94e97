"""The trained CNN's forward pass in plain NumPy: the seed article's "weight matrices sliding
over the image", made exact and fast enough to run on the real model.

Every layer is a short function over (batch, height, width, channels) arrays, in float64.
A convolution is the article's picture taken literally: `sliding_window_view` lays every
kernel-sized window of the input side by side (a view, no copy), and one `einsum` takes the
dot product of each window with each filter and adds the bias. No Python loop runs over
pixels. `forward` walks a Keras model's layers with these functions and returns every
layer's output, so the pass can be checked against Keras layer by layer (tests and the
`visualize` stage do) and its hidden representations drawn.
"""

import itertools
from dataclasses import dataclass

import keras
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from pipeline.serving.precision import float32_copy


class UnsupportedLayerError(ValueError):
    """The model holds a layer (or a layer option) the NumPy pass does not implement."""


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """Zeros before and after one axis for 'same' padding: the output has ceil(size / stride)
    positions; like TensorFlow, an odd total puts the extra zero after."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def windows(
    x: np.ndarray, size: tuple[int, int], stride: tuple[int, int], padding: str, fill: float
) -> np.ndarray:
    """Every `size` window of `x` (batch, height, width, channels) that a kernel moved by
    `stride` covers: shape (batch, out_height, out_width, channels, size_h, size_w), a view.

    'valid' keeps the windows that fit inside the input; 'same' pads the borders with `fill`
    (0 for convolution, -inf for max pooling) so there are ceil(side / stride) per axis.
    """
    if padding == "same":
        pads = [same_padding(x.shape[axis], size[i], stride[i]) for i, axis in enumerate((1, 2))]
        x = np.pad(x, [(0, 0), pads[0], pads[1], (0, 0)], constant_values=fill)
    elif padding != "valid":
        raise UnsupportedLayerError(f"padding {padding!r} (only 'valid' and 'same')")
    view = sliding_window_view(x, size, axis=(1, 2))
    return view[:, :: stride[0], :: stride[1]]


def conv2d(
    x: np.ndarray, kernel: np.ndarray, bias: np.ndarray | None, stride=(1, 1), padding="valid"
) -> np.ndarray:
    """Each filter's dot product with every window, plus its bias.

    `kernel` has Keras' layout (kernel_h, kernel_w, in_channels, filters); the result is
    (batch, out_height, out_width, filters): one "hidden representation" per filter.
    """
    patches = windows(x, kernel.shape[:2], stride, padding, fill=0.0)
    out = np.einsum("bhwcij,ijcf->bhwf", patches, kernel, optimize=True)
    return out if bias is None else out + bias


def relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0.0)


def softmax(x: np.ndarray) -> np.ndarray:
    """Probabilities along the last axis (the maximum subtracted first, so exp cannot overflow)."""
    shifted = np.exp(x - x.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def max_pool2d(x: np.ndarray, size=(2, 2), stride=(2, 2), padding="valid") -> np.ndarray:
    """The largest value of each window, channel by channel."""
    return windows(x, size, stride, padding, fill=-np.inf).max(axis=(-2, -1))


def batch_norm(x: np.ndarray, gamma, beta, mean, variance, epsilon: float) -> np.ndarray:
    """Inference-mode batch normalisation: the moving statistics, per channel."""
    return (x - mean) / np.sqrt(variance + epsilon) * gamma + beta


def dense(x: np.ndarray, kernel: np.ndarray, bias: np.ndarray | None) -> np.ndarray:
    out = x @ kernel
    return out if bias is None else out + bias


def flatten(x: np.ndarray) -> np.ndarray:
    """Row by row, channels innermost: the order Keras' Flatten uses for channels-last input."""
    return x.reshape(len(x), -1)


def response_map(
    activation: np.ndarray,
    input_shape: tuple[int, int],
    kernel: tuple[int, int],
    stride=(1, 1),
    padding="valid",
) -> np.ndarray:
    """Where on the input a filter reacted: each output value added back onto every input
    pixel of the window that produced it (the article's `product_arr`).

    `activation` is (batch, out_h, out_w) for one filter; the result is (batch, height, width).
    The loop runs over the kernel's few offsets, never over pixels.
    """
    height, width = input_shape
    top = left = 0
    if padding == "same":
        top = same_padding(height, kernel[0], stride[0])[0]
        left = same_padding(width, kernel[1], stride[1])[0]
    out_h, out_w = activation.shape[1:]
    (k_h, k_w), (s_h, s_w) = kernel, stride
    padded = np.zeros((len(activation), height + k_h + s_h * out_h, width + k_w + s_w * out_w))
    for i in range(k_h):  # kernel offset (i, j) of every window at once
        for j in range(k_w):
            padded[:, i : i + s_h * out_h : s_h, j : j + s_w * out_w : s_w] += activation
    return padded[:, top : top + height, left : left + width]


ACTIVATIONS = {"linear": lambda x: x, "relu": relu, "softmax": softmax}

# Random augmentation and dropout: the identity outside training, as Keras applies them.
INFERENCE_IDENTITY = (
    "InputLayer",
    "Dropout",
    "RandomRotation",
    "RandomZoom",
    "RandomTranslation",
    "RandomFlip",
    "RandomContrast",
    "RandomErasing",
)


@dataclass(frozen=True)
class LayerOutput:
    name: str
    kind: str  # the Keras class name
    value: np.ndarray


def _activation(layer: keras.layers.Layer) -> str:
    name = keras.activations.serialize(layer.activation)
    name = name if isinstance(name, str) else name.get("config", name)
    if name not in ACTIVATIONS:
        raise UnsupportedLayerError(f"layer {layer.name!r}: activation {name!r}")
    return name


def _pair(value) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else tuple(value)


def apply_layer(layer: keras.layers.Layer, x: np.ndarray | list[np.ndarray]) -> np.ndarray:
    """One Keras layer in NumPy, with its trained weights; an unknown layer is named. `x` is
    a list for a layer of several inputs (Add, a residual block's shortcut)."""
    kind = type(layer).__name__
    weights = [np.asarray(w, dtype=np.float64) for w in layer.get_weights()]
    if kind == "Add":
        return np.sum(x, axis=0)
    if kind in INFERENCE_IDENTITY:
        return x
    if kind == "Rescaling":
        return x * float(layer.scale) + float(layer.offset)
    if kind == "Conv2D":
        if _pair(layer.dilation_rate) != (1, 1) or layer.groups != 1:
            raise UnsupportedLayerError(f"layer {layer.name!r}: dilated or grouped convolution")
        bias = weights[1] if layer.use_bias else None
        out = conv2d(x, weights[0], bias, _pair(layer.strides), layer.padding)
        return ACTIVATIONS[_activation(layer)](out)
    if kind == "BatchNormalization":
        gamma = weights.pop(0) if layer.scale else 1.0
        beta = weights.pop(0) if layer.center else 0.0
        mean, variance = weights
        return batch_norm(x, gamma, beta, mean, variance, layer.epsilon)
    if kind == "Activation":
        return ACTIVATIONS[_activation(layer)](x)
    if kind == "MaxPooling2D":
        return max_pool2d(x, _pair(layer.pool_size), _pair(layer.strides), layer.padding)
    if kind == "Flatten":
        return flatten(x)
    if kind == "GlobalAveragePooling2D":
        return x.mean(axis=(1, 2), keepdims=bool(layer.keepdims))
    if kind == "Dense":
        bias = weights[1] if layer.use_bias else None
        return ACTIVATIONS[_activation(layer)](dense(x, weights[0], bias))
    raise _outside(layer)


def _outside(layer: keras.layers.Layer) -> UnsupportedLayerError:
    return UnsupportedLayerError(
        f"layer {layer.name!r} ({type(layer).__name__}) is outside the NumPy forward pass, "
        "which covers the pipeline's own CNN (convolution, batch normalisation, residual "
        "addition, pooling, dense, softmax)"
    )


SUPPORTED = (
    *INFERENCE_IDENTITY,
    "Rescaling",
    "Conv2D",
    "BatchNormalization",
    "Activation",
    "MaxPooling2D",
    "Flatten",
    "GlobalAveragePooling2D",
    "Dense",
    "Add",
)


def _inputs(layer: keras.layers.Layer) -> list:
    return list(layer.input) if isinstance(layer.input, list | tuple) else [layer.input]


def check_graph(model: keras.Model) -> list[keras.layers.Layer]:
    """The model's layers in order, once each is known to be one the pass implements and to
    take only outputs of the layers before it: a chain, with residual shortcuts that an Add
    joins back in; one input and one output."""
    layers = model.layers
    for layer in layers:
        if type(layer).__name__ not in SUPPORTED:
            raise _outside(layer)
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise UnsupportedLayerError(
            f"model {model.name!r} has {len(model.inputs)} inputs and {len(model.outputs)} "
            "outputs: the NumPy forward pass follows a model of one input and one output"
        )
    seen = {id(layers[0].output)}
    for previous, layer in itertools.pairwise(layers):
        missing = [t for t in _inputs(layer) if id(t) not in seen]
        if missing:
            raise UnsupportedLayerError(
                f"layer {layer.name!r} takes a tensor that no layer up to {previous.name!r} "
                "made: the NumPy forward pass follows the layers in order"
            )
        seen.add(id(layer.output))
    return layers


def forward(model: keras.Model, images: np.ndarray) -> list[LayerOutput]:
    """Every layer's output for a batch of images (as the model takes them), in order."""
    layers = check_graph(model)
    values = {id(layers[0].output): np.asarray(images, dtype=np.float64)}
    outputs = []
    for layer in layers[1:]:  # after the InputLayer
        given = [values[id(t)] for t in _inputs(layer)]
        x = apply_layer(layer, given if len(given) > 1 else given[0])
        values[id(layer.output)] = x
        outputs.append(LayerOutput(layer.name, type(layer).__name__, x))
    return outputs


def keras_layer_outputs(model: keras.Model, images: np.ndarray) -> dict[str, np.ndarray]:
    """The same layers' outputs computed by Keras (inference mode), for the comparison."""
    layers = [layer for layer in model.layers if type(layer).__name__ != "InputLayer"]
    probe = keras.Model(model.input, [layer.output for layer in layers])
    values = probe(images, training=False)
    return {
        layer.name: np.asarray(keras.ops.convert_to_numpy(value), dtype=np.float64)
        for layer, value in zip(layers, values, strict=True)
    }


def compare_with_keras(
    model: keras.Model, images: np.ndarray, outputs: list[LayerOutput] | None = None
) -> list[dict]:
    """Layer by layer: the largest absolute difference between NumPy's and Keras' outputs
    (a mixed-precision model computed in float32), and the largest output value (for scale).
    `outputs`: the NumPy pass already run on `images`, if the caller has it."""
    outputs = forward(model, images) if outputs is None else outputs
    theirs = keras_layer_outputs(float32_copy(model), images)
    rows = []
    for ours in outputs:
        if ours.name not in theirs:
            continue  # the input layer
        difference = np.abs(ours.value - theirs[ours.name])
        rows.append(
            {
                "layer": ours.name,
                "kind": ours.kind,
                "shape": "x".join(str(s) for s in ours.value.shape[1:]),
                "max_abs_difference": float(difference.max()),
                "max_abs_value": float(np.abs(theirs[ours.name]).max()),
            }
        )
    return rows
