"""Finding and reading the tiles of a dataset as the config describes them."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from eoseg.config import Config
from eoseg.errors import EosegError
from eoseg.io import RasterInfo, raster_info, read_label, read_raster


def existing_path(cfg: Config, pattern_name: str, tile_id: str, what: str, hint: str = "") -> Path:
    path = cfg.tile_path(pattern_name, tile_id)
    if path is None:
        raise EosegError(f"tile {tile_id}: no {what} configured ({pattern_name} is empty)")
    if not path.is_file():
        hint = hint or f"check DATA_ROOT ({cfg.DATA_ROOT}) and {pattern_name}"
        raise EosegError(f"tile {tile_id}: {what} not found at {path}; {hint}")
    return path


def image_info(cfg: Config, tile_id: str) -> RasterInfo:
    path = existing_path(cfg, "IMAGE_PATTERN", tile_id, "image")
    info = raster_info(path, "image")
    if max(cfg.BANDS) > info.count:
        raise EosegError(
            f"{path}: the image has {info.count} bands but BANDS asks for {cfg.BANDS}; "
            "set BANDS, BAND_NAMES, NORM_MEAN and NORM_STD for this data"
        )
    return info


def read_image(cfg: Config, tile_id: str) -> tuple[np.ndarray, RasterInfo]:
    """The configured bands of tile ``tile_id``: (C, H, W) in the file's dtype, and its info."""
    info = image_info(cfg, tile_id)
    return read_raster(info.path, cfg.BANDS, what="image"), info


def read_labels(cfg: Config, tile_id: str, like: RasterInfo) -> np.ndarray:
    """The numeric label map of a tile, checked against its image's size."""
    path = existing_path(
        cfg, "LABEL_PATTERN", tile_id, "numeric label map",
        hint=f"run convert_gt.py to make it from the colour ground truth, or check LABEL_PATTERN",
    )
    labels = read_label(path)
    _check_same_size(labels, like, path)
    return labels


def read_eval_labels(cfg: Config, tile_id: str, like: RasterInfo) -> tuple[np.ndarray, str] | None:
    """Ground truth for evaluation: the eroded colour GT if the dataset has it, else the numeric labels.

    Returns (labels, description) or None when the tile has no ground truth.
    """
    eroded = cfg.tile_path("GT_ERODED_PATTERN", tile_id)
    if eroded is not None and eroded.is_file():
        rgb = read_raster(eroded, what="eroded ground truth")
        labels = cfg.palette.to_labels(np.moveaxis(rgb[:3], 0, -1), source=str(eroded)) if rgb.shape[0] >= 3 else read_label(eroded)
        _check_same_size(labels, like, eroded)
        return labels, f"eroded ground truth ({eroded})"
    numeric = cfg.tile_path("LABEL_PATTERN", tile_id)
    if numeric is not None and numeric.is_file():
        return read_labels(cfg, tile_id, like), f"labels ({numeric})"
    return None


def _check_same_size(labels: np.ndarray, like: RasterInfo, path: Path) -> None:
    if labels.shape != (like.height, like.width):
        raise EosegError(
            f"{path}: label map is {labels.shape[1]} x {labels.shape[0]} px but its image "
            f"{like.path} is {like.width} x {like.height} px; they must cover the same grid"
        )
