"""Outputs for GIS software: Cloud-Optimized GeoTIFFs and class polygons.

- :func:`to_cog` turns a finished GeoTIFF into a Cloud-Optimized GeoTIFF (tiled, with
  overviews, readable over HTTP range requests), resampling overviews with the nearest
  neighbour so that label and colour maps keep only their class values and colours.
- :func:`polygonize_labels` turns a label map into one polygon per connected region of a
  class, with ``class_id`` and ``class_name`` attributes and the raster's CRS, written as
  GeoPackage or GeoJSON for QGIS and the like.
"""

from __future__ import annotations

import itertools
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import rasterio
import rasterio.features
import rasterio.shutil
import shapely
import shapely.affinity
from pyogrio.raw import write as write_vector
from rasterio.crs import CRS
from rasterio.errors import RasterioError
from rasterio.transform import Affine
from rasterio.windows import Window
from shapely.geometry import Polygon, shape

from eoseg.errors import EosegError
from eoseg.io import GDAL_CACHE_MB, atomic_path, open_raster, unlabelled_by_mask
from eoseg.labels import LabelValues

SHAPES_DTYPES = ("uint8", "uint16", "int16", "int32")  # integer types rasterio.features.shapes accepts
VECTOR_DRIVERS = {".gpkg": "GPKG", ".geojson": "GeoJSON", ".json": "GeoJSON"}
BRIEF_CRS_LENGTH = 30  # characters of a CRS's name in a table (see brief_crs)


# ---------------------------------------------------------------- Cloud-Optimized GeoTIFF
def to_cog(src: str | Path, dst: str | Path, blocksize: int = 512) -> Path:
    """Copy the GeoTIFF ``src`` to ``dst`` as a Cloud-Optimized GeoTIFF, atomically.

    Overviews are built down to one block, resampled with the nearest neighbour (label
    and colour maps must not blend classes); compression is deflate. The colour table,
    CRS and transform are kept.
    """
    src, dst = Path(src), Path(dst)
    if dst.suffix.lower() not in (".tif", ".tiff"):
        raise EosegError(f"{dst}: a Cloud-Optimized GeoTIFF must end in .tif or .tiff")
    with open_raster(src, "GeoTIFF"):
        pass  # a clear error for a missing or unreadable input
    with atomic_path(dst) as tmp, rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB):  # else 5% of RAM: 1.6 GB for a 15000 px map
        try:
            rasterio.shutil.copy(src, tmp, driver="COG", COMPRESS="DEFLATE", BLOCKSIZE=blocksize,
                                 RESAMPLING="NEAREST", OVERVIEW_RESAMPLING="NEAREST", OVERVIEWS="IGNORE_EXISTING")
        except RasterioError as err:
            raise EosegError(f"{src}: cannot write it as a Cloud-Optimized GeoTIFF ({err})") from None
        for extra in tmp.parent.glob(tmp.name + ".aux.xml"):
            extra.unlink()
    return dst


# ---------------------------------------------------------------- polygons
@dataclass(frozen=True)
class PolygonSummary:
    """What :func:`polygonize_labels` wrote."""

    path: Path
    features: int
    dropped: int  # regions smaller than the minimum area
    crs: str | None  # as written: an authority code equal to the raster's CRS, else its WKT


def check_polygon_units(crs: CRS | None, simplify: float, min_area: float, where: str) -> None:
    """Refuse a simplification tolerance or minimum area for the polygons of ``where`` when its ``crs``
    is in degrees: both are in CRS units, and a minimum area of 1 would be a square degree, dropping every polygon."""
    if crs is not None and crs.is_geographic and (simplify or min_area):
        raise EosegError(f"{where}: its CRS {crs} is in degrees, and POLYGON_SIMPLIFY ({simplify:g}) and POLYGON_MIN_AREA "
                         f"({min_area:g}) (polygonize.py --simplify, --min-area) are in CRS units: degrees and square "
                         "degrees (one is ~10,000 km2); set them to 0, or reproject the image to a CRS in metres "
                         "(its UTM zone, say)")


def equal_authority_code(crs: CRS) -> str | None:
    """``crs``'s authority code ("EPSG:32632") where that code's CRS equals it, else None. rasterio's ``to_string``
    gives any code that matches to 70% (a UTM zone for UTM with a datum shift, TOWGS84, ~100 m off)."""
    authority = crs.to_authority()
    if authority is not None and CRS.from_user_input(":".join(authority)) == crs:
        return ":".join(authority)
    return None


