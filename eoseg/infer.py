"""Labeling whole tiles or image files, writing maps, metrics and plots."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from eoseg import plots
from eoseg.checkpoint import load_model
from eoseg.config import Config
from eoseg.errors import EosegError
from eoseg.io import RasterInfo, atomic_write_text, output_suffix, raster_info, read_raster, write_raster
from eoseg.metrics import confusion_matrix, format_table, metrics_from_confusion
from eoseg.normalization import Normalization
from eoseg.predict import Predictor
from eoseg.tiles import image_info, read_eval_labels, read_image
from eoseg.train import resolve_device


@dataclass
class LabeledImage:
    name: str
    outputs: dict[str, Path]
    metrics: dict | None = None
    truth_source: str | None = None


@dataclass
class InferenceSummary:
    images: list[LabeledImage] = field(default_factory=list)
    metrics: dict | None = None
    outputs: dict[str, Path] = field(default_factory=dict)


def make_predictor(cfg: Config, weights: str | Path) -> Predictor:
    model, _ = load_model(weights, cfg)
    return Predictor(model, Normalization.from_config(cfg), cfg.WINDOW, cfg.STRIDE, cfg.INFER_BATCH_SIZE, resolve_device(cfg.DEVICE))


def label_one(cfg: Config, predictor: Predictor, image: np.ndarray, info: RasterInfo, name: str,
              out_dir: Path, truth: np.ndarray | None = None) -> LabeledImage:
    """Label one image; write its label map, colour map and preview; score it against ``truth``."""
    palette = cfg.palette
    prediction = predictor.predict(image)
    suffix = output_suffix(info)
    colors = palette.to_color(prediction)
    outputs = {
        "labels": write_raster(out_dir / f"{name}_labels{suffix}", prediction, info, colormap=palette.colormap() if suffix == ".tif" else None),
        "color": write_raster(out_dir / f"{name}_color{suffix}", np.moveaxis(colors, -1, 0), info),
    }
    result = LabeledImage(name, outputs)
    truth_rgb = errors = None
    if truth is not None:
        result.metrics = metrics_from_confusion(
            confusion_matrix(truth, prediction, cfg.num_classes, cfg.IGNORE_LABEL), cfg.CLASS_NAMES
        )
        truth_rgb = palette.to_color(truth)
        errors = plots.error_map(truth, prediction, cfg.IGNORE_LABEL)
    title = name if result.metrics is None else f"{name}: OA {100 * result.metrics['overall_accuracy']:.1f}%"
    outputs["preview"] = plots.plot_prediction(image, colors, out_dir / f"{name}_preview.png", truth_rgb, errors, title)
    return result


def run_inference(cfg: Config, weights: str | Path, out_dir: str | Path, tile_ids: list[str] | None = None,
                  image_paths: list[str | Path] | None = None, progress: bool = True) -> InferenceSummary:
    """Label configured tiles (scored against their ground truth when it exists) and/or image files."""
    out_dir = Path(out_dir)
    jobs = [("tile", t) for t in tile_ids or []] + [("file", Path(p)) for p in image_paths or []]
    if not jobs:
        raise EosegError("nothing to label: no tile ids and no image files given")
    for kind, job in jobs:  # cheap checks first: a missing input should not wait for the model
        image_info(cfg, job) if kind == "tile" else raster_info(job, "image")
    predictor = make_predictor(cfg, weights)
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg.save(out_dir)
    summary = InferenceSummary()
    total = np.zeros((cfg.num_classes, cfg.num_classes), dtype=np.int64)
    for kind, job in tqdm(jobs, desc="label", unit="image", disable=not progress):
        if kind == "tile":
            image, info = read_image(cfg, job)
            found = read_eval_labels(cfg, job, info)
            truth, source = found if found is not None else (None, None)
            name = info.path.stem
        else:
            info = raster_info(job, "image")
            image = read_raster(job, cfg.BANDS, what="image")
            truth = source = None
            name = job.stem
        result = label_one(cfg, predictor, image, info, name, out_dir, truth)
        result.truth_source = source
        if result.metrics is not None:
            total += np.asarray(result.metrics["confusion_matrix"])
        summary.images.append(result)
    report = {
        "weights": str(weights),
        "images": {r.name: {"truth": r.truth_source, "metrics": r.metrics, "outputs": {k: str(v) for k, v in r.outputs.items()}}
                   for r in summary.images},
    }
    if total.sum():
        summary.metrics = metrics_from_confusion(total, cfg.CLASS_NAMES)
        report["overall"] = summary.metrics
        summary.outputs["confusion_plot"] = plots.plot_confusion(summary.metrics, out_dir / "confusion_matrix.png")
        summary.outputs["metrics_table"] = out_dir / "metrics.txt"
        atomic_write_text(summary.outputs["metrics_table"], format_table(summary.metrics, "all scored images") + "\n")
    summary.outputs["metrics"] = out_dir / "metrics.json"
    atomic_write_text(summary.outputs["metrics"], json.dumps(report, indent=2) + "\n")
    return summary
