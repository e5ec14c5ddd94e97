"""Stage `visualize`: look inside the trained CNN with the NumPy forward pass.

For the first test image of every class (manifest order), the stage runs the model in NumPy
(`pipeline.forward`), checks every layer against Keras (the stage fails above
`visualize.tolerance`), and draws: the first layer's filters; where each of them responded
on each image (the seed article's picture); the feature maps of every convolutional layer;
and Grad-CAM for the predicted class. A weight-sharing table sets the CNN's parameter count
against a locally connected and a fully connected network with the same layer widths. All of
it goes to `reports/visualize/` and into the model's MLflow run.

A model the NumPy pass does not cover (a Keras Applications base from `train.transfer`) gets
a report that says so and names the layer; the stage does not fail.
"""

from pathlib import Path

import keras
import mlflow
import numpy as np
import pandas as pd
from PIL import Image

from pipeline import CUDA_INIT_FAILED, native_stderr, tracking
from pipeline.cnn_figures import (
    feature_maps_figure,
    filters_figure,
    grad_cam_figure,
    responses_figure,
    weight_sharing_figure,
)
from pipeline.dataset import image_dataset, label_indices, read_classes, read_split
from pipeline.evaluate import load_checked_model, metric_key
from pipeline.files import staged_dir, write_csv, write_json
from pipeline.forward import (
    LayerOutput,
    UnsupportedLayerError,
    check_chain,
    compare_with_keras,
    float32_copy,
    forward,
    response_map,
)
from pipeline.html_report import visualization_report
from pipeline.params import VisualizeParams, load_params, load_raw_params
from pipeline.paths import (
    LABELS_FILE,
    MODEL_FILE,
    MODEL_LABELS_FILE,
    ROOT,
    RUN_FILE,
    SPLIT_DIR,
    VISUALIZE_CHECK_CSV,
    VISUALIZE_DIR,
    VISUALIZE_METRICS,
    VISUALIZE_PICTURES,
    VISUALIZE_REPORT,
    WEIGHT_SHARING_CSV,
)
from pipeline.plots import save_figure

POOLING = ("MaxPooling2D", "AveragePooling2D", "GlobalAveragePooling2D", "Flatten")
AFTER_CONV = ("BatchNormalization", "Activation")


class ForwardMismatchError(RuntimeError):
    """The NumPy pass disagrees with Keras beyond the tolerance."""


def first_of_each_class(rows: pd.DataFrame, classes: list[str]) -> tuple[pd.DataFrame, list[str]]:
    """The first row of every class (in the class order) and the classes that have none."""
    chosen = rows.groupby("label", sort=False).head(1).set_index("label")
    present = [c for c in classes if c in chosen.index]
    picked = chosen.loc[present].reset_index()[["path", "label"]]
    return picked, [c for c in classes if c not in chosen.index]


def load_images(
    rows: pd.DataFrame, classes: list[str], image_size: int, channels: int, root: Path = SPLIT_DIR
) -> np.ndarray:
    """The images exactly as training and evaluation decode them (uint8, model size)."""
    data = image_dataset(rows, classes, image_size, channels, len(rows), root=root, cache="off")
    return np.concatenate([x.numpy() for x, _ in data])


def conv_representations(outputs: list[LayerOutput]) -> list[tuple[str, np.ndarray]]:
    """Each convolution's hidden representation, named after the convolution: its output
    after the batch normalisation and activation that follow it, if any."""
    stages: list[tuple[str, np.ndarray]] = []
    following = False
    for out in outputs:
        if out.kind == "Conv2D":
            stages.append((out.name, out.value))
            following = True
        elif following and out.kind in AFTER_CONV:
            stages[-1] = (stages[-1][0], out.value)
        else:
            following = False
    return stages


def block_ends(model: keras.Model) -> list[str]:
    """The last convolution before each pooling (or the head): Grad-CAM's default layers."""
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
        raise ValueError(
            f"visualize.gradcam_layers names {unknown}, which are not convolutional layers of "
            f"{MODEL_FILE.name}; its convolutional layers are {convs}"
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
            np.asarray(Image.fromarray(m.astype(np.float32), mode="F").resize(
                (size, size), Image.Resampling.BILINEAR))
            for m in maps
        ]
    )  # fmt: skip


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


