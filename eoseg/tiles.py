"""Finding and reading the tiles of a dataset as the config describes them."""

from __future__ import annotations

import contextlib
import copy
import json
import os
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
import unicodedata
from typing import Iterable, Sequence

import numpy as np
from rasterio.windows import Window

from eoseg.config import Config, find_tile_ids, uses_tile_id
from eoseg.errors import EosegError
from eoseg.grid import footprint, needs_warp, note_once, open_on_grid, same_grid
from eoseg.holdout import TileSplit, tile_split
from eoseg.io import (RasterInfo, apply_scaling, atomic_write_text, check_colour_alpha, file_record, holds_data, raster_info,
                      read_as_note, spread_windows, unchanged_since, unlabelled_by_mask, valid_mask)
from eoseg.labels import RasterLabels, VectorLabels, is_vector, label_source, row_windows
from eoseg.normalization import MIN_SAMPLED_PIXELS, BandStatistics, Normalization
from eoseg.palette import Palette, all_grey


def existing_path(cfg: Config, pattern_name: str, tile_id: str, what: str, hint: str = "") -> Path:
    path = cfg.tile_path(pattern_name, tile_id)
    if path is None:
        raise EosegError(f"tile {tile_id}: no {what} configured ({pattern_name} is empty)")
    if not path.is_file():
        hint = hint or _named_otherwise(path) or (_image_ids_hint(cfg, tile_id) if pattern_name == "IMAGE_PATTERN" else "") \
            or f"check DATA_ROOT ({cfg.DATA_ROOT}) and {pattern_name}"
        raise EosegError(f"tile {tile_id}: {what} not found at {path}{relative_to_here(path)}; {hint}")
    return path


def relative_to_here(path: Path) -> str:
    """" (in FOLDER)" for a relative path: relative paths are taken from the folder a script runs in."""
    return "" if path.is_absolute() else f" (in {Path.cwd()})"


def _named_otherwise(expected: Path) -> str:
    """Where a file is named as ``expected`` but for the case of its letters ("UP1.TIF" for "UP1.tif") or the Unicode
    form of its accented ones (NFD, as macOS writes names, for the NFC typed): which, to rename; else ""."""
    if expected.is_dir():
        return f"{expected} is a folder, not a file"
    if expected.is_symlink():
        return f"{expected} is a link to {os.readlink(expected)}, which does not exist"
    if not expected.parent.is_dir():
        return ""
    same = lambda name: unicodedata.normalize("NFC", name)  # noqa: E731
    for entry in sorted(expected.parent.iterdir()):
        if entry.name == expected.name:
            continue
        if same(entry.name) == same(expected.name):
            return (f"{entry} is named so, its accented letters written in another Unicode form (decomposed, as macOS "
                    "writes names): rename it, or give the id as its file name writes it")
        if same(entry.name).lower() == same(expected.name).lower():
            return f"{entry} is named so but for the case of its letters: rename it"
    return ""


def _image_ids_hint(cfg: Config, tile_id: str) -> str:
    """What the ids of the images IMAGE_PATTERN does find look like, when it finds some: "1" against "001"."""
    try:
        found = find_tile_ids(cfg.DATA_ROOT, cfg.IMAGE_PATTERN, "*", "IMAGE_PATTERN")
    except EosegError:
        return ""
    alike = [other for other in found if other.lstrip("0").lower() == tile_id.lstrip("0").lower()]
    if alike:
        return f"IMAGE_PATTERN finds an image of id {alike[0]!r}: an id is the text {{id}} stands for in the file name"
    listed = ", ".join(found[:5]) + (f" and {len(found) - 5} more" if len(found) > 5 else "")
    return f"IMAGE_PATTERN finds images of ids {listed} under DATA_ROOT ({cfg.DATA_ROOT})"


# what common band names name, as GDAL and the data's makers spell them
BAND_KINDS = {"R": "red", "RED": "red", "G": "green", "GREEN": "green", "B": "blue", "BLUE": "blue",
              "IR": "near-infrared", "NIR": "near-infrared", "NEAR-INFRARED": "near-infrared",
              "NEAR INFRARED": "near-infrared", "NEARINFRARED": "near-infrared", "NEAR_INFRARED": "near-infrared",
              "NEAR-IR": "near-infrared", "NEAR IR": "near-infrared", "NEAR_IR": "near-infrared"}


def band_kind(name: str) -> str:
    """A band name as what it names (BAND_KINDS), or upper-cased: "Red" and "R" alike."""
    return BAND_KINDS.get(name.strip().upper(), name.strip().upper())


# Sentinel-2's names of its visible and near-infrared bands, for drawing only: "B4" is red there and in Landsat 8 but
# near-infrared in Landsat 7, so band order checks do not read band numbers as colours
SENTINEL2_KINDS = {"B02": "blue", "B03": "green", "B04": "red", "B08": "near-infrared"}


def display_bands(band_names: Sequence[str]) -> list[int]:
    """Positions among ``band_names`` of the three bands to draw as red, green and blue: true colour where they name
    red, green and blue; near-infrared, red, green (false colour, vegetation red) where they name those; else the
    first three (or the first alone, as grey)."""
    kinds = [SENTINEL2_KINDS.get(name.strip().upper(), band_kind(name)) for name in band_names]
    for wanted in (("red", "green", "blue"), ("near-infrared", "red", "green")):
        if all(kinds.count(kind) == 1 for kind in wanted):
            return [kinds.index(kind) for kind in wanted]
    return list(range(min(3, len(band_names)))) if len(band_names) >= 3 else [0]