def vector_crs(crs: CRS) -> str:
    """``crs`` as a vector file is given it: its authority code where that code's CRS equals it, else its WKT."""
    return equal_authority_code(crs) or crs.to_wkt()


def brief_crs(crs: CRS) -> str:
    """``crs`` in a few words for a table, where its WKT runs to hundreds of characters: its authority code where that
    code's CRS equals it, else its name, with its projection where the name is "unknown" (as GDAL names the CRS of a
    PROJ string), cut to BRIEF_CRS_LENGTH characters."""
    code = equal_authority_code(crs)
    if code is not None:
        return code
    wkt = crs.to_wkt()
    named = re.match(r'\w+\["((?:[^"]|"")*)"', wkt)  # PROJCS["name", GEOGCS["name", ...; WKT doubles a quote in a name
    name = named.group(1).replace('""', '"') if named else wkt
    projection = crs.to_dict().get("proj")
    if name == "unknown" and projection:
        name = f"unknown ({projection})"
    return name if len(name) <= BRIEF_CRS_LENGTH else name[:BRIEF_CRS_LENGTH - 3] + "..."


def check_polygon_crs(crs: CRS | None, suffix: str, where: str) -> None:
    """Refuse GeoJSON polygons (``suffix`` .geojson, .json) of ``where`` in a CRS that no authority code equals:
    GDAL's GeoJSON writer records a CRS only as a code and drops WKT without a word, so readers would take the
    coordinates for WGS84 degrees."""
    if crs is not None and VECTOR_DRIVERS.get(suffix.lower()) == "GeoJSON" and equal_authority_code(crs) is None:
        raise EosegError(f"{where}: its CRS {crs} has no authority code (EPSG:...) equal to it, and GeoJSON records a CRS "
                         "only as such a code (readers would place the polygons in WGS84 degrees); write a GeoPackage "
                         "(.gpkg) instead, or reproject the image to a CRS with an EPSG code")


def check_polygon_georeference(crs: CRS | None, transform, suffix: str, simplify: float, min_area: float,
                               pixel_coordinates: bool, where: str) -> None:
    """Refuse the polygons of the label map ``where`` that its CRS (and ``transform``) cannot place as asked: see
    :func:`check_polygon_units` and :func:`check_polygon_crs`, and no CRS at all unless ``pixel_coordinates``. Metadata
    only, so that a caller can refuse before it reads any pixel."""
    check_polygon_units(crs, simplify, min_area, where)
    check_polygon_crs(crs, suffix, where)
    if crs is None and not pixel_coordinates:
        placed = ("pixel coordinates (column, row from the top-left corner)" if transform.is_identity
                  else "the coordinates of its transform, in no known CRS")
        raise EosegError(f"{where} is not georeferenced (no CRS): its polygons would be in {placed}; "
                         "label a georeferenced image, or pass --pixel-coordinates to write them anyway")


def _drop_small_holes(polygon: Polygon, min_area: float, voids: shapely.STRtree | None = None) -> Polygon:
    """``polygon`` without its holes under ``min_area``, but those holding unlabelled pixels (one of ``voids``): a
    nodata gap is no island of another class, to be given the class around it (review)."""
    def unlabelled(ring) -> bool:
        hole = Polygon(ring)
        return voids is not None and any(hole.intersection(voids.geometries[i]).area > 0
                                         for i in voids.query(hole, predicate="intersects"))

    holes = [ring for ring in polygon.interiors if Polygon(ring).area >= min_area or unlabelled(ring)]
    return polygon if len(holes) == len(polygon.interiors) else Polygon(polygon.exterior, holes)


def _check_class_ids(labels: np.ndarray, valid: np.ndarray, class_names: Sequence[str]) -> None:
    present = np.unique(labels[valid])
    if present.size and (present[0] < 0 or present[-1] >= len(class_names)):
        bad = present[(present < 0) | (present >= len(class_names))]
        raise EosegError(f"the label map holds class ids {bad.tolist()[:5]} but there are {len(class_names)} classes "
                         f"(0..{len(class_names) - 1}); check CLASS_NAMES and IGNORE_LABEL, or, if it holds raw codes, map "
                         "them to classes with LABEL_VALUES")


