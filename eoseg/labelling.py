"""The one way eoseg labels a raster and scores it: inference, validation and benchmarks alike.

:func:`make_predictor` builds the sliding-window predictor the config describes (WINDOW,
STRIDE, BLEND, TTA, INFER_PRECISION, INFER_OPTIMIZE, INFER_COMPILE, INFER_ENGINE).
:func:`label_rows` streams a tile's stacked input (:class:`eoseg.tiles.TileStack`) through
it block of rows by block of rows: nodata pixels (every source's mask) take their bands'
means before the network and IGNORE_LABEL in the labels, and, given ground truth, each block
is scored with :func:`eoseg.metrics.confusion_matrix`, nodata pixels left out.
:func:`score_tile` sums those counts without writing anything: training's validation scores
a checkpoint exactly as inference.py scores the same tiles with the same weights.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import rasterio
import torch
from rasterio.windows import Window

from eoseg.config import Config
from eoseg.errors import EosegError
from eoseg.metrics import confusion_matrix
from eoseg.normalization import Normalization
from eoseg.predict import Predictor, best_class
from eoseg.tiles import TileStack, TruthSource

# GDAL's block cache defaults to 5% of RAM and fills up with every block of a large
# raster read or written; one row of tiles per output is all streaming needs
GDAL_CACHE_MB = 256


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


@dataclass
class LabeledRows:
    """Rows ``[row, row + labels.shape[0])`` of a raster, labelled (and scored, given ground truth)."""

    row: int
    labels: np.ndarray  # (rows, W) uint8 class ids, IGNORE_LABEL where the input is nodata
    valid: np.ndarray  # (rows, W) True where every source holds data
    scores: torch.Tensor  # (classes, rows, W) blended scores: a view, valid until the next block is asked for
    confusion: np.ndarray | None  # (classes, classes) counts of these rows against the ground truth, if any


def label_rows(cfg: Config, predictor: Predictor, stack: TileStack, truth: TruthSource | None = None) -> Iterator[LabeledRows]:
    """Label ``stack`` block of rows (INFER_BLOCK_ROWS) after block; score each against ``truth`` if given.

    Opens the stack's rasters for as long as the iteration runs; close the iterator (or
    exhaust it) to release them.
    """
    info, ignore = stack.info, cfg.IGNORE_LABEL
    with stack:
        def rows_window(first: int, end: int) -> Window:
            return Window(0, first, info.width, end - first)

        # nodata of each read, by its first row: every block the predictor hands out starts at a read's first row
        valid_from: dict[int, np.ndarray] = {}

        def read_rows(first: int, end: int) -> np.ndarray:
            # in the predictor's read-ahead thread: the only one to touch the open rasters
            pixels = stack.read(rows_window(first, end))
            valid_from[first] = stack.valid_mask(pixels, rows_window(first, end))
            return predictor.normalization.fill_invalid(pixels, valid_from[first])

        # windows over nodata alone are not run through the network
        for block in predictor.stream(read_rows, info.height, info.width, cfg.INFER_BLOCK_ROWS,
                                      valid_rows=lambda first, end: valid_from[first]):
            rows = block.scores.shape[1]
            labels = best_class(block.scores)
            valid = valid_from.pop(block.row)[:rows]
            labels[~valid] = ignore
            confusion = None
            if truth is not None:
                expected = truth.read_rows(cfg.palette, block.row, block.row + rows)
                expected[~valid] = ignore  # nodata pixels carry no prediction to score
                confusion = confusion_matrix(expected, np.where(valid, labels, 0), cfg.num_classes, ignore)
            yield LabeledRows(block.row, labels, valid, block.scores, confusion)


def score_tile(cfg: Config, predictor: Predictor, stack: TileStack, truth: TruthSource) -> np.ndarray:
    """(classes, classes) confusion matrix of ``predictor``'s labels of ``stack`` against ``truth``; nothing written."""
    confusion = np.zeros((cfg.num_classes, cfg.num_classes), dtype=np.int64)
    with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB), contextlib.closing(label_rows(cfg, predictor, stack, truth)) as blocks:
        for rows in blocks:
            confusion += rows.confusion
    return confusion
