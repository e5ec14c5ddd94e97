"""Looking inside the trained CNN: the images to show, the NumPy forward pass checked
against Keras, Grad-CAM, and what weight sharing saves."""

import re

import keras
import numpy as np
import pandas as pd
from PIL import Image

from pipeline.common.log import PipelineError
from pipeline.evaluation.forward import LayerOutput, apply_layer, compare_with_keras
from pipeline.params import VisualizeParams
from pipeline.serving.precision import float32_copy

POOLING = ("MaxPooling2D", "AveragePooling2D", "GlobalAveragePooling2D", "Flatten")


AFTER_CONV = ("BatchNormalization", "Activation")


class ForwardMismatchError(PipelineError, RuntimeError):
    """The NumPy pass disagrees with Keras beyond the tolerance."""


class LayerChoiceError(PipelineError, ValueError):
    """`visualize.gradcam_layers` names layers the model does not have."""


def first_of_each_class(rows: pd.DataFrame, classes: list[str]) -> tuple[pd.DataFrame, list[str]]:
    """The first row of every class (in the class order) and the classes that have none."""
    chosen = rows.groupby("label", sort=False).head(1).set_index("label")
    present = [c for c in classes if c in chosen.index]
    picked = chosen.loc[present].reset_index()[["path", "label"]]
    return picked, [c for c in classes if c not in chosen.index]


def conv_representations(outputs: list[LayerOutput]) -> list[tuple[str, np.ndarray]]:
    """Each convolution's hidden representation, named after the convolution: its output
    after the batch normalisation and activation that follow it, if any (and after the
    pooling between them, where a block pools first: conv -> pool -> norm -> ReLU)."""
    stages: list[tuple[str, np.ndarray]] = []
    previous = ""  # the last layer of the current convolution's chain; "" when it broke
    for out in outputs:
        if out.kind == "Conv2D":
            stages.append((out.name, out.value))
            previous = out.kind
        elif _follows_conv(out.kind, previous):
            stages[-1] = (stages[-1][0], out.value)
            previous = out.kind
        else:
            previous = ""
    return stages


def _follows_conv(kind: str, previous: str) -> bool:
    """Whether a layer of `kind`, after one of `previous` ("" once the chain broke), is part
    of the convolution's representation."""
    if not previous:
        return False
    return kind in AFTER_CONV or (kind == "MaxPooling2D" and previous == "Conv2D")


def first_conv_activation(model: keras.Model, outputs: list[LayerOutput]) -> np.ndarray:
    """The first convolution's output after the normalisation and activation that follow it,
    at the convolution's own resolution: where the block pools first, they are applied to the
    unpooled output (per channel, the same layers), so each position keeps its response."""
    start = next(i for i, out in enumerate(outputs) if out.kind == "Conv2D")
    value, previous = outputs[start].value, "Conv2D"
    for out in outputs[start + 1 :]:
        if not _follows_conv(out.kind, previous):
            break
        if out.kind in AFTER_CONV:  # the pooling between them is left out
            value = apply_layer(model.get_layer(out.name), value)
        previous = out.kind
    return value


def block_ends(model: keras.Model) -> list[str]:
    """The last convolution of each block, Grad-CAM's default layers: by the pipeline's layer
    names (`block<b>_conv<c>`, `training.model`), which hold wherever a block pools; for a
    model named otherwise, the last convolution before each pooling (or the head)."""
    convs = [layer.name for layer in model.layers if type(layer).__name__ == "Conv2D"]
    blocks = [re.fullmatch(r"(block\d+)_conv\d+", name) for name in convs]
    if convs and all(blocks):
        return list(
            {match.group(1): name for match, name in zip(blocks, convs, strict=True)}.values()
        )
    names, last = [], None
    for layer in model.layers:
        kind = type(layer).__name__
        if kind == "Conv2D":
            last = layer.name
        elif kind in POOLING and last and last not in names:
            names.append(last)
    return names


def grad_cam_layers(model: keras.Model, cfg: VisualizeParams) -> list[str]:
    if not cfg.gradcam_layers:
        return block_ends(model)
    convs = [layer.name for layer in model.layers if type(layer).__name__ == "Conv2D"]
    unknown = [name for name in cfg.gradcam_layers if name not in convs]
    if unknown:
        raise LayerChoiceError(
            f"visualize.gradcam_layers names {unknown}, which are not convolutional layers of "
            f"the model; its convolutional layers are {convs}"
        )
    return list(cfg.gradcam_layers)


