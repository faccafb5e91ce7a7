"""Labeling tiles and image files by streaming them through the predictor.

Each raster is read, labelled, scored and written block of rows by block of rows, so a
raster of any height runs in bounded memory. Outputs are published atomically when
complete; then a completion record (NAME_record.json) notes their sizes and hashes and
what they were made with, so that a rerun skips the images it finds done with the same
weights, config and inputs and redoes the rest. Under ``torchrun`` the images are shared
out across ranks; rank 0 gathers the metrics.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import rasterio
import torch
import torch.distributed as dist
from rasterio.enums import Resampling
from rasterio.windows import Window
from tqdm import tqdm

from eoseg import plots
from eoseg.config import Config
from eoseg.errors import EosegError
from eoseg.io import (RasterInfo, RasterWriter, atomic_write_text, exclusive, file_sha256, open_raster, output_suffix,
                      raster_info)
from eoseg.metrics import confusion_matrix, format_table, metrics_from_confusion
from eoseg.normalization import Normalization
from eoseg.gis import polygonize_labels, to_cog
from eoseg.predict import Predictor, best_class
from eoseg.tiles import TileStack, TruthSource, eval_truth, image_stack, tile_stack
from eoseg.weights import load_weights
from eoseg.train import resolve_device

RASTER_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".jp2", ".img", ".vrt")
PREVIEW_SIDE = 1024  # longest side of the preview panels, in pixels
# GDAL's block cache defaults to 5% of RAM and fills up with every block of a large
# raster read or written; one row of tiles per output is all streaming needs
GDAL_CACHE_MB = 256
RECORD_FORMAT = "eoseg-inference-record-1"
RECORD_SUFFIX = "_record.json"  # NAME_record.json, written after all of NAME's outputs


@dataclass
class LabeledImage:
    name: str
    outputs: dict[str, Path]
    metrics: dict | None = None
    truth_source: str | None = None
    rank: int = 0  # the process that labelled it (torchrun)
    reused: bool = False  # found done by an earlier run (its completion record matched)


@dataclass
class InferenceSummary:
    images: list[LabeledImage] = field(default_factory=list)
    metrics: dict | None = None
    outputs: dict[str, Path] = field(default_factory=dict)


@dataclass(frozen=True)
class Job:
    """One raster to label: its path, output name, (for configured tiles) ground truth, and the
    stacked input read for it (None: the image's BANDS and derived bands, see image_stack)."""

    info: RasterInfo
    name: str
    truth: TruthSource | None = None
    stack: TileStack | None = None


def expand_image_arguments(arguments: list[str | Path]) -> list[Path]:
    """Files as given, folders as the rasters they hold, glob patterns as their matches."""
    files: list[Path] = []
    for argument in arguments:
        text = str(argument)
        path = Path(text)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix.lower() in RASTER_SUFFIXES and p.is_file())
            if not found:
                raise EosegError(f"{path}: folder holds no raster files ({', '.join(RASTER_SUFFIXES)})")
            files += found
        elif any(ch in text for ch in "*?["):
            found = sorted(Path(p) for p in glob.glob(text, recursive=True) if Path(p).is_file())
            if not found:
                raise EosegError(f"no file matches {text!r}")
            files += found
        else:
            files.append(path)
    return files


def make_predictor(cfg: Config, model, normalization: Normalization, device: torch.device) -> Predictor:
    """The predictor the config describes, around ``model`` (on INFER_ENGINE)."""
    if cfg.INFER_ENGINE not in ("torch", "onnxruntime"):
        raise EosegError(f"INFER_ENGINE must be 'torch' or 'onnxruntime', got {cfg.INFER_ENGINE!r}")
    if cfg.INFER_ENGINE == "onnxruntime" or not isinstance(model, torch.nn.Module):
        from eoseg.onnx_engine import SIZE_MULTIPLE, OnnxModel  # onnxruntime loads only when it is used

        if cfg.WINDOW % SIZE_MULTIPLE:
            raise EosegError(f"ONNX models take inputs of multiples of {SIZE_MULTIPLE} px; set WINDOW to one (it is {cfg.WINDOW})")
        if not isinstance(model, OnnxModel):
            model = OnnxModel.from_module(model)
    return Predictor(model, normalization, cfg.WINDOW, cfg.STRIDE, cfg.INFER_BATCH_SIZE, device, blend=cfg.BLEND,
                     tta=cfg.TTA, precision=cfg.INFER_PRECISION, optimize=cfg.INFER_OPTIMIZE, compile=cfg.INFER_COMPILE,
                     reuse_memory=cfg.REUSE_FREED_MEMORY)