def check_same_dtype(stack: "TileStack", earlier: tuple[str, str] | None) -> tuple[str, str]:
    """The data type a training tile's image is read in (:attr:`TileStack.image_dtype`, not only the stack's, which
    a derived band makes float32 for all) and that of its stack, and, for errors, the tile described; refused unless
    they are those of the ``earlier`` tiles (of the first: that pair). Extra sources may differ in type (a DSM in
    int16 here, float32 there) where the stack's type does not."""
    stacked = str(stack.dtype)
    read = stack.image_dtype + ("" if stacked == stack.image_dtype else f", stacked with its extra sources as {stacked}")
    described = stack.image_dtype + read_as_note(stack.info, stack.sources[0].bands) + read[len(stack.image_dtype):]
    if earlier is not None and read != earlier[0]:
        scaled = "GDAL scale/offset" in described + earlier[1]
        raise EosegError(f"{stack.info.path}: image is {described}, but {earlier[1]} before it; one NORM_MEAN and "
                         "NORM_STD cannot fit both: convert the tiles to one data type"
                         + (" (or give every tile's file the same scale and offset)" if scaled else ""))
    return earlier or (read, f"{stack.info.path.name} is {described}")


def check_bands(cfg: Config, info: RasterInfo) -> RasterInfo:
    """``info`` of an image that has every band BANDS asks for, and does not name them otherwise than BAND_NAMES."""
    if max(cfg.BANDS) > info.count:
        raise EosegError(
            f"{info.path}: the image has {info.count} bands but BANDS asks for {cfg.BANDS}; "
            "set BANDS, BAND_NAMES, NORM_MEAN and NORM_STD for this data"
        )
    types = {band: info.dtypes[band - 1] for band in cfg.BANDS} if info.dtypes else {}
    if len(set(types.values())) > 1:  # GDAL reads a window's bands as one array, of one type
        listed = ", ".join(f"band {band} {dtype}" for band, dtype in types.items())
        common = np.result_type(*types.values()).name
        gdal_type = "Byte" if common == "uint8" else common.replace("uint", "UInt").replace("int", "Int").replace("float", "Float")
        raise EosegError(f"{info.path}: BANDS {cfg.BANDS} are of several data types ({listed}); give them one: "
                         f"gdal_translate -of VRT -ot {gdal_type} FILE FILE_one_type.vrt, and read that")
    if types:
        info = replace(info, dtype=types[cfg.BANDS[0]])
    if info.colour_table is not None:
        raise EosegError(f"{info.path}: a paletted image, whose values are indices into its colour table, not brightness: "
                         "expand it first (gdal_translate -expand rgb FILE out.tif, or -expand gray for a grey one)")
    alpha = [band for band in cfg.BANDS if info.colorinterp[band - 1:band] == ("alpha",)]
    if alpha:
        raise EosegError(
            f"{info.path}: band {alpha[0]} is tagged as its alpha band (transparency, which GDAL reads as the image's "
            f"nodata mask), but BANDS {cfg.BANDS} reads it as data: if it holds data (near-infrared in a file tagged "
            f"so), retag it: gdal_edit.py -colorinterp_{alpha[0]} undefined FILE (or, leaving the file as it is, "
            f"gdal_translate -of VRT -colorinterp_{alpha[0]} undefined FILE FILE.vrt and read the .vrt); if it is "
            "transparency, leave it out of BANDS")
    # the file holds the bands in another order where it names every one of BAND_NAMES once (as it is, or as what
    # it names: "Red" for "R") but not at BANDS, or names one of BANDS as another colour than BAND_NAMES does there
    named = [band_kind(description or "") for description in info.descriptions]
    wanted = [band_kind(name) for name in cfg.BAND_NAMES]
    found = {name: named.index(kind) + 1 for name, kind in zip(cfg.BAND_NAMES, wanted) if named.count(kind) == 1}
    known = set(BAND_KINDS.values())
    clash = any(named[band - 1] in known and kind in known and named[band - 1] != kind
                for band, kind in zip(cfg.BANDS, wanted) if band <= len(named))
    if clash or (len(found) == len(cfg.BANDS) and list(found.values()) != list(cfg.BANDS)):
        if len(found) == len(cfg.BANDS):
            remedy = f"set BANDS = {list(found.values())} to read them in that order"
        else:
            remedy = "set BANDS to the bands that hold them, in that order" + (
                f": the file names {', '.join(f'{name} band {band}' for name, band in found.items())}" if found else "")
        raise EosegError(
            f"{info.path}: the file names bands {cfg.BANDS} {[info.descriptions[b - 1] for b in cfg.BANDS]}, but "
            f"BAND_NAMES says {cfg.BAND_NAMES}: {remedy} (or BAND_NAMES to what the bands are)")
    return info


def named_bands(info: RasterInfo, bands: Sequence[int]) -> list[str | None]:
    """The descriptions (names in the file) of ``bands`` (1-based) of ``info``; None where a band has none."""
    return [(info.descriptions[band - 1] or None) if band <= len(info.descriptions) else None for band in bands]


def stated_colours(info: RasterInfo, bands: Sequence[int]) -> list[str]:
    """GDAL's colour interpretation of ``bands`` of ``info`` ("red", "gray", "undefined"...)."""
    return [info.colorinterp[band - 1] if band <= len(info.colorinterp) else "undefined" for band in bands]


def image_bands_record(infos: Sequence[RasterInfo], bands: Sequence[int]) -> dict:
    """What the training images' files say of their ``bands`` (BANDS), recorded with patches and weights so that
    an image holding them otherwise is told: each distinct list of the bands' names in the files
    (:func:`named_bands`), of their GDAL colour interpretations (:func:`stated_colours`), and of the GDAL
    [scales, offsets] they were read through ([]: none). A training image naming, at other positions, the bands an
    earlier one named at ``bands`` is refused (see :func:`check_band_names`)."""
    names: list[list[str | None]] = []
    colours: list[list[str]] = []
    scalings: list[list] = []
    first_named = None  # the first training image that names all its bands
    for info in infos:
        named = named_bands(info, bands)
        if first_named is not None:
            check_band_names(info, bands, {"names": [named_bands(first_named, bands)]}, f"{first_named.path.name} before it",
                             among_training=True)
        elif all(named):
            first_named = info
        if named not in names:
            names.append(named)
        if stated_colours(info, bands) not in colours:
            colours.append(stated_colours(info, bands))
        if scaling_pair(info, bands) not in scalings:
            scalings.append(scaling_pair(info, bands))
    return {"names": names, "colours": colours, "scalings": scalings}


