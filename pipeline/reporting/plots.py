"""Figures drawn from report tables. Each function returns a Figure; callers save it."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: no display on servers and CI

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter

from pipeline.common.files import staged_file


def history_figure(
    history: pd.DataFrame, best_epoch: int | None = None, phase_starts: list[int] = ()
) -> Figure:
    """Loss and accuracy per epoch, training against validation; the kept epoch marked, and
    the first epoch of each later training phase (a block unfrozen, a new learning rate)."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), layout="constrained")
    for ax, metric in zip(axes, ("loss", "accuracy"), strict=True):
        ax.plot(history["epoch"], history[metric], marker="o", markersize=3, label="train")
        ax.plot(
            history["epoch"], history[f"val_{metric}"], marker="o", markersize=3, label="validation"
        )
        if best_epoch is not None:
            ax.axvline(best_epoch, color="grey", linestyle="--", label=f"kept epoch {best_epoch}")
        for number, start in enumerate(phase_starts, start=2):
            ax.axvline(
                start - 0.5,
                color="tab:green",
                linestyle=":",
                alpha=0.8,
                label="phase changes" if number == 2 else None,
            )
            ax.annotate(
                f"phase {number}",
                (start - 0.5, 1),
                xycoords=("data", "axes fraction"),
                xytext=(2, -10 - 10 * (number % 3)),
                textcoords="offset points",
                fontsize=8,
                color="tab:green",
            )
        ax.set(xlabel="epoch", ylabel=metric, title=metric.capitalize())
        ax.grid(alpha=0.3)
        ax.legend()
    return fig


def row_shares(matrix: np.ndarray) -> np.ndarray:
    """Each row divided by its total (a confusion matrix's share of each true class); a row
    with no images stays 0 rather than NaN."""
    totals = matrix.sum(axis=1, keepdims=True)
    return np.divide(matrix, totals, out=np.zeros(matrix.shape, float), where=totals > 0)


def confusion_figure(matrix: np.ndarray, class_names: list[str]) -> Figure:
    """Counts, coloured by the share of each true class, with class names on both axes.

    The figure grows with the class count and cell labels shrink, so 50 classes stay legible.
    """
    n = len(class_names)
    side = max(5.0, 0.45 * n + 2.5)
    fig, ax = plt.subplots(figsize=(side, side), layout="constrained")
    shares = row_shares(matrix)
    image = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, shrink=0.8, label="share of the true class")
    ax.set_xticks(range(n), class_names, rotation=90 if n > 10 else 0)
    ax.set_yticks(range(n), class_names)
    ax.set(xlabel="predicted class", ylabel="true class", title="Confusion matrix (test split)")
    fontsize = 10 if n <= 15 else max(5, 10 - n // 10)
    for (row, col), count in np.ndenumerate(matrix):
        if count:
            colour = "white" if shares[row, col] > 0.5 else "black"
            ax.text(col, row, str(count), ha="center", va="center", color=colour, fontsize=fontsize)
    return fig


def abundance_figure(abundance: pd.DataFrame) -> Figure:
    """Observed against predicted share of each class, as grouped bars."""
    n = len(abundance)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.5 * n + 2), 4.5), layout="constrained")
    positions = np.arange(n)
    width = 0.4
    ax.bar(positions - width / 2, abundance["observed_share"], width, label="observed (true)")
    ax.bar(positions + width / 2, abundance["predicted_share"], width, label="predicted")
    ax.set_xticks(positions, abundance["class"], rotation=90 if n > 10 else 0)
    ax.set(xlabel="class", ylabel="share of test images", title="Class abundance (test split)")
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    tallest = abundance[["observed_share", "predicted_share"]].to_numpy().max()
    ax.set_ylim(0, 1.2 * tallest if tallest > 0 else 1)  # headroom: the legend stays off the bars
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="upper right", ncols=2)
    return fig


def reliability_figure(calibration: pd.DataFrame, ece: float) -> Figure:
    """Accuracy against confidence per bin (a calibrated model sits on the diagonal), with the
    number of images in each bin below."""
    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(6, 6.5), sharex=True, height_ratios=(3, 1), layout="constrained"
    )
    centres = (calibration["bin_lower"] + calibration["bin_upper"]) / 2
    width = float((calibration["bin_upper"] - calibration["bin_lower"]).iloc[0])
    top.plot([0, 1], [0, 1], color="grey", linestyle="--", label="perfectly calibrated")
    top.bar(centres, calibration["accuracy"].fillna(0), width * 0.9, label="accuracy in bin")
    top.plot(
        calibration["mean_confidence"],
        calibration["accuracy"],
        "o",
        color="tab:red",
        markersize=4,
        label="mean confidence",
    )
    top.set(ylabel="accuracy", ylim=(0, 1.02), title=f"Reliability diagram (ECE {ece:.4f})")
    top.grid(alpha=0.3)
    top.legend(loc="upper left")
    bottom.bar(centres, calibration["images"], width * 0.9, color="tab:grey")
    bottom.set(xlabel="confidence of the predicted class", ylabel="images", xlim=(0, 1))
    bottom.set_yscale("symlog")
    return fig


