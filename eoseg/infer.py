"""Labeling tiles and image files by streaming them through the predictor.

Each raster is read, labelled, scored (eoseg.labelling: the core that training's validation
shares) and written block of rows by block of rows, so a raster of any height runs in
bounded memory. A pending record (NAME_record.json) first lists the outputs about to be
written; they are published atomically when complete; then the completion record replaces it,
noting their sizes and hashes and what they were made with, so that a rerun skips the images
it finds done with the same weights, config and inputs and redoes the rest. Under ``torchrun`` the images are shared
out across ranks; rank 0 gathers the metrics.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import hashlib
import json
import os
import re
import sys
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import rasterio
import torch
import torch.distributed as dist
from rasterio.enums import Resampling
from rasterio.windows import Window
from tqdm import tqdm

from eoseg import plots
from eoseg.config import Config, label_value_pairs, matches_pattern, uses_tile_id
from eoseg.convert import label_map_writer
from eoseg.datacheck import thin_class_note, thin_line_counts
from eoseg.device import Processes, distributed_rank, process_device
from eoseg.errors import DamagedInputError, EosegError
from eoseg.holdout import check_scored_tiles, shared_ground_warnings
from eoseg.io import (GDAL_CACHE_MB, RasterInfo, RasterWriter, alpha_band_problem, atomic_write_text, check_outputs,
                      check_writable, crs_command, exclusive, file_sha256, open_raster, output_suffix, raster_info,
                      read_as_note)
from eoseg.labelling import label_rows, labelling_stack, make_predictor
from eoseg.labels import SCAN_ROWS, files_read_with
from eoseg.metrics import NOT_TRAINED, UNSCORED, format_table, metrics_from_confusion, percent
from eoseg.normalization import check_value_scale, value_scale, values_of_type
from eoseg.predict import Predictor
from eoseg.tiles import (BAND_KINDS, TileStack, TruthSource, check_band_names, configured_inputs, display_bands, eroded_fallback,
                          eval_truth, image_stack, scaling_hint, stated_colours, tile_stack, unmasked_fill_note)
from eoseg.weights import check_input_dtype, config_that_ran, read_weights, recorded_normalization

RASTER_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".jp2", ".img", ".vrt")
# files GIS software writes beside a raster: overviews (a TIFF that opens, but no image), mask, metadata, world files
SIDECAR_SUFFIXES = (".ovr", ".msk", ".aux.xml", ".tfw", ".tifw", ".pgw", ".jgw", ".jpw", ".wld", ".prj")
PREVIEW_SIDE = 1024  # longest side of the preview panels, in pixels
RECORD_FORMAT = "eoseg-inference-record-3"  # 2: config_sha256 of the labelling settings only; 3: files read with each input
LABELLING_STEP = "inference"  # the step its config.json names
RECORD_SUFFIX = "_record.json"  # NAME_record.json: pending before NAME's outputs, complete after them all
SHARD_REPORT = "metrics.shard-{k}-of-{n}.json"  # a --shard K/N run's report, in place of metrics.json
RUN_REPORTS = {"metrics": "metrics.json", "metrics_table": "metrics.txt", "confusion_plot": "confusion_matrix.png"}


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
    failed: dict[str, str] = field(default_factory=dict)  # image file -> why it could not be labelled
    band_order_warning: str | None = None  # the first image whose colour interpretation contradicts the training's
    earlier_images: list[str] = field(default_factory=list)  # in the folder, labelled by an earlier run: not reported


@dataclass(frozen=True)
class Job:
    """One raster to label: its path, output name, (for configured tiles) ground truth, and the
    stacked input read for it (None: the image's BANDS and derived bands, see image_stack)."""

    info: RasterInfo
    name: str
    truth: TruthSource | None = None
    stack: TileStack | None = None


def expand_image_arguments(arguments: list[str | Path]) -> list[Path]:
    """Files as given, folders as the rasters they hold, glob patterns as their matches; each file once."""
    files: list[Path] = []
    for argument in arguments:
        text = str(argument)
        path = Path(text)
        if path.is_dir():
            # broken links are listed too: reading them reports them instead of skipping them silently
            found = sorted(p for p in path.iterdir() if p.suffix.lower() in RASTER_SUFFIXES
                           and (p.is_file() or (p.is_symlink() and not p.exists())))
            nested = _raster_in_subfolders(path)
            search = f"give '{path}/**/*{nested.suffix}' to search them" if nested else ""
            if not found:
                raise EosegError(f"{path}: folder holds no raster files ({', '.join(RASTER_SUFFIXES)})"
                                 + (f"; its subfolders do ({nested.relative_to(path)}): {search}" if nested else ""))
            if nested and distributed_rank()[0] == 0:
                print(f"note: {path}: its subfolders hold rasters too ({nested.relative_to(path)}), which a folder does not "
                      f"search: {search} as well", file=sys.stderr)
            files += found
        elif any(ch in text for ch in "*?[") and not path.is_file():  # "ortho [2].tif" is a name, not a pattern
            matched = sorted(Path(p) for p in glob.glob(text, recursive=True) if Path(p).is_file())
            if not matched:
                raise EosegError(f"no file matches {text!r}")
            found = [p for p in matched if not p.name.lower().endswith(SIDECAR_SUFFIXES)]  # review: x.tif.ovr labelled
            if not found:
                raise EosegError(f"only files GIS software writes beside rasters (overviews, masks, metadata, world "
                                 f"files) match {text!r}")
            files += found
        elif path.name.lower().endswith(SIDECAR_SUFFIXES):  # a shell's DIR/* gives them one by one
            if distributed_rank()[0] == 0:
                print(f"note: left out {path}: a file GIS software writes beside a raster (overviews, mask, metadata or "
                      "world file), not an image", file=sys.stderr)
        else:
            files.append(path)
    unique = {}  # overlapping patterns list a file twice: labelled once
    for file in files:
        unique.setdefault(file.resolve() if file.exists() else file, file)
    return list(unique.values())


def _raster_in_subfolders(folder: Path) -> Path | None:
    """A raster file in a subfolder of ``folder``, or None: they were left out without a word (review). Not eoseg's
    output folders inside it (their maps, reports and a killed run's hidden temporary files: code review)."""
    outputs: dict[Path, bool] = {}
    for path in folder.rglob("*"):
        if path.parent == folder or path.suffix.lower() not in RASTER_SUFFIXES or path.name.startswith("."):
            continue
        if path.parent not in outputs:  # a folder holding completion records is one inference.py writes into
            outputs[path.parent] = any(path.parent.glob(f"*{RECORD_SUFFIX}"))
        if not outputs[path.parent] and path.is_file():
            return path
    return None


GROUND_TRUTH_PATTERNS = ("GT_COLOR_PATTERN", "GT_ERODED_PATTERN", "LABEL_PATTERN")


def _without_ground_truth(cfg: Config, images: list[Path], say: bool) -> list[Path]:
    """``images`` but the files the config's ground truth patterns name (DeepGlobe's masks beside its images: review),
    said once; a file IMAGE_PATTERN names too stays."""
    kept, left_out = [], {}
    for path in images:
        named = next((name for name in GROUND_TRUTH_PATTERNS if matches_pattern(cfg.DATA_ROOT, getattr(cfg, name), path)),
                     None)
        if named is None or matches_pattern(cfg.DATA_ROOT, cfg.IMAGE_PATTERN, path):
            kept.append(path)
        else:
            left_out.setdefault(named, []).append(path.name)
    if say:
        for name, files in left_out.items():
            print(f"note: left out {', '.join(files[:3])}{f' and {len(files) - 3} more' if len(files) > 3 else ''}: "
                  f"ground truth by {name}, not images", file=sys.stderr)
    return kept


def _refuse_inputs_in_output_folder(images: list[Path], out_dir: Path) -> None:
    """Outputs written among the inputs would be taken for images by the next run over that folder; and an earlier
    run's outputs among the inputs (its folder inside the one a glob searches) would be labelled as images."""
    inside = [p for p in images if p.parent.resolve() == out_dir.resolve()]
    if inside:
        raise EosegError(f"the output folder {out_dir} holds the input {inside[0].name}: a later run over it would "
                         "label eoseg's own outputs; write the outputs elsewhere (--out or INFER_DIR)")
    recorded: dict[Path, dict[str, Path]] = {}  # folder -> {output file name: the completion record listing it}
    for image in images:
        if image.parent not in recorded:
            recorded[image.parent] = _recorded_files(image.parent)
        if image.name in recorded[image.parent]:
            raise EosegError(f"{image} is an output of an earlier run (listed in {recorded[image.parent][image.name].name}), "
                             "not an image: leave its folder out of --images (a pattern such as scenes/**/*.tif reaches "
                             "into it), or write outputs outside the images' folders")


def tile_output_name(cfg: Config, tile_id: str, info: RasterInfo) -> str:
    """The name of a configured tile's outputs: its image's file name, which names the tile where IMAGE_PATTERN puts
    its id there; where only a folder does ({id}/ortho.tif), the tile id before it (t10_ortho), or every tile's
    outputs would have one name."""
    return info.path.stem if uses_tile_id(Path(cfg.IMAGE_PATTERN).name) else f"{tile_id}_{info.path.stem}"


# what a band name in BAND_NAMES means, in GDAL's colour interpretation words
def band_order_warning(cfg: Config, info: RasterInfo, recorded: dict | None) -> str | None:
    """A line when the image's own colour interpretation (GDAL's) contradicts that of the training images' files
    (``recorded``: :func:`eoseg.tiles.image_bands_record`) or, where they stated no colour or the weights do not
    record it, BAND_NAMES; else None.

    Only colours GDAL can state (red, green, blue) count. Files that say what the training files said tell nothing
    apart (the ISPRS IRRG tiles are all declared RGB), so they are not warned of; an RGB image given to weights
    trained on files declared otherwise, or on IRRG bands GDAL did not call RGB, is: that saves a wrong map.
    """
    stated, colours = stated_colours(info, cfg.BANDS), ("red", "green", "blue")
    bands = ", ".join(map(str, cfg.BANDS))
    recorded_colours = (recorded or {}).get("colours", [])
    if stated in recorded_colours:
        return None
    trained = [listed for listed in recorded_colours if any(c in colours for c in listed)]
    if trained:
        contradicted = [listed for listed in trained
                        if any(s in colours and t in colours and s != t for s, t in zip(stated, listed))]
        if not contradicted:
            return None
        return (f"{info.path.name}: GDAL says bands {bands} are {', '.join(stated)}, but the training images' files said "
                f"{', '.join(contradicted[0])}; if the bands are in another order, set BANDS to reorder them")
    declared = [BAND_KINDS.get(name.upper()) for name in cfg.BAND_NAMES]
    if not any(s in colours and d is not None and s != d for s, d in zip(stated, declared)):
        return None
    return (f"{info.path.name}: GDAL says bands {bands} are {', '.join(stated)}, but the weights were trained on "
            f"{', '.join(cfg.BAND_NAMES)} (BAND_NAMES); if the bands are in another order, set BANDS to reorder them")


def _none_labelled(failed: dict[str, str]) -> EosegError:
    if len(failed) == 1:
        return DamagedInputError(next(iter(failed.values())))
    return DamagedInputError(f"none of the {len(failed)} images could be labelled; the first: {next(iter(failed.values()))}")


def label_raster(cfg: Config, predictor: Predictor, job: Job, out_dir: Path, rank: int = 0,
                 progress: bool = False) -> LabeledImage:
    """Stream one raster through ``predictor``; write its outputs; score it if it has ground truth. ``progress``: a bar
    of its rows, where it takes more than one block of INFER_BLOCK_ROWS (a large raster looked hung for minutes)."""
    info, palette = job.info, cfg.palette
    suffix = output_suffix(info)
    confusion = np.zeros((cfg.num_classes, cfg.num_classes), dtype=np.int64)
    unscored = 0
    writers: dict[str, RasterWriter] = {}
    files = output_files(cfg, job, out_dir)
    try:
        # the colour table goes into PNGs too (as their palette), and so do the class names (as a text chunk)
        writers["labels"] = label_map_writer(files["labels"], info, palette, cfg.CLASS_NAMES)
        if cfg.WRITE_COLOR:
            writers["color"] = RasterWriter(files["color"], info, 3, "uint8", masked=True)
        if cfg.WRITE_PROBABILITIES:
            writers["probabilities"] = RasterWriter(files["probabilities"], info, cfg.num_classes,
                                                    "uint8", band_names=cfg.CLASS_NAMES, masked=True, colour=False)
        stack = job.stack if job.stack is not None else image_stack(cfg, info)
        with (rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB), ThreadPoolExecutor(max_workers=1) as writer_thread,
              contextlib.closing(label_rows(cfg, predictor, stack, job.truth)) as blocks,
              tqdm(total=info.height, desc=f"  {job.name}", unit="row", leave=False,
                   disable=not progress or info.height <= cfg.INFER_BLOCK_ROWS) as rows_bar):
            pending = None
            for rows in blocks:
                rows_bar.update(len(rows.labels))
                outputs = {"labels": rows.labels}
                if cfg.WRITE_COLOR:
                    outputs["color"] = np.moveaxis(palette.to_color(rows.labels), -1, 0)
                if cfg.WRITE_PROBABILITIES:
                    probabilities = (torch.softmax(rows.scores, 0) * 255).round().to(torch.uint8).cpu().numpy()
                    probabilities[:, ~rows.valid] = 0
                    outputs["probabilities"] = probabilities
                if rows.confusion is not None:
                    confusion += rows.confusion
                    unscored += rows.unscored
                if pending is not None:
                    pending.result()  # at most one block waits for the disk
                pending = writer_thread.submit(_write_block, writers, outputs, rows.row, rows.valid)
            if pending is not None:
                pending.result()
        outputs = {key: writer.close() for key, writer in writers.items()}
    except BaseException:
        for writer in writers.values():
            writer.abort()  # a writer closed already keeps its output: complete, but without a record
        raise
    result = LabeledImage(job.name, outputs, rank=rank)
    if job.truth is not None:
        result.metrics = {**metrics_from_confusion(confusion, cfg.CLASS_NAMES), UNSCORED: unscored}
        result.truth_source = job.truth.description
    with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB):  # whole rasters read again: their blocks would fill 5% of RAM
        if suffix == ".tif":
            _gis_outputs(cfg, result, files)
        if cfg.WRITE_PREVIEW:
            result.outputs["preview"] = _preview(cfg, job, result, files["preview"])
    return result