def scaling_pair(info: RasterInfo, bands: Sequence[int]) -> list:
    """[scales, offsets] of ``bands`` of ``info`` as :func:`image_bands_record` records them; [] where none applies."""
    scaling = info.stored_scaling(bands)
    return [] if scaling is None else [scaling[0].ravel().tolist(), scaling[1].ravel().tolist()]


def scaling_hint(info: RasterInfo, bands: Sequence[int], recorded: dict | None) -> str:
    """'; ...' where ``info``'s ``bands`` are read through another GDAL scale and offset than every training image's
    were (``recorded``: :func:`image_bands_record`), for a refusal or note of its values' scale: a file that lost its
    product's tags (or carries another's) reads on another scale, and where an offset differs no INFER_VALUE_SCALE (a
    factor) brings it back. "" where a training image was read alike, or where the record says nothing."""
    scalings = (recorded or {}).get("scalings")
    if not scalings:
        return ""
    mine = scaling_pair(info, bands)
    if mine in scalings:
        return ""
    theirs = next((pair for pair in scalings if pair), [])
    alike = lambda numbers: len(set(numbers)) == 1  # noqa: E731  one value for every band
    values = lambda numbers: f"{numbers[0]:.10g}" if alike(numbers) else f"{[float(f'{v:.10g}') for v in numbers]}"  # noqa: E731
    described = lambda pair: f"scale {values(pair[0])} and offset {values(pair[1])}" if pair else "no scale or offset"  # noqa: E731
    if not theirs:
        remedy = "gdal_edit.py -scale 1 -offset 0 FILE"
    elif alike(theirs[0]) and alike(theirs[1]):
        remedy = f"gdal_edit.py -scale {values(theirs[0])} -offset {values(theirs[1])} FILE"
    else:  # gdal_edit.py takes one value per band of the file, in its order: BANDS may be a few, in another
        remedy = f"each of BANDS {list(bands)} its own, in that order: gdal_edit.py -scale and -offset take one per band"
    return (f"; the training images were read through a GDAL {described(theirs)}, this one through {described(mine)}: "
            f"if it holds their product, tag it as they are ({remedy}); INFER_VALUE_SCALE, a factor, cannot stand for an "
            "offset")


def check_band_names(info: RasterInfo, bands: Sequence[int], recorded: dict | None, whose: str,
                     among_training: bool = False) -> str | None:
    """Refuse an image whose file names, at other positions than ``bands`` (BANDS), each band that ``whose`` files
    named there (``recorded``: :func:`image_bands_record`): the same bands in another order, which would be read
    swapped. A note where it names them otherwise (another product's names, or other bands); None where alike, or
    where either leaves a band unnamed or the recorded files named them in several ways. Names compare as
    :func:`band_kind` does ("Red" and "R" alike)."""
    fully_named = [names for names in (recorded or {}).get("names", []) if all(names)]
    if len(fully_named) != 1:
        return None
    expected, mine = fully_named[0], named_bands(info, bands)
    if not all(mine) or list(map(band_kind, mine)) == list(map(band_kind, expected)):
        return None
    in_file = [band_kind(name or "") for name in info.descriptions]
    if all(in_file.count(band_kind(name)) == 1 for name in expected):
        found = [in_file.index(band_kind(name)) + 1 for name in expected]
        # one BANDS reads every training file: there, the file must change
        remedy = ("write this file with its bands in their order (gdal_translate -b N ... FILE OUT.tif)" if among_training
                  else f"set BANDS = {found} to read them alike")
        raise EosegError(f"{info.path}: its bands {list(bands)} (BANDS) are named {mine} in the file, but {whose} "
                         f"named them {expected}, which this file holds as bands {found}: {remedy}, or the two are read "
                         "with their bands swapped")
    return (f"note: {info.path}: its bands {list(bands)} (BANDS) are named {mine} in the file, {whose} named them "
            f"{expected}: if those are other bands, set BANDS to the bands that hold them")


# of a raster's sampled pixels 0 in every band without a nodata tag: said, not assumed nodata (an 11% collar went
# unsaid at 20%, review: black in every band is rare in a scene); white in every band is more common (snow, roofs)
UNMASKED_ZEROS, UNMASKED_WHITE = 0.05, 0.2


TRAINED_ZEROS = 0.01  # the share said where the weights were trained with NODATA_ZERO=True


def unmasked_fill_note(fills: dict[int, float], trained_as_nodata: bool = False) -> str:
    """What the shares ``fills`` of sampled pixels holding one value in every image band (:meth:`TileStack.sample`)
    may mean, and what to set, as the end of a line; "" for shares that say nothing. A collar or a mosaic's gaps
    without a nodata tag, black (0) or white (255 in uint8), move the values and are labelled, or learned, as land
    (a white one was taken for another scale of values, review); by weights ``trained_as_nodata``
    (NODATA_ZERO=True), zeros were never seen in training at all."""
    zeros = fills.get(0, 0.0)
    if trained_as_nodata and zeros > TRAINED_ZEROS:
        return (f"{zeros:.0%} of its sampled pixels are 0 in every band, which the weights were trained to take for no "
                "data (NODATA_ZERO=True, as they record), and are labelled here as land: set NODATA_ZERO=True")
    if zeros > UNMASKED_ZEROS:
        return (f"{zeros:.0%} of its sampled pixels are 0 in every band with no nodata tag: if they hold no data, "
                "set NODATA_ZERO=True (or tag them: gdal_edit.py -a_nodata 0 FILE)")
    top, white = max(fills), fills[max(fills)]
    if top and white > UNMASKED_WHITE:
        return (f"{white:.0%} of its sampled pixels are {top} in every band, its type's largest value, with no nodata "
                f"tag (a white collar?): if they hold no data, tag them: rio edit-info --nodata {top} FILE (pixels of "
                f"{top} in every band inside the image, saturated roofs, are then no data too)")
    return ""