def label_raster(cfg: Config, predictor: Predictor, job: Job, out_dir: Path, rank: int = 0) -> LabeledImage:
    """Stream one raster through ``predictor``; write its outputs; score it if it has ground truth."""
    info, palette = job.info, cfg.palette
    suffix = output_suffix(info)
    ignore = cfg.IGNORE_LABEL
    confusion = np.zeros((cfg.num_classes, cfg.num_classes), dtype=np.int64)
    writers: dict[str, RasterWriter] = {}
    try:
        writers["labels"] = RasterWriter(out_dir / f"{job.name}_labels{suffix}", info, 1, "uint8",
                                         palette.colormap() if suffix == ".tif" else None, nodata=ignore)
        if cfg.WRITE_COLOR:
            writers["color"] = RasterWriter(out_dir / f"{job.name}_color{suffix}", info, 3, "uint8")
        if cfg.WRITE_PROBABILITIES:
            writers["probabilities"] = RasterWriter(out_dir / f"{job.name}_probabilities.tif", info, cfg.num_classes,
                                                    "uint8")
        stack = job.stack if job.stack is not None else image_stack(cfg, info)
        with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB), stack, ThreadPoolExecutor(max_workers=1) as writer_thread:
            def rows_window(first: int, end: int) -> Window:
                return Window(0, first, info.width, end - first)

            # nodata of each read, by its first row: every block the predictor hands out starts at a read's first row
            valid_from: dict[int, np.ndarray] = {}

            def read_rows(first: int, end: int) -> np.ndarray:
                # in the predictor's read-ahead thread: the only one to touch the open rasters
                pixels = stack.read(rows_window(first, end))
                valid_from[first] = stack.valid_mask(pixels, rows_window(first, end))
                return predictor.normalization.fill_invalid(pixels, valid_from[first])

            pending = None
            for block in predictor.stream(read_rows, info.height, info.width, cfg.INFER_BLOCK_ROWS):
                rows = block.scores.shape[1]
                end = block.row + rows
                labels = best_class(block.scores)
                valid = valid_from.pop(block.row)[:rows]
                labels[~valid] = ignore
                outputs = {"labels": labels}
                if cfg.WRITE_COLOR:
                    outputs["color"] = np.moveaxis(palette.to_color(labels), -1, 0)
                if cfg.WRITE_PROBABILITIES:
                    probabilities = (torch.softmax(block.scores, 0) * 255).round().to(torch.uint8).cpu().numpy()
                    probabilities[:, ~valid] = 0
                    outputs["probabilities"] = probabilities
                if job.truth is not None:
                    truth = job.truth.read_rows(palette, block.row, end)
                    truth[~valid] = ignore  # nodata pixels carry no prediction to score
                    confusion += confusion_matrix(truth, np.where(valid, labels, 0), cfg.num_classes, ignore)
                if pending is not None:
                    pending.result()  # at most one block waits for the disk
                pending = writer_thread.submit(_write_block, writers, outputs, block.row)
            if pending is not None:
                pending.result()
        outputs = {key: writer.close() for key, writer in writers.items()}
    except BaseException:
        for writer in writers.values():
            writer.abort()  # a writer closed already keeps its output: complete, but without a record
        raise
    result = LabeledImage(job.name, outputs, rank=rank)
    if suffix == ".tif":
        _gis_outputs(cfg, job, result, out_dir)
    if job.truth is not None:
        result.metrics = metrics_from_confusion(confusion, cfg.CLASS_NAMES)
        result.truth_source = job.truth.description
    if cfg.WRITE_PREVIEW:
        result.outputs["preview"] = _preview(cfg, job, result, out_dir)
    return result


def _gis_outputs(cfg: Config, job: Job, result: LabeledImage, out_dir: Path) -> None:
    """Cloud-Optimized GeoTIFFs and class polygons of a georeferenced image's finished outputs."""
    if cfg.WRITE_COG:
        for path in result.outputs.values():
            to_cog(path, path)
    if cfg.WRITE_POLYGONS:
        if cfg.WRITE_POLYGONS not in (".gpkg", ".geojson"):
            raise EosegError(f"WRITE_POLYGONS must be '', '.gpkg' or '.geojson', got {cfg.WRITE_POLYGONS!r}")
        polygons = polygonize_labels(result.outputs["labels"], out_dir / f"{job.name}_classes{cfg.WRITE_POLYGONS}",
                                     cfg.CLASS_NAMES, [cfg.IGNORE_LABEL], cfg.POLYGON_SIMPLIFY, cfg.POLYGON_MIN_AREA)
        result.outputs["polygons"] = polygons.path


