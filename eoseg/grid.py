"""Rasters read on another raster's pixel grid: the same grid as is, another one warped.

A DSM, nDSM, extra source or label raster may come in another CRS, resolution or extent
than its image. :func:`open_on_grid` opens it so that reads by window of the image's grid
return its values on that grid (GDAL's warped VRT: windowed, memory stays bounded);
pixels of the image that it does not cover read as masked (no data). Only a raster that
does not overlap the image at all is refused.

A network labels best at the pixel size it was trained on: :func:`labelling_grid` gives the
grid (the image's extent at that pixel size) an image of another pixel size is labelled on.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import re
import sys
from typing import Iterator

import numpy as np
import rasterio
import shapely
from affine import Affine
from rasterio.enums import MaskFlags, Resampling
from rasterio.vrt import WarpedVRT
from rasterio.warp import transform
from rasterio.windows import Window
from tqdm import tqdm

from eoseg.errors import EosegError
from eoseg.io import RasterInfo, crs_command, holds_data, open_raster

# the resamplings a source may choose (rasterio's names); labels always take "nearest"
RESAMPLINGS = ("nearest", "bilinear", "cubic", "cubic_spline", "lanczos", "average", "mode")
CONTINUOUS_RESAMPLING = "bilinear"  # the default for continuous data (DSM, nDSM, extra sources)

_NOTED: set[tuple] = set()

# pixel sizes within this factor of each other count as one: a network labels such an image as it is
PIXEL_SIZE_TOLERANCE = 1.1
# ground pixel sizes carry the reprojection's rounding (~1e-9): a labelling grid grows no pixel for less than this
GRID_ROUNDING = 1e-6
# rasters whose corners lie within this many pixels of the image's are on its grid (transforms written as text)
SAME_GRID_PX = 1e-3
# a projected CRS whose unit is within this share of the ground length (UTM's scale factor: 0.9996 to 1.001; national
# grids alike) gives its pixel size as its transform states it, 0.09 m and not 0.090036; Web Mercator's do not
NOMINAL_SCALE = 0.01
# the WGS84 ellipsoid, whose radii of curvature give a degree's length in metres at a latitude
WGS84_SEMI_MAJOR_AXIS_M = 6_378_137.0
WGS84_ECCENTRICITY_SQUARED = 6.69437999014e-3


def note_once(key: tuple, text: str) -> None:
    """Say ``text`` once per process for ``key`` (a file, or a file and its image), on its own line above any progress bar."""
    if key in _NOTED:
        return
    _NOTED.add(key)
    tqdm.write(f"note: {text}", file=sys.stderr)


def pixel_sides(transform: Affine) -> tuple[float, float]:
    """(width, height) of a pixel of ``transform`` in its CRS units, its columns' and rows' steps: on a rotated or
    sheared grid ``a`` and ``e`` alone are the cosines' share (0 at 90 degrees)."""
    return math.hypot(transform.a, transform.d), math.hypot(transform.b, transform.e)


def is_engineering(crs) -> bool:
    """Whether ``crs`` is an engineering (local, LOCAL_CS) CRS: a site grid, placed nowhere on the Earth."""
    return crs is not None and not (crs.is_geographic or crs.is_projected)


def _engineering_frame(crs) -> tuple[float, tuple[str, ...]]:
    """An engineering CRS's unit (in metres) and axis directions: all that its coordinates mean (GDAL drops the
    datum's name from a GeoTIFF, a GeoPackage keeps it)."""
    return crs.units_factor[1], tuple(re.findall(r'AXIS\["[^"]*",(\w+)\]', crs.to_wkt()))


def same_crs(a, b) -> bool:
    """Whether the CRSs ``a`` and ``b`` (None: none) are one: equal, or both engineering with the same unit and axes
    (the datum's and axes' names aside)."""
    if a is None or b is None:
        return a is None and b is None
    return a == b or (is_engineering(a) and is_engineering(b) and _engineering_frame(a) == _engineering_frame(b))


