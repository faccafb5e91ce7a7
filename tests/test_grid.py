"""Pixel sizes in metres and the grid an image of another pixel size is labelled on."""

from __future__ import annotations

from pathlib import Path

import pytest
from affine import Affine
from rasterio.crs import CRS
from rasterio.transform import from_origin

from eoseg.errors import EosegError
from eoseg.grid import coarser_than_training, labelling_grid, needs_warp, pixel_size_m, pixel_size_range
from eoseg.io import RasterInfo


def info(transform=from_origin(500000, 5400000, 0.5, 0.5), crs=CRS.from_epsg(32632), width=300, height=200) -> RasterInfo:
    return RasterInfo(Path("image.tif"), width, height, 3, "uint8", crs, transform, None)


def test_pixel_size_in_metres_whatever_the_crs_unit():
    assert pixel_size_m(info()) == pytest.approx((0.5, 0.5))
    feet = info(from_origin(980000, 200000, 1.0, 1.0), CRS.from_epsg(2263))  # New York state plane, US feet
    assert pixel_size_m(feet) == pytest.approx((0.3048006, 0.3048006))
    # degrees: a degree of longitude at 60 degrees north is half one at the equator
    degrees = info(from_origin(10.0, 60.0 + 100e-5, 1e-5, 1e-5), CRS.from_epsg(4326))
    x, y = pixel_size_m(degrees)
    assert y == pytest.approx(1.1132) and x == pytest.approx(y / 2, rel=1e-3)
    rotated = info(Affine.rotation(30) * Affine.scale(0.2, -0.2))
    assert pixel_size_m(rotated) == pytest.approx((0.2, 0.2))
    assert pixel_size_m(info(Affine.identity(), None)) is None
    assert pixel_size_range([info(), info(from_origin(0, 0, 0.3, 0.3))]) == pytest.approx([0.3, 0.5])
    assert pixel_size_range([info(), info(Affine.identity(), None)]) is None
    assert pixel_size_range([]) is None


def test_an_image_is_labelled_at_the_pixel_size_of_training():
    image = info()  # 0.5 m, 300 x 200 px
    assert labelling_grid(image, [0.5, 0.5], None) is None
    assert labelling_grid(image, [0.47, 0.47], None) is None  # within PIXEL_SIZE_TOLERANCE
    assert labelling_grid(image, [0.2, 0.9], None) is None  # inside the training range
    assert labelling_grid(image, None, None) is None  # weights that record no pixel size
    assert labelling_grid(image, [0.2, 0.2], "image") is None
    # coarser than every training tile: labelled as it is, enlarging adds no detail
    assert labelling_grid(image, [0.2, 0.3], None) is None and coarser_than_training(image, [0.2, 0.3])
    assert not coarser_than_training(image, [0.2, 0.9]) and not coarser_than_training(image, None)
    finer = labelling_grid(image, [1.0, 2.0], None)  # finer than every training tile: labelled at the smallest
    assert (finer.width, finer.height) == (150, 100)
    assert finer.transform == pytest.approx(tuple(from_origin(500000, 5400000, 1.0, 1.0)))
    assert finer.crs == image.crs
    asked = labelling_grid(image, [1.0, 2.0], 0.3)  # a size asked for wins, larger or smaller
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
    with pytest.raises(EosegError, match=r"\(DSM\) is 150 x 100 px with no georeference, .* cover the same grid"):
        needs_warp(image, info(Affine.identity(), None, width=150, height=100), "DSM")
