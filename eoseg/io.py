"""Raster and file I/O: rasterio reads and writes, atomic outputs, clear errors.

Every output goes to a temporary name beside its destination and is renamed into
place when complete, so an interrupted step never leaves a file the next step accepts.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
from rasterio.windows import Window

from eoseg.errors import EosegError

warnings.filterwarnings("ignore", category=NotGeoreferencedWarning)


# ---------------------------------------------------------------- atomic writes
def _temp_name(path: Path) -> Path:
    # keep the suffix so that format drivers chosen by extension still work
    return path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write; rename it to ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_name(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


@contextlib.contextmanager
def atomic_directory(path: str | Path, force: bool = False) -> Iterator[Path]:
    """Build a directory under a temporary name; move it to ``path`` when complete.

    An existing ``path`` is refused unless ``force``, in which case it is replaced only
    once the new one is complete.
    """
    path = Path(path)
    if path.exists() and not force:
        raise EosegError(f"{path} already exists; pass --force to replace it")
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


# ---------------------------------------------------------------- rasters
@dataclass(frozen=True)
class RasterInfo:
    """Size, band count, data type and georeference of a raster on disk."""

    path: Path
    width: int
    height: int
    count: int
    dtype: str
    crs: object
    transform: object
    nodata: float | None

    @property
    def georeferenced(self) -> bool:
        return self.crs is not None or not self.transform.is_identity


@contextlib.contextmanager
def open_raster(path: str | Path, what: str = "raster") -> Iterator[rasterio.DatasetReader]:
    path = Path(path)
    if not path.exists():
        raise EosegError(f"{what} not found: {path}")
    try:
        with rasterio.open(path) as src:
            yield src
    except RasterioIOError as err:
        raise EosegError(f"{path}: cannot read this {what} ({err})") from None


def raster_info(path: str | Path, what: str = "raster") -> RasterInfo:
    with open_raster(path, what) as src:
        return RasterInfo(Path(path), src.width, src.height, src.count, src.dtypes[0], src.crs, src.transform, src.nodata)


def read_raster(
    path: str | Path,
    bands: list[int] | None = None,
    window: Window | None = None,
    what: str = "raster",
) -> np.ndarray:
    """Read ``bands`` (1-based; all if None) of a raster, optionally a window: (C, H, W)."""
    with open_raster(path, what) as src:
        if bands is not None and max(bands) > src.count:
            raise EosegError(
                f"{path}: {what} has {src.count} bands but the config asks for bands {bands}; check BANDS"
            )
        try:
            return src.read(bands, window=window)
        except RasterioIOError as err:
            raise EosegError(f"{path}: cannot read this {what} ({err}); is the file complete?") from None


def read_label(path: str | Path, what: str = "label map") -> np.ndarray:
    """Read a single-band numeric label map as (H, W) uint8."""
    array = read_raster(path, what=what)
    if array.shape[0] != 1:
        raise EosegError(f"{path}: a numeric label map has one band, this one has {array.shape[0]}; is it colour-coded?")
    if array.dtype != np.uint8:
        if array.size and (array.min() < 0 or array.max() > 255):
            raise EosegError(f"{path}: label ids must lie in 0..255")
        array = array.astype(np.uint8)
    return array[0]


def output_suffix(info: RasterInfo) -> str:
    """GeoTIFF for georeferenced inputs, PNG for plain images."""
    return ".tif" if info.georeferenced else ".png"


class RasterWriter:
    """A raster written block by block, published atomically when complete.

    Blocks go into a tiled, deflate-compressed GeoTIFF under a temporary name (with
    ``like``'s CRS and transform when it is georeferenced). ``close()`` publishes it at
    ``path``: renamed for ``.tif``, converted for ``.png``. Leaving the ``with`` block
    by an exception deletes it instead, so a half-written output is never left.
    """

    def __init__(self, path: str | Path, like: RasterInfo | None, count: int, dtype: str,
                 colormap: dict | None = None, nodata: float | None = None, width: int | None = None,
                 height: int | None = None):
        self.path = Path(path)
        suffix = self.path.suffix.lower()
        if suffix not in (".tif", ".tiff", ".png"):
            raise EosegError(f"{self.path}: unsupported output format; use .tif or .png")
        width = like.width if width is None else width
        height = like.height if height is None else height
        profile = dict(driver="GTiff", count=count, width=width, height=height, dtype=dtype, compress="deflate",
                       tiled=True, blockxsize=256, blockysize=256, BIGTIFF="IF_SAFER")
        if count == 3 and dtype == "uint8":
            profile["photometric"] = "RGB"
        if suffix != ".png" and like is not None and like.georeferenced:
            profile.update(crs=like.crs, transform=like.transform)
        if nodata is not None and suffix != ".png":
            profile["nodata"] = nodata
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = self.path.with_name(f".{self.path.stem}.tmp-{os.getpid()}.tif")
        self._dst = rasterio.open(self._tmp, "w", **profile)
        if colormap is not None:
            self._dst.write_colormap(1, colormap)

    def write(self, array: np.ndarray, row: int = 0) -> None:
        """Write a (C, h, W) or (h, W) block whose first row is ``row``."""
        if array.ndim == 2:
            array = array[None]
        self._dst.write(array, window=Window(0, row, array.shape[2], array.shape[1]))

    def close(self) -> Path:
        self._dst.close()
        try:
            if self.path.suffix.lower() == ".png":
                with atomic_path(self.path) as png:
                    rasterio.shutil.copy(self._tmp, png, driver="PNG")
                    for extra in png.parent.glob(png.name + ".aux.xml"):
                        extra.unlink()
            else:
                os.replace(self._tmp, self.path)
        finally:
            self._remove_temp()
        return self.path

    def abort(self) -> None:
        if not self._dst.closed:
            self._dst.close()
        self._remove_temp()

    def _remove_temp(self) -> None:
        for leftover in (self._tmp, self._tmp.with_name(self._tmp.name + ".aux.xml")):
            if leftover.exists():
                leftover.unlink()

    def __enter__(self) -> "RasterWriter":
        return self

    def __exit__(self, kind, error, trace) -> None:
        if kind is None:
            self.close()
        else:
            self.abort()


def write_raster(
    path: str | Path,
    array: np.ndarray,
    like: RasterInfo | None = None,
    colormap: dict | None = None,
    nodata: float | None = None,
) -> Path:
    """Write a whole (C, H, W) or (H, W) array atomically (see :class:`RasterWriter`)."""
    if array.ndim == 2:
        array = array[None]
    count, height, width = array.shape
    with RasterWriter(path, like, count, array.dtype.name, colormap, nodata, width=width, height=height) as writer:
        writer.write(array)
    return Path(path)
