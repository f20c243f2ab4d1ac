"""Figures: skeleton overlays, heatmap grids, training curves and PCK curves (matplotlib).

Colours and limbs come from the `JointSpec` (left joints and limbs in one
colour, right in another, the centre line in a third), so the same code draws
MPII, FLIC or a custom skeleton. Every function draws on an `Axes` or returns
a `Figure`; `save_figure` writes it (PNG, any matplotlib format) whole, then
renames it into place. Figures are made with `matplotlib.figure.Figure`,
not pyplot: nothing here needs a display or changes the caller's backend (a
notebook shows the returned figure as usual).
"""

from __future__ import annotations

import csv
import os
from typing import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from keras_hourglass.fileio import atomic_path
from keras_hourglass.joints import JointSpec

SIDE_COLORS = {"left": "tab:blue", "right": "tab:orange", "centre": "tab:green"}
TRUTH_COLOR = "white"


def limb_side(spec: JointSpec, a: str, b: str) -> str:
    """A limb is left or right if either end is, else centre."""
    sides = {spec.side(a), spec.side(b)}
    for side in ("left", "right"):
        if side in sides:
            return side
    return "centre"


def draw_skeleton(ax, keypoints, spec: JointSpec, scores=None, visible=None, color=None,
                  linewidth: float = 2.0, show_scores: bool = False, label: str | None = None):
    """Draws limbs and joints of one person on `ax`.

    Args:
        keypoints: `[K, 2]` `(x, y)` pixels.
        spec: joint names, limbs and sides.
        scores: optional `[K]` per-joint confidences; joints are drawn with
            their alpha and, with `show_scores`, their value written beside.
        visible: optional `[K]` bool; joints (and their limbs) not visible
            are skipped (e.g. not annotated in the ground truth).
        color: one colour for everything (e.g. the ground truth); by default
            left/right/centre colours from `SIDE_COLORS`.
        label: legend label for the joints.
    """
    keypoints = np.asarray(keypoints, np.float64)
    if keypoints.shape != (spec.num_keypoints, 2):
        raise ValueError(f"keypoints must have shape ({spec.num_keypoints}, 2) for {spec.name}, got {keypoints.shape}.")
    shown = np.isfinite(keypoints).all(-1)
    if visible is not None:
        shown &= np.asarray(visible, bool)
    alpha = np.ones(spec.num_keypoints) if scores is None else np.clip(np.asarray(scores, np.float64), 0.2, 1.0)
    for a, b in spec.limbs:
        i, j = spec.index(a), spec.index(b)
        if shown[i] and shown[j]:
            ax.plot(keypoints[[i, j], 0], keypoints[[i, j], 1], color=color or SIDE_COLORS[limb_side(spec, a, b)],
                    linewidth=linewidth, alpha=float(min(alpha[i], alpha[j])), solid_capstyle="round")
    for k, name in enumerate(spec.names):
        if not shown[k]:
            continue
        ax.scatter(keypoints[k, 0], keypoints[k, 1], s=4 * linewidth ** 2, alpha=float(alpha[k]), zorder=3,
                   color=color or SIDE_COLORS[spec.side(name)], edgecolors="black", linewidths=0.5,
                   label=label if label and k == int(np.argmax(shown)) else None)
        if show_scores and scores is not None:
            ax.annotate(f"{scores[k]:.2f}", keypoints[k], textcoords="offset points", xytext=(3, 3),
                        fontsize=6, color="white", bbox=dict(boxstyle="round,pad=0.1", fc="black", alpha=0.5, lw=0))


def plot_pose(image, keypoints, spec: JointSpec, scores=None, ground_truth=None, annotated=None,
              title: str | None = None, show_scores: bool = True):
    """One image with the predicted skeleton (and the true one, in white) as a `Figure`."""
    figure = Figure(figsize=(5, 5))
    ax = figure.subplots()
    _show(ax, image)
    if ground_truth is not None:
        draw_skeleton(ax, ground_truth, spec, visible=annotated, color=TRUTH_COLOR, linewidth=1.0, label="truth")
    draw_skeleton(ax, keypoints, spec, scores=scores, show_scores=show_scores)
    if title:
        ax.set_title(title, fontsize=9)
    figure.tight_layout()
    return figure


PERSON_COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink",
                 "tab:olive", "tab:cyan", "tab:gray")


