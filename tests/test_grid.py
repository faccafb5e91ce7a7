"""Pixel sizes in metres and the grid an image of another pixel size is labelled on."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
from affine import Affine
from rasterio.crs import CRS
from rasterio.transform import from_origin

from eoseg.errors import EosegError
from eoseg.grid import (coarser_than_training, labelling_grid, mean_pixel_size_m, needs_warp, note_warp, pixel_sides,
                        pixel_size_m, pixel_size_range, same_crs, same_grid)
from eoseg.io import RasterInfo


def info(transform=from_origin(500000, 5400000, 0.5, 0.5), crs=CRS.from_epsg(32632), width=300, height=200) -> RasterInfo:
    return RasterInfo(Path("image.tif"), width, height, 3, "uint8", crs, transform, None)


def test_pixel_size_in_metres_on_the_ground_whatever_the_crs():
    # UTM: a CRS metre is 1 / 0.9996 ground metres near the central meridian (its scale factor), near enough to
    # keep the size the transform states (NOMINAL_SCALE)
    assert pixel_size_m(info()) == (0.5, 0.5)
    feet = info(from_origin(980000, 200000, 1.0, 1.0), CRS.from_epsg(2263))  # New York state plane, US feet
    assert pixel_size_m(feet) == pytest.approx((0.3048006, 0.3048006), rel=1e-5)
    # degrees: a degree of longitude at 60 degrees north is half one at the equator
    degrees = info(from_origin(10.0, 60.0 + 100e-5, 1e-5, 1e-5), CRS.from_epsg(4326))
    x, y = pixel_size_m(degrees)
    assert y == pytest.approx(1.1141, rel=1e-4) and x == pytest.approx(0.5580, rel=1e-4)  # the WGS84 ellipsoid's
    rotated = info(Affine.rotation(30) * Affine.scale(0.2, -0.2))
    assert pixel_size_m(rotated) == pytest.approx((0.2, 0.2))  # 500 km off the central meridian
    assert pixel_size_m(info(Affine.identity(), None)) is None
    engineering = CRS.from_wkt('LOCAL_CS["site",LOCAL_DATUM["site",0],UNIT["metre",1],AXIS["X",EAST],AXIS["Y",NORTH]]')
    assert pixel_size_m(info(crs=engineering)) is None  # nowhere on the Earth: no ground to measure
    assert pixel_size_range([info(), info(from_origin(500000, 5400000, 0.3, 0.3))]) == pytest.approx([0.3, 0.5])
    assert pixel_size_range([info(), info(Affine.identity(), None)]) is None
    assert pixel_size_range([]) is None


def test_web_mercator_pixels_are_measured_on_the_ground():
    # 0.09 m on the ground at 49 degrees north is 0.09 / cos(49) = 0.137 Web Mercator metres
    latitude, crs_metres = 49.0, 0.09 / math.cos(math.radians(49.0))
    y = 6378137.0 * math.log(math.tan(math.radians(45 + latitude / 2)))
    mercator = info(from_origin(935000.0, y + 100 * crs_metres, crs_metres, crs_metres), CRS.from_epsg(3857))
    # nearly: Web Mercator projects ellipsoid coordinates as if on a sphere, its scale is not quite 1 / cos(latitude)
    assert mean_pixel_size_m(mercator) == pytest.approx(0.09, rel=3e-3)
    further_south = info(crs=CRS.from_epsg(3857))  # 0.5 CRS metres at 43.58 degrees north
    assert mean_pixel_size_m(further_south) == pytest.approx(0.5 * math.cos(math.radians(43.58)), rel=1e-3)
    # trained on 0.09 m: labelled as it is, not brought to 0.09 m as if its pixels were 0.137 m
    assert labelling_grid(mercator, [0.09, 0.09], None) is None
    coarser = labelling_grid(mercator, [0.18, 0.18], None)  # and at 0.18 m: 2 by 2 of its pixels in one
    assert coarser.transform.e == pytest.approx(-2 * crs_metres, rel=3e-3)


def test_a_grid_that_lies_nowhere_on_the_earth_is_refused():
    with pytest.raises(EosegError, match=r"image.tif: the centre of its grid \(1e\+09, 1e\+09 in EPSG:32632\) lies nowhere "
                                         "on the Earth .*; check its CRS and transform"):
        pixel_size_m(info(from_origin(1e9, 1e9, 0.5, 0.5)))


def test_an_image_is_labelled_at_the_pixel_size_of_training():
    image = info()  # 0.5 m, 300 x 200 px
    ground = mean_pixel_size_m(image)  # 0.5 m: UTM metres are ground metres to within NOMINAL_SCALE
    assert ground == 0.5
    assert labelling_grid(image, [0.5, 0.5], None) is None
    assert labelling_grid(image, [0.47, 0.47], None) is None  # within PIXEL_SIZE_TOLERANCE
    assert labelling_grid(image, [0.2, 0.9], None) is None  # inside the training range
    assert labelling_grid(image, None, None) is None  # weights that record no pixel size
    assert labelling_grid(image, [0.2, 0.2], "image") is None
    # coarser than every training tile: labelled as it is, enlarging adds no detail
    assert labelling_grid(image, [0.2, 0.3], None) is None and coarser_than_training(image, [0.2, 0.3])
    assert not coarser_than_training(image, [0.2, 0.9]) and not coarser_than_training(image, None)
    finer = labelling_grid(image, [2 * ground, 4 * ground], None)  # finer than every training tile: labelled at the smallest
    assert (finer.width, finer.height) == (150, 100)  # the measure's rounding adds no row or column
    assert finer.transform == pytest.approx(tuple(from_origin(500000, 5400000, 1.0, 1.0)))
    assert finer.crs == image.crs
    asked = labelling_grid(image, [1.0, 2.0], 0.6 * ground)  # a size asked for wins, larger or smaller
    assert (asked.width, asked.height) == (500, 334)  # the image's extent, the last pixel past its edge
    assert asked.transform == pytest.approx(tuple(from_origin(500000, 5400000, 0.3, 0.3)))
    assert labelling_grid(image, None, 0.52) is None  # within PIXEL_SIZE_TOLERANCE
    assert labelling_grid(info(Affine.identity(), None), [0.2, 0.2], None) is None  # no pixel size: as it is
    with pytest.raises(EosegError, match='INFER_PIXEL_SIZE = 0.1 m needs a georeferenced image.*"image"'):
        labelling_grid(info(Affine.identity(), None), None, 0.1)


def test_a_raster_that_cannot_be_placed_on_the_image_grid_is_refused_saying_what_each_has():
    image = info()
    assert not needs_warp(image, info(Affine.identity(), None), "labels")  # same size, no georeference: same grid
    assert needs_warp(image, info(from_origin(500000, 5400000, 1.0, 1.0), width=150, height=100), "labels")
    # the image's size, but a pixel-offset transform without a CRS (a half cut out of an ungeoreferenced mask)
    with pytest.raises(EosegError, match=r"\(labels\) is 300 x 200 px with a transform but no CRS, the image "
                                         r"image.tif 300 x 200 px with CRS EPSG:32632: without a CRS"):
        needs_warp(image, info(Affine.translation(150, 0), None), "labels")
    # the image's grid but its CRS lost: the command that gives it back (it suggested the georeference be removed)
    with pytest.raises(EosegError, match=r"image.tif 300 x 200 px with CRS EPSG:32632: .*; labels.tif has a transform but "
                                         r"no CRS: if it is in image.tif's CRS, give it that one: gdal_edit.py -a_srs "
                                         r"EPSG:32632 labels.tif$"):
        needs_warp(image, dataclasses.replace(image, crs=None, path=Path("labels.tif")), "labels")
    with pytest.raises(EosegError, match=r"\(DSM\) is 150 x 100 px with no georeference, .* cover the same grid"):
        needs_warp(image, info(Affine.identity(), None, width=150, height=100), "DSM")


@pytest.mark.parametrize("pixel", [0.5, 2.7e-7])  # 0.5 m in UTM; 3 cm in degrees, where 1e-6 is several pixels
def test_a_raster_a_few_pixels_off_the_image_grid_is_not_on_it(pixel):
    crs = CRS.from_epsg(32632 if pixel > 1e-3 else 4326)
    x, y = (500000, 5400000) if pixel > 1e-3 else (8.5, 47.3)
    image = info(from_origin(x, y, pixel, pixel), crs)
    assert same_grid(image, info(from_origin(x + 1e-5 * pixel, y, pixel, pixel), crs))  # rounding of a written transform
    for other in (from_origin(x + 3 * pixel, y, pixel, pixel), from_origin(x, y, pixel * 1.07, pixel),
                  from_origin(x, y, pixel * (1 + 1e-4), pixel)):  # shifted; 7% larger pixels; 0.03 px off at the far edge
        assert not same_grid(image, info(other, crs))
        assert needs_warp(image, info(other, crs), "labels")


def test_a_raster_with_an_alpha_band_of_its_own_is_warped_with_it(tmp_path):
    """An RGBA orthophoto finer than its labelling grid: GDAL warps its alpha as the mask (it refused to add one)."""
    import numpy as np
    import rasterio

    from eoseg.grid import open_on_grid
    from eoseg.io import raster_info

    crs, pixels = CRS.from_epsg(32632), np.random.default_rng(0).integers(1, 255, (3, 64, 64), dtype=np.uint8)
    with rasterio.open(tmp_path / "grid.tif", "w", driver="GTiff", width=64, height=64, count=3, dtype="uint8", crs=crs,
                       transform=from_origin(500000, 5400000, 0.1, 0.1)) as dst:
        dst.write(pixels)
    alpha = np.full((1, 128, 128), 255, np.uint8)
    alpha[:, :, :40] = 0  # transparent: the first 20 columns of the coarser grid
    with rasterio.open(tmp_path / "rgba.tif", "w", driver="GTiff", width=128, height=128, count=4, dtype="uint8", crs=crs,
                       transform=from_origin(500000, 5400000, 0.05, 0.05), photometric="RGB", alpha="YES") as dst:
        dst.write(np.concatenate([pixels.repeat(2, 1).repeat(2, 2), alpha]))
    with open_on_grid(raster_info(tmp_path / "rgba.tif"), raster_info(tmp_path / "grid.tif"), "image", "average") as src:
        np.testing.assert_array_equal(src.read([1, 2, 3])[:, :, 20:], pixels[:, :, 20:])
        empty = src.read_masks(1) == 0
    assert empty[:, :20].all() and not empty[:, 20:].any()


def test_pixel_sides_of_rotated_grids():
    """|a| and |e| of a turned transform are a cosine's share of its pixel's sides, 0 at 90 degrees."""
    assert pixel_sides(from_origin(500000, 5400000, 0.5, 0.25)) == (0.5, 0.25)
    for degrees in (30, 45, 90, 180):
        assert pixel_sides(Affine.rotation(degrees) * Affine.scale(0.7, -0.4)) == pytest.approx((0.7, 0.4))


def test_a_rotated_raster_warped_is_noted_with_its_pixel_size(capsys):
    image, rotated = info(), info(Affine.translation(500000, 5400000) * Affine.rotation(45) * Affine.scale(0.7, -0.7))
    rotated = dataclasses.replace(rotated, path=Path("rotated.tif"))
    note_warp(image, rotated, "labels", "nearest")
    assert "0.7 x 0.7 metre per px" in capsys.readouterr().err  # not 0.494975 x 0.494975


SITE = 'LOCAL_CS["site grid",LOCAL_DATUM["site",32767],UNIT["metre",1],AXIS["Easting",EAST],AXIS["Northing",NORTH]]'


def test_engineering_crs_against_another_is_refused_in_one_line():
    """No coordinate operation joins a site grid (LOCAL_CS) to another CRS: PROJ's error was a traceback with a
    multi-line dump. Two site grids of one unit and axes are one, whatever their datums' names (a GeoTIFF drops it)."""
    site = CRS.from_wkt(SITE)
    unnamed = CRS.from_wkt('LOCAL_CS["Unknown",UNIT["metre",1],AXIS["Easting",EAST],AXIS["Northing",NORTH]]')
    feet = CRS.from_wkt(SITE.replace('UNIT["metre",1]', 'UNIT["foot",0.3048]'))
    assert site != unnamed and same_crs(site, unnamed) and not same_crs(site, feet)
    assert not same_crs(site, CRS.from_epsg(32632)) and not same_crs(None, site) and same_crs(None, None)
    image = info(crs=site)
    assert not needs_warp(image, info(crs=unnamed), "labels")  # the same grid
    assert needs_warp(image, info(from_origin(500000, 5400000, 1.0, 1.0), unnamed, 150, 100), "labels")
    for other, named in ((CRS.from_epsg(32632), "EPSG:32632"), (feet, r"LOCAL_CS\[.*foot")):
        with pytest.raises(EosegError, match=rf"image.tif \(labels\) is in {named}.* and its image image.tif in LOCAL_CS\[.*: "
                                             r"an engineering \(local\) CRS cannot be related to another CRS; give both"):
            needs_warp(image, info(from_origin(500000, 5400000, 1.0, 1.0), other, 150, 100), "labels")
    with pytest.raises(EosegError, match=r"is in LOCAL_CS\[.* and its image image.tif in EPSG:32632: an engineering"):
        needs_warp(info(crs=CRS.from_epsg(32632)), image, "labels")


