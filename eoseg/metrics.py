"""The method's metrics: confusion matrix, overall accuracy, per-class F1, kappa, IoU.

Pixels whose ground truth is the ignore label (the boundaries of the eroded ISPRS
ground truth, undefined areas) are left out. Means are taken over the classes that
occur in the ground truth.
"""

from __future__ import annotations

import unicodedata

import numpy as np


def confusion_matrix(truth: np.ndarray, prediction: np.ndarray, num_classes: int, ignore_label: int) -> np.ndarray:
    """(num_classes, num_classes) int64 counts: rows are ground truth, columns predictions."""
    truth = np.asarray(truth).ravel()
    prediction = np.asarray(prediction).ravel()
    if truth.shape != prediction.shape:
        raise ValueError(f"truth has {truth.size} pixels, prediction {prediction.size}")
    if prediction.size and prediction.max() >= num_classes:
        raise ValueError(f"prediction holds class id {prediction.max()}, but there are {num_classes} classes")
    keep = (truth != ignore_label) & (truth < num_classes)
    index = truth[keep].astype(np.int64) * num_classes + prediction[keep].astype(np.int64)
    return np.bincount(index, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def metrics_from_confusion(cm: np.ndarray, class_names: list[str]) -> dict:
    cm = np.asarray(cm, dtype=np.float64)
    total = cm.sum()
    true_positive = np.diag(cm)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = true_positive / predicted
        recall = true_positive / support
        f1 = 2 * true_positive / (support + predicted)
        iou = true_positive / (support + predicted - true_positive)
    overall = true_positive.sum() / total if total else float("nan")
    expected = (support * predicted).sum() / total**2 if total else float("nan")
    kappa = (overall - expected) / (1 - expected) if total and expected != 1 else float("nan")
    present = support > 0
    # a class the ground truth lacks has no F1 or IoU to score (predicted there or not): left out of the means, shown
    # "-" in the table, and null here, so that the per-class figures average to the means
    f1[~present], iou[~present] = np.nan, np.nan
    # undefined values (nothing scored: every ground-truth pixel ignored) are None, JSON's null, never NaN
    return {
        "pixels": int(total),
        "overall_accuracy": _clean(overall),
        "kappa": _clean(kappa),
        "mean_f1": _clean(np.mean(f1[present])) if present.any() else None,
        "mean_iou": _clean(np.mean(iou[present])) if present.any() else None,
        "per_class": {
            name: {
                "f1": _clean(f1[i]), "iou": _clean(iou[i]), "precision": _clean(precision[i]),
                "recall": _clean(recall[i]), "support": int(support[i]),
            }
            for i, name in enumerate(class_names)
        },
        "confusion_matrix": cm.astype(np.int64).tolist(),
        "class_names": list(class_names),
    }


def _clean(value: float) -> float | None:
    return None if np.isnan(value) else float(value)


UNSCORED = "unscored_no_image_data_px"  # labelled ground-truth pixels where the image holds no data, left out
NOT_TRAINED = "classes_not_in_training"  # the classes no training pixel of the weights was labelled with


def nothing_scored(metrics: dict) -> str:
    """Why metrics that scored no pixel scored none."""
    if metrics.get(UNSCORED):
        return "nothing was scored: the image holds no data wherever the ground truth is labelled"
    return ("nothing was scored: every ground-truth pixel is IGNORE_LABEL (or outside the classes); of a tile split into "
            "blocks only the held-out ones count, and sparse annotations may all lie in its training blocks")


def shown_width(text: str) -> int:
    """Columns ``text`` takes in a terminal: Chinese, Japanese and Korean characters take two."""
    return sum(2 if unicodedata.east_asian_width(character) in "WF" else 1 for character in text)


def format_table(metrics: dict, title: str = "") -> str:
    """The metrics as a plain-text table for the terminal."""
    lines = [title] if title else []
    width = max(22, *(shown_width(name) + 2 for name in metrics["per_class"]))
    lines.append(f"{'class':<{width}}{'F1':>8}{'IoU':>8}{'precision':>11}{'recall':>8}{'pixels':>12}")
    for name, row in metrics["per_class"].items():
        # a class absent from the ground truth has no F1 or IoU (None; its precision still says much)
        cells = [percent(row[k]) for k in ("f1", "iou")] + \
            [f"{percent(row['precision']):>11}", percent(row["recall"])]
        padding = " " * (width - shown_width(name))
        lines.append(f"{name}{padding}{cells[0]:>8}{cells[1]:>8}{cells[2]}{cells[3]:>8}{row['support']:>12d}")
    lines.append(
        f"overall accuracy {percent(metrics['overall_accuracy'])}   mean F1 {percent(metrics['mean_f1'])}   "
        f"mean IoU {percent(metrics['mean_iou'])}   kappa {'-' if metrics['kappa'] is None else format(metrics['kappa'], '.3f')}"
        f"   ({metrics['pixels']} px)"
    )
    absent = [name for name, row in metrics["per_class"].items() if not row["support"]]
    if absent and metrics["pixels"]:
        lines.append(f"not in the ground truth, so not in the means: {', '.join(absent)}")
    if metrics.get(UNSCORED):
        lines.append(f"not scored: {metrics[UNSCORED]} px of ground truth where the image holds no data (nodata, NaN "
                     "or beyond its edge, or beyond an extra source's): no label was predicted there")
    if not metrics["pixels"]:
        lines.append(nothing_scored(metrics))
    missed = {name: row["support"] for name, row in metrics["per_class"].items()
              if row["support"] and row["precision"] is None}  # no pixel predicted as it
    untrained = [f"{name} ({pixels} px)" for name, pixels in missed.items() if name in metrics.get(NOT_TRAINED, ())]
    unlearned = [f"{name} ({pixels} px)" for name, pixels in missed.items() if name not in metrics.get(NOT_TRAINED, ())]
    if untrained:
        lines.append(f"never predicted, though in the ground truth: {', '.join(untrained)}: no training pixel was "
                     "labelled so; add training tiles that hold it (check LABEL_VALUES and TRAIN_IDS)")
    if unlearned:
        lines.append(f"never predicted, though in the ground truth: {', '.join(unlearned)}: not learned yet; train longer "
                     "(ITERATIONS or TRAIN_MINUTES) or weight rare classes (CLASS_WEIGHTS, MEDIAN_FREQUENCY_WEIGHTS)")
    guessed = [name for name, row in metrics["per_class"].items()
               if name in metrics.get(NOT_TRAINED, ()) and row["precision"] is not None]  # predicted, never trained on
    if guessed:  # in the means where the ground truth holds the class; else its pixels are errors of the other classes
        counted = "counted in the means" if all(metrics["per_class"][name]["support"] for name in guessed) else (
            "which lower the scores")
        lines.append(f"predicted, though no training pixel was labelled so: {', '.join(guessed)}: an untrained output's "
                     f"guesses, {counted}; add training tiles that hold them (check LABEL_VALUES and TRAIN_IDS)")
    return "\n".join(lines)


def percent(value: float | None) -> str:
    return "-" if value is None or np.isnan(value) else f"{100 * value:.1f}%"