def plot_pose_overlay(image, keypoints, spec: JointSpec, scores=None, title: str | None = None, dpi: int = 100,
                      boxes=None, labels: Sequence[str] | None = None):
    """The skeletons drawn over the whole image at the image's own resolution (`save_figure(..., dpi=dpi)`).

    The figure is the image's width x height pixels with no margin, the title
    written inside its top-left corner, and lines and dots sized to the image
    (a 1280x720 frame is drawn as 1280x720, not shrunk into a fixed figure).

    Args:
        keypoints: one person `[K, 2]` (drawn in the left/right/centre
            colours), or people `[P, K, 2]`, each in its own colour
            (`PERSON_COLORS`, in turn) with its box and label.
        scores: `[K]` or `[P, K]`; people's joints scoring 0 or less (not found) are not drawn.
        boxes: people only: `[P, 4]` `(x1, y1, x2, y2)` pixel-centre boxes, drawn as rectangles.
        labels: people only: one text per person written at its box (e.g. its id).
    """
    height, width = np.shape(image)[:2]
    figure = Figure(figsize=(width / dpi, height / dpi), dpi=dpi)
    ax = figure.add_axes((0, 0, 1, 1))
    _show(ax, image)
    linewidth = max(1.5, min(height, width) / 150)
    keypoints = np.asarray(keypoints, np.float64)
    if keypoints.ndim == 2:
        draw_skeleton(ax, keypoints, spec, scores=scores, linewidth=linewidth)
    else:
        for person, points in enumerate(keypoints):
            color = PERSON_COLORS[person % len(PERSON_COLORS)]
            found = None if scores is None else np.asarray(scores[person]) > 0  # a joint it lacks scores 0
            draw_skeleton(ax, points, spec, scores=None if scores is None else scores[person], visible=found,
                          color=color, linewidth=linewidth)
            if boxes is not None:
                x1, y1, x2, y2 = np.asarray(boxes[person], np.float64)
                ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=color, linewidth=linewidth / 2))
                if labels is not None:
                    ax.text(x1, y1, labels[person], fontsize=max(6, min(height, width) / 80), color="white",
                            va="bottom", bbox=dict(boxstyle="round,pad=0.1", fc=color, alpha=0.8, lw=0))
    ax.set_xlim(-0.5, width - 0.5)  # the image's pixels exactly, wherever the keypoints fall
    ax.set_ylim(height - 0.5, -0.5)
    if title:
        ax.text(4, 4, title, fontsize=max(6, min(height, width) / 60), color="white", va="top",
                bbox=dict(boxstyle="round,pad=0.2", fc="black", alpha=0.5, lw=0))
    return figure