def fits_patch(info: RasterInfo, patch_size: int) -> bool:
    """Whether a tile holds one PATCH_SIZE patch."""
    return info.height >= patch_size and info.width >= patch_size


def check_patch_fits(info: RasterInfo, patch_size: int) -> None:
    """Refuse a training tile too small for one PATCH_SIZE patch (extraction and training read whole patches)."""
    if not fits_patch(info, patch_size):
        raise EosegError(f"{info.path}: tile is {info.width} x {info.height} px, smaller than PATCH_SIZE {patch_size}; "
                         "lower PATCH_SIZE or leave the tile out of TRAIN_IDS")


def image_info(cfg: Config, tile_id: str) -> RasterInfo:
    return check_bands(cfg, raster_info(existing_path(cfg, "IMAGE_PATTERN", tile_id, "image"), "image"))


def ndvi(red: np.ndarray, nir: np.ndarray) -> np.ndarray:
    """Normalised difference vegetation index ``(nir - red) / (nir + red)`` as float32, clipped
    to -1..1 (negative reflectances, e.g. after atmospheric correction, would leave it); 0 where
    the sum is 0. Used by derived bands and the composite alike."""
    red = np.asarray(red, dtype=np.float32)
    nir = np.asarray(nir, dtype=np.float32)
    total = nir + red
    with np.errstate(divide="ignore", invalid="ignore"):
        index = (nir - red) / total
    return np.clip(np.where(total == 0, np.float32(0), index), -1, 1).astype(np.float32)


@dataclass(frozen=True)
class StackSource:
    """One raster of a stacked input: the bands read from it, in order."""

    info: RasterInfo
    bands: tuple[int, ...]
    what: str  # "image", or which extra source: named in errors
    resampling: str = "nearest"  # how it is warped onto the image's grid if it is on another