def output_files(cfg: Config, job: Job, out_dir: Path) -> dict[str, Path]:
    """The files labelling ``job`` writes into ``out_dir``, by kind (its completion record aside)."""
    suffix = output_suffix(job.info)
    files = {"labels": out_dir / f"{job.name}_labels{suffix}"}
    if cfg.WRITE_COLOR:
        files["color"] = out_dir / f"{job.name}_color{suffix}"
    if cfg.WRITE_PROBABILITIES:
        files["probabilities"] = out_dir / f"{job.name}_probabilities.tif"
    if cfg.WRITE_POLYGONS and suffix == ".tif":
        files["polygons"] = out_dir / f"{job.name}_classes{cfg.WRITE_POLYGONS}"
    if cfg.WRITE_PREVIEW:
        files["preview"] = out_dir / f"{job.name}_preview.png"
    return files


def _gis_outputs(cfg: Config, result: LabeledImage, files: dict[str, Path]) -> None:
    """Cloud-Optimized GeoTIFFs and class polygons of a georeferenced image's finished outputs."""
    if not (cfg.WRITE_COG or cfg.WRITE_POLYGONS):
        return
    from eoseg.gis import polygonize_labels, to_cog  # shapely and pyogrio (the "gis" extra) load only when used

    if cfg.WRITE_COG:
        for path in result.outputs.values():
            to_cog(path, path)
    if cfg.WRITE_POLYGONS:
        polygons = polygonize_labels(result.outputs["labels"], files["polygons"],
                                     cfg.CLASS_NAMES, [cfg.IGNORE_LABEL], cfg.POLYGON_SIMPLIFY, cfg.POLYGON_MIN_AREA,
                                     block_rows=cfg.INFER_BLOCK_ROWS)
        result.outputs["polygons"] = polygons.path


