"""Figures: loss curves, confusion matrices, prediction overviews."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # scripts run headless; notebooks choose their own backend before import
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from eoseg.io import atomic_path  # noqa: E402


def _save(fig, path: str | Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return Path(path)


def display_rgb(image: np.ndarray) -> np.ndarray:
    """(C, H, W) raster -> (H, W, 3) uint8 for display: the first three bands, 2-98% stretched."""
    bands = image[:3] if image.shape[0] >= 3 else np.repeat(image[:1], 3, axis=0)
    bands = bands.astype(np.float32)
    if image.dtype == np.uint8:
        return np.moveaxis(bands, 0, -1).astype(np.uint8)
    low, high = np.percentile(bands, (2, 98))
    scaled = np.clip((bands - low) / max(high - low, 1e-6), 0, 1) * 255
    return np.moveaxis(scaled, 0, -1).astype(np.uint8)


def plot_training_log(rows: list[dict], path: str | Path) -> Path:
    """Loss (and learning rate) against iteration."""
    fig, loss_ax = plt.subplots(figsize=(7, 4))
    iterations = [int(r["iteration"]) for r in rows]
    loss_ax.plot(iterations, [float(r["loss"]) for r in rows], color="tab:blue", label="training loss")
    loss_ax.set_xlabel("iteration")
    loss_ax.set_ylabel("cross-entropy loss")
    loss_ax.grid(alpha=0.3)
    lr_ax = loss_ax.twinx()
    lr_ax.plot(iterations, [float(r["lr"]) for r in rows], color="tab:orange", lw=1, label="learning rate")
    lr_ax.set_ylabel("learning rate (decoder)")
    lr_ax.set_yscale("log")
    fig.legend(loc="upper right")
    fig.suptitle("Training")
    return _save(fig, path)


def plot_confusion(metrics: dict, path: str | Path, title: str = "Confusion matrix") -> Path:
    """Row-normalised confusion matrix with percentages."""
    cm = np.asarray(metrics["confusion_matrix"], dtype=np.float64)
    names = metrics["class_names"]
    rows = cm.sum(axis=1, keepdims=True)
    normalised = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    fig, ax = plt.subplots(figsize=(1.1 * len(names) + 2.5, 1.0 * len(names) + 2))
    ax.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(names)):
        for j in range(len(names)):
            ax.text(j, i, f"{100 * normalised[i, j]:.0f}", ha="center", va="center",
                    color="white" if normalised[i, j] > 0.5 else "black", fontsize=9)
    ax.set_xticks(range(len(names)), names, rotation=35, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("ground truth")
    ax.set_title(f"{title}\n(% of each ground-truth class; OA {100 * metrics['overall_accuracy']:.1f}%)")
    return _save(fig, path)


def plot_prediction(image: np.ndarray, prediction_rgb: np.ndarray, path: str | Path,
                    truth_rgb: np.ndarray | None = None, errors: np.ndarray | None = None,
                    title: str = "") -> Path:
    """Image, prediction, and (when known) ground truth and error map side by side."""
    panels = [("image", display_rgb(image))]
    if truth_rgb is not None:
        panels.append(("ground truth", truth_rgb))
    panels.append(("prediction", prediction_rgb))
    if errors is not None:
        panels.append(("errors (red), ignored (grey)", errors))
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 4.3))
    for ax, (name, picture) in zip(np.atleast_1d(axes), panels):
        ax.imshow(picture, interpolation="nearest")
        ax.set_title(name)
        ax.axis("off")
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def error_map(truth: np.ndarray, prediction: np.ndarray, ignore_label: int) -> np.ndarray:
    """(H, W, 3) uint8: white where right, red where wrong, grey where ignored."""
    picture = np.full(truth.shape + (3,), 255, dtype=np.uint8)
    picture[truth != prediction] = (220, 30, 30)
    picture[truth == ignore_label] = (150, 150, 150)
    return picture