def draw(
    model: keras.Model,
    images: np.ndarray,
    captions: list[str],
    outputs: list[LayerOutput],
    cams: dict[str, np.ndarray],
    sharing: pd.DataFrame,
    labels: list[str],
    cfg: VisualizeParams,
    folder: Path,
) -> tuple[dict[str, Path], list[int]]:
    """Every picture into `folder`; returns them by name, and the first-layer filters (from 1)
    that respond nowhere on these images."""
    convs = [layer for layer in model.layers if type(layer).__name__ == "Conv2D"]
    first = convs[0]
    kernel, *rest = (np.asarray(w, dtype=np.float64) for w in first.get_weights())
    bias = rest[0] if first.use_bias else None
    stages = conv_representations(outputs)
    activation = stages[0][1]  # (n, h, w, filters), after ReLU
    n, out_h, out_w, count = activation.shape
    flat = np.moveaxis(activation, -1, 1).reshape(n * count, out_h, out_w)
    strides = tuple(first.strides)
    responses = response_map(flat, images.shape[1:3], kernel.shape[:2], strides, first.padding)
    responses = responses.reshape(n, count, *images.shape[1:3])

    silent = [f + 1 for f in range(count) if not responses[:, f].any()]
    pictures = {
        "filters": folder / "filters.png",
        "responses": folder / "filter_responses.png",
        "grad_cam": folder / "grad_cam.png",
        "weight_sharing": folder / "weight_sharing.png",
    }
    save_figure(filters_figure(kernel, bias, first.name), pictures["filters"])
    save_figure(
        responses_figure(list(images), captions, responses, kernel, first.name),
        pictures["responses"],
    )
    size = images.shape[1]
    sizes = {name: model.get_layer(name).output.shape[1:3] for name in cams}
    save_figure(
        grad_cam_figure(
            list(images), captions, {k: upsample(v, size) for k, v in cams.items()}, sizes
        ),
        pictures["grad_cam"],
    )
    save_figure(weight_sharing_figure(sharing), pictures["weight_sharing"])
    for i, (image, caption, label) in enumerate(zip(images, captions, labels, strict=True)):
        path = folder / "feature_maps" / f"class_{i:03d}_{metric_key(label)}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        layers = [(name, value[i]) for name, value in stages]
        save_figure(feature_maps_figure(image, caption, layers, cfg.feature_maps), path)
        pictures[f"feature_maps {label}"] = path
    return pictures, silent


def main() -> None:
    params = load_params()
    base, cfg = params.base, params.visualize
    classes = read_classes(LABELS_FILE)
    with native_stderr(CUDA_INIT_FAILED):
        model = load_checked_model(MODEL_FILE, MODEL_LABELS_FILE, classes)
    picked, without = first_of_each_class(read_split("test"), classes)
    run_id = tracking.read_run_id(RUN_FILE)
    model_file = MODEL_FILE.relative_to(ROOT).as_posix()
    metrics: dict = {"classes_shown": len(picked), "classes_without_test_image": without}
    check = pd.DataFrame()
    sharing = pd.DataFrame()
    pictures: dict[str, Path] = {}
    unsupported = ""

    with staged_dir(VISUALIZE_PICTURES) as folder:
        try:
            check_chain(model)  # every layer one the NumPy pass implements, in one chain
        except UnsupportedLayerError as error:
            unsupported = str(error)
            (folder / "NOT_AVAILABLE.txt").write_text(
                f"No pictures for {model_file}: {unsupported}\n", encoding="utf-8"
            )
        if not unsupported:
            images = load_images(picked, classes, base.image_size, base.channels)
            outputs = forward(model, images)
            check = check_forward(model, images, cfg.tolerance, outputs)
            probabilities = outputs[-1].value
            predicted = probabilities.argmax(axis=1)
            true = np.array(label_indices(picked["label"], classes))
            captions = [
                f"true {classes[t]}\npredicted {classes[p]} ({probabilities[i, p]:.0%})"
                for i, (t, p) in enumerate(zip(true, predicted, strict=True))
            ]
            cams = grad_cam(model, images, predicted, grad_cam_layers(model, cfg))
            sharing = weight_sharing_table(model)
            pictures, silent = draw(
                model, images, captions, outputs, cams, sharing, list(picked["label"]), cfg, folder
            )
            pictures = {k: VISUALIZE_PICTURES / p.relative_to(folder) for k, p in pictures.items()}
            metrics |= {
                "forward_max_abs_difference": float(check["max_abs_difference"].max()),
                "forward_layers_checked": len(check),
                "weight_sharing": weight_sharing_metrics(sharing),
                "correct_of_shown": int((predicted == true).sum()),
                "first_layer_silent_filters": len(silent),
                "first_layer_silent_filter_numbers": silent,
            }

    write_csv(check, VISUALIZE_CHECK_CSV, float_format="%.3g")
    write_csv(sharing, WEIGHT_SHARING_CSV)
    write_json(VISUALIZE_METRICS, metrics)
    VISUALIZE_REPORT.write_text(
        visualization_report(
            model_file=model_file,
            run_id=run_id,
            metrics=metrics,
            check=check,
            sharing=sharing,
            pictures=pictures,
            unsupported=unsupported,
            tolerance=cfg.tolerance,
        ),
        encoding="utf-8",
    )

    with tracking.tracked_run(tracking.configure(), run_id=run_id):
        mlflow.log_params(tracking.flatten_params({"visualize": load_raw_params()["visualize"]}))
        flat = {f"visualize_{k}": v for k, v in metrics.items() if isinstance(v, int | float)}
        flat |= {f"weight_sharing_{k}": v for k, v in metrics.get("weight_sharing", {}).items()}
        mlflow.log_metrics(flat)
        tracking.log_folder(VISUALIZE_DIR, "reports/visualize")

    if unsupported:
        print(f"visualize: no pictures for {model_file}: {unsupported}")
        return
    shared = metrics["weight_sharing"]
    print(
        f"visualize: NumPy forward pass matches Keras on {len(check)} layers (largest difference "
        f"{metrics['forward_max_abs_difference']:.2g}); {len(pictures)} pictures for "
        f"{len(picked)} classes"
        + (f" (no test image for {without})" if without else "")
        + f"; {shared['cnn_params']:,} parameters against {shared['fully_connected_params']:,} "
        f"fully connected; report {VISUALIZE_REPORT.relative_to(ROOT)} (MLflow run {run_id})"
    )


if __name__ == "__main__":
    main()