UNLABELLED = -1  # the class block_polygons gives the regions of unlabelled pixels, where asked for them


def block_polygons(src: rasterio.DatasetReader, class_names: Sequence[str], ignore: Sequence[int],
                   block_rows: int, values: LabelValues | None = None,
                   unlabelled: bool = False) -> Iterator[tuple[list[Polygon], list[int]]]:
    """Polygons (in pixel coordinates) of the connected regions of each class of ``src``'s band 1 (its raw values
    mapped to class ids through ``values`` where given, IGNORE_LABEL then left out too), with their classes (and, with
    ``unlabelled``, those of the pixels left out, as class UNLABELLED), read
    ``block_rows`` rows at a time: those finished in each block as it is read, then those that cross seams.
    Memory follows the block and the regions cut by seams, not the raster.

    A region cut by the seam between two blocks comes out of each block as a part touching the
    seam; the parts of a class touching seams are merged (their shared edges dissolve), which
    gives the region a whole-raster pass would give.
    """
    open_parts: dict[int, list[Polygon]] = {}
    for top in range(0, src.height, block_rows):
        rows = min(block_rows, src.height - top)
        labels = src.read(1, window=Window(0, top, src.width, rows))
        valid = ~np.isin(labels, list(ignore))
        if values is not None:
            labels = values.apply(labels)
            valid &= labels != values.ignore_label
            empty = unlabelled_by_mask(src, Window(0, top, src.width, rows))  # as every step reads ground truth
            if empty is not None:
                valid &= ~empty
        _check_class_ids(labels, valid, class_names)
        below = top + rows
        finished: tuple[list[Polygon], list[int]] = ([], [])
        regions = rasterio.features.shapes(labels, mask=valid, transform=Affine.translation(0, top), connectivity=4)
        if unlabelled and not valid.all():
            void = rasterio.features.shapes(np.full(labels.shape, UNLABELLED, np.int16), mask=~valid,
                                            transform=Affine.translation(0, top), connectivity=4)
            regions = itertools.chain(regions, void)
        for geometry, value in regions:
            polygon = shape(geometry)
            _, min_row, _, max_row = polygon.bounds
            if (top > 0 and min_row == top) or (below < src.height and max_row == below):
                open_parts.setdefault(int(value), []).append(polygon)
            else:
                finished[0].append(polygon)
                finished[1].append(int(value))
        yield finished
    merged: tuple[list[Polygon], list[int]] = ([], [])
    for value, parts in open_parts.items():
        union = shapely.union_all(parts)
        for polygon in getattr(union, "geoms", [union]):
            merged[0].append(polygon)
            merged[1].append(value)
    yield merged


def finish_polygons(polygons: list[Polygon], transform, simplify: float = 0.0, min_area: float = 0.0,
                    voids: Sequence[Polygon] = ()) -> tuple[list[Polygon], list[bool]]:
    """Pixel-space polygons to the CRS of ``transform``; regions under ``min_area`` (CRS units squared)
    dropped and holes under it filled, so a small island disappears into the region around it (not a hole that
    holds unlabelled pixels: one of ``voids``, the pixel-space polygons of those, where given);
    then ``simplify`` (CRS units) simplifies all polygons together, so neighbours keep a shared
    boundary (no gaps or overlaps). Returns the polygons kept, outer rings counter-clockwise and holes clockwise
    (RFC 7946's right-hand rule), and, per input, whether it was kept.
    """
    a, b, c, d, e, f = transform[:6]
    placed = [shapely.affinity.affine_transform(polygon, (a, b, d, e, c, f)) for polygon in polygons]
    kept = [min_area <= 0 or polygon.area >= min_area for polygon in placed]
    tree = shapely.STRtree([shapely.affinity.affine_transform(void, (a, b, d, e, c, f)) for void in voids]) if voids else None
    placed = [_drop_small_holes(polygon, min_area, tree) if min_area > 0 else polygon
              for polygon, keep in zip(placed, kept) if keep]
    if simplify > 0 and placed:
        placed = list(shapely.coverage_simplify(np.array(placed, dtype=object), simplify))
    # a transform that flips handedness (south-up rows, west-pointing columns) mirrors the rings' orientation too
    return list(shapely.orient_polygons(np.array(placed, dtype=object), exterior_cw=False)), kept


