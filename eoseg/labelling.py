"""The one way eoseg labels a raster and scores it: inference, validation and benchmarks alike.

:func:`make_predictor` builds the sliding-window predictor the config describes (WINDOW,
STRIDE, BLEND, TTA, INFER_PRECISION, INFER_OPTIMIZE, INFER_COMPILE, INFER_ENGINE).
:func:`label_rows` streams a tile's stacked input (:class:`eoseg.tiles.TileStack`) through
it block of rows by block of rows (on the grid the stack is read on, the labels brought back to
the image's: see eoseg.grid.labelling_grid): nodata pixels (every source's mask) take their bands'
means before the network and IGNORE_LABEL in the labels, and, given ground truth, each block
is scored with :func:`eoseg.metrics.confusion_matrix`, nodata pixels left out.
:func:`score_tile` sums those counts without writing anything: training's validation scores
a checkpoint exactly as inference.py scores the same tiles with the same weights.
"""

from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import rasterio
import torch
from rasterio.windows import Window
from tqdm import tqdm

from eoseg.config import Config
from eoseg.errors import EosegError
from eoseg.grid import coarser_than_training, labelling_grid, pixel_size_m
from eoseg.io import GDAL_CACHE_MB, RasterInfo
from eoseg.metrics import confusion_matrix
from eoseg.normalization import Normalization
from eoseg.predict import Predictor, best_class
from eoseg.tiles import TileStack, TruthSource

def make_predictor(cfg: Config, model, normalization: Normalization, device: torch.device) -> Predictor:
    """The predictor the config describes, around ``model`` (on INFER_ENGINE), its ``normalization`` for
    images on INFER_VALUE_SCALE."""
    if cfg.INFER_ENGINE == "onnxruntime" or not isinstance(model, torch.nn.Module):
        from eoseg.onnx_engine import SIZE_MULTIPLE, OnnxModel  # onnxruntime loads only when it is used

        if cfg.WINDOW % SIZE_MULTIPLE:
            raise EosegError(f"ONNX models take inputs of multiples of {SIZE_MULTIPLE} px; set WINDOW to one (it is {cfg.WINDOW})")
        if not isinstance(model, OnnxModel):
            model = OnnxModel.from_module(model)
    # INFER_VALUE_SCALE: the images' values brought to the training imagery's scale
    normalization = normalization.for_values_times(cfg.INFER_VALUE_SCALE, len(cfg.BANDS))
    return Predictor(model, normalization, cfg.WINDOW, cfg.STRIDE, cfg.INFER_BATCH_SIZE, device, blend=cfg.BLEND,
                     tta=cfg.TTA, precision=cfg.INFER_PRECISION, optimize=cfg.INFER_OPTIMIZE, compile=cfg.INFER_COMPILE,
                     reuse_memory=cfg.REUSE_FREED_MEMORY)


def labelling_stack(cfg: Config, stack: TileStack, trained: list[float] | None, say: bool = False) -> TileStack:
    """``stack`` read on the grid INFER_PIXEL_SIZE asks for, given the pixel size the weights were
    ``trained`` on (see eoseg.grid.labelling_grid); ``say``: print a note when that is another grid."""
    grid = labelling_grid(stack.info, trained, cfg.INFER_PIXEL_SIZE)
    if grid is None:
        if say and cfg.INFER_PIXEL_SIZE is None and coarser_than_training(stack.info, trained):
            own = pixel_size_m(stack.info)
            tqdm.write(f"note: {stack.info.path} has {own[0]:.3g} x {own[1]:.3g} m pixels, coarser than the "
                       f"{trained[1]:.3g} m the weights were trained on: labelled as it is, small objects may be missed "
                       f"(INFER_PIXEL_SIZE={trained[1]:.3g} labels it enlarged to that size)", file=sys.stderr)
        return stack
    if say:
        own = pixel_size_m(stack.info)
        target = abs((~stack.info.transform * grid.transform).a) * own[0]
        trained_at = "the weights were trained on" if cfg.INFER_PIXEL_SIZE is None else "INFER_PIXEL_SIZE is"
        tqdm.write(f"note: {stack.info.path} has {own[0]:.3g} x {own[1]:.3g} m pixels and {trained_at} {target:.3g} m: "
                   f"labelled at {target:.3g} m ({grid.width} x {grid.height} px), the labels brought back onto its grid "
                   "(INFER_PIXEL_SIZE=\"image\" labels it as it is)", file=sys.stderr)
    return stack.on_grid(grid)