def error_gallery_figure(
    images: list[np.ndarray],
    captions: list[str],
    columns: int = 4,
    title: str = "Most confident mistakes (test split)",
    empty: str = "No mistakes on the test split",
) -> Figure:
    """The given images as a grid, each captioned (a mistake: its true and predicted class)."""
    if not images:
        fig, ax = plt.subplots(figsize=(5, 1.5), layout="constrained")
        ax.text(0.5, 0.5, empty, ha="center", va="center", fontsize=12)
        ax.axis("off")
        return fig
    columns = min(columns, len(images))
    rows = int(np.ceil(len(images) / columns))
    fig, axes = plt.subplots(
        rows,
        columns,
        figsize=(max(2.6 * columns, 5.0), 2.9 * rows),  # wide enough for the title
        squeeze=False,
        layout="constrained",
    )
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, caption in zip(axes.flat, images, captions, strict=False):
        ax.imshow(image, cmap="gray" if image.ndim == 2 else None, interpolation="nearest")
        ax.set_title(caption, fontsize=9)
    fig.suptitle(title)
    return fig


def _side_by_side(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Two grey images, each scaled up by a whole factor to about the taller's height and
    padded white to it, with a white gap between them."""
    height = max(first.shape[0], second.shape[0])
    parts = []
    for image in (first, second):
        repeat = max(1, height // image.shape[0])
        scaled = np.kron(image, np.ones((repeat, repeat), dtype=np.uint8))[:height]
        parts.append(np.pad(scaled, ((0, height - scaled.shape[0]), (0, 0)), constant_values=255))
    gap = np.full((height, max(2, height // 8)), 255, dtype=np.uint8)
    return np.concatenate([parts[0], gap, parts[1]], axis=1)


def near_duplicate_figure(
    sections: dict[str, list[tuple[np.ndarray, np.ndarray, str]]], columns: int = 4
) -> Figure:
    """Pairs of grey images (a validation or test image beside its closest training image),
    one titled section per kind of pair, each pair captioned."""
    rows = [max(1, int(np.ceil(len(pairs) / columns))) for pairs in sections.values()]
    heights = [
        2.4 * count if pairs else 0.8 for count, pairs in zip(rows, sections.values(), strict=True)
    ]
    fig = plt.figure(figsize=(3.0 * columns, sum(heights) + 0.8 * len(rows)), layout="constrained")
    for panel, (title, pairs), count in zip(
        fig.subfigures(len(rows), 1, height_ratios=heights, squeeze=False).flat,
        sections.items(),
        rows,
        strict=True,
    ):
        axes = panel.subplots(count, columns if pairs else 1, squeeze=False)
        for ax in axes.flat:
            ax.axis("off")
        if not pairs:
            axes[0, 0].text(0.5, 0.5, "none", fontsize=11, ha="center", va="center")
        for ax, (held, train, caption) in zip(axes.flat, pairs, strict=False):
            ax.imshow(
                _side_by_side(held, train), cmap="gray", vmin=0, vmax=255, interpolation="nearest"
            )
            ax.set_title(caption, fontsize=8)
        panel.suptitle(title, fontsize=11)
    return fig


def save_figure(fig: Figure, path: Path) -> None:
    """Write the figure atomically, in the format its suffix names, and free its memory."""
    with staged_file(path) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)


def lr_find_figure(table: pd.DataFrame, found: dict) -> Figure:
    """The learning-rate range test: loss against learning rate (log scale), the suggested
    rate and the minimum marked."""
    fig, ax = plt.subplots(figsize=(7, 4.5), layout="constrained")
    ax.plot(table["learning_rate"], table["loss"], color="tab:blue", alpha=0.3, label="step loss")
    ax.plot(table["learning_rate"], table["smoothed_loss"], color="tab:blue", label="smoothed")
    marks = {
        "suggested_learning_rate": ("tab:green", "suggested {:.2g}"),
        "minimum_loss_rate": ("tab:red", "lowest loss at {:.2g}"),
        "steepest_descent_rate": ("tab:orange", "steepest descent at {:.2g}"),
    }
    for key, (colour, label) in marks.items():
        ax.axvline(found[key], color=colour, linestyle="--", label=label.format(found[key]))
    low, high = table["smoothed_loss"].min(), table["smoothed_loss"].iloc[:5].max()
    ax.set_ylim(low - 0.1 * (high - low), high + 0.3 * (high - low))
    ax.set(
        xscale="log",
        xlabel="learning rate",
        ylabel="training loss",
        title=f"Learning-rate range test ({len(table)} steps)",
    )
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    return fig


def time_to_accuracy_figure(table: pd.DataFrame, budget_minutes: float) -> Figure:
    """Test accuracy against training time, one line per recipe (`make bench-recipe`)."""
    fig, ax = plt.subplots(figsize=(8, 5), layout="constrained")
    top = table["test_accuracy"].max()
    floor = max(0.0, min(0.8, top - 0.15))  # the top of the range, where recipes differ
    for name, rows in table.groupby("recipe", sort=False):
        best = rows["test_accuracy"].max()
        below = ", below the axis" if best < floor else ""
        ax.plot(
            rows["seconds"] / 60,
            rows["test_accuracy"],
            marker="o",
            markersize=3,
            label=f"{name} (best {best:.4f}{below})",
        )
    ax.set_ylim(floor, min(1.0, top + 0.02))
    ax.axvline(budget_minutes, color="grey", linestyle="--", label=f"budget {budget_minutes:g} min")
    ax.set(
        xlabel="training time (minutes)",
        ylabel="test accuracy",
        title="Fashion-MNIST: test accuracy against training time",
    )
    ax.grid(alpha=0.3)
    ax.legend()
    return fig