def _write_block(writers: dict[str, RasterWriter], outputs: dict[str, np.ndarray], row: int, valid: np.ndarray) -> None:
    for key, array in outputs.items():
        writers[key].write(array, row, valid)


def _preview(cfg: Config, job: Job, result: LabeledImage, path: Path) -> Path:
    """Image | ground truth | prediction | errors, read back at most PREVIEW_SIDE pixels wide."""
    info = job.info
    scale = max(1.0, max(info.width, info.height) / PREVIEW_SIDE)
    shape = (max(1, round(info.height / scale)), max(1, round(info.width / scale)))

    def decimated(path: Path, bands, resampling=Resampling.nearest) -> np.ndarray:
        with open_raster(path) as src:
            return src.read(bands, out_shape=(len(bands), *shape), resampling=resampling)

    image = decimated(info.path, [cfg.BANDS[i] for i in display_bands(cfg.BAND_NAMES)], Resampling.average)
    prediction = decimated(result.outputs["labels"], [1])[0]
    truth_rgb = errors = None
    if job.truth is not None:
        truth = _decimated_truth(cfg, job.truth, info, shape)
        truth_rgb = cfg.palette.to_color(truth)
        errors = plots.error_map(truth, prediction, cfg.IGNORE_LABEL)
    title = job.name if result.metrics is None else f"{job.name}: OA {percent(result.metrics['overall_accuracy'])}"
    palette = cfg.palette
    # nodata in a colour no class has (and not the ground truth's ignore colour either)
    nodata = plots.nodata_color(palette.colors, [palette.ignore_color] if palette.ignore_color else [])
    prediction_rgb = palette.to_color(prediction)
    prediction_rgb[prediction == cfg.IGNORE_LABEL] = nodata
    shown = [prediction] if truth_rgb is None else [prediction, truth]
    present = sorted({int(v) for labels in shown for v in np.unique(labels) if v < cfg.num_classes})
    legend = [(cfg.CLASS_NAMES[i], tuple(int(c) for c in palette.colors[i])) for i in present]
    if (prediction == cfg.IGNORE_LABEL).any():
        legend.append(("no data", nodata))
    if truth_rgb is not None and (truth == cfg.IGNORE_LABEL).any():
        # IGNORE_COLOR; without one (black a class, as in building masks), a colour no class has either
        unscored = tuple(palette.ignore_color) if palette.ignore_color else plots.nodata_color(palette.colors, [nodata])
        truth_rgb[truth == cfg.IGNORE_LABEL] = unscored
        legend.append(("not scored (ground truth)", unscored))
    return plots.plot_prediction(image, prediction_rgb, path,
                                 truth_rgb, errors, title, legend)


def _decimated_truth(cfg: Config, truth: TruthSource, info: RasterInfo, shape: tuple[int, int]) -> np.ndarray:
    """``truth`` as it is scored (class ids on the image's grid: LABEL_VALUES applied, polygons rasterised,
    only the held-out blocks of a tile also trained on), the pixel nearest each centre of a ``shape`` grid."""
    rows, cols = (((np.arange(n) + 0.5) * size / n).astype(int) for n, size in zip(shape, (info.height, info.width)))
    decimated = np.empty(shape, dtype=np.uint8)
    for first in range(0, info.height, SCAN_ROWS):
        picked = np.flatnonzero((rows >= first) & (rows < first + SCAN_ROWS))
        if picked.size:
            block = truth.read_rows(cfg.palette, first, min(first + SCAN_ROWS, info.height))
            decimated[picked] = block[rows[picked] - first][:, cols]
    return decimated