@dataclass
class LabeledRows:
    """Rows ``[row, row + labels.shape[0])`` of a raster, labelled (and scored, given ground truth)."""

    row: int
    labels: np.ndarray  # (rows, W) uint8 class ids, IGNORE_LABEL where the input is nodata
    valid: np.ndarray  # (rows, W) True where every source holds data
    scores: torch.Tensor  # (classes, rows, W) blended scores: a view, valid until the next block is asked for
    confusion: np.ndarray | None  # (classes, classes) counts of these rows against the ground truth, if any
    unscored: int = 0  # labelled ground-truth pixels where the input holds no data: no prediction to score


def label_rows(cfg: Config, predictor: Predictor, stack: TileStack, truth: TruthSource | None = None) -> Iterator[LabeledRows]:
    """Label ``stack`` block of rows (INFER_BLOCK_ROWS) after block; score each against ``truth`` if given.

    The rows are the image's, whichever grid the stack is read on (see :meth:`TileStack.on_grid`),
    and so is the nodata, to the pixel.
    Opens the stack's rasters for as long as the iteration runs; close the iterator (or
    exhaust it) to release them.
    """
    info, ignore = stack.info, cfg.IGNORE_LABEL
    with contextlib.ExitStack() as opened:
        opened.enter_context(stack)
        blocks = _scored_rows(cfg, predictor, stack)
        own_grid = None
        if stack.grid is not info:
            blocks = _on_image_grid(blocks, stack.grid, info, cfg.INFER_BLOCK_ROWS)
            own_grid = opened.enter_context(stack.on_grid(info))  # where the image itself has data, to the pixel
        for row, scores, valid in blocks:
            rows = scores.shape[1]
            if own_grid is not None:
                window = Window(0, row, info.width, rows)
                valid = valid & own_grid.valid_mask(own_grid.read(window), window)
            labels = best_class(scores)
            labels[~valid] = ignore
            confusion, unscored = None, 0
            if truth is not None:
                expected = truth.read_rows(cfg.palette, row, row + rows)
                unscored = int(np.count_nonzero((expected != ignore) & ~valid))
                expected[~valid] = ignore  # nodata pixels carry no prediction to score
                confusion = confusion_matrix(expected, np.where(valid, labels, 0), cfg.num_classes, ignore)
            yield LabeledRows(row, labels, valid, scores, confusion, unscored)


def _scored_rows(cfg: Config, predictor: Predictor, stack: TileStack) -> Iterator[tuple[int, torch.Tensor, np.ndarray]]:
    """(first row, blended scores, valid) of the open ``stack``'s grid, block after block."""
    grid = stack.grid

    def rows_window(first: int, end: int) -> Window:
        return Window(0, first, grid.width, end - first)

    # nodata of each read, by its first row: every block the predictor hands out starts at a read's first row
    valid_from: dict[int, np.ndarray] = {}

    def read_rows(first: int, end: int) -> np.ndarray:
        # in the predictor's read-ahead thread: the only one to touch the open rasters
        pixels = stack.read(rows_window(first, end))
        valid_from[first] = stack.valid_mask(pixels, rows_window(first, end))
        return predictor.normalization.fill_invalid(pixels, valid_from[first])

    # windows over nodata alone are not run through the network
    for block in predictor.stream(read_rows, grid.height, grid.width, cfg.INFER_BLOCK_ROWS,
                                  valid_rows=lambda first, end: valid_from[first]):
        yield block.row, block.scores, valid_from.pop(block.row)[:block.scores.shape[1]]