def _write_block(writers: dict[str, RasterWriter], outputs: dict[str, np.ndarray], row: int) -> None:
    for key, array in outputs.items():
        writers[key].write(array, row)


def _preview(cfg: Config, job: Job, result: LabeledImage, out_dir: Path) -> Path:
    """Image | ground truth | prediction | errors, read back at most PREVIEW_SIDE pixels wide."""
    info = job.info
    scale = max(1.0, max(info.width, info.height) / PREVIEW_SIDE)
    shape = (max(1, round(info.height / scale)), max(1, round(info.width / scale)))

    def decimated(path: Path, bands, resampling=Resampling.nearest) -> np.ndarray:
        with open_raster(path) as src:
            return src.read(bands, out_shape=(len(bands), *shape), resampling=resampling)

    image = decimated(info.path, list(cfg.BANDS)[:3], Resampling.average)
    prediction = decimated(result.outputs["labels"], [1])[0]
    truth_rgb = errors = None
    if job.truth is not None:
        truth = decimated(job.truth.path, [1, 2, 3] if job.truth.colour else [1])
        truth = cfg.palette.to_labels(np.moveaxis(truth, 0, -1), source=str(job.truth.path)) if job.truth.colour else truth[0]
        truth_rgb = cfg.palette.to_color(truth)
        errors = plots.error_map(truth, prediction, cfg.IGNORE_LABEL)
    title = job.name if result.metrics is None else f"{job.name}: OA {100 * result.metrics['overall_accuracy']:.1f}%"
    return plots.plot_prediction(image, cfg.palette.to_color(prediction), out_dir / f"{job.name}_preview.png",
                                 truth_rgb, errors, title)


def distributed_rank() -> tuple[int, int]:
    """(rank, world size); joins the torchrun process group when there is one."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return (dist.get_rank(), world) if world > 1 else (0, 1)


def leave_process_group() -> None:
    """Leave the torchrun process group, if joined: left open, gloo's threads abort the process
    at exit now and then (SIGABRT)."""
    if dist.is_initialized():
        dist.destroy_process_group()


def _file_state(path: Path) -> dict:
    stat = path.stat()
    return {"path": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _made_with(cfg: Config, weights_sha256: str, caffe_mean: str | None, job: Job, precision: str) -> dict:
    """Everything an image's outputs depend on; a completion record made with anything else is stale."""
    config = json.dumps(cfg.to_dict(), sort_keys=True, default=str)
    made_with = {
        "format": RECORD_FORMAT,
        "config_sha256": hashlib.sha256(config.encode()).hexdigest(),
        "precision": precision,  # what INFER_PRECISION resolved to on this device: "auto" differs across machines
        "weights_sha256": weights_sha256,
        "caffe_mean": caffe_mean,
        "image": _file_state(job.info.path),
        "truth": None if job.truth is None else _file_state(job.truth.path),
    }
    if job.stack is not None and len(job.stack.sources) > 1:
        made_with["sources"] = [_file_state(path) for path in job.stack.paths[1:]]
    return json.loads(json.dumps(made_with))  # as it reads back from a record


def _reuse(record_path: Path, made_with: dict, out_dir: Path, rank: int) -> LabeledImage | None:
    """The image's earlier result if its record matches ``made_with`` and every output its hash."""
    try:
        record = json.loads(record_path.read_text())
    except (OSError, ValueError):
        return None
    if record.get("made_with") != made_with:
        return None
    outputs = {}
    for key, entry in record["outputs"].items():
        path = out_dir / entry["file"]
        if not path.is_file() or path.stat().st_size != entry["size"] or file_sha256(path) != entry["sha256"]:
            return None
        outputs[key] = path
    return LabeledImage(record["name"], outputs, record["metrics"], record["truth_source"], rank, reused=True)


def _write_record(record_path: Path, made_with: dict, result: LabeledImage) -> None:
    outputs = {key: {"file": path.name, "size": path.stat().st_size, "sha256": file_sha256(path)}
               for key, path in result.outputs.items()}
    record = {"name": result.name, "made_with": made_with, "outputs": outputs, "metrics": result.metrics,
              "truth_source": result.truth_source}
    atomic_write_text(record_path, json.dumps(record, indent=2) + "\n")