def check_relatable(crs, where: str, other_crs, other_where: str) -> None:
    """Refuse to relate ``crs`` (of ``where``) and ``other_crs`` where one is engineering and they are not one CRS:
    no coordinate operation joins a site grid to another CRS (PROJ fails with a multi-line dump)."""
    if not same_crs(crs, other_crs) and (is_engineering(crs) or is_engineering(other_crs)):
        raise EosegError(f"{where} is in {crs} and {other_where} in {other_crs}: an engineering (local) CRS cannot be "
                         "related to another CRS; give both the same CRS (gdal_edit.py -a_srs, ogr2ogr -a_srs)")


def bounds(info: RasterInfo) -> tuple[float, float, float, float]:
    """(left, bottom, right, top) of ``info``'s grid in its CRS."""
    xs, ys = zip(*(info.transform * corner for corner in ((0, 0), (info.width, 0), (0, info.height), (info.width, info.height))))
    return min(xs), min(ys), max(xs), max(ys)


def metres_per_degree(latitude: float) -> tuple[float, float]:
    """(longitude, latitude) metres per degree at ``latitude`` on the WGS84 ellipsoid."""
    curvature = 1 - WGS84_ECCENTRICITY_SQUARED * math.sin(math.radians(latitude)) ** 2
    prime_vertical = WGS84_SEMI_MAJOR_AXIS_M / math.sqrt(curvature)
    meridian = WGS84_SEMI_MAJOR_AXIS_M * (1 - WGS84_ECCENTRICITY_SQUARED) / curvature ** 1.5
    return math.radians(prime_vertical * math.cos(math.radians(latitude))), math.radians(meridian)


def pixel_size_m(info: RasterInfo) -> tuple[float, float] | None:
    """(x, y) ground size of ``info``'s pixels in metres; None without a CRS placed on the Earth
    (no CRS, or an engineering one).

    Measured on the ground at the raster's centre, whatever the CRS: the centre pixel's corners
    are taken to longitude and latitude. A CRS unit is no ground length: a Web Mercator metre
    spans cos(latitude) ground metres (0.66 at 49 degrees north), a degree of longitude 111 km
    times cos(latitude). A UTM metre spans 1.0004 to 0.999 (one over its scale factor): within
    NOMINAL_SCALE, the size the transform states is kept.
    """
    if info.crs is None or info.transform.is_identity or not (info.crs.is_geographic or info.crs.is_projected):
        return None
    column, row = info.width / 2, info.height / 2
    xs, ys = zip(*(info.transform * corner for corner in ((column, row), (column + 1, row), (column, row + 1))))
    try:
        longitudes, latitudes = transform(info.crs, "EPSG:4326", xs, ys)
    except Exception as err:  # GDAL's errors (a point outside the projection's domain), which rasterio does not export
        raise _off_the_earth(info, xs[0], ys[0], str(err)) from None
    if not all(map(math.isfinite, longitudes + latitudes)) or abs(latitudes[0]) >= 90:
        raise _off_the_earth(info, xs[0], ys[0], "it has no longitude and latitude")
    metres_east, metres_north = metres_per_degree(latitudes[0])

    def ground_length(corner: int) -> float:
        east = (longitudes[corner] - longitudes[0] + 180) % 360 - 180  # across the antimeridian too
        return math.hypot(east * metres_east, (latitudes[corner] - latitudes[0]) * metres_north)

    ground = ground_length(1), ground_length(2)
    if info.crs.is_projected:  # a map grid's own metres where they are ground metres to within NOMINAL_SCALE
        unit = info.crs.linear_units_factor[1]
        nominal = tuple(side * unit for side in pixel_sides(info.transform))
        if all(abs(n / g - 1) <= NOMINAL_SCALE for n, g in zip(nominal, ground)):
            return nominal
    return ground


def _off_the_earth(info: RasterInfo, x: float, y: float, why: str) -> EosegError:
    return EosegError(f"{info.path}: the centre of its grid ({x:.6g}, {y:.6g} in {info.crs}) lies nowhere on the Earth "
                      f"({why}); check its CRS and transform")


def mean_pixel_size_m(info: RasterInfo) -> float | None:
    """The mean of ``info``'s pixel width and height in metres (see :func:`pixel_size_m`)."""
    size = pixel_size_m(info)
    return None if size is None else round((size[0] + size[1]) / 2, 9)