def plot_pose_grid(images: Sequence, keypoints, spec: JointSpec, ground_truth=None, annotated=None,
                   scores=None, titles: Sequence[str] | None = None, columns: int = 4):
    """A grid of images with predicted (sided colours) and true (white) skeletons."""
    count = len(images)
    if count == 0:
        raise ValueError("plot_pose_grid needs at least one image.")
    columns = min(columns, count)
    rows = -(-count // columns)
    figure = Figure(figsize=(3 * columns, 3 * rows))
    axes = figure.subplots(rows, columns, squeeze=False)
    for i, ax in enumerate(axes.flat):
        if i >= count:
            ax.axis("off")
            continue
        _show(ax, images[i])
        if ground_truth is not None:
            draw_skeleton(ax, ground_truth[i], spec, visible=None if annotated is None else annotated[i],
                          color=TRUTH_COLOR, linewidth=1.0)
        draw_skeleton(ax, keypoints[i], spec, scores=None if scores is None else scores[i])
        if titles is not None:
            ax.set_title(titles[i], fontsize=8)
    figure.tight_layout()
    return figure


def plot_heatmaps(image, heatmaps, spec: JointSpec, columns: int = 4):
    """One panel per joint: the heatmap over the (resized) crop, titled with the joint and its peak."""
    heatmaps = np.asarray(heatmaps, np.float64)
    if heatmaps.ndim != 3 or heatmaps.shape[-1] != spec.num_keypoints:
        raise ValueError(f"heatmaps must be [height, width, {spec.num_keypoints}], got {heatmaps.shape}.")
    image = np.asarray(image)
    rows = -(-spec.num_keypoints // columns)
    figure = Figure(figsize=(2.2 * columns, 2.2 * rows))
    axes = figure.subplots(rows, columns, squeeze=False)
    extent = (-0.5, image.shape[1] - 0.5, image.shape[0] - 0.5, -0.5)  # heatmap and image share edges
    for k, ax in enumerate(axes.flat):
        ax.axis("off")
        if k >= spec.num_keypoints:
            continue
        ax.imshow(_display(image), extent=extent)
        ax.imshow(heatmaps[..., k], cmap="jet", alpha=0.5, extent=extent, vmin=0, vmax=max(1e-6, heatmaps.max()))
        ax.set_title(f"{spec.names[k]} {heatmaps[..., k].max():.2f}", fontsize=7)
    figure.tight_layout()
    return figure


MISSING_CELLS = ("", "NA", "nan")  # CSVLogger writes "NA" for an entry missing from an epoch's logs


MAX_LOG_BYTES = 64 * 2**20  # a Keras CSVLogger writes about 1 KiB an epoch: 64 MiB is tens of thousands of epochs


def read_csv_log(path: str) -> dict[str, np.ndarray]:
    """Columns of a Keras `CSVLogger` file as float arrays (missing cells are NaN), with an `epoch` column.

    A file that is not a regular file of at most `MAX_LOG_BYTES`, or not such a log, is a `ValueError` naming it.
    """
    if not os.path.isfile(path):
        raise ValueError(f"{path}: training log not found.")
    if os.path.getsize(path) > MAX_LOG_BYTES:
        raise ValueError(f"{path}: {os.path.getsize(path):,} bytes is not a training log (at most "
                         f"{MAX_LOG_BYTES:,} bytes expected).")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.DictReader(f))
        if rows and "epoch" not in rows[0]:
            raise ValueError("no 'epoch' column")
        columns = {}
        for name in rows[0] if rows else ():
            if name is None:
                raise ValueError("a row has more cells than the header")
            columns[name] = np.array([np.nan if row.get(name) in (None, *MISSING_CELLS) else float(row[name])
                                      for row in rows])
    except (ValueError, TypeError, UnicodeDecodeError, csv.Error) as error:
        raise ValueError(f"{path}: not a Keras CSV training log ({str(error).splitlines()[0][:200]}).") from None
    except OSError as error:
        raise ValueError(f"{path}: cannot be read ({error.strerror or error}).") from None
    if not rows:
        raise ValueError(f"{path}: the training log has no epochs yet.")
    if not np.isfinite(columns["epoch"]).all():
        raise ValueError(f"{path}: not a Keras CSV training log (an epoch that is not a number).")
    return columns


def plot_training_curves(log: str | Mapping[str, np.ndarray], title: str | None = None):
    """Losses (each stack's and the total) and validation metrics per epoch, from a CSV log."""
    columns = read_csv_log(log) if isinstance(log, str) else log
    epochs = columns["epoch"] + 1
    losses = [name for name in columns if name.endswith("loss")]
    metrics = [name for name in columns if name.startswith("val_") and not name.endswith("loss")]
    figure = Figure(figsize=(11 if metrics else 6, 4))
    axes = figure.subplots(1, 2 if metrics else 1, squeeze=False)
    for name in losses:
        axes[0, 0].plot(epochs, columns[name], label=name, linewidth=2 if name == "loss" else 1)
    axes[0, 0].set(xlabel="epoch", ylabel="loss", yscale="log", title="training loss")
    axes[0, 0].legend(fontsize=7)
    if metrics:
        for name in metrics:
            finite = np.isfinite(columns[name])
            axes[0, 1].plot(epochs[finite], columns[name][finite], marker=".", label=name,
                            linewidth=2 if name.count("_") == 1 else 1)
        axes[0, 1].set(xlabel="epoch", ylabel="%", title="validation", ylim=(0, 100))
        axes[0, 1].legend(fontsize=7)
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    return figure


def plot_pck_curves(curves: Mapping[str, tuple], metric: str = "PCK", title: str | None = None):
    """PCK versus threshold for several runs: `{label: (thresholds, values in %)}`."""
    if not curves:
        raise ValueError("plot_pck_curves needs at least one curve.")
    figure = Figure(figsize=(5, 4))
    ax = figure.subplots()
    for label, (thresholds, values) in curves.items():
        ax.plot(thresholds, values, label=label)
    ax.set(xlabel="normalised distance threshold", ylabel=f"{metric} (%)", ylim=(0, 100), title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    figure.tight_layout()
    return figure


def figure_pixels(figure) -> np.ndarray:
    """The figure drawn as RGB `uint8` pixels `[height, width, 3]` (for a video frame)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def save_figure(figure, path: str, dpi: int = 100) -> str:
    """Writes the figure to `path` (temporary file, then rename); returns `path`."""
    with atomic_path(path, keep_extension=True) as temporary:
        figure.savefig(temporary, dpi=dpi)
    return path


def _display(image):
    image = np.asarray(image)
    if image.dtype != np.uint8:
        image = np.clip(image, 0, 1) if image.max() <= 1.0 else np.clip(image / 255.0, 0, 1)
    return image


def _show(ax, image):
    ax.imshow(_display(image))
    ax.axis("off")