class TileStack:
    """The stacked input of one tile: the image's BANDS, then every EXTRA_SOURCES entry.

    Bands whose stored values the file scales (a GDAL scale or offset) are read as the values they
    stand for, in float32: tiles and images that store them otherwise (another scale, or plain
    values) then feed the network alike.

    Raster sources on another grid than the image (CRS, resolution, extent) are warped onto
    the image's grid as they are read (each with its resampling); the image's pixels they do
    not reach are nodata. ``read(window)`` gives (C_total, h, w): the sources' common dtype when
    they all have one and nothing is derived, else float32. ``valid_mask`` combines every
    source's nodata (mask, NaN; NODATA_ZERO for the image's bands). Use it as a context
    manager to keep the rasters open across many reads; otherwise each read opens them.
    :meth:`on_grid` gives the same stack read on another grid (see eoseg.grid.labelling_grid).
    """

    def __init__(self, cfg: Config, sources: list[StackSource]):
        """``sources``: the image, then one per raster entry of EXTRA_SOURCES, in order."""
        self.sources = sources
        self.nodata_zero = bool(cfg.NODATA_ZERO)
        image = sources[0].info
        for source in sources[1:]:
            if needs_warp(image, source.info, source.what):  # refuses what cannot be placed on the image's grid
                _note_partial_cover(image, source)
        entries = cfg.extra_sources
        if len(sources) != 1 + sum("pattern" in e for e in entries):
            raise EosegError("a stack needs the image and one raster per raster entry of EXTRA_SOURCES")
        raster_names = list(cfg.BAND_NAMES) + [n for e in entries if "pattern" in e for n in e["band_names"]]
        # where each raster band and each derived band goes in the stacked output (EXTRA_SOURCES order)
        self._raster_positions: list[int] = list(range(len(cfg.BANDS)))
        self._derived: list[tuple[int, int, int]] = []  # (output position, red, nir raster band index)
        position = len(cfg.BANDS)
        for entry in entries:
            if "pattern" in entry:
                self._raster_positions += range(position, position + len(entry["bands"]))
                position += len(entry["bands"])
            else:
                self._derived.append((position, raster_names.index(entry["red"]), raster_names.index(entry["nir"])))
                position += 1
        self.count = position
        # rasters whose stored values are scaled (GDAL scale/offset) are read as the values they stand for
        self._scaling = [s.info.stored_scaling(s.bands) for s in sources]
        dtypes = {np.dtype(np.float32) if scaling is not None else np.dtype(s.info.dtype)
                  for s, scaling in zip(sources, self._scaling)}
        self.dtype = dtypes.pop() if len(dtypes) == 1 and not self._derived else np.dtype(np.float32)
        # what the image's bands are read in, before the stack's conversion (which a derived band makes float32)
        self.image_dtype = "float32" if self._scaling[0] is not None else sources[0].info.dtype
        self.grid = sources[0].info  # the grid reads are on: the image's, unless on_grid chose another
        self._open: list | None = None

    @property
    def info(self) -> RasterInfo:
        """The image's info: size, georeference and name of the tile's outputs."""
        return self.sources[0].info

    def named_source_bands(self, cfg: Config) -> list[tuple[str, slice]]:
        """``cfg.source_bands``, each named with the file this stack reads it from: the file a value check sends
        users to."""
        return [(f"{name} ({source.info.path.name})", positions)
                for (name, positions), source in zip(cfg.source_bands, self.sources[1:])]

    @property
    def paths(self) -> list[Path]:
        return [s.info.path for s in self.sources]

    def on_grid(self, grid: RasterInfo) -> "TileStack":
        """This stack read on ``grid`` (a scaling of the image's, see eoseg.grid.labelling_grid): the
        image averaged where the grid's pixels are larger, interpolated bilinearly where smaller."""
        larger = abs((~self.info.transform * grid.transform).a) > 1
        moved = copy.copy(self)
        moved.sources = [replace(self.sources[0], resampling="average" if larger else "bilinear"), *self.sources[1:]]
        moved.grid = grid
        moved._open = None
        return moved

    def __enter__(self) -> "TileStack":
        self._stack = contextlib.ExitStack()
        try:
            self._open = self._open_all(self._stack)
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self._open = None
        self._stack.__exit__(*exc)

    def _open_all(self, stack: contextlib.ExitStack) -> list:
        # a source on the image's grid read on a labelling grid is not worth a note: labelling_stack says why
        return [stack.enter_context(open_on_grid(s.info, self.grid, s.what, s.resampling,
                                                 note=not same_grid(self.info, s.info)))
                for s in self.sources]

    @contextlib.contextmanager
    def _datasets(self):
        """The open rasters: those of the ``with`` block, else opened for this one read (never
        through ``self``, so that reads outside a ``with`` block do not share state)."""
        if self._open is not None:
            yield self._open
        else:
            with contextlib.ExitStack() as stack:
                yield self._open_all(stack)

    def read(self, window: Window | None = None) -> np.ndarray:
        """(C_total, h, w) raw values of ``window`` (whole tile if None), in ``self.dtype``."""
        with self._datasets() as datasets:
            parts = [apply_scaling(src.read(list(s.bands), window=window), scaling)
                     for src, s, scaling in zip(datasets, self.sources, self._scaling)]
        if len(parts) == 1 and not self._derived:
            return parts[0]
        raster = np.concatenate([p.astype(self.dtype, copy=False) for p in parts], axis=0)
        if not self._derived:
            return raster
        stacked = np.empty((self.count, *raster.shape[1:]), dtype=self.dtype)
        stacked[self._raster_positions] = raster
        for position, red, nir in self._derived:
            stacked[position] = ndvi(raster[red], raster[nir])
        return stacked

    def valid_mask(self, pixels: np.ndarray, window: Window | None = None) -> np.ndarray:
        """(h, w) True where every source holds data, for ``pixels`` = ``read(window)``."""
        raster = pixels[self._raster_positions] if self._derived else pixels
        with self._datasets() as datasets:
            first = 0
            valid = None
            for index, (src, source) in enumerate(zip(datasets, self.sources)):
                part = raster[first:first + len(source.bands)]
                first += len(source.bands)
                nodata_zero = self.nodata_zero and index == 0
                if nodata_zero and self._scaling[0] is not None:  # NODATA_ZERO means a stored 0: what it is read as
                    part = part - apply_scaling(np.zeros((len(source.bands), 1, 1), np.float32), self._scaling[0])
                mask = valid_mask(src, list(source.bands), part, nodata_zero, window)
                valid = mask if valid is None else valid & mask
        if self._derived:
            valid &= np.isfinite(pixels[[position for position, _, _ in self._derived]]).all(axis=0)
        return valid

    def sample(self, side: int = 4, size: int = 256) -> tuple[BandStatistics, dict[int, float]]:
        """Each band's statistics over the valid pixels of ``side`` x ``side`` windows of ``size`` px spread evenly
        over the grid (what the whole raster's values look like, for a few reads), and the share of those pixels that
        hold one stored value in every image band, of 0 and, for an integer type, its largest (255 in uint8): a
        collar or mosaic gap without a nodata tag, black or white, unless NODATA_ZERO masks the black."""
        with contextlib.nullcontext() if self._open is not None else self:  # each raster opened once
            statistics, fills = self._statistics(spread_windows(self.grid.height, self.grid.width, side, size))
            if statistics.count < MIN_SAMPLED_PIXELS:  # its data in a small part of a large frame: the windows missed it
                statistics, fills = self._statistics(row_windows(self.grid.height, self.grid.width, size))
        return statistics, {value: pixels / statistics.count if statistics.count else 0.0 for value, pixels in fills.items()}

    def _statistics(self, windows: Iterable[Window]) -> tuple[BandStatistics, dict[int, int]]:
        """Each band's statistics over the valid pixels of ``windows``, and how many of them hold each fill value (see
        :meth:`sample`) in every image band."""
        statistics = BandStatistics(self.count)
        image_bands = len(self.sources[0].bands)
        stored_type = np.dtype(self.sources[0].info.dtype)
        fills = [0] + ([int(np.iinfo(stored_type).max)] if np.issubdtype(stored_type, np.integer) else [])
        counts = dict.fromkeys(fills, 0)
        # what each stored value reads as, through the file's scale and offset
        read_as = {value: apply_scaling(np.full((image_bands, 1, 1), value, np.float32), self._scaling[0]) for value in fills}
        for window in windows:
            pixels = self.read(window)
            valid = self.valid_mask(pixels, window)
            statistics.add(pixels, valid)
            for value in fills:
                counts[value] += int(((pixels[:image_bands] == read_as[value]).all(axis=0) & valid).sum())
        return statistics, counts

    def sample_statistics(self, side: int = 4, size: int = 256) -> BandStatistics:
        """The statistics of :meth:`sample`."""
        return self.sample(side, size)[0]


PARTIAL_COVER_NOTE = 0.99  # of an image's area an extra source covers, under which it is said