def polygonize_labels(label_path: str | Path, out: str | Path, class_names: Sequence[str], ignore: Sequence[int] = (),
                      simplify: float = 0.0, min_area: float = 0.0, pixel_coordinates: bool = False,
                      block_rows: int = 1024, values: LabelValues | None = None) -> PolygonSummary:
    """Write the class polygons of the label raster ``label_path`` to ``out`` (.gpkg or .geojson), atomically:
    of its values as class ids, or, with ``values``, of the class ids LABEL_VALUES maps its raw values to.

    The raster is read ``block_rows`` rows at a time (see :func:`block_polygons`).

    Features carry ``class_id`` and ``class_name``; the layer has the raster's exact CRS (see :func:`vector_crs`;
    GeoJSON of a CRS without an equal code is refused, see :func:`check_polygon_crs`). The
    raster's nodata value, if any, is ignored like ``ignore``, unless ``values`` read it (as the other steps read ground
    truth: by LABEL_VALUES and the raster's mask, not its nodata tag). A raster without a CRS is
    refused (its polygons would lie nowhere on a map) unless ``pixel_coordinates``: then
    they are written in its own coordinates, pixel columns and rows when it has no transform.
    """
    out = Path(out)
    driver = VECTOR_DRIVERS.get(out.suffix.lower())
    if driver is None:
        raise EosegError(f"{out}: unsupported vector format; use {', '.join(VECTOR_DRIVERS)}")
    if simplify < 0 or min_area < 0:
        raise EosegError("simplification tolerance and minimum area must not be negative")
    with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB), open_raster(label_path, "label map") as src:
        if src.count != 1:
            raise EosegError(f"{label_path}: a label map has one band, this one has {src.count}; is it a colour map?")
        if src.dtypes[0] not in SHAPES_DTYPES:
            raise EosegError(f"{label_path}: a label map holds integer class ids ({', '.join(SHAPES_DTYPES)}), "
                             f"this one is {src.dtypes[0]}")
        transform, crs = src.transform, src.crs
        check_polygon_georeference(crs, transform, out.suffix, simplify, min_area, pixel_coordinates, str(label_path))
        # read through LABEL_VALUES, its values mean what they map to, its nodata tag too (a 0/255 mask tagged nodata 0)
        ignored = [*ignore, *([int(src.nodata)] if src.nodata is not None and values is None else [])]
        batches = block_polygons(src, class_names, ignored, block_rows, values, unlabelled=min_area > 0)
        if simplify > 0:  # simplified together, so that neighbours keep their shared edges: all at once
            everything = list(batches)
            batches = [([p for polygons, _ in everything for p in polygons], [c for _, classes in everything for c in classes])]
        crs_text = vector_crs(crs) if crs is not None else None
        features = dropped = 0
        voids: list[Polygon] = []  # unlabelled regions so far: a region across seams comes last, its holes' voids before
        with atomic_path(out) as tmp:
            for index, (pixel_polygons, classes) in enumerate(batches):  # written as they come: memory of one batch
                voids += [p for p, c in zip(pixel_polygons, classes) if c == UNLABELLED]
                pixel_polygons, classes = ([p for p, c in zip(pixel_polygons, classes) if c != UNLABELLED],
                                           [c for c in classes if c != UNLABELLED])
                polygons, kept = finish_polygons(pixel_polygons, transform, simplify, min_area, voids)
                classes = [value for value, keep in zip(classes, kept) if keep]
                dropped += len(kept) - len(classes)
                if polygons or index == 0:  # the first creates the layer, empty or not
                    names = np.array([class_names[c] for c in classes], dtype=object)
                    with warnings.catch_warnings():  # pixel coordinates have no CRS, as the caller said already
                        warnings.filterwarnings("ignore", message="'crs' was not provided", category=UserWarning)
                        write_vector(tmp, shapely.to_wkb(polygons), [np.array(classes, dtype=np.int32), names],
                                     ["class_id", "class_name"], layer=out.stem, driver=driver, geometry_type="Polygon",
                                     crs=crs_text, append=index > 0)
                    features += len(polygons)
    return PolygonSummary(out, features, dropped, crs_text)