def pixel_size_range(infos: list[RasterInfo]) -> list[float] | None:
    """[smallest, largest] mean pixel size in metres of rasters; None if one has none."""
    sizes = [mean_pixel_size_m(info) for info in infos]
    if not sizes or None in sizes:
        return None
    return [min(sizes), max(sizes)]


def coarser_than_training(image: RasterInfo, trained: list[float] | None) -> bool:
    """Whether ``image``'s pixels are larger than the largest the network was ``trained`` on, beyond
    PIXEL_SIZE_TOLERANCE."""
    size = mean_pixel_size_m(image)
    return size is not None and trained is not None and size > trained[1] * PIXEL_SIZE_TOLERANCE


MIN_GRID_CELLS = 2  # an image less than this many labelling-grid cells across is labelled on its own grid


def labelling_grid(image: RasterInfo, trained: list[float] | None, setting: str | float | None) -> RasterInfo | None:
    """The grid to label ``image`` on where it is not its own: its extent at ``setting`` m, or, where
    its pixels are finer than those the network was ``trained`` on ([smallest, largest] m), at
    the smallest of those; None: its own grid.

    ``setting``: INFER_PIXEL_SIZE (None: from ``trained``; metres; or "image"). An image less than MIN_GRID_CELLS
    cells of that grid across (a strip of 1 px) is labelled on its own grid. Pixel sizes within
    PIXEL_SIZE_TOLERANCE of the target count as equal. An image coarser than the training
    imagery is labelled as it is: enlarging it adds no detail, and on real data it helped on
    one set and hurt on two (bench/RESULTS.md). The grid scales the image's
    transform, so that its pixel (i, j) covers the image's pixels (i * fy .. (i + 1) * fy, j * fx ..).
    """
    if setting == "image":
        return None
    size = pixel_size_m(image)
    if size is None:
        if setting is not None:
            raise EosegError(f"{image.path}: INFER_PIXEL_SIZE = {setting} m needs a georeferenced image (a CRS and a "
                             "transform), and this one has none; set INFER_PIXEL_SIZE = \"image\" to label it as it is")
        return None
    mean = mean_pixel_size_m(image)
    if setting is None:
        if trained is None or mean >= trained[0] / PIXEL_SIZE_TOLERANCE:
            return None
        target = trained[0]
    else:
        target = float(setting)
        if target / PIXEL_SIZE_TOLERANCE <= mean <= target * PIXEL_SIZE_TOLERANCE:
            return None
    fx, fy = target / size[0], target / size[1]
    if image.width / fx < MIN_GRID_CELLS or image.height / fy < MIN_GRID_CELLS:
        return None  # a cell wider than the image's side has its centre beyond it, where it reads as nodata
    width, height = (max(1, math.ceil(side / factor - GRID_ROUNDING)) for side, factor in ((image.width, fx), (image.height, fy)))
    return dataclasses.replace(image, width=width, height=height,
                               transform=image.transform * Affine.scale(fx, fy))


def same_grid(image: RasterInfo, other: RasterInfo) -> bool:
    """Whether ``other`` has ``image``'s size and (where both have one) georeference: its corners within
    SAME_GRID_PX of the image's pixels (in map units no tolerance fits both metres and degrees)."""
    if (other.width, other.height) != (image.width, image.height):
        return False
    if image.georeferenced and other.georeferenced:
        if not same_crs(image.crs, other.crs):
            return False
        in_image_pixels = ~image.transform * other.transform
        corners = [(0, 0), (other.width, 0), (0, other.height), (other.width, other.height)]
        return all(math.dist(in_image_pixels * corner, corner) <= SAME_GRID_PX for corner in corners)
    return True


