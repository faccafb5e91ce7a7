"""Sliding-window labeling of rasters of any size with bounded memory.

Windows (eoseg.geometry) are cut in batches, normalised, run through the network and
their class scores blended into an accumulator on the model's device, in float32:
``uniform`` blending averages overlapping windows as the method does, ``gaussian``
weights each window by a Gaussian centred on it, so that window borders, where a
network sees least context, count least and no seams show. The raster is processed in
blocks of rows: only the rows that windows still to come can touch are kept, so memory
depends on the window, stride, batch, block height and raster width, never on the
raster's height. Reading the next block (a background thread) overlaps with compute.
"""

from __future__ import annotations

import copy
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import torch
from torch import nn

from eoseg.allocator import reuse_freed_memory
from eoseg.augment import TTA_NAMES, transform_batch
from eoseg.errors import EosegError
from eoseg.geometry import axis_starts
from eoseg.models.fuse import can_fuse_relu, fold_batchnorm, split_input_layers
from eoseg.normalization import Normalization
from eoseg.precision import DTYPES, resolve_precision

BLENDS = ("uniform", "gaussian")
ReadRows = Callable[[int, int], np.ndarray]  # (first row, end row) -> (C, rows, W) raw pixels
ValidRows = Callable[[int, int], np.ndarray]  # (first row, end row) -> (rows, W) True where the pixels hold data


def window_profile(window: int, blend: str) -> torch.Tensor:
    """(window,) weight along one axis of a window; a window's weights are its outer product."""
    if blend == "uniform":
        return torch.ones(window)
    if blend == "gaussian":
        # sigma = window / 8: the border weighs exp(-8) of the centre, near zero but never zero
        position = torch.arange(window, dtype=torch.float64) - (window - 1) / 2
        return torch.exp(-0.5 * (position / (window / 8)) ** 2).float()
    raise EosegError(f"BLEND must be one of {', '.join(BLENDS)}, got {blend!r}")


def window_weights(window: int, blend: str) -> torch.Tensor:
    """(window, window) weight of each pixel of a window in the blend."""
    profile = window_profile(window, blend)
    return torch.outer(profile, profile)


def coverage(length: int, starts: list[int], profile: torch.Tensor) -> torch.Tensor:
    """Summed weight of the windows covering each position of an axis.

    Windows form a grid, so the total weight at (y, x) is coverage(y) * coverage(x): the
    blend divides by that instead of accumulating a weight map window by window.
    """
    total = torch.zeros(length, dtype=torch.float64)
    for start in starts:
        total[start:start + len(profile)] += profile.double()
    return total.float()


@dataclass
class Block:
    """Finished rows ``[row, row + scores.shape[1])`` with their blended class scores.

    ``scores`` is a view into the predictor's accumulator, valid until the next block is
    requested: use it (argmax, softmax) or copy it before asking for more.
    """

    row: int
    scores: torch.Tensor  # (classes, rows, width) float32, on the predictor's device
    pixels: np.ndarray  # (bands, rows, width) the raw input of those rows


