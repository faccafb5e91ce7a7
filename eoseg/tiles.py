"""Finding and reading the tiles of a dataset as the config describes them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rasterio.windows import Window

from eoseg.config import Config
from eoseg.errors import EosegError
from eoseg.io import RasterInfo, open_raster, raster_info, read_label, read_raster, valid_mask
from eoseg.palette import Palette


def existing_path(cfg: Config, pattern_name: str, tile_id: str, what: str, hint: str = "") -> Path:
    path = cfg.tile_path(pattern_name, tile_id)
    if path is None:
        raise EosegError(f"tile {tile_id}: no {what} configured ({pattern_name} is empty)")
    if not path.is_file():
        hint = hint or f"check DATA_ROOT ({cfg.DATA_ROOT}) and {pattern_name}"
        raise EosegError(f"tile {tile_id}: {what} not found at {path}; {hint}")
    return path


def check_bands(cfg: Config, info: RasterInfo) -> RasterInfo:
    """``info`` of an image that has every band BANDS asks for."""
    if max(cfg.BANDS) > info.count:
        raise EosegError(
            f"{info.path}: the image has {info.count} bands but BANDS asks for {cfg.BANDS}; "
            "set BANDS, BAND_NAMES, NORM_MEAN and NORM_STD for this data"
        )
    return info


def image_info(cfg: Config, tile_id: str) -> RasterInfo:
    return check_bands(cfg, raster_info(existing_path(cfg, "IMAGE_PATTERN", tile_id, "image"), "image"))


def read_image(cfg: Config, tile_id: str) -> tuple[np.ndarray, RasterInfo]:
    """The configured bands of tile ``tile_id``: (C, H, W) in the file's dtype, and its info."""
    info = image_info(cfg, tile_id)
    return read_raster(info.path, cfg.BANDS, what="image"), info


def read_labels(cfg: Config, tile_id: str, like: RasterInfo) -> np.ndarray:
    """The numeric label map of a tile, checked against its image's size."""
    path = existing_path(
        cfg, "LABEL_PATTERN", tile_id, "numeric label map",
        hint="run convert_gt.py to make it from the colour ground truth, or check LABEL_PATTERN",
    )
    labels = read_label(path)
    _check_same_size(labels, like, path)
    return labels


def training_pixels(cfg: Config, info: RasterInfo, image: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A tile's image and labels made safe to train on.

    Where the image has no data (see :func:`eoseg.io.valid_mask`) the label becomes
    IGNORE_LABEL, so that no loss is computed there, and NaN becomes 0: a NaN would spread
    through every activation it touches.
    """
    with open_raster(info.path, "image") as src:
        valid = valid_mask(src, cfg.BANDS, image, cfg.NODATA_ZERO)
    labels = np.where(valid, labels, np.uint8(cfg.IGNORE_LABEL))
    if np.issubdtype(image.dtype, np.floating):
        image = np.where(np.isnan(image), image.dtype.type(0), image)
    return image, labels


@dataclass(frozen=True)
class TruthSource:
    """Ground truth of a tile for scoring, readable by rows: colour-coded or numeric."""

    path: Path
    colour: bool
    description: str

    def read_rows(self, palette: Palette, first: int, end: int) -> np.ndarray:
        """(rows, W) uint8 class ids of rows first..end-1."""
        with open_raster(self.path, "ground truth") as src:
            window = Window(0, first, src.width, end - first)
            if self.colour:
                rgb = src.read([1, 2, 3], window=window)
                return palette.to_labels(np.moveaxis(rgb, 0, -1), source=str(self.path))
            return src.read(1, window=window).astype(np.uint8)


def eval_truth(cfg: Config, tile_id: str, like: RasterInfo) -> TruthSource | None:
    """Ground truth for scoring: the eroded colour GT if the dataset has it, else the numeric labels.

    None when the tile has neither. Its size is checked against the image's.
    """
    eroded = cfg.tile_path("GT_ERODED_PATTERN", tile_id)
    numeric = cfg.tile_path("LABEL_PATTERN", tile_id)
    if eroded is not None and eroded.is_file():
        info = raster_info(eroded, "eroded ground truth")
        source = TruthSource(eroded, info.count >= 3, f"eroded ground truth ({eroded})")
    elif numeric is not None and numeric.is_file():
        info = raster_info(numeric, "label map")
        source = TruthSource(numeric, False, f"labels ({numeric})")
    else:
        return None
    if (info.height, info.width) != (like.height, like.width):
        raise EosegError(
            f"{info.path}: label map is {info.width} x {info.height} px but its image "
            f"{like.path} is {like.width} x {like.height} px; they must cover the same grid"
        )
    return source


def read_eval_labels(cfg: Config, tile_id: str, like: RasterInfo) -> tuple[np.ndarray, str] | None:
    """The whole ground truth for scoring (see :func:`eval_truth`) and its description, or None."""
    source = eval_truth(cfg, tile_id, like)
    if source is None:
        return None
    return source.read_rows(cfg.palette, 0, like.height), source.description


def _check_same_size(labels: np.ndarray, like: RasterInfo, path: Path) -> None:
    if labels.shape != (like.height, like.width):
        raise EosegError(
            f"{path}: label map is {labels.shape[1]} x {labels.shape[0]} px but its image "
            f"{like.path} is {like.width} x {like.height} px; they must cover the same grid"
        )