def _note_partial_cover(image: RasterInfo, source: "StackSource") -> None:
    """Say where an extra source on another grid covers only part of the image: its pixels beyond it hold no data,
    and get no label (review: an nDSM over 10% of a tile left 90% of it unlabelled, blamed on the image)."""
    if not (image.georeferenced and source.info.georeferenced and image.crs is not None and source.info.crs is not None):
        return
    whole = footprint(image, image.crs)
    covered = whole.intersection(footprint(source.info, image.crs)).area / whole.area if whole.area else 1.0
    if covered < PARTIAL_COVER_NOTE:
        note_once(("partial cover", str(source.info.path), str(image.path)),
                  f"{source.info.path} ({source.what}) covers {covered:.0%} of the image {image.path.name}: the pixels "
                  "beyond it hold no data, so they get no label and give no training patch")


def _extra_what(index: int, entry: dict) -> str:
    return f"EXTRA_SOURCES[{index}] ({', '.join(entry['band_names'])})"


def tile_stack(cfg: Config, tile_id: str) -> TileStack:
    """The stacked input of configured tile ``tile_id``: its image and every extra source."""
    sources = [StackSource(image_info(cfg, tile_id), tuple(cfg.BANDS), "image")]
    sources += [_extra_source(cfg, index, entry, tile_id) for index, entry in enumerate(cfg.extra_sources)
                if "pattern" in entry]
    return TileStack(cfg, sources)


def _extra_source(cfg: Config, index: int, entry: dict, tile_id: str) -> StackSource:
    what = _extra_what(index, entry)
    path = cfg.pattern_path(entry["pattern"], tile_id, f"EXTRA_SOURCES[{index}] pattern")
    if not path.is_file():
        raise EosegError(f"tile {tile_id}: {what} not found at {path}{relative_to_here(path)}; check DATA_ROOT "
                         f"({cfg.DATA_ROOT}) and its pattern")
    info = raster_info(path, what)
    if max(entry["bands"]) > info.count:
        raise EosegError(f"{path}: {what} has {info.count} bands but its 'bands' asks for {entry['bands']}")
    return StackSource(info, tuple(entry["bands"]), what, entry["resampling"])


def image_stack(cfg: Config, info: RasterInfo) -> TileStack:
    """The stacked input of an image file outside the configured tiles: its BANDS, the raster extra sources
    that are one georeferenced file for every tile (read where the image lies), and derived bands.

    A raster extra source found by tile id cannot be found for such a file: refused.
    """
    by_id = [_extra_what(i, e) for i, e in enumerate(cfg.extra_sources) if uses_tile_id(e.get("pattern", ""))]
    if by_id:
        raise EosegError(
            f"{info.path}: EXTRA_SOURCES stacks {', '.join(by_id)} from the configured tiles, which an image file given "
            "by path has no id for; label configured tiles with --tiles, or give rasters that hold all bands and select "
            "them with BANDS"
        )
    check_bands(cfg, info)
    sources = [StackSource(info, tuple(cfg.BANDS), "image")]
    sources += [_extra_source(cfg, index, entry, info.path.stem) for index, entry in enumerate(cfg.extra_sources)
                if "pattern" in entry]
    return TileStack(cfg, sources)


def read_image(cfg: Config, tile_id: str) -> tuple[np.ndarray, RasterInfo]:
    """The stacked input of tile ``tile_id`` (see :class:`TileStack`): (C, H, W), and the image's info."""
    stack = tile_stack(cfg, tile_id)
    return stack.read(), stack.info


def tile_labels(cfg: Config, tile_id: str, like: RasterInfo) -> RasterLabels | VectorLabels:
    """The labels of a tile (LABEL_PATTERN: a label raster or vector file) on its image ``like``'s grid."""
    if is_vector(cfg.LABEL_PATTERN):
        path = existing_path(cfg, "LABEL_PATTERN", tile_id, "vector label file",
                             hint=f"check DATA_ROOT ({cfg.DATA_ROOT}) and LABEL_PATTERN")
    else:
        hint = ("run convert_gt.py to make it from the colour ground truth, or check LABEL_PATTERN" if cfg.GT_COLOR_PATTERN
                else f"check DATA_ROOT ({cfg.DATA_ROOT}) and LABEL_PATTERN")  # no colour ground truth to convert
        path = existing_path(cfg, "LABEL_PATTERN", tile_id, "numeric label map", hint=hint)
        _check_converted(cfg, tile_id, path)
    return label_source(cfg, path, like)


# beside the label maps convert_gt.py --from-color made for the configured tiles: each one's colour source as it was
CONVERSION_RECORD = "conversions.convert_gt.json"


def record_conversion(source: Path, target: Path) -> None:
    """Note in ``target``'s folder that ``target`` was converted from ``source`` as it is now."""
    record_path = target.parent / CONVERSION_RECORD
    try:
        record = json.loads(record_path.read_text())
    except (OSError, ValueError):
        record = {}
    record[target.name] = {"source": str(source.resolve()), **file_record(source)}
    atomic_write_text(record_path, json.dumps(record, indent=1, sort_keys=True) + "\n")


def check_converted_from(labels: Path, source: Path) -> None:
    """Refuse a label map convert_gt.py made from ``source`` (the colour ground truth the config names for it)
    when that file has changed since: its labels would be the old ones. Copies (new times, same bytes) pass."""
    try:
        entry = json.loads((labels.parent / CONVERSION_RECORD).read_text())[labels.name]
    except (OSError, ValueError, KeyError, TypeError):
        return  # not made by convert_gt.py, or before it kept the record
    if not source.is_file():
        return
    if not unchanged_since(source, entry):
        raise EosegError(f"{labels} was converted from {source}, which has changed since: its labels are the old ones; "
                         "run convert_gt.py --from-color --force")