def _label_once(cfg: Config, predictor: Predictor, job: Job, out_dir: Path, made_with: dict, rank: int = 0,
               force: bool = False) -> LabeledImage:
    """Label ``job`` unless its completion record shows it done with ``made_with`` (or ``force``).

    Processes labelling into the same folder take turns on an image, so its outputs and
    record all come from one of them.
    """
    record_path = out_dir / f"{job.name}{RECORD_SUFFIX}"
    with exclusive(out_dir / f".{job.name}.lock"):
        if not force:
            reused = _reuse(record_path, made_with, out_dir, rank)
            if reused is not None:
                return reused
        # temporary outputs of this image (.NAME_KIND.tmp-PID...) that a killed run left: with the
        # lock held no one else writes them; KIND is one lower-case word, so no other image's match
        stale = re.compile(rf"\.{re.escape(job.name)}_[a-z]+\.tmp-\d+\..*")
        for leftover in out_dir.glob(glob.escape(f".{job.name}_") + "*.tmp-*"):
            if stale.fullmatch(leftover.name):
                leftover.unlink()
        result = label_raster(cfg, predictor, job, out_dir, rank)
        _write_record(record_path, made_with, result)
    return result


def run_inference(cfg: Config, weights: str | Path, out_dir: str | Path, tile_ids: list[str] | None = None,
                  image_paths: list[str | Path] | None = None, progress: bool = True,
                  caffe_mean: str | None = None, force: bool = False) -> InferenceSummary:
    """Label configured tiles (scored when they have ground truth) and/or image files.

    ``weights`` is an eoseg checkpoint (.pt), safetensors, ONNX or Caffe (.caffemodel)
    file; the normalisation recorded with them is applied (see eoseg.weights). Images
    whose completion record shows them done with the same weights, config and inputs are
    kept, unless ``force``.
    """
    out_dir = Path(out_dir)
    jobs = []
    for tile_id in tile_ids or []:  # cheap checks first: a missing input should not wait for the model
        stack = tile_stack(cfg, tile_id)
        jobs.append(Job(stack.info, stack.info.path.stem, eval_truth(cfg, tile_id, stack.info), stack))
    for path in expand_image_arguments(image_paths or []):
        stack = image_stack(cfg, raster_info(path, "image"))
        jobs.append(Job(stack.info, path.stem, stack=stack))
    if not jobs:
        raise EosegError("nothing to label: no tile ids and no image files given")
    names = [job.name for job in jobs]
    if len(set(names)) != len(names):
        raise EosegError(f"two inputs would write the same outputs: {sorted({n for n in names if names.count(n) > 1})}")

    rank, world = distributed_rank()
    device = resolve_device(cfg.DEVICE)
    if world > 1 and device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    model, normalization = load_weights(weights, cfg, caffe_mean)
    predictor = make_predictor(cfg, model, normalization, device)
    if rank == 0 and progress:
        print(f"precision: {predictor.precision} ({predictor.precision_reason})")
    weights_sha256 = file_sha256(weights)
    out_dir.mkdir(parents=True, exist_ok=True)
    if rank == 0:
        cfg.save(out_dir)
    mine = jobs[rank::world]
    # closed on the way out, so that an error is printed on a line of its own
    with tqdm(mine, desc=f"label (rank {rank})" if world > 1 else "label", unit="image", disable=not progress) as bar:
        results = [_label_once(cfg, predictor, job, out_dir,
                               _made_with(cfg, weights_sha256, caffe_mean, job, predictor.precision), rank, force)
                   for job in bar]
    if world > 1:
        gathered: list = [None] * world
        dist.all_gather_object(gathered, results)
        results = [r for part in gathered for r in part]
    order = {name: i for i, name in enumerate(names)}
    summary = InferenceSummary(sorted(results, key=lambda r: order[r.name]))
    scored = [r.metrics["confusion_matrix"] for r in summary.images if r.metrics is not None]
    if scored:
        summary.metrics = metrics_from_confusion(np.sum(scored, axis=0), cfg.CLASS_NAMES)
    summary.outputs["metrics"] = out_dir / "metrics.json"
    if summary.metrics is not None:
        summary.outputs["confusion_plot"] = out_dir / "confusion_matrix.png"
        summary.outputs["metrics_table"] = out_dir / "metrics.txt"
    if rank == 0:
        _write_reports(summary, weights, predictor.precision)
    return summary


def _write_reports(summary: InferenceSummary, weights: str | Path, precision: str) -> None:
    report = {
        "weights": str(weights),
        "precision": precision,
        "images": {r.name: {"truth": r.truth_source, "metrics": r.metrics, "rank": r.rank,
                            "outputs": {k: str(v) for k, v in r.outputs.items()}}
                   for r in summary.images},
    }
    if summary.metrics is not None:
        report["overall"] = summary.metrics
        plots.plot_confusion(summary.metrics, summary.outputs["confusion_plot"])
        atomic_write_text(summary.outputs["metrics_table"], format_table(summary.metrics, "all scored images") + "\n")
    atomic_write_text(summary.outputs["metrics"], json.dumps(report, indent=2) + "\n")