class Predictor:
    """Labels (C, H, W) images or row-streamed rasters with ``model`` using a sliding window.

    ``model`` is any callable from a normalised (N, C, h, w) float32 batch to (N, classes,
    h, w) scores (a torch module, or an ONNX engine with ``eval``/``to``). For torch
    modules batch norm is folded (and, on CPU in float32, or in bfloat16 where oneDNN computes
    it, each convolution fused with its ReLU) and channels_last used when ``optimize``; ``precision`` ("float32",
    "bfloat16", "float16", or "auto": :func:`eoseg.precision.resolve_precision`) is what the
    network computes in: bfloat16 with the weights (after folding) and activations in
    bfloat16, the faster form on CPUs (bench/RESULTS.md), the layers that read the image
    split to keep its precision (:class:`eoseg.models.fuse.SplitBfloat16Input`); float16
    under autocast, where float32 keeps the values that would overflow; the scores are blended in float32 whatever
    it is; ``compile`` wraps the model in ``torch.compile``; ``reuse_memory``
    (CPU) has the process keep freed memory for reuse (:func:`eoseg.allocator.reuse_freed_memory`).
    """

    def __init__(self, model, normalization: Normalization, window: int, stride: int, batch_size: int,
                 device: torch.device | str = "cpu", blend: str = "uniform", tta=(), precision: str = "float32",
                 optimize: bool = True, compile: bool = False, reuse_memory: bool = False):
        if stride > window:
            raise EosegError(f"STRIDE {stride} is larger than WINDOW {window}: pixels between windows would get no label")
        bad = [name for name in tta if name not in TTA_NAMES]
        if bad:
            raise EosegError(f"TTA may hold {', '.join(TTA_NAMES)}; got {bad}")
        self.device = torch.device(device)
        self.precision, self.precision_reason = resolve_precision(precision, self.device, "INFER_PRECISION")
        if not isinstance(model, nn.Module) and self.precision != "float32":
            if precision != "auto":
                raise EosegError(f"INFER_PRECISION={precision} applies to torch models; this engine runs its model "
                                 "as exported: set INFER_PRECISION=float32 or auto")
            self.precision, self.precision_reason = "float32", "INFER_PRECISION=auto: the engine runs its model as exported"
        # bfloat16 has float32's range: the whole network can run in it
        self.network_dtype = torch.bfloat16 if self.precision == "bfloat16" and isinstance(model, nn.Module) else None
        self.autocast = DTYPES[self.precision] if self.precision == "float16" else None
        self.input_dtype = self.network_dtype  # float32 where the network's input layers split it themselves
        self.channels_last = False
        if isinstance(model, nn.Module):
            model = model.eval()
            if reuse_memory and self.device.type == "cpu":
                reuse_freed_memory()
            if optimize:
                # our own copy: the memory-format change below must not reach the caller's model;
                # inductor fuses the ReLUs itself when compiling
                fuse_relu = (can_fuse_relu(self.device, self.network_dtype or torch.float32)
                             and self.autocast is None and not compile)
                model = fold_batchnorm(model, fuse_relu=fuse_relu)
            elif self.network_dtype is not None:
                model = copy.deepcopy(model)  # the dtype change must not reach the caller's model either
            model = model.to(self.device)
            if self.network_dtype is not None:
                self._to_network_dtype(model, window)
            if optimize:
                model = model.to(memory_format=torch.channels_last)
                self.channels_last = True
            if compile:
                # freezing lets inductor treat the weights as constants: prepacked, fused with the ReLUs
                model = torch.compile(model, dynamic=False, options={"freezing": True})
        else:
            model = model.eval().to(self.device)
        self.model = model
        self.normalization = normalization
        self.window = window
        self.stride = stride
        self.batch_size = batch_size
        self.blend = blend
        self.profile = window_profile(window, blend)
        self.weights = None if blend == "uniform" else window_weights(window, blend).to(self.device)
        self.tta = tuple(tta)
        self.compiled = compile

    # ------------------------------------------------------------ network
    def _to_network_dtype(self, model: nn.Module, window: int) -> None:
        """Cast ``model`` to the network dtype in place, its input layers split to keep the input's precision."""
        if hasattr(model, "in_channels"):  # the registry's models: their input layers can be found
            size = min(window, 64)  # every registry model runs on it, cheaply
            example = torch.zeros((1, model.in_channels, size, size), device=self.device)
            if split_input_layers(model, example):
                self.input_dtype = torch.float32
        model.to(self.network_dtype)

    def _forward(self, batch: torch.Tensor) -> torch.Tensor:
        """Scores of a raw (N, C, w, w) batch, averaged over the TTA variants, float32."""
        count = batch.shape[0]
        if self.compiled and count < self.batch_size:
            # a compiled model is specialised to one batch shape: pad a short last batch rather than recompile
            batch = torch.cat([batch, batch.new_zeros((self.batch_size - count, *batch.shape[1:]))])
        inputs = self.normalization.apply(batch.to(self.device, non_blocking=True))
        variants = [None, *self.tta]
        total = None
        for name in variants:
            x = inputs if name is None else transform_batch(name, inputs)
            if self.input_dtype is not None:
                x = x.to(self.input_dtype)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(self.device.type, dtype=self.autocast, enabled=self.autocast is not None):
                out = self.model(x)
            out = out.float()
            if name is not None:
                out = transform_batch(name, out, inverse=True)
            total = out if total is None else total + out
        total = total[:count]
        return total / len(variants) if len(variants) > 1 else total

    # ------------------------------------------------------------ streaming
    @torch.inference_mode()
    def stream(self, read_rows: ReadRows, height: int, width: int, block_rows: int = 512,
               valid_rows: ValidRows | None = None) -> Iterator[Block]:
        """Blended scores of a ``height`` x ``width`` raster, block of finished rows after block.

        ``read_rows(a, b)`` returns the raw pixels of rows a..b-1, all columns. Each block
        is yielded once every window touching its rows has been added. With ``valid_rows``
        (called right after ``read_rows`` for the same rows), windows without one pixel of
        data are not run through the network: the scores of nodata pixels are then
        meaningless, and the caller masks them.
        """
        window, stride = self.window, self.stride
        padded_h, padded_w = max(height, window), max(width, window)
        row_starts = axis_starts(padded_h, window, stride)
        col_starts = axis_starts(padded_w, window, stride)
        # groups of window rows processed together: about block_rows rows of input each
        per_group = max(1, math.ceil((block_rows - window) / stride) + 1)
        groups = [row_starts[i:i + per_group] for i in range(0, len(row_starts), per_group)]

        def read_group(group: list[int]) -> torch.Tensor:
            top, bottom = group[0], min(group[-1] + window, height)
            pixels = np.asarray(read_rows(top, bottom))
            tensor = torch.from_numpy(np.ascontiguousarray(pixels))
            if tensor.is_floating_point():
                # one NaN or infinity would spread through every window touching it
                tensor = torch.nan_to_num(tensor, nan=0.0, posinf=0.0, neginf=0.0)
            if bottom - top < window or width < window:  # a raster smaller than one window: pad by reflection
                pad_w, pad_h = padded_w - width, group[-1] + window - bottom
                mode = "reflect" if pad_h < bottom - top and pad_w < width else "replicate"
                tensor = torch.nn.functional.pad(tensor[None].float(), (0, pad_w, 0, pad_h), mode=mode)[0]
            if self.device.type == "cuda":
                tensor = tensor.pin_memory()
            valid = None if valid_rows is None else np.asarray(valid_rows(top, bottom), dtype=bool)
            return tensor, pixels, valid

        # one accumulator for the whole raster, as tall as the tallest group; after each
        # group its finished rows are handed out and the rows still open move to the top
        span = (per_group - 1) * stride + window
        row_weight = coverage(padded_h, row_starts, self.profile).to(self.device)
        col_weight = coverage(padded_w, col_starts, self.profile)[:width].to(self.device)
        accumulated = None
        top = 0  # raster row of the accumulator's first row
        with ThreadPoolExecutor(max_workers=1) as reader:
            upcoming = reader.submit(read_group, groups[0])
            for index, group in enumerate(groups):
                block, pixels, valid = upcoming.result()
                if index + 1 < len(groups):
                    upcoming = reader.submit(read_group, groups[index + 1])
                if accumulated is None:
                    num_classes = self._num_classes(block.shape[0])
                    accumulated = torch.zeros((num_classes, span, padded_w), dtype=torch.float32, device=self.device)
                windows = [(r, c) for r in group for c in col_starts]
                if valid is not None:  # padding counts as no data: a window must hold a real pixel with data
                    windows = [(r, c) for r, c in windows if valid[r - group[0]:r - group[0] + window, c:c + window].any()]
                for start in range(0, len(windows), self.batch_size):
                    chunk = windows[start:start + self.batch_size]
                    crops = torch.stack([block[:, r - group[0]:r - group[0] + window, c:c + window] for r, c in chunk])
                    scores = self._forward(crops)
                    if self.weights is not None:
                        scores *= self.weights
                    for (r, c), window_scores in zip(chunk, scores):
                        accumulated[:, r - top:r - top + window, c:c + window] += window_scores
                last = index + 1 == len(groups)
                done = min(height, padded_h if last else groups[index + 1][0])
                finished = done - top
                accumulated[:, :finished, :width].div_(row_weight[top:done, None] * col_weight)
                yield Block(top, accumulated[:, :finished, :width], pixels[:, :finished])
                if not last:
                    open_rows = group[-1] + window - done
                    accumulated[:, :open_rows] = accumulated[:, finished:finished + open_rows].clone()
                    accumulated[:, open_rows:] = 0
                top = done

    def _num_classes(self, bands: int) -> int:
        known = getattr(self.model, "num_classes", None) or getattr(getattr(self.model, "_orig_mod", None), "num_classes", None)
        if known:
            return int(known)
        return self._forward(torch.zeros((1, bands, self.window, self.window))).shape[1]

    # ------------------------------------------------------------ in memory
    def scores(self, image: np.ndarray) -> torch.Tensor:
        """Blended class scores (classes, H, W) of an in-memory (C, H, W) image."""
        _, height, width = image.shape
        blocks = self.stream(lambda a, b: image[:, a:b], height, width, block_rows=max(height, self.window))
        return torch.cat([block.scores.clone() for block in blocks], dim=1)

    def predict(self, image: np.ndarray) -> np.ndarray:
        """(H, W) uint8 class ids of an in-memory (C, H, W) image."""
        return best_class(self.scores(image))


def best_class(scores: torch.Tensor) -> np.ndarray:
    """(H, W) uint8 argmax over the classes of (classes, H, W) scores."""
    # max over the leading axis returns the same indices as argmax, several times faster on CPU
    return scores.max(0).indices.to(torch.uint8).cpu().numpy()
