"""Stage `visualize`: look inside the trained CNN with the NumPy forward pass.

For the first test image of every class (manifest order), the stage runs the model in NumPy
(`pipeline.evaluation.forward`), checks every layer against Keras (the stage fails above
`visualize.tolerance`), and draws: the first layer's filters; where each of them responded
on each image (the seed article's picture); the feature maps of every convolutional layer;
and Grad-CAM for the predicted class. A weight-sharing table sets the CNN's parameter count
against a locally connected and a fully connected network with the same layer widths. All of
it goes to `reports/visualize/` and into the model's MLflow run.

A model the NumPy pass does not cover (a Keras Applications base from `train.transfer`) gets
a report that says so and names the layer; the stage does not fail.
"""

import logging
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from pipeline.common.files import staged_dir, write_csv, write_json
from pipeline.common.log import run_stage
from pipeline.common.names import metric_key
from pipeline.common.native import CUDA_INIT_FAILED, native_stderr
from pipeline.contracts import read_labels, read_run_record
from pipeline.evaluation.forward import (
    LayerOutput,
    UnsupportedLayerError,
    check_graph,
    forward,
    response_map,
)
from pipeline.evaluation.inspection import (
    check_forward,
    conv_representations,
    first_conv_activation,
    first_of_each_class,
    grad_cam,
    grad_cam_layers,
    upsample,
    weight_sharing_metrics,
    weight_sharing_table,
)
from pipeline.imagedata.dataset import label_indices, load_images, read_split
from pipeline.params import VisualizeParams, load_params, load_raw_params
from pipeline.paths import (
    LABELS_FILE,
    MODEL_FILE,
    MODEL_LABELS_FILE,
    ROOT,
    RUN_FILE,
    VISUALIZE_CHECK_CSV,
    VISUALIZE_DIR,
    VISUALIZE_METRICS,
    VISUALIZE_PICTURES,
    VISUALIZE_REPORT,
    WEIGHT_SHARING_CSV,
)
from pipeline.reporting.cnn_figures import (
    feature_maps_figure,
    filters_figure,
    grad_cam_figure,
    responses_figure,
    weight_sharing_figure,
)
from pipeline.reporting.html import visualization_report, write_page
from pipeline.reporting.plots import save_figure
from pipeline.serving.inference import load_checked
from pipeline.tracking.results import log_visualization

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Shown:
    """The test images shown, one a class: the pixels, each one's caption and class."""

    images: np.ndarray
    captions: list[str]
    labels: list[str]


@dataclass(frozen=True)
class Seen:
    """What the model did with them: every layer's output (the NumPy pass), Grad-CAM maps by
    layer, and the weight-sharing table."""

    outputs: list[LayerOutput]
    cams: dict[str, np.ndarray]
    sharing: pd.DataFrame


def draw(
    model: keras.Model, shown: Shown, seen: Seen, cfg: VisualizeParams, folder: Path
) -> tuple[dict[str, Path], list[int]]:
    """Every picture into `folder`; returns them by name, and the first-layer filters (from 1)
    that respond nowhere on these images."""
    images, captions, labels = shown.images, shown.captions, shown.labels
    outputs, cams, sharing = seen.outputs, seen.cams, seen.sharing
    convs = [layer for layer in model.layers if type(layer).__name__ == "Conv2D"]
    first = convs[0]
    kernel, *rest = (np.asarray(w, dtype=np.float64) for w in first.get_weights())
    bias = rest[0] if first.use_bias else None
    stages = conv_representations(outputs)
    activation = first_conv_activation(model, outputs)  # (n, h, w, filters), after ReLU
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


def inspect(
    model: keras.Model, picked: pd.DataFrame, classes: list[str], cfg: VisualizeParams, folder: Path
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Path], dict]:
    """The forward check, the weight-sharing table, every picture (into `folder`) and the
    metrics drawn from them, for the first test image of each class."""
    _, size, _, channels = model.input_shape  # as training resolved base.*
    images = load_images(picked, classes, int(size), int(channels))
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
    shown = Shown(images, captions, list(picked["label"]))
    pictures, silent = draw(model, shown, Seen(outputs, cams, sharing), cfg, folder)
    metrics = {
        "forward_max_abs_difference": float(check["max_abs_difference"].max()),
        "forward_layers_checked": len(check),
        "weight_sharing": weight_sharing_metrics(sharing),
        "correct_of_shown": int((predicted == true).sum()),
        "first_layer_silent_filters": len(silent),
        "first_layer_silent_filter_numbers": silent,
    }
    return check, sharing, pictures, metrics


def main() -> None:
    params = load_params()
    cfg = params.visualize
    classes = read_labels(LABELS_FILE).classes
    with native_stderr(CUDA_INIT_FAILED):
        model = load_checked(MODEL_FILE, MODEL_LABELS_FILE, classes, LABELS_FILE).model
    grad_cam_layers(model, cfg)  # an unknown visualize.gradcam_layers stops here, before work
    picked, without = first_of_each_class(read_split("test"), classes)
    run_id = read_run_record(RUN_FILE).run_id
    model_file = MODEL_FILE.relative_to(ROOT).as_posix()
    metrics: dict = {"classes_shown": len(picked), "classes_without_test_image": without}
    check, sharing, pictures, unsupported = pd.DataFrame(), pd.DataFrame(), {}, ""
    with staged_dir(VISUALIZE_PICTURES) as folder:
        try:
            check_graph(model)  # every layer one the NumPy pass implements, in order
        except UnsupportedLayerError as error:
            unsupported = str(error)
            (folder / "NOT_AVAILABLE.txt").write_text(
                f"No pictures for {model_file}: {unsupported}\n", encoding="utf-8"
            )
        if not unsupported:
            check, sharing, drawn, found = inspect(model, picked, classes, cfg, folder)
            pictures = {k: VISUALIZE_PICTURES / p.relative_to(folder) for k, p in drawn.items()}
            metrics |= found

    write_csv(check, VISUALIZE_CHECK_CSV, float_format="%.3g")
    write_csv(sharing, WEIGHT_SHARING_CSV)
    write_json(VISUALIZE_METRICS, metrics)
    page = visualization_report(
        model_file=model_file,
        run_id=run_id,
        metrics=metrics,
        check=check,
        sharing=sharing,
        pictures=pictures,
        unsupported=unsupported,
        tolerance=cfg.tolerance,
    )
    write_page(page, VISUALIZE_REPORT)
    log_visualization(run_id, load_raw_params(), metrics, VISUALIZE_DIR)

    if unsupported:
        log.info(f"no pictures for {model_file}: {unsupported}")
        return
    shared = metrics["weight_sharing"]
    log.info(
        f"NumPy forward pass matches Keras on {len(check)} layers (largest difference "
        f"{metrics['forward_max_abs_difference']:.2g}); {len(pictures)} pictures for "
        f"{len(picked)} classes"
        + (f" (no test image for {without})" if without else "")
        + f"; {shared['cnn_params']:,} parameters against {shared['fully_connected_params']:,} "
        f"fully connected; report {VISUALIZE_REPORT.relative_to(ROOT)} (MLflow run {run_id})"
    )


if __name__ == "__main__":
    run_stage("visualize", main)
