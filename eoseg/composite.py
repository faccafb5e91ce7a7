"""The method's composite image: DSM, nDSM and NDVI of a tile as one 8-bit, 3-band raster.

Audebert et al. feed their second stream a "composite" image per Vaihingen tile whose
three 8-bit bands are the DSM, the nDSM and the NDVI. :func:`write_composite` makes it:

- band 1, DSM: stretched from the tile's lowest (0) to its highest (255) valid height,
  per tile, as absolute heights differ from tile to tile;
- band 2, nDSM: 0..COMPOSITE_NDSM_MAX metres above the ground to 0..255 (higher is 255);
- band 3, NDVI of the image's RED_BAND and NIR_BAND (see :func:`eoseg.tiles.ndvi`):
  -1..1 to 0..255.

Pixels without data (masked, NaN or infinite) in the DSM or nDSM are 0 in that band and masked in the output (its
internal mask), so that stacking it leaves them unlabelled as the DSM or nDSM itself would. The output
keeps the image's CRS and transform, is read and written by blocks of rows (memory
bounded by INFER_BLOCK_ROWS times the width) and published atomically.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from rasterio.windows import Window

from eoseg.config import Config
from eoseg.errors import EosegError
from eoseg.io import RasterInfo, RasterWriter, apply_scaling, check_outputs, holds_data, open_raster, raster_info
from eoseg.grid import needs_warp, note_once, open_on_grid
from eoseg.labels import row_windows
from eoseg.normalization import FILL_VALUE_BELOW
from eoseg.tiles import existing_path, image_info, ndvi, tile_inputs

COMPOSITE_RECORD = "config.make_composite.json"  # the effective config of make_composite.py, beside the composites


# DSM values no ground reaches, in metres or feet (the Dead Sea's shore -430 m, Everest 29 032 ft), but the usual fill
# values do (-9999, -32768, 32767, float32's extremes)
FILL_HEIGHT_BELOW, FILL_HEIGHT_ABOVE = FILL_VALUE_BELOW, 32767.0
BAND_SOURCES = ("DSM of ", "nDSM of ", "NDVI of ")  # how a composite's band descriptions begin, band by band
NDSM_CLIPPED_NOTE = 0.2  # of an nDSM's heights over COMPOSITE_NDSM_MAX: said (buildings and trees over it are few)


def image_band(cfg: Config, key: str) -> int:
    """The 1-based band of the image that config name ``key`` (RED_BAND, NIR_BAND) names in BAND_NAMES."""
    name = getattr(cfg, key)
    if name not in cfg.BAND_NAMES:
        raise EosegError(f"{key} {name!r} is not among BAND_NAMES {list(cfg.BAND_NAMES)}; set {key} to the name "
                         "of that band of the image (the NDVI needs a red and a near-infrared band)")
    return int(cfg.BANDS[list(cfg.BAND_NAMES).index(name)])


def _to_uint8(scaled: np.ndarray) -> np.ndarray:
    """0..1 (clipped; NaN -> 0) to 0..255."""
    scaled = np.nan_to_num(np.asarray(scaled, dtype=np.float32), nan=0.0)
    return np.round(np.clip(scaled, 0, 1) * 255).astype(np.uint8)


def scale_dsm(dsm: np.ndarray, low: float, high: float) -> np.ndarray:
    """DSM heights: ``low`` -> 0, ``high`` -> 255 (all 0 when the tile is flat)."""
    if not high > low:
        return np.zeros(np.shape(dsm), dtype=np.uint8)
    return _to_uint8((np.asarray(dsm, dtype=np.float32) - low) / (high - low))


def scale_ndsm(ndsm: np.ndarray, ndsm_max: float) -> np.ndarray:
    """Heights above the ground: 0..``ndsm_max`` metres -> 0..255, clipped."""
    return _to_uint8(np.asarray(ndsm, dtype=np.float32) / ndsm_max)


def scale_ndvi(index: np.ndarray) -> np.ndarray:
    """NDVI: -1..1 -> 0..255."""
    return _to_uint8((np.asarray(index, dtype=np.float32) + 1) / 2)


def _valid_heights(src, window: Window, info: RasterInfo) -> np.ndarray:
    """Band 1 of ``src`` (the raster ``info`` describes) in ``window`` as float32 heights (its GDAL scale and
    offset applied: heights stored in cm as integers are metres here), NaN where it holds no data."""
    heights = apply_scaling(src.read([1], window=window), info.stored_scaling([1]))[0].astype(np.float32)
    heights[~holds_data(src.read_masks(1, window=window)) | ~np.isfinite(heights)] = np.nan  # nor is infinity
    return heights


def is_composite(path: str | Path) -> bool:
    """Whether the raster at ``path`` is a composite make_composite.py wrote: its bands described so, or, in a format
    that keeps no descriptions (PNG), three bytes and an alpha band in a folder where make_composite.py saved its
    config."""
    info = raster_info(path, "composite")
    if len(info.descriptions) == len(BAND_SOURCES) and all(
            (text or "").startswith(start) for text, start in zip(info.descriptions, BAND_SOURCES)):
        return True
    return (not any(info.descriptions) and info.dtype == "uint8" and info.count in (3, 4)
            and (Path(path).parent / COMPOSITE_RECORD).is_file())


def write_composite(cfg: Config, tile_id: str, out: str | Path | None = None) -> Path:
    """Write tile ``tile_id``'s composite at ``out`` (default: COMPOSITE_PATTERN); return its path."""
    if out is None:
        out = cfg.tile_path("COMPOSITE_PATTERN", tile_id)
        if out is None:
            raise EosegError("COMPOSITE_PATTERN is empty: set where the composites go")
    out = Path(out)
    red_band, nir_band = image_band(cfg, "RED_BAND"), image_band(cfg, "NIR_BAND")
    image = image_info(cfg, tile_id)
    dsm_info = raster_info(existing_path(cfg, "DSM_PATTERN", tile_id, "DSM"), "DSM")
    ndsm_info = raster_info(existing_path(cfg, "NDSM_PATTERN", tile_id, "nDSM",
                                          hint="make one (DSM minus a terrain model), or check NDSM_PATTERN"), "nDSM")
    needs_warp(image, dsm_info, "DSM")  # refused before anything is written if it cannot be placed on the image
    needs_warp(image, ndsm_info, "nDSM")
    # its tile's inputs; make_composite.py checks every tile's, and the composites that exist, first
    check_outputs([out], tile_inputs(cfg, [tile_id], made_here="COMPOSITE_PATTERN"), True, "COMPOSITE_PATTERN")
    block_rows = max(1, int(cfg.INFER_BLOCK_ROWS))
    resampling = cfg.GRID_RESAMPLING  # for a DSM or nDSM on another grid than the image's
    ndsm_max = float(cfg.COMPOSITE_NDSM_MAX)
    # first pass: the DSM's range, which its band is stretched over, and the nDSM's, checked as the DSM's
    with open_on_grid(dsm_info, image, "DSM", resampling) as dsm_src, \
            open_on_grid(ndsm_info, image, "nDSM", resampling) as ndsm_src:
        ranges = {"DSM": [np.inf, -np.inf], "nDSM": [np.inf, -np.inf]}
        above, counted = 0, 0  # nDSM heights over COMPOSITE_NDSM_MAX, drawn as 255
        for rows in row_windows(image.height, image.width, block_rows):
            for name, heights in (("DSM", _valid_heights(dsm_src, rows, dsm_info)),
                                  ("nDSM", _valid_heights(ndsm_src, rows, ndsm_info))):
                if not np.isnan(heights).all():
                    span = ranges[name]
                    span[:] = min(span[0], float(np.nanmin(heights))), max(span[1], float(np.nanmax(heights)))
                if name == "nDSM":
                    above, counted = above + int((heights > ndsm_max).sum()), counted + int((~np.isnan(heights)).sum())
    for (name, (lowest, highest)), info in zip(ranges.items(), (dsm_info, ndsm_info)):
        for height in (lowest, highest) if lowest <= highest else ():  # a DSM without a valid pixel is flat: all 0
            # stretched over, it would squeeze the real heights; an nDSM's -9999 would be clipped to ground (review)
            if not FILL_HEIGHT_BELOW < height < FILL_HEIGHT_ABOVE:
                raise EosegError(f"{info.path}: the {name} holds {height:g}, no height on Earth: a nodata value without "
                                 f"a tag? tag it (gdal_edit.py -a_nodata {height:g} FILE), or mask those pixels")
    low, high = ranges["DSM"]
    if counted and above > NDSM_CLIPPED_NOTE * counted:  # heights in cm: most of the band at 255 (review: 76%)
        note_once(("nDSM clipped", str(ndsm_info.path)),
                  f"{ndsm_info.path}: {above / counted:.0%} of its heights lie over COMPOSITE_NDSM_MAX ({ndsm_max:g} m) "
                  "and are all drawn as 255: heights in another unit than metres (cm, dm)? or raise COMPOSITE_NDSM_MAX")
    # each band named after its source and scaling, as GIS software lists them
    band_names = [f"{BAND_SOURCES[0]}{dsm_info.path.name}, {low:.2f}..{high:.2f} to 0..255",
                  f"{BAND_SOURCES[1]}{ndsm_info.path.name}, 0..{ndsm_max:g} m to 0..255",
                  f"{BAND_SOURCES[2]}{image.path.name} bands {red_band} (red) and {nir_band} (NIR), -1..1 to 0..255"]
    with open_raster(image.path, "image") as image_src, open_on_grid(dsm_info, image, "DSM", resampling) as dsm_src, \
            open_on_grid(ndsm_info, image, "nDSM", resampling) as ndsm_src, \
            RasterWriter(out, image, 3, "uint8", band_names=band_names, masked=True) as writer:
        for rows in row_windows(image.height, image.width, block_rows):
            red, nir = apply_scaling(image_src.read([red_band, nir_band], window=rows),
                                     image.stored_scaling([red_band, nir_band]))
            dsm, ndsm = _valid_heights(dsm_src, rows, dsm_info), _valid_heights(ndsm_src, rows, ndsm_info)
            writer.write(np.stack([
                scale_dsm(dsm, low, high),
                scale_ndsm(ndsm, ndsm_max),
                scale_ndvi(ndvi(red, nir)),
            ]), rows.row_off, valid=~(np.isnan(dsm) | np.isnan(ndsm)))
    return out