def _file_state(path: Path) -> dict:
    """Size and time of ``path`` and of every file read with it (:func:`eoseg.labels.files_read_with`: a changed
    georeference or mosaic tile makes an earlier labelling stale)."""

    def state(file: Path) -> dict:
        stat = file.stat()
        return {"path": str(file.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}

    return {**state(path), "read_with": [state(file) for file in files_read_with(path)]}


# Settings labelling does not read (training's, the patches') or that change only its speed and memory: results
# made under other values of these are this run's too. Every other setting, and any added later, counts.
NOT_LABELLING_SETTINGS = frozenset({
    "TRAIN_SOURCE", "BATCH_SIZE", "ITERATIONS", "BASE_LR", "ENCODER_LR_FACTOR", "MOMENTUM", "WEIGHT_DECAY", "LR_STEPS",
    "AUX_LOSS_WEIGHT", "CLASS_WEIGHTS", "MEDIAN_FREQUENCY_WEIGHTS", "TRAIN_MINUTES", "OPTIMIZER", "LR_SCHEDULE",
    "WARMUP_FRACTION", "POLY_POWER", "FINAL_LR_FACTOR", "LOSS", "DICE_WEIGHT", "FOCAL_GAMMA", "OHEM_FRACTION",
    "RANDOM_FLIPS", "COLOR_JITTER", "RANDOM_SCALE", "SNAPSHOT_EVERY", "LOG_EVERY", "VAL_EVERY", "VAL_IDS", "SEED",
    "PRECISION", "CHANNELS_LAST", "COMPILE", "DETERMINISTIC", "TRAIN_DIR", "MODEL_FILE", "ENCODER_WEIGHTS", "INIT_WEIGHTS",
    "PATCHES_DIR", "LMDB_DIR", "TRAIN_STRIDE", "FLIPS", "ROTATIONS", "SHUFFLE_SEED", "COMPOSITE_NDSM_MAX",
    "NUM_WORKERS", "DEVICE", "REUSE_FREED_MEMORY", "INFER_BATCH_SIZE", "INFER_BLOCK_ROWS", "INFER_COMPILE", "INFER_DIR",
})


def labelling_settings(values: dict) -> dict:
    """The settings of a config (as ``Config.to_dict`` or a saved config.json holds them) that its labels depend on."""
    return {name: value for name, value in json.loads(json.dumps(values, default=str)).items()
            if name not in NOT_LABELLING_SETTINGS}


def _config_sha256(cfg: Config) -> str:
    return hashlib.sha256(json.dumps(labelling_settings(cfg.to_dict()), sort_keys=True).encode()).hexdigest()


def _made_with(cfg: Config, weights_sha256: str, caffe_mean: str | None, job: Job, precision: str) -> dict:
    """Everything an image's outputs depend on; a completion record made with anything else is stale."""
    made_with = {
        "format": RECORD_FORMAT,
        "config_sha256": _config_sha256(cfg),
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
    if record.get("made_with") != made_with or not record.get("complete", True):  # older records: complete
        return None
    outputs = {}
    for key, entry in record["outputs"].items():
        path = out_dir / entry["file"]
        if not path.is_file() or path.stat().st_size != entry["size"] or file_sha256(path) != entry["sha256"]:
            return None
        outputs[key] = path
    return LabeledImage(record["name"], outputs, record["metrics"], record["truth_source"], rank, reused=True)


def _refuse_other_runs_results(out_dir: Path, weights_sha256: str, cfg: Config) -> None:
    """Refuse an output folder holding results made with other weights or another config: relabelling would
    overwrite them, and the folder would mix two runs' maps under one config.json and metrics.json."""
    config_sha256 = _config_sha256(cfg)
    others, other_weights, other_configs = [], False, set()
    for record_path in sorted(out_dir.glob(f"*{RECORD_SUFFIX}")):
        try:
            record = json.loads(record_path.read_text())
            made_with = record["made_with"]
            if _wrote_nothing(record, out_dir):
                continue  # nothing made with other settings
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue  # not a record of ours
        if (made_with.get("weights_sha256"), made_with.get("config_sha256")) != (weights_sha256, config_sha256):
            unfinished = "" if record.get("complete", True) else " (unfinished: its run was killed)"
            others.append(record_path.name.removesuffix(RECORD_SUFFIX) + unfinished)
            other_weights |= made_with.get("weights_sha256") != weights_sha256
            if made_with.get("config_sha256") != config_sha256:
                other_configs.add(made_with.get("config_sha256"))
    if others:
        listed = ", ".join(others[:4]) + (f" and {len(others) - 4} more" if len(others) > 4 else "")
        made_with = ["other weights"] if other_weights else []
        if other_configs:
            made_with.append("another config" + _changed_settings(out_dir, cfg, other_configs))
        raise EosegError(f"{out_dir} holds results made with {' and '.join(made_with)}: {listed}; label into another "
                         "--out, or pass --force to label this run's images again there")


def _changed_settings(out_dir: Path, cfg: Config, other_configs: set) -> str:
    """' (NAME=old, now new; ...)' when the folder's config.json is the one its other results were made with, else ''."""
    try:
        saved = labelling_settings(json.loads((out_dir / "config.json").read_text())["config"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return ""
    if other_configs != {hashlib.sha256(json.dumps(saved, sort_keys=True).encode()).hexdigest()}:
        return ""
    current = labelling_settings(cfg.to_dict())
    return " (" + "; ".join(f"{name}={saved.get(name)!r}, now {current.get(name)!r}"
                            for name in _differing(saved, current)) + ")"


def _differing(settings: dict, others: dict) -> list[str]:
    """The names whose values differ between two sets of labelling settings, in order."""
    return [name for name in sorted(settings.keys() | others.keys()) if settings.get(name) != others.get(name)]


def _refuse_other_steps_files(out_dir: Path, force: bool) -> None:
    """Refuse a folder holding a training run (its config.json, which labelling writes, is what --resume holds the
    run to), even with ``force``; and, without it, a config.json or report of a run's name where no labelling run
    left a record: another step's, or the user's, which labelling would replace (review)."""
    if (out_dir / "checkpoints").is_dir() and (out_dir / "log.csv").is_file():
        raise EosegError(f"{out_dir} holds a training run (its checkpoints and log.csv), whose config.json labelling "
                         "would replace; label into another --out")
    if force or not out_dir.is_dir() or any(out_dir.glob(f"*{RECORD_SUFFIX}")):
        return
    try:  # a labelling run that has not written a record yet (the other shares of a --shard run start beside it)
        if json.loads((out_dir / "config.json").read_text()).get("step") == LABELLING_STEP:
            return
    except (OSError, ValueError, AttributeError):
        pass
    held = [name for name in ("config.json", *RUN_REPORTS.values()) if (out_dir / name).exists()]
    if held:
        raise EosegError(f"{out_dir} holds {', '.join(held)}, which no labelling run left there (it holds no record of "
                         "labelled images) and this one would replace; label into another --out, or pass --force to "
                         "replace them")


def _refuse_another_images_outputs(out_dir: Path, jobs: list[Job]) -> None:
    """Refuse to replace the outputs of another image file of the same name (every drone project's
    odm_orthophoto.tif): a changed image of the same path is relabelled, another file is not."""
    for job in jobs:
        try:
            record = json.loads((out_dir / f"{job.name}{RECORD_SUFFIX}").read_text())
            earlier = record["made_with"]["image"]["path"]
            if _wrote_nothing(record, out_dir):
                continue  # no outputs of that file to lose
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue
        if earlier != str(job.info.path.resolve()):
            raise EosegError(f"{out_dir} holds the outputs of {earlier}, which {job.info.path.resolve()} would replace (the "
                             "same name); label it into another --out, or pass --force to replace them")


def _wrote_nothing(record: dict, out_dir: Path) -> bool:
    """Whether ``record`` is pending and none of the outputs it lists exists: a run killed before it wrote any."""
    return not record.get("complete", True) and not any((out_dir / entry["file"]).exists()
                                                        for entry in record["outputs"].values())


def _write_record(record_path: Path, made_with: dict, result: LabeledImage) -> None:
    outputs = {key: {"file": path.name, "size": path.stat().st_size, "sha256": file_sha256(path)}
               for key, path in result.outputs.items()}
    record = {"name": result.name, "made_with": made_with, "complete": True, "outputs": outputs,
              "metrics": result.metrics, "truth_source": result.truth_source}
    atomic_write_text(record_path, json.dumps(record, indent=2) + "\n")


def _write_pending_record(record_path: Path, made_with: dict, files: dict[str, Path]) -> None:
    """Before an image's outputs: the files about to be written, so that a run killed half-way leaves them listed as
    this step's, which a rerun replaces, not taken for a user's files of the same names, which it refuses."""
    record = {"name": record_path.name.removesuffix(RECORD_SUFFIX), "made_with": made_with, "complete": False,
              # no size or hash an output could match: a version that reads no "complete" takes it for stale
              "outputs": {key: {"file": path.name, "size": -1, "sha256": ""} for key, path in files.items()}}
    atomic_write_text(record_path, json.dumps(record, indent=2) + "\n")


def _recorded_files(folder: Path) -> dict[str, Path]:
    """The files that the completion records in ``folder`` list (complete or pending), each with its record."""
    listed: dict[str, Path] = {}
    for record_path in sorted(folder.glob(f"*{RECORD_SUFFIX}")):
        try:
            listed.update({entry["file"]: record_path for entry in json.loads(record_path.read_text())["outputs"].values()})
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue  # not one of ours
    return listed


def _check_output_files(cfg: Config, jobs: list[Job], out_dir: Path, force: bool) -> None:
    """Refuse an output that would overwrite an input of this run or a file of the config's tiles (ground truth in
    the output folder, say), even with ``force``; and, without it, an existing file of an output's name that no
    record in ``out_dir`` lists: the user's own (another tool's map), which labelling would replace unasked."""
    inputs = configured_inputs(cfg)
    for job in jobs:
        for path in job.stack.paths:
            inputs.setdefault(path.resolve(), f"the input {path}")
        if job.truth is not None:
            inputs.setdefault(job.truth.path.resolve(), f"the ground truth {job.truth.path}")
    outputs = [path for job in jobs for path in output_files(cfg, job, out_dir).values()]
    recorded = _recorded_files(out_dir)
    check_outputs(outputs, inputs, True, "--out (or INFER_DIR)")
    check_outputs([path for path in outputs if path.name not in recorded], {}, force, "--out",
                  f", and no record of an earlier labelling in {out_dir} lists it (label into another --out?)")


def _remove_recorded_outputs(record_path: Path, out_dir: Path) -> None:
    """Remove the completion record ``record_path`` and the outputs it lists."""
    try:
        listed = [entry["file"] for entry in json.loads(record_path.read_text())["outputs"].values()]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        listed = []  # no record, or not one of ours: nothing it vouches for
    for name in listed:
        if Path(name).name == name:  # a file of this folder, as records name them; with its class names beside it
            for path in (out_dir / name, out_dir / f"{name}.aux.xml"):
                path.unlink(missing_ok=True)
    record_path.unlink(missing_ok=True)


def _label_once(cfg: Config, predictor: Predictor, job: Job, out_dir: Path, made_with: dict, rank: int = 0,
               force: bool = False, progress: bool = False) -> LabeledImage:
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
        # an earlier run's outputs of it are stale (the image, its ground truth or sources changed) or partial (that run
        # was killed): removed first, so that a failure now leaves no earlier map passing for this image's (review)
        _remove_recorded_outputs(record_path, out_dir)
        # temporary outputs of this image (.NAME_KIND.tmp-PID...) that a killed run left: with the
        # lock held no one else writes them; KIND is one lower-case word, so no other image's match
        stale = re.compile(rf"\.{re.escape(job.name)}_[a-z]+\.tmp-\d+\..*")
        for leftover in out_dir.glob(glob.escape(f".{job.name}_") + "*.tmp-*"):
            if stale.fullmatch(leftover.name):
                leftover.unlink()
        files = output_files(cfg, job, out_dir)
        _write_pending_record(record_path, made_with, files)
        try:
            result = label_raster(cfg, predictor, job, out_dir, rank, progress)
        except BaseException:
            if not any(path.exists() for path in files.values()):
                record_path.unlink(missing_ok=True)  # nothing written that it would vouch for
            raise
        _write_record(record_path, made_with, result)
    return result


def run_inference(cfg: Config, weights: str | Path, out_dir: str | Path, tile_ids: list[str] | None = None,
                  image_paths: list[str | Path] | None = None, progress: bool = True,
                  caffe_mean: str | None = None, force: bool = False,
                  shard: tuple[int, int] | None = None) -> InferenceSummary:
    """Label configured tiles (scored when they have ground truth) and/or image files.

    ``weights`` is an eoseg checkpoint (.pt), safetensors, ONNX or Caffe (.caffemodel)
    file; the normalisation recorded with them is applied (see eoseg.weights). Images
    whose completion record shows them done with the same weights, config and inputs are
    kept, unless ``force``. ``shard`` (K, N): label only the K-th of N shares of the inputs
    (:func:`shard_of`) and write the report as ``metrics.shard-K-of-N.json``, for
    :func:`merge_shard_reports` to gather.
    """
    failed: dict[str, str] = {}  # damaged image files: reported, the others labelled
    try:
        with contextlib.ExitStack() as held:  # this run's mark on the output folder, while it writes there
            summary = _label_inputs(cfg, weights, Path(out_dir), tile_ids, image_paths, progress, caffe_mean, force,
                                    shard, failed, held)
    except DamagedInputError:  # no image could be labelled
        if distributed_rank()[0] == 0:
            _drop_stale_outputs(Path(out_dir), failed)
        raise
    if distributed_rank()[0] == 0:
        _drop_stale_outputs(Path(out_dir), summary.failed)
    return summary


RUN_MARK_GLOB = ".labelling-*.lock"  # a labelling run's mark on its output folder, locked while it runs


@contextlib.contextmanager
def _labelling_run(out_dir: Path, signature: str) -> Iterator[None]:
    """Mark ``out_dir`` as written by this run, the mark holding its ``signature`` (weights and labelling settings) and
    locked while it runs; refuse where a run still writing there has another signature. Shares of one run (--shard)
    write one folder together; two runs of other settings started together each passed the check of the records
    before either wrote one, and mixed their maps under one report (review). Called under .config.lock, so that a
    mark is never seen between its making and its locking."""
    for mark in out_dir.glob(RUN_MARK_GLOB):
        try:
            handle = open(mark)
        except FileNotFoundError:  # its run ended meanwhile (it removes its mark outside the lock)
            continue
        with handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:  # its run is writing
                if handle.read().strip() != signature:
                    raise EosegError(f"another labelling run, with other weights or labelling settings, is writing "
                                     f"{out_dir} (it holds {mark.name}); wait for it to end, or label into another "
                                     "--out") from None
                continue
        mark.unlink(missing_ok=True)  # a killed run's
    own = out_dir / f".labelling-{os.getpid()}-{uuid.uuid4().hex[:8]}.lock"
    with open(own, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        handle.write(signature)
        handle.flush()
        try:
            yield
        finally:
            own.unlink(missing_ok=True)


def _thin_class_in_truth(cfg: Config, job: Job) -> str | None:
    """check_data.py's note of a class in thin lines among areas, of ``job``'s ground truth as it is scored (read by
    bands of rows, each once)."""
    rows: dict[tuple[int, int], np.ndarray] = {}

    def read(window: Window) -> np.ndarray:
        band = (window.row_off, window.row_off + window.height)
        if band not in rows:
            rows[band] = job.truth.read_rows(cfg.palette, *band)
        return rows[band][:, window.col_off:window.col_off + window.width]

    return thin_class_note(cfg, *thin_line_counts(job.info.height, job.info.width, cfg.num_classes, read))


def _drop_stale_outputs(out_dir: Path, failed: dict[str, str]) -> None:
    """Remove what an earlier run made of images that could not be labelled now, where the image (or a file read with
    it) is there, changed since: with a record saying "complete" they passed for the map of the image as it is
    (review)."""
    for path in map(Path, failed):
        record_path = out_dir / f"{path.stem}{RECORD_SUFFIX}"  # an image's outputs are named by its file's stem
        if not record_path.is_file():
            continue
        with exclusive(out_dir / f".{path.stem}.lock"):
            try:
                record = json.loads(record_path.read_text())
                made_from = record["made_with"]["image"]
            except (OSError, ValueError, KeyError, TypeError):
                continue  # not a record of ours
            if not isinstance(made_from, dict) or made_from.get("path") != str(path.resolve()) or not record.get("complete", True):
                continue  # another file's outputs of the same name; a killed run's, which no one takes as complete
            if _changed_since(made_from):
                _remove_recorded_outputs(record_path, out_dir)
                print(f"note: removed the outputs of {path.name} that an earlier run made of it as it was then",
                      file=sys.stderr)


def _changed_since(state: dict) -> bool:
    """Whether a file :func:`_file_state` described, or one read with it, is there with another size or time; not
    where one cannot be looked at (a share unmounted): the outputs of an unchanged mosaic are hours of work."""
    changed = False
    for entry in [state, *state.get("read_with", [])]:
        try:
            stat = Path(entry["path"]).stat()
        except (OSError, KeyError, TypeError):
            return False  # unknown
        changed |= (stat.st_size, stat.st_mtime_ns) != (entry.get("size"), entry.get("mtime_ns"))
    return changed


def _label_inputs(cfg: Config, weights: str | Path, out_dir: Path, tile_ids: list[str] | None,
                  image_paths: list[str | Path] | None, progress: bool, caffe_mean: str | None, force: bool,
                  shard: tuple[int, int] | None, failed: dict[str, str], held: contextlib.ExitStack) -> InferenceSummary:
    """:func:`run_inference`, the images that cannot be labelled gathered into ``failed``; ``held`` keeps this run's
    mark on ``out_dir`` (:func:`_labelling_run`) until the caller is done."""
    tile_ids = list(dict.fromkeys(tile_ids or []))  # a tile listed twice is labelled once, as TEST_IDS lists it
    jobs = []
    for tile_id in tile_ids:  # cheap checks first: a missing input should not wait for the model
        stack = tile_stack(cfg, tile_id)
        jobs.append(Job(stack.info, tile_output_name(cfg, tile_id, stack.info), eval_truth(cfg, tile_id, stack.info), stack))
    scored_tiles = [tile_id for tile_id, job in zip(tile_ids, jobs) if job.truth is not None]
    unscored = [tile_id for tile_id in tile_ids if tile_id not in scored_tiles]
    fallback = eroded_fallback(cfg, scored_tiles)
    if fallback and progress and distributed_rank()[0] == 0:
        print(f"note: {fallback}", file=sys.stderr)
    if unscored and progress and distributed_rank()[0] == 0:
        looked = " or ".join(str(cfg.tile_path(name, unscored[0])) for name in ("GT_ERODED_PATTERN", "LABEL_PATTERN")
                             if cfg.tile_path(name, unscored[0]) is not None)
        colour = cfg.tile_path("GT_COLOR_PATTERN", unscored[0])
        convert = (f"; its colour ground truth {colour} is there: convert it (convert_gt.py --from-color) to score it"
                   if colour is not None and colour.is_file() else "")  # check_data.py says so too (review)
        print(f"note: tiles {', '.join(unscored[:5])}{' ...' if len(unscored) > 5 else ''} have no ground truth (for "
              f"{unscored[0]}: nothing at {looked or 'no GT_ERODED_PATTERN or LABEL_PATTERN'}): labelled, not scored"
              f"{convert}", file=sys.stderr)
    listed = expand_image_arguments(image_paths or [])
    listed = _without_ground_truth(cfg, listed, say=progress and distributed_rank()[0] == 0)
    # a configured tile's too: IMAGE_PATTERN's id globs would read the maps beside it as tiles (review)
    _refuse_inputs_in_output_folder([job.info.path for job in jobs] + listed, out_dir)
    check_writable(out_dir, "output folder")
    for path in listed:
        try:
            stack = image_stack(cfg, raster_info(path, "image"))
        except DamagedInputError as err:
            failed[str(path)] = str(err)
            continue
        jobs.append(Job(stack.info, path.stem, stack=stack))
    if not jobs and failed:
        raise _none_labelled(failed)
    for job in jobs:
        say = progress and distributed_rank()[0] == 0
        if job.info.unplaced and say:
            carried = ("its outputs carry them (GeoTIFFs), to be warped alike" if job.info.ground_control
                       else "its outputs are not georeferenced")
            print(f"note: {job.info.unplaced}; {carried}", file=sys.stderr)
        # a world file (GDAL reads no .prj beside it), or a GeoTIFF's transform without its CRS
        elif job.info.georeferenced and job.info.crs is None and say:
            print(f"note: {job.info.path.name} is placed (a transform) but has no CRS: its pixel size is not compared "
                  f"with the training imagery's and its outputs carry no CRS; give it one ({crs_command(job.info.path.name)})",
                  file=sys.stderr)
        alpha = alpha_band_problem(job.info, cfg.BANDS) if say else ""
        if alpha:
            print(f"note: {alpha}", file=sys.stderr)
    if not jobs:
        raise EosegError("nothing to label: no tile ids and no image files given")
    plain = [job.info.path.name for job in jobs if output_suffix(job.info) == ".png"]
    if cfg.WRITE_COG and plain and progress and distributed_rank()[0] == 0:
        shown = ", ".join(plain[:3]) + (f" and {len(plain) - 3} more" if len(plain) > 3 else "")
        one = len(plain) == 1
        probabilities = ", probabilities a plain TIFF" if cfg.WRITE_PROBABILITIES else ""
        print(f"note: WRITE_COG: {shown} {'is' if one else 'are'} not placed on the ground; {'its' if one else 'their'} "
              f"outputs are no Cloud-Optimized GeoTIFFs (maps PNGs{probabilities})", file=sys.stderr)
    image_jobs = {job.name for job in jobs[len(tile_ids):]}
    if cfg.WRITE_POLYGONS:  # before any image is labelled
        jobs = _each_job(jobs, image_jobs, failed, lambda job: _check_polygons_placed(cfg, job))
    names = [job.name for job in jobs]
    if len(set(names)) != len(names):
        twice = sorted({str(job.info.path) for job in jobs if names.count(job.name) > 1})
        raise EosegError(f"inputs of the same name would write the same outputs: {', '.join(twice)}; label them into "
                         "different --out folders")
    _check_output_files(cfg, jobs, out_dir, force)
    if shard is not None:
        jobs = shard_of(jobs, *shard)

    rank, world = distributed_rank()
    device = process_device(cfg.DEVICE, Processes.from_environment())
    model, record = read_weights(weights, cfg, caffe_mean)
    cfg = config_that_ran(cfg, record)  # the weights decide the network: config.json says which ran
    check_scored_tiles(record["signature"], cfg, scored_tiles, f"weights {weights}")
    if scored_tiles and rank == 0 and progress:  # a second flight over a first one's ground, scored (review)
        split = (record["signature"].get("holdout") or {}).get("tiles", [])  # their held-out blocks were not learned
        held_out = cfg.replace(TEST_IDS=list(dict.fromkeys(scored_tiles + split)), VAL_IDS=[])
        for warning in shared_ground_warnings(held_out, scored_tiles):
            print(warning, file=sys.stderr)
    trained_values = record["signature"].get("label_values")
    if scored_tiles and rank == 0:
        scored = [job for job in jobs if job.truth is not None]
        if trained_values is not None and trained_values != label_value_pairs(cfg.to_dict()):
            print(f"note: the weights were trained on labels read with LABEL_VALUES {dict(map(tuple, trained_values))}, "
                  f"and the ground truth is read with {cfg.LABEL_VALUES}: it must be encoded so", file=sys.stderr)
        else:  # a one-band eroded ground truth is read through the LABEL_VALUES of the label maps (review: ISPRS's
            scored = [job for job in scored if job.truth.eroded and not job.truth.colour]  # 0..6, scored OA 7.9%)
        thin = _thin_class_in_truth(cfg, scored[0]) if scored else None
        if thin:  # boundaries read as a class shift every class by one: scores of nothing (review: OA 6.4%)
            print(f"warning: {scored[0].truth.path.name}: {thin}", file=sys.stderr)
    trained_palette = record["signature"].get("palette")
    palette = [list(map(int, colour)) for colour in cfg.PALETTE]
    if (trained_palette is not None and trained_palette != palette and rank == 0
            and any(job.truth is not None and job.truth.colour for job in jobs)):
        print(f"note: the weights were trained under PALETTE {trained_palette}, and the colour ground truth is read with "
              f"{palette}: where their labels came from colours, its classes must be coloured so", file=sys.stderr)
    band_notes = [note for job in jobs if (note := check_band_names(job.info, cfg.BANDS, record["signature"].get("image_bands"),
                                                                     "the files the weights were trained on"))]
    if band_notes and rank == 0:
        print(band_notes[0] + (f" (and {len(band_notes) - 1} more images alike)" if len(band_notes) > 1 else ""),
              file=sys.stderr)
    normalization = recorded_normalization(record)
    values_checked = "input_statistics" in record["signature"] and cfg.INFER_VALUE_CHECK
    if not (values_checked and cfg.INFER_VALUE_SCALE != 1):  # a declared scale: the value check decides instead
        jobs = [job for job in jobs if _of_the_training_type(cfg, job, record, normalization, values_checked, image_jobs,
                                                             failed, say=progress and rank == 0)]
        if not jobs and failed:
            raise _none_labelled(failed)
    jobs = _check_value_scales(cfg, jobs, record["signature"].get("input_statistics"), record["signature"].get("image_bands"),
                               bool(record["signature"].get("nodata_zero")), image_jobs, failed, say=progress and rank == 0)
    trained = record["signature"].get("pixel_size_m")
    jobs = _each_job(jobs, image_jobs, failed,
                     lambda job: replace(job, stack=labelling_stack(cfg, job.stack, trained, say=progress and rank == 0)))
    predictor = make_predictor(cfg, model, normalization, device)
    if rank == 0 and progress:
        print(f"precision: {predictor.precision} ({predictor.precision_reason})")
    weights_sha256 = file_sha256(weights)
    if not force:
        _refuse_other_runs_results(out_dir, weights_sha256, cfg)
        _refuse_another_images_outputs(out_dir, jobs)
    _refuse_other_steps_files(out_dir, force)
    out_dir.mkdir(parents=True, exist_ok=True)
    refusal = None
    if rank == 0:
        with exclusive(out_dir / ".config.lock"):  # runs into one folder (--shard jobs) take turns
            try:
                held.enter_context(_labelling_run(out_dir, f"{weights_sha256} {_config_sha256(cfg)} {caffe_mean}"))
            except EosegError as err:
                refusal = str(err)
            if refusal is None:
                for leftover in out_dir.glob(".config.tmp-*.json"):  # a killed run's: no one else writes it now
                    leftover.unlink()
                cfg.save(out_dir, step=LABELLING_STEP)
                _remove_run_reports(out_dir, shard)
    if world > 1:  # under torchrun rank 0 alone marks the folder: every rank stops where it was refused (code review)
        shared = [refusal]
        dist.broadcast_object_list(shared, src=0)
        refusal = shared[0]
    if refusal is not None:
        raise EosegError(refusal)
    mine = jobs[rank::world]
    if force:  # the replaced run's records and maps of these images go first: an interrupted forced run is continued
        for job in mine:  # without --force, and an image that then fails leaves no earlier map looking current
            with exclusive(out_dir / f".{job.name}.lock"):
                _remove_recorded_outputs(out_dir / f"{job.name}{RECORD_SUFFIX}", out_dir)
    # closed on the way out, so that an error is printed on a line of its own
    with tqdm(mine, desc=f"label (rank {rank})" if world > 1 else "label", unit="image", disable=not progress) as bar:
        results = []
        for job in bar:
            try:
                results.append(_label_once(cfg, predictor, job, out_dir, _made_with(cfg, weights_sha256, caffe_mean, job, predictor.precision),
                                           rank, force, progress))
            except DamagedInputError as err:
                if job.name not in image_jobs:  # a configured tile is part of the dataset: fix it first
                    raise
                failed[str(job.info.path)] = str(err)
    if world > 1:
        gathered: list = [None] * world
        dist.all_gather_object(gathered, results)
        results = [r for part in gathered for r in part]
        gathered_failed: list = [None] * world
        dist.all_gather_object(gathered_failed, failed)
        gathered = {path: why for part in gathered_failed for path, why in part.items()}
        failed.clear()  # the caller's: every rank's, for its outputs of images that fail
        failed.update(gathered)
    if not results and failed:
        raise _none_labelled(failed)
    untrained = [name for name, pixels in zip(cfg.CLASS_NAMES, record["signature"].get("class_pixels") or []) if not pixels]
    for result in results:
        if result.metrics is not None:
            result.metrics[NOT_TRAINED] = untrained
    order = {name: i for i, name in enumerate(names)}
    summary = InferenceSummary(sorted(results, key=lambda r: order[r.name]), failed=failed)
    # configured tiles only against the training files' own (published weights record none: ISPRS tiles call IRRG RGB)
    image_bands = record["signature"].get("image_bands")
    labelled = {r.name for r in results} & (image_jobs if image_bands is None or "colours" not in image_bands else set(names))
    summary.band_order_warning = next(filter(None, (band_order_warning(cfg, job.info, image_bands) for job in jobs
                                                    if job.name in labelled)), None)
    summary.metrics = overall_metrics(summary.images, cfg.CLASS_NAMES)
    if shard is not None:  # the whole run's report comes from merge_shard_reports
        summary.outputs["metrics"] = out_dir / SHARD_REPORT.format(k=shard[0], n=shard[1])
        if rank == 0:
            _write_reports(summary, weights, predictor.precision, {"shard": list(shard), "weights_sha256": weights_sha256,
                                              "config_sha256": _config_sha256(cfg), "inputs": _inputs_record(names),
                                              "labelling_settings": labelling_settings(cfg.to_dict())})
        return summary
    summary.outputs.update(_run_reports(out_dir, summary.metrics is not None))
    summary.earlier_images = _labelled_before(out_dir, {r.name for r in results})
    if rank == 0:
        if summary.earlier_images and progress:  # a folder labelled piecemeal: the report is this run's (review)
            shown = ", ".join(summary.earlier_images[:3]) + (f" and {len(summary.earlier_images) - 3} more"
                                                             if len(summary.earlier_images) > 3 else "")
            print(f"note: {out_dir} also holds the maps of {shown}, labelled by an earlier run; {RUN_REPORTS['metrics']} "
                  "reports this run's images only (label them all in one run for one report)", file=sys.stderr)
        _write_reports(summary, weights, predictor.precision)
    return summary


def _labelled_before(out_dir: Path, labelled: set[str]) -> list[str]:
    """The images whose complete records ``out_dir`` holds beside those of ``labelled``."""
    earlier = []
    for record_path in sorted(out_dir.glob(f"*{RECORD_SUFFIX}")):
        name = record_path.name.removesuffix(RECORD_SUFFIX)
        try:
            complete = name not in labelled and json.loads(record_path.read_text()).get("complete", True)
        except (OSError, ValueError, AttributeError):
            continue
        if complete:
            earlier.append(name)
    return earlier


def _each_job(jobs: list[Job], image_jobs: set[str], failed: dict[str, str], step) -> list[Job]:
    """``step(job)`` of each job (a job, as it is or made ready); an image given by path that it refuses (an
    EosegError: what it asks of the image, the image cannot give) goes to ``failed`` and the others on, as labelling
    moves those it cannot read; a configured tile's refusal stops the run."""
    done = []
    for job in jobs:
        try:
            done.append(step(job))
        except EosegError as err:
            if job.name not in image_jobs:
                raise
            failed[str(job.info.path)] = str(err)
    if not done and failed:
        raise _none_labelled(failed)
    return done


def _check_polygons_placed(cfg: Config, job: Job) -> Job:
    """Refuse, for WRITE_POLYGONS, an image whose polygons could not be placed, or not in its CRS's units."""
    from eoseg.gis import check_polygon_crs, check_polygon_units

    if job.info.crs is None or not job.info.georeferenced:
        # GCPs or RPCs place no output pixel: a CRS assigned to such an image would not help
        remedy = job.info.unplaced or (f"give it a CRS ({crs_command(job.info.path.name)})" if job.info.georeferenced else
                                       "give it a CRS and a geotransform (gdal_translate -a_srs EPSG:CODE -a_ullr ULX "
                                       "ULY LRX LRY FILE OUT.tif)")
        raise EosegError(f"{job.info.path}: WRITE_POLYGONS writes map polygons, and the image has no CRS or no "
                         f"geotransform to place them with; {remedy}, or set WRITE_POLYGONS=\"\"")
    check_polygon_units(job.info.crs, cfg.POLYGON_SIMPLIFY, cfg.POLYGON_MIN_AREA, str(job.info.path))
    check_polygon_crs(job.info.crs, cfg.WRITE_POLYGONS, f"{job.info.path} (WRITE_POLYGONS={cfg.WRITE_POLYGONS})")
    return job


def _of_the_training_type(cfg: Config, job: Job, record: dict, normalization, values_checked: bool, image_jobs: set[str],
                          failed: dict[str, str], say: bool) -> bool:
    """Whether ``job``'s pixels are of the training data's type, or (``values_checked``) of another type holding
    values of it (noted); an image given by path that is not goes to ``failed`` (the others are labelled), a
    configured tile's refusal stops the run."""
    dtype = job.stack.dtype if job.stack is not None else job.info.dtype
    factor = None  # measured: what brings its values to the training data's
    try:
        if values_checked and np.dtype(dtype) != np.dtype(normalization.input_dtype):
            trained_values, measured = record["signature"]["input_statistics"], job.stack.sample_statistics()
            if values_of_type(trained_values, measured, len(cfg.BANDS), normalization.input_dtype,
                              np.issubdtype(np.dtype(dtype), np.floating)):
                if say:
                    print(f"note: {job.info.path}: its pixels are {dtype}, the training data's "
                          f"{normalization.input_dtype}; its values lie in {normalization.input_dtype}'s range and near "
                          "the training scale: labelled as they are", file=sys.stderr)
                return True
            ratio = value_scale(trained_values, measured, len(cfg.BANDS))
            factor = None if ratio is None else 1 / ratio
        check_input_dtype(normalization, dtype, job.info.path, values_checked, read_as_note(job.info, cfg.BANDS), factor,
                          checkable="input_statistics" in record["signature"])
    except DamagedInputError as err:
        if job.name not in image_jobs:
            raise
        failed[str(job.info.path)] = str(err)
        return False
    except EosegError as err:  # its GDAL scale and offset, other than the training images', may be why
        why = f"{err}{scaling_hint(job.info, cfg.BANDS, record['signature'].get('image_bands'))}"
        if job.name not in image_jobs:
            raise EosegError(why) from None
        failed[str(job.info.path)] = why
        return False
    return True


def _check_value_scales(cfg: Config, jobs: list[Job], trained: dict | None, image_bands: dict | None,
                        trained_nodata_zero: bool, image_jobs: set[str], failed: dict[str, str], say: bool) -> list[Job]:
    """``jobs`` whose values are on the scale of those the weights were ``trained`` on (see
    eoseg.normalization.check_value_scale; a note for those some way off, each saying where the image's GDAL scale
    and offset are not those of the training images, as ``image_bands`` records them; zeros noted, more so where the
    weights were trained with NODATA_ZERO, ``trained_nodata_zero``); images given by path that
    cannot be read, or whose values are refused (a chip of water may be one), are moved to ``failed``, as labelling
    moves those it cannot read, and the others labelled; a configured tile's refusal stops the run."""
    if trained is None:  # weights from before the record, or Caffe's
        return jobs
    trained_as_nodata = trained_nodata_zero and not cfg.NODATA_ZERO
    checked = []
    for job in jobs:
        try:
            measured, fills = job.stack.sample()
            collar = unmasked_fill_note(fills, trained_as_nodata)
            collar = f"; {collar}" if collar else ""
            tags = scaling_hint(job.info, cfg.BANDS, image_bands)
            note = check_value_scale(trained, measured, len(cfg.BANDS), job.info.path, cfg.INFER_VALUE_CHECK,
                                     factor=cfg.INFER_VALUE_SCALE, sources=job.stack.named_source_bands(cfg),
                                     band_names=cfg.BAND_NAMES)
        except DamagedInputError as err:
            if job.name not in image_jobs:
                raise
            failed[str(job.info.path)] = str(err)
            continue
        except EosegError as err:  # the refusal of its value scale: its tags or the zeros may be why
            if job.name not in image_jobs:
                raise EosegError(f"{err}{tags}{collar}") from None
            failed[str(job.info.path)] = f"{err}{tags}{collar}"  # its scene may be why (water, shadow): the others go on
            continue
        if note:
            note += tags + collar
        elif collar:
            note = f"note: {job.info.path}: labelled as it is" + collar
        elif tags and cfg.INFER_VALUE_SCALE != 1:  # a factor that evens the values out may leave an offset
            note = f"note: {job.info.path}: labelled with INFER_VALUE_SCALE {cfg.INFER_VALUE_SCALE:g}" + tags
        if note and say:
            tqdm.write(note, file=sys.stderr)
        checked.append(job)
    if not checked and failed:
        raise _none_labelled(failed)
    return checked


def _settings_apart(first: dict, other: dict, k: int) -> str:
    """' (NAME=... in share 1, ... in share K; ...)' of two shard reports that record their labelling settings, else ''."""
    mine, theirs = first.get("labelling_settings"), other.get("labelling_settings")
    if not (mine and theirs):
        return ""
    return " (" + "; ".join(f"{name}={mine.get(name)!r} in share 1, {theirs.get(name)!r} in share {k}"
                            for name in _differing(mine, theirs)) + ")"


def _inputs_record(names: list[str]) -> dict:
    """What a --shard run's share was cut from: the count and hash of every input's name, so that shares of
    different lists (a glob expanded while files still arrived) are not merged as one run."""
    return {"count": len(names), "sha256": hashlib.sha256(json.dumps(sorted(names)).encode()).hexdigest()}


def overall_metrics(images: list[LabeledImage], class_names: list[str]) -> dict | None:
    """The metrics of all scored ``images`` together (their confusion matrices summed), or None if none is scored."""
    scored = [image.metrics for image in images if image.metrics is not None]
    if not scored:
        return None
    return {**metrics_from_confusion(np.sum([m["confusion_matrix"] for m in scored], axis=0), class_names),
            UNSCORED: sum(m.get(UNSCORED, 0) for m in scored), NOT_TRAINED: scored[0].get(NOT_TRAINED, [])}


def _run_reports(out_dir: Path, scored: bool) -> dict[str, Path]:
    """Where a run's report goes: metrics.json, and where anything was scored its table and confusion plot."""
    return {key: out_dir / name for key, name in RUN_REPORTS.items() if scored or key == "metrics"}


def _remove_run_reports(out_dir: Path, shard: tuple[int, int] | None = None) -> None:
    """The reports of the run before (and of this share's, for a --shard run), before this one labels: they are
    written again at its end, and one interrupted (a --force run under other settings, say) leaves none that speaks
    for maps it has replaced; nor does a run that scores nothing keep an earlier table and plot."""
    names = list(RUN_REPORTS.values()) + ([SHARD_REPORT.format(k=shard[0], n=shard[1])] if shard else [])
    for name in names:
        (out_dir / name).unlink(missing_ok=True)


def _write_reports(summary: InferenceSummary, weights: str | Path, precision: str | None, extra: dict | None = None) -> None:
    report = {
        **(extra or {}),
        "weights": str(Path(weights).absolute()),  # a relative path read from the folder it was given in
        "precision": precision,
        "images": {r.name: {"truth": r.truth_source, "metrics": r.metrics, "rank": r.rank,
                            "outputs": {k: str(v) for k, v in r.outputs.items()}}
                   for r in summary.images},
    }
    if summary.failed:
        report["failed"] = summary.failed
    if summary.band_order_warning:  # kept with the maps, for whoever reads them later
        report["band_order_warning"] = summary.band_order_warning
    if summary.earlier_images:
        report["earlier_images"] = summary.earlier_images  # in the folder, of an earlier run, not in this report
    if summary.metrics is not None:
        report["overall"] = summary.metrics
    if "confusion_plot" in summary.outputs:  # a shard's report has no plot or table: the merge draws them
        plots.plot_confusion(summary.metrics, summary.outputs["confusion_plot"])
        atomic_write_text(summary.outputs["metrics_table"], format_table(summary.metrics, "all scored images") + "\n")
    atomic_write_text(summary.outputs["metrics"], json.dumps(report, indent=2) + "\n")


# ------------------------------------------------------------ job arrays (--shard K/N)
def parse_shard(text: str) -> tuple[int, int]:
    """``"K/N"`` -> (K, N), 1 <= K <= N."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not match or not 1 <= int(match[1]) <= int(match[2]):
        raise EosegError(f"--shard takes K/N with 1 <= K <= N (the K-th of N shares), got {text!r}")
    return int(match[1]), int(match[2])


def shard_of(jobs: list, k: int, n: int) -> list:
    """The K-th of N shares of ``jobs``: every N-th of them sorted by output name, from the K-th.

    The same inputs give every job of an array the same sorted list, whatever order the
    shell or the file system lists them in, so the N shares cover each input exactly once.
    """
    return sorted(jobs, key=lambda job: job.name)[k - 1::n]



def merge_shard_reports(cfg: Config, folders: list[str | Path], out_dir: str | Path) -> InferenceSummary:
    """One report (metrics.json, metrics.txt, confusion_matrix.png in ``out_dir``) from the
    ``metrics.shard-K-of-N.json`` of every share of a --shard run, found in ``folders``.

    Refuses an incomplete set of shares, shares made with other weights or another config,
    and an image labelled by two shares.
    """
    reports: dict[int, tuple[Path, dict]] = {}
    counts = set()
    for folder in map(Path, folders):
        for path in sorted(folder.glob(SHARD_REPORT.format(k="*", n="*"))):
            report = json.loads(path.read_text())
            k, n = report["shard"]
            counts.add(n)
            if k in reports and reports[k][0].resolve() != path.resolve():
                raise EosegError(f"share {k} of {n} has two reports: {reports[k][0]} and {path}")
            reports[k] = (path, report)
    if not reports:
        raise EosegError(f"no shard reports ({SHARD_REPORT.format(k='K', n='N')}) in {', '.join(map(str, folders))}")
    if len(counts) > 1:
        raise EosegError(f"shard reports of runs split {' and '.join(map(str, sorted(counts)))} ways; merge one run at a time")
    n = counts.pop()
    missing = [k for k in range(1, n + 1) if k not in reports]
    if missing:
        raise EosegError(f"shares {', '.join(map(str, missing))} of {n} have no report yet; run them (or wait) before merging")
    first = reports[1][1]
    for key, what in (("weights_sha256", "weights"), ("config_sha256", "config")):
        differing = [k for k, (_, report) in reports.items() if report[key] != first[key]]
        if differing:
            apart = _settings_apart(first, reports[differing[0]][1], differing[0]) if key == "config_sha256" else ""
            raise EosegError(f"shares {', '.join(map(str, differing))} were made with other {what} than share 1{apart}; "
                             "label every share with the same weights and config")
    differing = [k for k, (_, report) in reports.items() if report.get("inputs") != first.get("inputs")]
    if differing:
        counts = sorted({(report.get("inputs") or {}).get("count") for _, report in reports.values()}, key=str)
        raise EosegError(f"shares {', '.join(map(str, differing))} were cut from another list of inputs than share 1 "
                         f"({' and '.join(map(str, counts))} inputs): the merge would miss some; give every share the "
                         "same --tiles and --images, expanded once")
    if _config_sha256(cfg) != first["config_sha256"]:
        raise EosegError("the shares were labelled with another config; merge with the config they were made with")
    summary = InferenceSummary()
    seen: dict[str, int] = {}
    for k in sorted(reports):
        path, report = reports[k]
        for name, entry in report["images"].items():
            if name in seen:
                raise EosegError(f"{name} was labelled by shares {seen[name]} and {k}; merge the reports of one run only")
            seen[name] = k
            summary.images.append(LabeledImage(name, {key: Path(v) for key, v in entry["outputs"].items()},
                                               entry["metrics"], entry["truth"], entry["rank"]))
        summary.failed.update(report.get("failed") or {})  # damaged images a share could not label: still so
    summary.images.sort(key=lambda image: image.name)
    summary.metrics = overall_metrics(summary.images, cfg.CLASS_NAMES)
    out_dir = Path(out_dir)
    summary.outputs.update(_run_reports(out_dir, summary.metrics is not None))
    out_dir.mkdir(parents=True, exist_ok=True)
    _remove_run_reports(out_dir)
    _write_reports(summary, first["weights"], first.get("precision"), {"merged_shards": n, "weights_sha256": first["weights_sha256"]})
    return summary