# the files a tile is read from, which no output may be written over (a LABEL_PATTERN typed as IMAGE_PATTERN)
TILE_INPUT_PATTERNS = ("IMAGE_PATTERN", "LABEL_PATTERN", "GT_COLOR_PATTERN", "GT_ERODED_PATTERN", "DSM_PATTERN",
                       "NDSM_PATTERN")


def tile_inputs(cfg: Config, tile_ids: Sequence[str], made_here: str = "") -> dict[Path, str]:
    """The files the tiles ``tile_ids`` are read from (resolved), each with what it is (see eoseg.io.check_outputs),
    but those of the pattern named ``made_here``, which the step writes (LABEL_PATTERN for convert_gt.py, whose maps
    the other steps read; COMPOSITE_PATTERN, also where EXTRA_SOURCES reads it)."""
    inputs: dict[Path, str] = {}
    own = getattr(cfg, made_here) if made_here else None
    patterns = [(getattr(cfg, name), name) for name in TILE_INPUT_PATTERNS if name != made_here]
    patterns += [(entry["pattern"], f"EXTRA_SOURCES[{index}] pattern") for index, entry in enumerate(cfg.extra_sources)
                 if "pattern" in entry and entry["pattern"] != own]
    for index, tile_id in enumerate(tile_ids):
        for pattern, name in patterns:
            if index and pattern and not uses_tile_id(pattern):
                continue  # one file for every tile (a mosaic): checked, and opened, once
            try:
                path = cfg.pattern_path(pattern, tile_id, name)
            except EosegError:  # a pattern that names no file of this tile guards none; the step reading it says why
                continue
            if path is not None:
                inputs.setdefault(path.resolve(), f"tile {tile_id}'s {name.removesuffix(' pattern')} file")
    return inputs


def configured_inputs(cfg: Config, made_here: str = "") -> dict[Path, str]:
    """:func:`tile_inputs` of the config's tiles; none where its tile lists find no image (a glob matching
    nothing: no tile files to guard)."""
    try:
        ids = list(dict.fromkeys(cfg.tile_ids("train") + cfg.tile_ids("test")))
    except EosegError:
        return {}
    return tile_inputs(cfg, ids, made_here)


def _check_converted(cfg: Config, tile_id: str, labels: Path) -> None:
    """Refuse a tile's label map made from a colour ground truth that has changed since (:func:`check_converted_from`)."""
    source = cfg.tile_path("GT_COLOR_PATTERN", tile_id)
    if source is not None:
        check_converted_from(labels, source)


def read_labels(cfg: Config, tile_id: str, like: RasterInfo) -> np.ndarray:
    """The class ids of a tile on its image ``like``'s grid, checked (see eoseg.labels)."""
    return tile_labels(cfg, tile_id, like).read()


def training_filling(cfg: Config) -> Normalization:
    """The normalisation whose :meth:`~Normalization.fill_invalid` gives nodata pixels of training patches and crops
    the training tiles' mean (sampled: :meth:`TileStack.sample`); patches and weights record these values
    (:meth:`~Normalization.fill_record`), which labelling gives nodata pixels: one fill in training and labelling."""
    statistics = BandStatistics(cfg.num_bands)
    for tile_id in cfg.tile_ids("train"):
        statistics.merge(tile_stack(cfg, tile_id).sample_statistics())
    return Normalization.from_config(cfg).filled_with(statistics.record())