@pytest.mark.parametrize("size", [(300, 200), (150, 100)])
def test_a_raster_placed_by_ground_control_points_is_not_paired_with_a_placed_one(size):
    """A label raster with GCPs and no geotransform, of the image's size, was read pixel for pixel (its GCPs,
    which may place it elsewhere, ignored); of another size it was said to have "no georeference"."""
    image = info()
    gcps = dataclasses.replace(info(Affine.identity(), None, *size), path=Path("gcps.tif"), ground_control=True)
    for label, placed in ((gcps, image), (image, gcps)):
        with pytest.raises(EosegError, match=r"gcps.tif is placed by ground control points or RPCs and image.tif by a "
                                             r"geotransform, which do not pair pixel for pixel; gcps.tif has ground control "
                                             r"points or RPCs but no geotransform, which eoseg reads: warp it by them first"):
            needs_warp(placed, label, "labels")
    assert not needs_warp(info(Affine.identity(), None), dataclasses.replace(gcps, width=300, height=200), "labels")


def test_an_image_narrower_than_two_cells_of_the_labelling_grid_is_labelled_on_its_own():
    """A 1 x 300 px strip at 0.5 m labelled at 1.7 m: its one grid row's centre lies beyond the strip and read as
    nodata, so every pixel came out unlabelled with the run recorded as complete."""
    for width, height in ((300, 1), (1, 300), (300, 6)):
        assert labelling_grid(info(width=width, height=height), None, 1.7) is None
    grid = labelling_grid(info(width=300, height=7), None, 1.7)  # 7 px of 0.5 m: just over two cells of 1.7 m
    assert (grid.width, grid.height) == (89, 3)



def test_one_raster_warped_for_many_images_is_noted_once(capsys):
    """One label raster for all tiles (LABEL_PATTERN without {id}) was noted once per tile: hundreds of lines."""
    labels = dataclasses.replace(info(from_origin(500000, 5400000, 1.0, 1.0)), path=Path("all_tiles_labels.tif"))
    for column in range(3):
        tile = dataclasses.replace(info(from_origin(500000 + 150 * column, 5400000, 0.5, 0.5)), path=Path(f"tile_{column}.tif"))
        note_warp(tile, labels, "labels", "nearest")
    assert capsys.readouterr().err.count("all_tiles_labels.tif") == 1