def _crs_remedy(image: RasterInfo, other: RasterInfo) -> str:
    """Where both have a geotransform, one alone a CRS, and their coordinates overlap as they are (so the CRS was
    lost, not another frame given): the command that gives it the other's; else ""."""
    if not (image.georeferenced and other.georeferenced) or (image.crs is None) == (other.crs is None):
        return ""
    (left, bottom, right, top), (other_left, other_bottom, other_right, other_top) = bounds(image), bounds(other)
    if not (left < other_right and other_left < right and bottom < other_top and other_bottom < top):
        return ""
    lacking, having = (image, other) if image.crs is None else (other, image)
    code = having.crs.to_epsg()
    crs = f"EPSG:{code}" if code else f"the CRS of {having.path.name} (gdalsrsinfo -o wkt {having.path.name})"
    return (f"{lacking.path.name} has a transform but no CRS: if it is in {having.path.name}'s CRS, give it that "
            f"one: {crs_command(lacking.path.name, crs)}")


def needs_warp(image: RasterInfo, other: RasterInfo, what: str) -> bool:
    """Whether ``other`` (``what``, named in errors) must be warped onto ``image``'s grid.

    Refuses what cannot be placed on it: a raster placed by ground control points or RPCs against one
    placed by a geotransform (paired pixel for pixel, its GCPs would be ignored), a raster of another
    size where either lacks a georeference, one in another CRS where either lacks a CRS or one is an
    engineering CRS, and one that does not overlap.
    """
    for gcps, placed in ((other, image), (image, other)):
        if gcps.ground_control and not gcps.georeferenced and placed.georeferenced:
            raise EosegError(
                f"{other.path} ({what}) and its image {image.path}: {gcps.path} is placed by ground control points or "
                f"RPCs and {placed.path} by a geotransform, which do not pair pixel for pixel; {gcps.unplaced}")
    if same_grid(image, other):
        return False
    if not (image.georeferenced and other.georeferenced) or (image.crs is None) != (other.crs is None):
        remedy = other.unplaced or image.unplaced or _crs_remedy(image, other) or (
            "give both a georeference or make them cover the same grid (the same size, and no georeference on one of them)")
        raise EosegError(
            f"{other.path} ({what}) is {other.width} x {other.height} px with {_georeference(other)}, the image "
            f"{image.path} {image.width} x {image.height} px with {_georeference(image)}: without a CRS and a "
            f"transform on both it cannot be placed on the image's grid; {remedy}")
    if not same_crs(other.crs, image.crs):
        check_relatable(other.crs, f"{other.path} ({what})", image.crs, f"its image {image.path}")
    placed = footprint(other, image.crs)
    left, bottom, right, top = placed.bounds
    image_left, image_bottom, image_right, image_top = bounds(image)
    if not placed.intersection(footprint(image, image.crs)).area > 0:  # not their bounding boxes: rotated grids
        raise EosegError(
            f"{other.path} ({what}) does not overlap the image {image.path}: it covers "
            f"{describe_box(left, bottom, right, top)}, the image {describe_box(image_left, image_bottom, image_right, image_top)} "
            f"(in {image.crs}); check the file and its CRS")
    return True


FOOTPRINT_EDGE_POINTS = 21  # points along each edge of a footprint, which bends when reprojected


def footprint(info: RasterInfo, crs) -> shapely.Polygon:
    """The area ``info``'s pixels cover, as a polygon in ``crs`` (its edges sampled, so that a reprojection bends them
    as it bends the grid)."""
    steps = np.linspace(0, 1, FOOTPRINT_EDGE_POINTS)[:-1]
    cols = np.concatenate([steps, np.ones_like(steps), 1 - steps, np.zeros_like(steps)]) * info.width
    rows = np.concatenate([np.zeros_like(steps), steps, np.ones_like(steps), 1 - steps]) * info.height
    xs, ys = info.transform * (cols, rows)
    if not same_crs(info.crs, crs):
        xs, ys = transform(info.crs, crs, xs, ys)
    return shapely.make_valid(shapely.Polygon(np.column_stack([xs, ys])))


def _georeference(info: RasterInfo) -> str:
    if info.ground_control and not info.georeferenced:
        return "ground control points or RPCs but no geotransform"
    if info.crs is not None:
        return f"CRS {info.crs}" + ("" if not info.transform.is_identity else " but no transform")
    return "a transform but no CRS" if not info.transform.is_identity else "no georeference"


