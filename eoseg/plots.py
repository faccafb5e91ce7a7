"""Figures: loss curves, confusion matrices, prediction overviews."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")  # scripts run headless; notebooks choose their own backend before import
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from eoseg.io import atomic_path  # noqa: E402
from eoseg.metrics import percent  # noqa: E402
from eoseg.tiles import display_bands  # noqa: E402


def _save(fig, path: str | Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return Path(path)


def display_rgb(image: np.ndarray, band_names: Sequence[str] | None = None) -> np.ndarray:
    """(C, H, W) raster -> (H, W, 3) uint8 for display, 2-98% stretched: the bands that ``band_names`` (the names of
    its first bands) name as red, green and blue, or near-infrared, red and green (:func:`eoseg.tiles.display_bands`);
    without names, the first three."""
    positions = display_bands(band_names) if band_names else list(range(min(3, image.shape[0])))
    bands = image[positions] if len(positions) == 3 else np.repeat(image[:1], 3, axis=0)
    bands = bands.astype(np.float32)
    if image.dtype == np.uint8:
        return np.moveaxis(bands, 0, -1).astype(np.uint8)
    finite = np.isfinite(bands)  # NaN holes of float rasters are drawn black and left out of the stretch
    low, high = np.percentile(bands[finite], (2, 98)) if finite.any() else (0.0, 1.0)
    scaled = np.clip((np.where(finite, bands, low) - low) / max(high - low, 1e-6), 0, 1) * 255
    return np.moveaxis(scaled, 0, -1).astype(np.uint8)


def plot_training_log(rows: list[dict], path: str | Path) -> Path:
    """Loss and learning rate against iteration; below them the validation metrics, when logged.

    ``rows`` are training-log rows (values as numbers or strings); a row may hold the loss,
    the validation metrics (``val_overall_accuracy``, ``val_mean_f1``, ``val_mean_iou``) or both.
    """

    def series(key: str) -> tuple[list[int], list[float]]:
        kept = [r for r in rows if r.get(key) not in (None, "")]
        return [int(r["iteration"]) for r in kept], [float(r[key]) for r in kept]

    validation = {label: series(key) for key, label in (("val_overall_accuracy", "overall accuracy"),
                                                        ("val_mean_f1", "mean F1"), ("val_mean_iou", "mean IoU"))}
    with_validation = any(iterations for iterations, _ in validation.values())
    fig, axes = plt.subplots(2 if with_validation else 1, 1, figsize=(7, 6.5 if with_validation else 4), sharex=True, squeeze=False)
    loss_ax = axes[0, 0]
    loss_ax.plot(*series("loss"), color="tab:blue", label="training loss")
    loss_ax.set_ylabel("training loss")
    loss_ax.grid(alpha=0.3)
    lr_ax = loss_ax.twinx()
    lr_iterations, rates = series("lr")
    lr_ax.plot(lr_iterations, rates, color="tab:orange", lw=1, label="learning rate")
    lr_ax.set_ylabel("learning rate (decoder)")
    if rates and min(rates) > 0:  # step decay spans decades; warm-up and poly decay touch 0, which no log axis shows
        lr_ax.set_yscale("log")
    loss_ax.legend(handles=loss_ax.get_lines() + lr_ax.get_lines(), loc="upper right")
    if with_validation:
        val_ax = axes[1, 0]
        for label, (iterations, values) in validation.items():
            val_ax.plot(iterations, [100 * v for v in values], marker="o", ms=3, label=label)
        val_ax.set_ylabel("validation (%)")
        val_ax.grid(alpha=0.3)
        val_ax.legend(loc="best")  # a short run's single point lies at the right edge
    axes[-1, 0].set_xlabel("iteration")
    fig.suptitle("Training")
    return _save(fig, path)


def plain_text(names) -> list[str]:
    """Class names as matplotlib draws them as written: "cost $ / $ m2" is no formula."""
    return [str(name).replace("$", r"\$") for name in names]


def plot_confusion(metrics: dict, path: str | Path, title: str = "Confusion matrix") -> Path:
    """Row-normalised confusion matrix with percentages."""
    cm = np.asarray(metrics["confusion_matrix"], dtype=np.float64)
    names = plain_text(metrics["class_names"])
    rows = cm.sum(axis=1, keepdims=True)
    normalised = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    fig, ax = plt.subplots(figsize=(1.1 * len(names) + 2.5, 1.0 * len(names) + 2))
    ax.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(names)):
        for j in range(len(names)):  # "-" across a class the ground truth does not hold: no share of it to show
            ax.text(j, i, f"{100 * normalised[i, j]:.0f}" if rows[i, 0] else "-", ha="center", va="center",
                    color="white" if normalised[i, j] > 0.5 else "black", fontsize=9)
    ax.set_xticks(range(len(names)), names, rotation=35, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("ground truth")
    ax.set_title(f"{title}\n(% of each ground-truth class; OA {percent(metrics['overall_accuracy'])})")
    return _save(fig, path)


def plot_prediction(image: np.ndarray, prediction_rgb: np.ndarray, path: str | Path,
                    truth_rgb: np.ndarray | None = None, errors: np.ndarray | None = None,
                    title: str = "", legend: list[tuple[str, tuple[int, int, int]]] | None = None) -> Path:
    """Image, prediction, and (when known) ground truth and error map side by side, each in a
    frame; ``legend``: (name, RGB) entries drawn below the panels."""
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
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():  # a frame: white or nodata borders of a picture stay visible
            spine.set(visible=True, color="black", linewidth=1)
    if legend:
        from matplotlib.patches import Patch

        handles = [Patch(facecolor=np.asarray(rgb) / 255, edgecolor="black", label=name)
                   for name, rgb in zip(plain_text([name for name, _ in legend]), [rgb for _, rgb in legend])]
        fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 4), frameon=False,
                   bbox_to_anchor=(0.5, -0.02 - 0.045 * ((len(handles) - 1) // 4)))
    if title:
        fig.suptitle(title)
    return _save(fig, path)


# candidates for drawing nodata: the one farthest from every class colour is used
NODATA_CANDIDATES = ((255, 0, 255), (128, 0, 128), (96, 96, 96), (255, 128, 0), (0, 128, 128), (128, 128, 0))


def nodata_color(class_colors: np.ndarray, also_avoid=()) -> tuple[int, int, int]:
    """A colour for nodata pixels that no class colour (nor ``also_avoid``) comes close to."""
    taken = np.array([*np.asarray(class_colors).reshape(-1, 3).tolist(), *map(list, also_avoid)], dtype=np.float64)
    distance = [np.abs(taken - np.array(c)).sum(axis=1).min() if len(taken) else np.inf for c in NODATA_CANDIDATES]
    return NODATA_CANDIDATES[int(np.argmax(distance))]


def error_map(truth: np.ndarray, prediction: np.ndarray, ignore_label: int) -> np.ndarray:
    """(H, W, 3) uint8: white where right, red where wrong, grey where ignored: where the truth is the ignore label,
    or the prediction is (nodata in the image), which is not scored either."""
    picture = np.full(truth.shape + (3,), 255, dtype=np.uint8)
    picture[truth != prediction] = (220, 30, 30)
    picture[(truth == ignore_label) | (prediction == ignore_label)] = (150, 150, 150)
    return picture


# ---------------------------------------------------------------- figures for the notebooks
# These build a figure and hand it back, so that a notebook can show it (png_bytes) and a
# script can write it (save_figure): eoseg.plots forces the Agg backend, under which
# Jupyter does not display figures by itself.
def save_figure(fig, path: str | Path) -> Path:
    """Write ``fig`` as a PNG at ``path`` (atomically) and close it."""
    return _save(fig, path)


def png_bytes(fig) -> bytes:
    """``fig`` rendered as PNG bytes (for IPython.display.Image), then closed."""
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def _class_legend(ax, class_names, palette) -> None:
    from matplotlib.patches import Patch

    handles = [Patch(facecolor=np.asarray(palette.colors[i]) / 255, edgecolor="black", label=name)
               for i, name in enumerate(plain_text(class_names))]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1), frameon=False)


def tile_figure(image: np.ndarray, truth_rgb: np.ndarray, labels: np.ndarray, class_names, palette, title: str = "",
                band_names: Sequence[str] | None = None):
    """Image (drawn as :func:`display_rgb` draws it) | colour-coded ground truth | numeric label map (class ids,
    ignored pixels black).

    The label map is drawn with a colour map unrelated to the palette, with the ids on the
    colour bar: it shows the numbers the network is trained on, not the colours again.
    """
    from matplotlib.colors import ListedColormap

    n = len(class_names)
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.6))
    axes[0].imshow(display_rgb(image, band_names))
    shown_bands = display_bands(band_names) if band_names else range(min(3, image.shape[0]))
    axes[0].set_title(f"image ({', '.join(band_names[i] for i in shown_bands) if band_names else 'first three bands'})")
    axes[1].imshow(truth_rgb, interpolation="nearest")
    axes[1].set_title("colour-coded ground truth")
    cmap = ListedColormap(plt.get_cmap("viridis")(np.linspace(0, 1, n)))
    cmap.set_bad("black")  # ignored pixels (palette.ignore_label) are masked
    shown = axes[2].imshow(np.ma.masked_greater_equal(labels, n), cmap=cmap, vmin=-0.5, vmax=n - 0.5,
                           interpolation="nearest")
    axes[2].set_title(f"numeric labels (ids 0-{n - 1}; black: {palette.ignore_label})")
    bar = fig.colorbar(shown, ax=axes[2], ticks=range(n), fraction=0.046, pad=0.04)
    bar.ax.set_yticklabels([f"{i} {name}" for i, name in enumerate(plain_text(class_names))])
    for ax in axes:
        ax.axis("off")
    if title:
        fig.suptitle(title)
    return fig


def patch_grid_figure(patches, palette, titles=None, class_names=None, band_names: Sequence[str] | None = None):
    """Image patches (top row, drawn as :func:`display_rgb` draws them) over their label patches in the palette's
    colours (bottom row).

    ``patches`` is a sequence of ``(image (C, H, W), labels (H, W))`` pairs.
    """
    patches = list(patches)
    fig, axes = plt.subplots(2, len(patches), figsize=(2.1 * len(patches) + (2.4 if class_names else 0), 4.6),
                             squeeze=False)
    for k, (image, labels) in enumerate(patches):
        axes[0, k].imshow(display_rgb(image, band_names))
        axes[1, k].imshow(palette.to_color(labels), interpolation="nearest")
        if titles:
            axes[0, k].set_title(titles[k], fontsize=8)
        for ax in axes[:, k]:
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0, 0].set_ylabel("image")
    axes[1, 0].set_ylabel("labels")
    if class_names:
        _class_legend(axes[1, -1], class_names, palette)
    return fig


def class_frequency_figure(counts: dict, class_names, palette, title: str = "Class frequencies"):
    """Share of the labelled pixels per class, one bar per split (told apart by hatching), in the class colours.

    ``counts`` maps a split name to its pixel count per class (ignored pixels left out).
    """
    splits = list(counts)
    n = len(class_names)
    width = 0.8 / max(len(splits), 1)
    fig, ax = plt.subplots(figsize=(1.3 * n + 2, 4))
    for s, split in enumerate(splits):
        values = np.asarray(counts[split], dtype=np.float64)
        shares = 100 * values / max(values.sum(), 1)
        x = np.arange(n) + (s - (len(splits) - 1) / 2) * width
        bars = ax.bar(x, shares, width, color=np.asarray(palette.colors[:n]) / 255, edgecolor="black",
                      hatch=["", "//", "..", "xx"][s % 4], label=split)
        ax.bar_label(bars, [f"{v:.1f}" for v in shares], fontsize=7, padding=1)
    ax.set_xticks(range(n), plain_text(class_names), rotation=25, ha="right")
    ax.set_ylabel("% of labelled pixels")
    ax.grid(axis="y", alpha=0.3)
    if len(splits) > 1:
        ax.legend(title="split (hatching)")
    ax.set_title(title)
    return fig