def _resampling_indices(size: int, scale: float, grid_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """For pixels 0..size-1 of an axis whose grid pixels are ``scale`` of them: the grid pixels below
    and above each centre, the weight of the one above (bilinear), and the grid pixel holding it (nearest)."""
    centres = (np.arange(size) + 0.5) / scale
    below = np.floor(centres - 0.5).astype(np.int64)
    weight = (centres - 0.5 - below).astype(np.float32)
    nearest = np.clip(np.floor(centres).astype(np.int64), 0, grid_size - 1)
    return np.clip(below, 0, grid_size - 1), np.clip(below + 1, 0, grid_size - 1), weight, nearest


def _on_image_grid(blocks: Iterator[tuple[int, torch.Tensor, np.ndarray]], grid: RasterInfo, image: RasterInfo,
                   block_rows: int) -> Iterator[tuple[int, torch.Tensor, np.ndarray]]:
    """``blocks`` of ``grid`` (a scaling of ``image``'s grid) as blocks of at most ``block_rows`` of
    the image's rows: scores interpolated bilinearly, validity that of the nearest grid pixel.

    Keeps only the grid rows that image rows still to come read.
    """
    scale = ~image.transform * grid.transform  # a grid pixel in image pixels: (fx, fy)
    row_below, row_above, row_weight, row_nearest = _resampling_indices(image.height, abs(scale.e), grid.height)
    col_below, col_above, col_weight, col_nearest = _resampling_indices(image.width, abs(scale.a), grid.width)
    row_needs = np.maximum(row_above, row_nearest)  # the last grid row each image row reads: rising
    kept, kept_valid, kept_first = None, None, 0
    columns = None
    next_row = 0
    for first, scores, valid in blocks:
        if columns is None:
            columns = [torch.from_numpy(a).to(scores.device) for a in (col_below, col_above, col_weight)]
        kept = scores.clone() if kept is None else torch.cat([kept, scores], dim=1)
        kept_valid = valid if kept_valid is None else np.concatenate([kept_valid, valid])
        have = first + scores.shape[1]
        ready = image.height if have >= grid.height else int(np.searchsorted(row_needs, have))
        while next_row < ready:
            end = min(ready, next_row + block_rows)
            below, above = (torch.from_numpy(a[next_row:end] - kept_first).to(scores.device) for a in (row_below, row_above))
            weight = torch.from_numpy(row_weight[next_row:end]).to(scores.device)[None, :, None]
            rows = kept[:, below] * (1 - weight) + kept[:, above] * weight
            left, right, column_weight = columns
            image_scores = rows[:, :, left] * (1 - column_weight) + rows[:, :, right] * column_weight
            image_valid = kept_valid[row_nearest[next_row:end] - kept_first][:, col_nearest]
            yield next_row, image_scores, image_valid
            next_row = end
        if next_row < image.height:
            # on a grid over 2x finer, the next image row may read grid rows past those received yet
            drop = min(min(row_below[next_row], row_nearest[next_row]) - kept_first, kept.shape[1])
            kept, kept_valid, kept_first = kept[:, drop:], kept_valid[drop:], kept_first + drop


def score_tile(cfg: Config, predictor: Predictor, stack: TileStack, truth: TruthSource,
               crop: Window | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """(classes, classes) confusion matrix of ``predictor``'s labels of ``stack`` against ``truth``, and the
    labels of ``crop`` (in the image's pixels; None without one); nothing written."""
    confusion = np.zeros((cfg.num_classes, cfg.num_classes), dtype=np.int64)
    kept = []
    with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB), contextlib.closing(label_rows(cfg, predictor, stack, truth)) as blocks:
        for rows in blocks:
            confusion += rows.confusion
            if crop is not None:
                first, end = max(crop.row_off, rows.row), min(crop.row_off + crop.height, rows.row + len(rows.labels))
                if first < end:
                    kept.append(rows.labels[first - rows.row:end - rows.row, crop.col_off:crop.col_off + crop.width])
    return confusion, np.concatenate(kept) if crop is not None else None