def grad_cam(
    model: keras.Model, images: np.ndarray, class_indices: np.ndarray, layers: list[str]
) -> dict[str, np.ndarray]:
    """Grad-CAM (Selvaraju et al. 2017) per layer: the layer's feature maps weighted by the
    spatial mean of the class score's gradient, ReLU, scaled to 0..1 per image.

    The score is the class's logit (before the softmax, which saturates), taken from the
    output layer's own weights.
    """
    import tensorflow as tf  # gradients are backend-specific; the model itself is not

    model = float32_copy(model)  # gradients of a mixed-precision model are coarse
    head = model.layers[-1]
    softmax_dense = type(head).__name__ == "Dense" and head.activation is keras.activations.softmax
    last = head.input if softmax_dense else model.output
    probe = keras.Model(model.input, [model.get_layer(n).output for n in layers] + [last])
    x = tf.convert_to_tensor(images)
    with tf.GradientTape() as tape:
        *maps, final = probe(x, training=False)
        scores = keras.ops.matmul(final, head.kernel) + head.bias if softmax_dense else final
        chosen = tf.gather(scores, tf.constant(class_indices), axis=1, batch_dims=1)
    gradients = tape.gradient(chosen, maps)
    cams = {}
    for name, feature, gradient in zip(layers, maps, gradients, strict=True):
        weights = tf.reduce_mean(gradient, axis=(1, 2), keepdims=True)
        cam = tf.nn.relu(tf.reduce_sum(weights * feature, axis=-1)).numpy().astype(np.float64)
        peak = cam.max(axis=(1, 2), keepdims=True)
        cams[name] = np.divide(cam, peak, out=np.zeros_like(cam), where=peak > 0)
    return cams


def upsample(maps: np.ndarray, size: int) -> np.ndarray:
    """(n, h, w) maps to (n, size, size), bilinear."""
    return np.stack(
        [
            np.asarray(
                Image.fromarray(m.astype(np.float32), mode="F").resize(
                    (size, size), Image.Resampling.BILINEAR
                )
            )
            for m in maps
        ]
    )


def weight_sharing_table(model: keras.Model) -> pd.DataFrame:
    """Parameters per layer: the CNN, and networks with the same layer widths (units per
    layer) that connect each output unit to its kernel window with weights of its own
    (locally connected) or to every unit of the layer below (fully connected). Layers without
    spatial structure (dense, batch normalisation) count the same in all three."""
    rows = []
    for layer in model.layers:
        kind = type(layer).__name__
        params = layer.count_params()
        if kind == "Conv2D":
            _, height, width, channels = layer.input.shape
            _, out_h, out_w, filters = layer.output.shape
            units = out_h * out_w * filters
            bias = 1 if layer.use_bias else 0
            window = int(np.prod(layer.kernel_size)) * channels
            local, full = units * (window + bias), units * (height * width * channels + bias)
        elif params:
            local = full = params
        else:
            continue
        rows.append(
            {
                "layer": layer.name,
                "kind": kind,
                "output_shape": "x".join(str(s) for s in layer.output.shape[1:]),
                "cnn": params,
                "locally_connected": local,
                "fully_connected": full,
            }
        )
    return pd.DataFrame(rows)


def weight_sharing_metrics(table: pd.DataFrame) -> dict[str, float]:
    convs = table[table["kind"] == "Conv2D"]
    totals = table[["cnn", "locally_connected", "fully_connected"]].sum()
    return {
        "cnn_params": int(totals["cnn"]),
        "locally_connected_params": int(totals["locally_connected"]),
        "fully_connected_params": int(totals["fully_connected"]),
        "fully_connected_ratio": float(totals["fully_connected"] / totals["cnn"]),
        "conv_params": int(convs["cnn"].sum()),
        "conv_fully_connected_params": int(convs["fully_connected"].sum()),
        "conv_fully_connected_ratio": float(convs["fully_connected"].sum() / convs["cnn"].sum()),
    }


def check_forward(
    model: keras.Model,
    images: np.ndarray,
    tolerance: float,
    outputs: list[LayerOutput] | None = None,
) -> pd.DataFrame:
    """NumPy against Keras, layer by layer; a layer beyond `tolerance` (relative to its
    largest value where that exceeds 1) stops the stage, naming it."""
    check = pd.DataFrame(compare_with_keras(model, images, outputs))
    check["allowed"] = tolerance * np.maximum(1.0, check["max_abs_value"])
    check["within_tolerance"] = check["max_abs_difference"] <= check["allowed"]
    bad = check[~check["within_tolerance"]]
    if len(bad):
        first = bad.iloc[0]
        raise ForwardMismatchError(
            f"the NumPy forward pass differs from Keras at layer {first['layer']!r} "
            f"({first['kind']}) by {first['max_abs_difference']:.3g}, more than the allowed "
            f"{first['allowed']:.3g} (visualize.tolerance = {tolerance})"
        )
    return check
