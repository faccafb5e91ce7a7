"""Outputs for GIS software: Cloud-Optimized GeoTIFFs and class polygons.

- :func:`to_cog` turns a finished GeoTIFF into a Cloud-Optimized GeoTIFF (tiled, with
  overviews, readable over HTTP range requests), resampling overviews with the nearest
  neighbour so that label and colour maps keep only their class values and colours.
- :func:`polygonize_labels` turns a label map into one polygon per connected region of a
  class, with ``class_id`` and ``class_name`` attributes and the raster's CRS, written as
  GeoPackage or GeoJSON for QGIS and the like.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import rasterio
import rasterio.features
import rasterio.shutil
import shapely
from pyogrio.raw import write as write_vector
from rasterio.errors import RasterioError
from shapely.geometry import Polygon, shape

from eoseg.errors import EosegError
from eoseg.io import atomic_path, open_raster

SHAPES_DTYPES = ("uint8", "uint16", "int16", "int32")  # integer types rasterio.features.shapes accepts
VECTOR_DRIVERS = {".gpkg": "GPKG", ".geojson": "GeoJSON", ".json": "GeoJSON"}


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
    with atomic_path(dst) as tmp:
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
    crs: str | None


def _drop_small_holes(polygon: Polygon, min_area: float) -> Polygon:
    holes = [ring for ring in polygon.interiors if Polygon(ring).area >= min_area]
    return polygon if len(holes) == len(polygon.interiors) else Polygon(polygon.exterior, holes)


def label_polygons(labels: np.ndarray, transform, class_names: Sequence[str], ignore: Sequence[int] = (),
                   simplify: float = 0.0, min_area: float = 0.0) -> tuple[list[Polygon], list[int], int]:
    """Polygons of the connected regions of each class of ``labels`` (H, W) on the grid ``transform``.

    Pixels whose value is in ``ignore`` belong to no polygon; any other value must be a class id.
    Regions under ``min_area`` (CRS units squared) are dropped and holes under it filled,
    so a small island disappears into the region around it. ``simplify`` (CRS units) then
    simplifies all polygons together, so neighbours keep a shared boundary (no gaps or
    overlaps). Returns the polygons, their class ids and the number of regions dropped.
    """
    valid = np.ones(labels.shape, dtype=bool)
    for value in ignore:
        valid &= labels != value
    present = np.unique(labels[valid])
    if present.size and (present[0] < 0 or present[-1] >= len(class_names)):
        bad = present[(present < 0) | (present >= len(class_names))]
        raise EosegError(f"the label map holds class ids {bad.tolist()[:5]} but there are {len(class_names)} classes "
                         f"(0..{len(class_names) - 1}); check CLASS_NAMES and IGNORE_LABEL")
    polygons, classes, dropped = [], [], 0
    for geometry, value in rasterio.features.shapes(labels, mask=valid, transform=transform, connectivity=4):
        polygon = shape(geometry)
        if min_area > 0:
            if polygon.area < min_area:
                dropped += 1
                continue
            polygon = _drop_small_holes(polygon, min_area)
        polygons.append(polygon)
        classes.append(int(value))
    if simplify > 0 and polygons:
        polygons = list(shapely.coverage_simplify(np.array(polygons, dtype=object), simplify))
    return polygons, classes, dropped


def polygonize_labels(label_path: str | Path, out: str | Path, class_names: Sequence[str], ignore: Sequence[int] = (),
                      simplify: float = 0.0, min_area: float = 0.0, pixel_coordinates: bool = False) -> PolygonSummary:
    """Write the class polygons of the label raster ``label_path`` to ``out`` (.gpkg or .geojson), atomically.

    Features carry ``class_id`` and ``class_name``; the layer has the raster's CRS. The
    raster's nodata value, if any, is ignored like ``ignore``. A raster without a CRS is
    refused (its polygons would lie nowhere on a map) unless ``pixel_coordinates``: then
    they are written in its own coordinates, pixel columns and rows when it has no transform.
    """
    out = Path(out)
    driver = VECTOR_DRIVERS.get(out.suffix.lower())
    if driver is None:
        raise EosegError(f"{out}: unsupported vector format; use {', '.join(VECTOR_DRIVERS)}")
    if simplify < 0 or min_area < 0:
        raise EosegError("simplification tolerance and minimum area must not be negative")
    with open_raster(label_path, "label map") as src:
        if src.count != 1:
            raise EosegError(f"{label_path}: a label map has one band, this one has {src.count}; is it a colour map?")
        if src.dtypes[0] not in SHAPES_DTYPES:
            raise EosegError(f"{label_path}: a label map holds integer class ids ({', '.join(SHAPES_DTYPES)}), "
                             f"this one is {src.dtypes[0]}")
        labels = src.read(1)
        transform, crs = src.transform, src.crs
        if crs is None and not pixel_coordinates:
            where = ("pixel coordinates (column, row from the top-left corner)" if transform.is_identity
                     else "the coordinates of its transform, in no known CRS")
            raise EosegError(f"{label_path} is not georeferenced (no CRS): its polygons would be in {where}; "
                             "label a georeferenced image, or pass --pixel-coordinates to write them anyway")
        ignored = [*ignore, *([int(src.nodata)] if src.nodata is not None else [])]
    polygons, classes, dropped = label_polygons(labels, transform, class_names, ignored, simplify, min_area)
    names = np.array([class_names[c] for c in classes], dtype=object)
    crs_text = crs.to_string() if crs is not None else None
    with atomic_path(out) as tmp:
        write_vector(tmp, shapely.to_wkb(polygons), [np.array(classes, dtype=np.int32), names],
                      ["class_id", "class_name"], layer=out.stem, driver=driver, geometry_type="Polygon", crs=crs_text)
    return PolygonSummary(out, len(polygons), dropped, crs_text)
