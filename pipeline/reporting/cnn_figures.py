"""Figures of the trained CNN's inside, for the `visualize` stage. Each returns a Figure.

Images arrive as (height, width, channels) uint8 arrays, as the model takes them; filters in
Keras' (kernel_h, kernel_w, in_channels, filters) layout. Every figure says in its title what
its colours mean, so it reads without the code.
"""

import textwrap

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

CHANNEL_NAMES = {1: ["gray"], 3: ["red", "green", "blue"]}


def _suptitle(fig: Figure, text: str, fontsize: int = 10) -> None:
    """The figure's title, each line wrapped to the figure's width (about 12 characters an
    inch at 10 points), so a narrow figure (a small CNN's few columns) does not cut it off."""
    width = max(30, int(fig.get_figwidth() * 120 / fontsize))
    lines = [textwrap.fill(line, width) for line in text.split("\n")]
    fig.suptitle("\n".join(lines), fontsize=fontsize)


def _gray(image: np.ndarray) -> np.ndarray:
    return image.mean(axis=-1) if image.ndim == 3 else image


def _show_input(ax, image: np.ndarray) -> None:
    if image.shape[-1] == 1:
        ax.imshow(image[..., 0], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    else:
        ax.imshow(image, interpolation="nearest")


def _blank(ax) -> None:
    ax.set_xticks([])
    ax.set_yticks([])


FILTERS_PER_ROW = 16  # the first layer's filters wrap after this many


def filters_figure(kernel: np.ndarray, bias: np.ndarray | None, layer: str) -> Figure:
    """Each first-layer filter's weights per input channel, on one diverging colour scale;
    FILTERS_PER_ROW filters a row (one row per input channel), wrapped onto further rows."""
    size_h, size_w, channels, count = kernel.shape
    names = CHANNEL_NAMES.get(channels, [f"channel {c + 1}" for c in range(channels)])
    limit = float(np.abs(kernel).max()) or 1.0
    columns, groups = min(count, FILTERS_PER_ROW), -(-count // FILTERS_PER_ROW)
    fig, axes = plt.subplots(
        groups * channels,
        columns,
        figsize=(max(1.05 * columns, 6.0), (1.25 * channels + 0.4) * groups + 1.2),
        squeeze=False,
        layout="constrained",
    )
    annotate = size_h * size_w <= 16
    for f in range(count):
        group, column = divmod(f, columns)
        for c in range(channels):
            ax = axes[group * channels + c, column]
            weights = kernel[:, :, c, f]
            image = ax.imshow(weights, cmap="RdBu_r", vmin=-limit, vmax=limit)
            if annotate:
                for (i, j), value in np.ndenumerate(weights):
                    ax.text(
                        j,
                        i,
                        f"{value:+.2f}",
                        ha="center",
                        va="center",
                        fontsize=6,
                        color="white" if abs(value) > 0.6 * limit else "black",
                    )
            _blank(ax)
            if c == 0:
                title = f"filter {f + 1}"
                if bias is not None:
                    title += f"\nbias {bias[f]:+.2f}"
                ax.set_title(title, fontsize=8)
            if column == 0:
                ax.set_ylabel(names[c], fontsize=8)
    for f in range(count, groups * columns):  # the last row's empty places
        for c in range(channels):
            axes[(f // columns) * channels + c, f % columns].axis("off")
    fig.colorbar(image, ax=axes, shrink=0.8, label="weight")
    _suptitle(
        fig,
        f"First convolutional layer ({layer}): {count} filters of {size_h}x{size_w} weights "
        f"per input channel\nred weights raise the response where the input is bright, blue "
        "weights lower it; each filter slides over the whole image",
        fontsize=10,
    )
    return fig


def responses_figure(
    images: list[np.ndarray],
    captions: list[str],
    responses: np.ndarray,
    kernel: np.ndarray,
    layer: str,
) -> Figure:
    """Where each first-layer filter reacted on each image (`responses`: image, filter, h, w):
    the response laid over the input, one column per filter on one colour scale per column."""
    count = responses.shape[1]
    rows = len(images)
    fig, axes = plt.subplots(
        rows + 1,
        count + 1,
        figsize=(1.05 * (count + 1) + 0.5, 1.1 * (rows + 1) + 1.2),
        squeeze=False,
        layout="constrained",
    )
    summed = kernel.sum(axis=2)  # over input channels: the filter's spatial pattern
    limit = float(np.abs(summed).max()) or 1.0
    axes[0, 0].axis("off")
    axes[0, 0].text(0.5, 0.5, "filter\n(channels\nsummed)", ha="center", va="center", fontsize=8)
    for f in range(count):
        axes[0, f + 1].imshow(summed[:, :, f], cmap="RdBu_r", vmin=-limit, vmax=limit)
        axes[0, f + 1].set_title(f"filter {f + 1}", fontsize=8)
        _blank(axes[0, f + 1])
    peaks = responses.max(axis=(2, 3))
    for r, (image, caption) in enumerate(zip(images, captions, strict=True), start=1):
        _show_input(axes[r, 0], image)
        axes[r, 0].set_ylabel(caption, fontsize=8)
        _blank(axes[r, 0])
        gray = _gray(image)
        for f in range(count):
            _response_panel(axes[r, f + 1], gray, responses[r - 1, f], peaks[r - 1, f])
    _suptitle(
        fig,
        f"Where each filter of {layer} responded on one test image per class: every output "
        "of the filter (after ReLU) added back onto the input pixels it was computed from\n"
        "bright = strong response, each panel on its own scale; the number is the panel's "
        "peak (summed ReLU outputs), so rows and columns compare by it",
        fontsize=10,
    )
    return fig


def _response_panel(ax, gray: np.ndarray, response: np.ndarray, peak: float) -> None:
    """One filter's response on one image, laid over the image, with its peak written in."""
    ax.imshow(gray, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    ax.imshow(
        response, cmap="inferno", alpha=0.7, vmin=0, vmax=peak or 1.0, interpolation="nearest"
    )
    label = f"{peak:.2f}" if peak else "none"
    ax.text(0.03, 0.97, label, transform=ax.transAxes, ha="left", va="top", fontsize=6, color="w")
    _blank(ax)


def feature_maps_figure(
    image: np.ndarray, caption: str, layers: list[tuple[str, np.ndarray]], per_layer: int
) -> Figure:
    """The feature maps of every convolutional layer for one image: per layer (a row) its
    `per_layer` strongest maps by mean activation, each on its own colour scale."""
    shown = min(per_layer, max(maps.shape[-1] for _, maps in layers))
    fig, axes = plt.subplots(
        len(layers),
        shown + 1,
        figsize=(1.1 * (shown + 1) + 0.6, 1.25 * len(layers) + 1.0),
        squeeze=False,
        layout="constrained",
    )
    for row, (name, maps) in enumerate(layers):
        label = axes[row, 0]
        label.axis("off")
        if row == 0:
            _show_input(label, image)
            label.set_title(caption, fontsize=8)
            label.axis("on")
            _blank(label)
        height, width, count = maps.shape
        strength = maps.mean(axis=(0, 1))
        order = np.argsort(-strength, kind="stable")[:shown]
        silent = int((maps.max(axis=(0, 1)) <= 0).sum())
        text = f"{name}\n{height}x{width}, {count} maps\n{len(order)} strongest shown"
        text += f"\n{silent} all zero" if silent else ""
        if row == 0:
            label.set_xlabel(text, fontsize=7)
        else:
            label.text(0.5, 0.5, text, ha="center", va="center", fontsize=7)
        for col in range(shown):
            ax = axes[row, col + 1]
            _blank(ax)
            if col >= len(order):
                ax.axis("off")
                continue
            index = order[col]
            ax.imshow(
                maps[:, :, index],
                cmap="viridis",
                vmin=0,
                vmax=maps[:, :, index].max() or 1.0,
                interpolation="nearest",
            )
            ax.set_title(f"#{index + 1}  mean {strength[index]:.2f}", fontsize=6)
    _suptitle(
        fig,
        "Feature maps (hidden representations after ReLU) of every convolutional layer, "
        "input at top left\nyellow = strong activation (each map on its own scale); deeper "
        "layers are smaller and respond to larger, more abstract patterns",
        fontsize=10,
    )
    return fig


def grad_cam_figure(
    images: list[np.ndarray],
    captions: list[str],
    maps: dict[str, np.ndarray],
    sizes: dict[str, tuple[int, int]],
) -> Figure:
    """Grad-CAM for the predicted class, one column per layer, laid over each input."""
    names = list(maps)
    fig, axes = plt.subplots(
        len(images),
        len(names) + 1,
        figsize=(1.7 * (len(names) + 1) + 0.4, 1.6 * len(images) + 1.2),
        squeeze=False,
        layout="constrained",
    )
    for r, (image, caption) in enumerate(zip(images, captions, strict=True)):
        _show_input(axes[r, 0], image)
        axes[r, 0].set_ylabel(caption, fontsize=8)
        _blank(axes[r, 0])
        for c, name in enumerate(names, start=1):
            ax = axes[r, c]
            ax.imshow(_gray(image), cmap="gray", vmin=0, vmax=255, interpolation="nearest")
            ax.imshow(maps[name][r], cmap="jet", alpha=0.45, vmin=0, vmax=1)
            _blank(ax)
            if r == 0:
                h, w = sizes[name]
                ax.set_title(f"{name}\n({h}x{w} map)", fontsize=8)
    axes[0, 0].set_title("input", fontsize=8)
    _suptitle(
        fig,
        "Grad-CAM for the predicted class: the regions of each layer's feature maps that most "
        "raise that class's score\nred = strongest evidence, blue = none (scaled per image); "
        "coarse maps of deep layers are smoothed up to the input size",
        fontsize=10,
    )
    return fig


def weight_sharing_figure(table: pd.DataFrame) -> Figure:
    """Weights per layer: the CNN against a locally connected and a fully connected network
    with the same layer widths, on a log scale."""
    rows = table[table["fully_connected"] > 0].iloc[::-1]
    fig, ax = plt.subplots(figsize=(9, 0.55 * len(rows) + 1.8), layout="constrained")
    y = np.arange(len(rows))
    columns = [
        ("cnn", "this CNN (shared weights)", "tab:blue"),
        ("locally_connected", "locally connected (no sharing)", "tab:orange"),
        ("fully_connected", "fully connected (same widths)", "tab:red"),
    ]
    for offset, (column, label, colour) in zip((-0.27, 0, 0.27), columns, strict=True):
        ax.barh(y + offset, rows[column], height=0.26, label=label, color=colour)
    ax.set_xscale("log")
    names = [f"{n}\n{o}" for n, o in zip(rows["layer"], rows["output_shape"], strict=True)]
    ax.set_yticks(y, names, fontsize=7)
    ax.set_xlabel("weights and biases (log scale)")
    totals = table[["cnn", "locally_connected", "fully_connected"]].sum()
    ax.set_title(
        f"Weight sharing: {totals['cnn']:,.0f} parameters in this CNN;\nthe same layer widths "
        f"fully connected need {totals['fully_connected']:,.0f} "
        f"({totals['fully_connected'] / totals['cnn']:,.0f}x), locally connected "
        f"{totals['locally_connected']:,.0f} ({totals['locally_connected'] / totals['cnn']:,.0f}x)",
        fontsize=10,
    )
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    return fig