def training_pixels(cfg: Config, stack: TileStack, image: np.ndarray, labels: np.ndarray, filling: Normalization,
                    statistics: BandStatistics | None = None, trained_on: np.ndarray | None = None,
                    window: Window | None = None, counted_rows: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A tile's stacked input (``stack.read(window)``) and labels made safe to train on; its valid
    pixels (those of them ``trained_on`` holds, where given) counted into ``statistics`` where given:
    of its first ``counted_rows`` rows only, where given (the rows a window read by rows is the first to hold).

    Where any source has no data (see :meth:`TileStack.valid_mask`) the label becomes
    IGNORE_LABEL, so that no loss is computed there, and every band takes ``filling``'s fill
    (:func:`training_filling`, :meth:`Normalization.fill_invalid`): a NaN or a nodata value of -9999
    would spread through the activations and batch norm's statistics.
    """
    valid = stack.valid_mask(image, window)
    if statistics is not None:
        counted = valid[:counted_rows]
        statistics.add(image[:, :counted_rows], counted if trained_on is None else counted & trained_on)
    labels = np.where(valid, labels, np.uint8(cfg.IGNORE_LABEL))
    return filling.fill_invalid(image, valid), labels


@dataclass(frozen=True)
class TruthSource:
    """Ground truth of a tile for scoring, readable by rows on its image's grid: colour-coded
    (``labels`` None: read through the palette) or class ids (``labels``: see eoseg.labels)."""

    path: Path
    colour: bool
    description: str
    image: RasterInfo | None = None
    labels: RasterLabels | VectorLabels | None = None
    split: TileSplit | None = None  # a tile also trained on: only its held-out blocks are scored
    unknown_to_ignore: bool = False  # colours PALETTE does not name are unlabelled (UNKNOWN_LABELS_TO_IGNORE)
    eroded: bool = False  # GT_ERODED_PATTERN's file

    def check(self, palette: Palette) -> None:
        """Read the whole ground truth by rows: colours it cannot read as classes are refused before labelling."""
        grid = self.image or raster_info(self.path, "ground truth")
        if self.labels is not None:
            for window in row_windows(grid.height, grid.width):
                self._read_rows(palette, window.row_off, window.row_off + window.height)
            return
        unknown: dict[int, int] = {}  # colours no class has, and those LABEL_TOLERANCE reads: judged over the whole
        near: dict = {}
        for window in row_windows(grid.height, grid.width):
            rgb, empty = self._colours(window.row_off, window.row_off + window.height)
            for colour, pixels in palette.read_colours(rgb, str(self.path), empty, self.grey_image, near)[1].items():
                unknown[colour] = unknown.get(colour, 0) + pixels
        palette.check_whole_image(unknown, near, str(self.path), self.unknown_to_ignore)

    def read_rows(self, palette: Palette, first: int, end: int) -> np.ndarray:
        """(rows, W) uint8 class ids of rows first..end-1 (IGNORE_LABEL outside the held-out blocks of a split tile)."""
        labels = self._read_rows(palette, first, end)
        if self.split is not None:
            labels[~self.split.mask(first, end, held_out=True)] = palette.ignore_label
        return labels

    def _read_rows(self, palette: Palette, first: int, end: int) -> np.ndarray:
        if self.labels is not None:
            return self.labels.read(Window(0, first, self.labels.image.width, end - first))
        rgb, empty = self._colours(first, end)
        return palette.to_labels(rgb, self.unknown_to_ignore, source=str(self.path), empty=empty,
                                 grey_image=self.grey_image)

    def _colours(self, first: int, end: int) -> tuple[np.ndarray, np.ndarray | None]:
        """(rows, W, 3) RGB of a colour ground truth's rows first..end-1, and its pixels left unlabelled."""
        info = raster_info(self.path, "ground truth")
        image = self.image or info  # made without its image: read on its own grid
        window = Window(0, first, image.width, end - first)
        with open_on_grid(info, image, "ground truth", "nearest", labels=True) as src:
            rgb = src.read([1, 2, 3], window=window)
            # pixels the ground truth does not reach, or that its alpha band or mask leaves empty: unlabelled
            empty = ~holds_data(src.read_masks(1, window=window)) if needs_warp(image, info, "ground truth") \
                else unlabelled_by_mask(src, window)
        return np.moveaxis(rgb, 0, -1), empty

    @cached_property
    def grey_image(self) -> bool:
        """Whether every pixel of this colour ground truth is grey: only then may grey levels no class has be class ids
        in three bands (not a grey stretch of a colour image). Read by rows, up to the first that holds a colour."""
        grid = self.image or raster_info(self.path, "ground truth")
        return all(all_grey(*self._colours(w.row_off, w.row_off + w.height)) for w in row_windows(grid.height, grid.width))


def eval_truth(cfg: Config, tile_id: str, like: RasterInfo) -> TruthSource | None:
    """Ground truth for scoring: the eroded GT (colour or class values) if the dataset has it, else
    the labels (LABEL_PATTERN: raster or polygons), on ``like``'s grid; of a tile also trained on,
    its held-out blocks only (see eoseg.holdout).

    None when the tile has neither. Class values and colours are checked here, over the whole raster
    (by windows), so that scoring, which reads it by rows, fails before labelling.
    """
    eroded = cfg.tile_path("GT_ERODED_PATTERN", tile_id)
    numeric = cfg.tile_path("LABEL_PATTERN", tile_id)
    split = tile_split(cfg, tile_id, like.height, like.width)
    held_out = "" if split is None else f", {split.describe()}"
    if eroded is not None and eroded.is_file():
        info = raster_info(eroded, "eroded ground truth")
        if info.count >= 3:
            needs_warp(like, info, "eroded ground truth")
            check_colour_alpha(info)
            truth = TruthSource(eroded, True, f"eroded ground truth ({eroded}){held_out}", like, split=split,
                                unknown_to_ignore=cfg.UNKNOWN_LABELS_TO_IGNORE, eroded=True)
            truth.check(cfg.palette)
            return truth
        labels = label_source(cfg, eroded, like, "eroded ground truth", colour_coded=True)
        description = f"eroded ground truth ({eroded}){held_out}"
    elif numeric is not None and numeric.is_file():
        if not is_vector(numeric):
            _check_converted(cfg, tile_id, numeric)
        labels = label_source(cfg, numeric, like)
        description = f"labels ({numeric}){held_out}"
    else:
        return None
    labels.check()
    return TruthSource(labels.path, False, description, like, labels, split, eroded=labels.path == eroded)


def eroded_fallback(cfg: Config, tile_ids: list[str]) -> str | None:
    """What to say of ``tile_ids`` that GT_ERODED_PATTERN, set, finds no file for but that have labels: they are
    scored against the full labels, another protocol than the eroded one (a typo, or a tile missing from the
    eroded set, would go unseen in the summed figures); None where there are none."""
    fallen = [tile_id for tile_id in tile_ids
              if (eroded := cfg.tile_path("GT_ERODED_PATTERN", tile_id)) is not None and not eroded.is_file()
              and (labels := cfg.tile_path("LABEL_PATTERN", tile_id)) is not None and labels.is_file()]
    if not fallen:
        return None
    every = " (every one of them)" if len(fallen) == len(tile_ids) else f" ({len(fallen)} of {len(tile_ids)})"
    return (f"GT_ERODED_PATTERN finds no eroded ground truth for tiles {', '.join(fallen[:5])}"
            f"{' ...' if len(fallen) > 5 else ''}{every}, e.g. nothing at {cfg.tile_path('GT_ERODED_PATTERN', fallen[0])}"
            f"{relative_to_here(cfg.tile_path('GT_ERODED_PATTERN', fallen[0]))}: they are scored against the full "
            "labels (LABEL_PATTERN), not the eroded ones; check the pattern, or set it to \"\" to score all on the labels")


def read_eval_labels(cfg: Config, tile_id: str, like: RasterInfo) -> tuple[np.ndarray, str] | None:
    """The whole ground truth for scoring (see :func:`eval_truth`) and its description, or None."""
    source = eval_truth(cfg, tile_id, like)
    if source is None:
        return None
    return source.read_rows(cfg.palette, 0, like.height), source.description