def describe_box(left: float, bottom: float, right: float, top: float) -> str:
    """'x LEFT..RIGHT, y BOTTOM..TOP', to the centimetre in metres (a UTM northing to 6 digits is 10 m off)."""
    return f"x {left:.10g}..{right:.10g}, y {bottom:.10g}..{top:.10g}"


def _units(crs) -> str:
    """The name of ``crs``'s units ("metre", "degree"), or "units" where it has none known."""
    try:
        return crs.units_factor[0]
    except Exception:  # rasterio raises CRSError for a CRS without units, other errors for odd ones: the name only helps
        return "units"


def note_warp(image: RasterInfo, other: RasterInfo, what: str, resampling: str) -> None:
    """Say once per process and file that ``other`` is warped onto ``image``'s grid (once, not once per image, for
    one file serving many: a label raster of all tiles)."""
    width, height = pixel_sides(other.transform)
    note_once(("warped", str(other.path)),
              f"{other.path} ({what}; {other.crs}, {width:.6g} x {height:.6g} {_units(other.crs)} per px, {other.width} x "
              f"{other.height} px) "
              f"is on another grid than its image {image.path}; warped onto the grid of each image it is read for "
              f"({resampling})")


def check_resampling(name: str, where: str) -> str:
    if name not in RESAMPLINGS:
        raise EosegError(f"{where}: unknown resampling {name!r}; choose one of {', '.join(RESAMPLINGS)}")
    return name


class WarpedReader:
    """A raster warped onto another grid, read like the raster itself: ``read`` and ``read_masks``
    by window of the target grid; masks are 0 where it has no data or does not reach (its alpha)."""

    def __init__(self, vrt: WarpedVRT, count: int):
        self._vrt = vrt
        self.count = count  # the raster's own bands, the alpha band left out
        self.nodatavals = (None,) * count  # no per-band nodata: the warp's alpha is the one mask
        self.width, self.height = vrt.width, vrt.height

    def read(self, indexes=None, window: Window | None = None) -> np.ndarray:
        return self._vrt.read(list(range(1, self.count + 1)) if indexes is None else indexes, window=window)

    def read_masks(self, indexes=None, window: Window | None = None) -> np.ndarray:
        alpha = np.where(holds_data(self._vrt.read(self._vrt.count, window=window)), np.uint8(255), np.uint8(0))
        if isinstance(indexes, int):
            return alpha
        return np.repeat(alpha[None], self.count if indexes is None else len(indexes), axis=0)


@contextlib.contextmanager
def open_on_grid(other: RasterInfo, image: RasterInfo, what: str, resampling: str, labels: bool = False,
                 note: bool = True) -> Iterator:
    """``other`` opened for reads on ``image``'s grid: as is on the same grid, else warped with
    ``resampling`` (a :class:`WarpedReader`). Masks are 0 where it has no data or does not reach.

    ``labels``: a label raster, whose every value means something (a nodata tag of 0 on a
    0/255 mask is common and wrong): its nodata tag is ignored, masks say where it reaches.
    ``note``: say once that it is warped (see :func:`note_warp`).
    """
    warp = needs_warp(image, other, what)
    with open_raster(other.path, what) as src:
        if not warp:
            yield src
            return
        if note:
            note_warp(image, other, what, resampling)
        crs = image.crs if image.crs is not None else other.crs
        # one CRS written two ways (engineering CRSs that differ in names only): no transformation between them exists
        source_crs = crs if same_crs(other.crs, image.crs) else other.crs
        ignore_nodata = dict(src_nodata=None, nodata=None) if labels else {}
        # an alpha band of its own (an RGBA orthophoto) is warped as the VRT's alpha, its last band; GDAL adds none then
        own_alpha = any(MaskFlags.alpha in flags for flags in src.mask_flag_enums)
        with WarpedVRT(src, src_crs=source_crs, crs=crs, transform=image.transform, width=image.width, height=image.height,
                       resampling=Resampling[resampling], add_alpha=not own_alpha, **ignore_nodata) as vrt:
            try:
                yield WarpedReader(vrt, src.count)
            except rasterio.errors.RasterioIOError as err:
                raise EosegError(f"{other.path}: cannot read this {what} warped onto {image.path}'s grid ({err})") from None
