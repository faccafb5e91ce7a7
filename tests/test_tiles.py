"""eoseg.tiles: finding a tile's image, checking its bands, stacking extra sources, nodata, NDVI, eroded truth."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from rasterio.enums import ColorInterp
from rasterio.transform import Affine
from rasterio.windows import Window

from eoseg.errors import EosegError
from eoseg.io import raster_info, read_label, read_raster, write_raster
from eoseg.normalization import Normalization
from eoseg.tiles import (check_same_dtype, display_bands, eroded_fallback, existing_path, image_bands_record, image_info,
                         image_stack, ndvi, read_image, tile_stack, training_pixels)

from .conftest import TINY_TILE_SIZE

NDSM = {"pattern": "ndsm/ndsm_09cm_matching_area{id}.tif", "bands": [1], "band_names": ["nDSM"], "mean": [0.0], "std": [10.0]}
DSM = {"pattern": "dsm/dsm_09cm_matching_area{id}.tif", "bands": [1], "band_names": ["DSM"], "mean": [255.0], "std": [5.0]}


def copy_raster(source, target, array=None, **changes):
    """``source`` rewritten at ``target``, optionally with other pixels or profile entries."""
    with rasterio.open(source) as src:
        profile = {**src.profile, **changes}
        data = src.read() if array is None else array
    target.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(target, "w", **profile) as dst:
        dst.write(data)
    return target


# ---------------------------------------------------------------- finding the images and checking their bands
def test_an_id_without_an_image_names_the_ids_there_are(tiny_cfg, tmp_path, monkeypatch):
    for name in ("001", "002", "010"):
        copy_raster(tiny_cfg.tile_path("IMAGE_PATTERN", "1"), tmp_path / "padded" / f"{name}.tif")
    cfg = tiny_cfg.replace(DATA_ROOT=str(tmp_path / "padded"), IMAGE_PATTERN="{id}.tif")
    with pytest.raises(EosegError, match=r"tile 1: image not found at .*padded/1.tif; IMAGE_PATTERN finds an image of id "
                                         r"'001': an id is the text \{id\} stands for in the file name"):
        image_info(cfg, "1")
    with pytest.raises(EosegError, match=r"tile 7: image not found at .*; IMAGE_PATTERN finds images of ids 001, 002, "
                                         r"010 under DATA_ROOT"):
        image_info(cfg, "7")
    assert image_info(cfg, "010").path.name == "010.tif"
    with pytest.raises(EosegError, match=rf"tile 7: image not found at padded/7.tif \(in {tmp_path}\); IMAGE_PATTERN finds"):
        with monkeypatch.context() as patch:
            patch.chdir(tmp_path)
            image_info(cfg.replace(DATA_ROOT="padded"), "7")


def test_images_named_but_for_the_case_of_their_letters_are_pointed_out(tiny_cfg, tmp_path, capsys):
    """UP1.TIF beside a1.tif under IMAGE_PATTERN "{id}.tif": Linux names are exact, so a glob of ids left it out
    without a word, and the id named alone was said to have no image; both now name the file to rename."""
    for name in ("a1.tif", "UP1.TIF"):
        copy_raster(tiny_cfg.tile_path("IMAGE_PATTERN", "1"), tmp_path / "mixed" / name)
    cfg = tiny_cfg.replace(DATA_ROOT=str(tmp_path / "mixed"), IMAGE_PATTERN="{id}.tif", TRAIN_IDS=["*"], TEST_IDS=[])
    assert cfg.tile_ids("train") == ["a1"]
    assert "IMAGE_PATTERN '{id}.tif' leaves out UP1.TIF, named so but for the case of their letters: rename them" in \
        capsys.readouterr().err
    with pytest.raises(EosegError, match=r"tile UP1: image not found at .*mixed/UP1.tif; .*mixed/UP1.TIF is named so but "
                                         r"for the case of its letters: rename it"):
        image_info(cfg, "UP1")


def test_files_named_in_another_unicode_form_or_case_are_pointed_out_and_excluded_alike(tiny_cfg, tmp_path, capsys):
    """A name macOS wrote (decomposed ü) and an id typed composed print alike: "image not found ... finds images of
    ids zürich_1" (review); "!zürich_1" took nothing out, and "!Bad_tile" no bad_tile, silently: trained on (review)."""
    import unicodedata

    decomposed = unicodedata.normalize("NFD", "zürich_1")
    for name in (decomposed, "bad_tile", "other"):
        copy_raster(tiny_cfg.tile_path("IMAGE_PATTERN", "1"), tmp_path / "ids" / f"{name}.tif")
    (tmp_path / "labels").mkdir()
    copy_raster(tiny_cfg.tile_path("LABEL_PATTERN", "1"), tmp_path / "labels" / "other.TIF")
    cfg = tiny_cfg.replace(DATA_ROOT=str(tmp_path / "ids"), IMAGE_PATTERN="{id}.tif", LABEL_PATTERN="../labels/{id}.tif",
                           TRAIN_IDS=["*", "!zürich_1"], TEST_IDS=[])
    assert cfg.tile_ids("train") == ["bad_tile", "other"]
    with pytest.raises(EosegError, match=r"tile zürich_1: image not found at .*; .*zu\u0308rich_1.tif is named so, its "
                                         r"accented letters written in another Unicode form"):
        image_info(cfg, "zürich_1")
    with pytest.raises(EosegError, match=r"TRAIN_IDS entry '!Bad_tile' takes out none of the ids before it, but for the "
                                         r"case of their letters bad_tile: write them as named"):
        cfg.replace(TRAIN_IDS=["*", "!Bad_tile"]).tile_ids("train")
    assert cfg.replace(TRAIN_IDS=["*", "!gone"]).tile_ids("train") == ["bad_tile", "other", decomposed]
    assert "TRAIN_IDS entry '!gone' takes out none of the ids listed before it" in capsys.readouterr().err
    with pytest.raises(EosegError, match=r"labels/other.TIF is named so but for the case of its letters: rename it"):
        existing_path(cfg, "LABEL_PATTERN", "other", "numeric label map")  # not only images (review)
    (tmp_path / "labels" / "folder.tif").mkdir()  # its own name: not said to be of another form (code review)
    (tmp_path / "labels" / "gone.tif").symlink_to(tmp_path / "unmounted" / "gone.tif")
    with pytest.raises(EosegError, match=r"labels/folder.tif is a folder, not a file$"):
        existing_path(cfg, "LABEL_PATTERN", "folder", "numeric label map")
    with pytest.raises(EosegError, match=r"labels/gone.tif is a link to .*unmounted/gone.tif, which does not exist$"):
        existing_path(cfg, "LABEL_PATTERN", "gone", "numeric label map")


def test_ids_a_glob_matches_but_for_the_case_of_their_letters_are_pointed_out(tiny_cfg, tmp_path, capsys):
    for name in ("tile_1", "tile_2", "Tile_10", "other"):
        copy_raster(tiny_cfg.tile_path("IMAGE_PATTERN", "1"), tmp_path / "ids" / f"{name}.tif")
    cfg = tiny_cfg.replace(DATA_ROOT=str(tmp_path / "ids"), IMAGE_PATTERN="{id}.tif", TRAIN_IDS=["tile_*"], TEST_IDS=[])
    assert cfg.tile_ids("train") == ["tile_1", "tile_2"]
    assert "TRAIN_IDS: 'tile_*' leaves out the ids Tile_10, which it matches but for the case of their letters" in \
        capsys.readouterr().err
    assert cfg.replace(TRAIN_IDS=["*_1*"]).tile_ids("train") == ["Tile_10", "tile_1"]
    assert "leaves out" not in capsys.readouterr().err


def test_bands_the_file_names_in_another_order_than_band_names_are_refused(tiny_cfg, tmp_path):
    """A file whose band descriptions name every one of BAND_NAMES, elsewhere than BANDS reads them."""
    source = tiny_cfg.tile_path("IMAGE_PATTERN", "1")
    named = copy_raster(source, tmp_path / "named" / "1.tif", read_raster(source)[::-1])
    with rasterio.open(named, "r+") as dst:
        for band, name in enumerate(("g", "r", "ir"), start=1):
            dst.set_band_description(band, name)
    cfg = tiny_cfg.replace(DATA_ROOT=str(tmp_path / "named"), IMAGE_PATTERN="{id}.tif")
    with pytest.raises(EosegError, match=r"1.tif: the file names bands \[1, 2, 3\] \['g', 'r', 'ir'\], but BAND_NAMES says "
                                         r"\['IR', 'R', 'G'\]: set BANDS = \[3, 2, 1\] to read them in that order"):
        image_info(cfg, "1")
    np.testing.assert_array_equal(read_image(cfg.replace(BANDS=[3, 2, 1]), "1")[0], read_raster(source))
    with rasterio.open(named, "r+") as dst:  # as GDAL spells them: the same bands
        for band, name in enumerate(("Green", "Red", "Near-Infrared"), start=1):
            dst.set_band_description(band, name)
    with pytest.raises(EosegError, match=r"set BANDS = \[3, 2, 1\]"):
        image_info(cfg, "1")
    with rasterio.open(named, "r+") as dst:  # one band named as another colour than BAND_NAMES says: refused alone
        for band, name in enumerate(("Green", "Red", ""), start=1):
            dst.set_band_description(band, name)
    with pytest.raises(EosegError, match=r"\['Green', 'Red', None\], but BAND_NAMES says \['IR', 'R', 'G'\]: set BANDS to "
                                         r"the bands that hold them, in that order: the file names R band 2, G band 1"):
        image_info(cfg, "1")
    with rasterio.open(named, "r+") as dst:
        for band, name in enumerate(("swir", "Red", "Green"), start=1):  # names that are not BAND_NAMES' say nothing
            dst.set_band_description(band, name)
    image_info(cfg, "1")


def test_an_alpha_band_read_as_data_is_refused(tiny_cfg, tmp_path):
    """The 4th band of an RGBA file is its transparency (read as its nodata mask), not a 4th band of data."""
    source = tiny_cfg.tile_path("IMAGE_PATTERN", "1")
    pixels = read_raster(source)
    rgba = copy_raster(source, tmp_path / "rgba" / "1.tif", np.concatenate([pixels, np.full_like(pixels[:1], 255)]), count=4)
    with rasterio.open(rgba, "r+") as dst:
        dst.colorinterp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.alpha]
    cfg = tiny_cfg.replace(DATA_ROOT=str(tmp_path / "rgba"), IMAGE_PATTERN="{id}.tif", BANDS=[1, 2, 3, 4],
                           BAND_NAMES=["R", "G", "B", "N"], NORM_MEAN=[0.0] * 4, NORM_STD=[1.0] * 4)
    with pytest.raises(EosegError, match=r"1.tif: band 4 is tagged as its alpha band .* BANDS \[1, 2, 3, 4\] reads it as "
                                         r"data: if it holds data .*gdal_edit.py -colorinterp_4 undefined FILE .*leave it "
                                         r"out of BANDS"):
        image_info(cfg, "1")
    image_info(cfg.replace(BANDS=[1, 2, 3], BAND_NAMES=["R", "G", "B"], NORM_MEAN=[0.0] * 3, NORM_STD=[1.0] * 3), "1")


def test_a_paletted_image_is_refused_with_the_line_that_expands_it(tiny_cfg, tmp_path):
    """Its values are indices into a colour table: read as brightness they mean nothing."""
    source = tiny_cfg.tile_path("IMAGE_PATTERN", "1")
    grey = read_raster(source)[:1]
    paletted = copy_raster(source, tmp_path / "paletted.tif", grey, count=1, photometric="palette")
    with rasterio.open(paletted, "r+") as dst:
        dst.write_colormap(1, {value: (value, value, value, 255) for value in range(256)})
    cfg = tiny_cfg.replace(BANDS=[1], BAND_NAMES=["grey"], NORM_MEAN=[0.0], NORM_STD=[255.0])
    with pytest.raises(EosegError, match=r"paletted.tif: a paletted image, .*gdal_translate -expand rgb"):
        image_stack(cfg, raster_info(paletted))


# ---------------------------------------------------------------- NDVI
def test_ndvi_values():
    red = np.array([0, 10, 30, 200, 50], dtype=np.uint8)
    nir = np.array([0, 30, 10, 200, 0], dtype=np.uint8)
    index = ndvi(red, nir)
    assert index.dtype == np.float32
    np.testing.assert_allclose(index, [0.0, 0.5, -0.5, 0.0, -1.0])  # 0 where the sum is 0; no uint8 overflow


# ---------------------------------------------------------------- stacking, nodata, stored scaling
def test_stack_of_three_sources_in_order(tiny_cfg):
    cfg = tiny_cfg.replace(EXTRA_SOURCES=[NDSM, {"derived": "ndvi"}, DSM])
    stacked, info = read_image(cfg, "1")
    image = read_raster(cfg.tile_path("IMAGE_PATTERN", "1"), cfg.BANDS)
    ndsm = read_raster(cfg.tile_path("NDSM_PATTERN", "1"))[0]
    dsm = read_raster(cfg.tile_path("DSM_PATTERN", "1"))[0]
    assert stacked.shape == (6, TINY_TILE_SIZE, TINY_TILE_SIZE) and stacked.dtype == np.float32
    assert info.path == cfg.tile_path("IMAGE_PATTERN", "1")
    np.testing.assert_array_equal(stacked[:3], image)
    np.testing.assert_array_equal(stacked[3], ndsm)
    np.testing.assert_array_equal(stacked[4], ndvi(image[1], image[0]))  # red "R" is band 2, nir "IR" band 1
    np.testing.assert_array_equal(stacked[5], dsm)
    # a window of the stack is the window of every source
    stack = tile_stack(cfg, "1")
    with stack:
        part = stack.read(Window(10, 20, 30, 40))
        assert stack.valid_mask(part, Window(10, 20, 30, 40)).all()
    np.testing.assert_array_equal(part, stacked[:, 20:60, 10:40])
    # the value checks name each raster source with the file it is read from (the derived NDVI has none)
    assert stack.named_source_bands(cfg) == [(f"nDSM ({cfg.tile_path('NDSM_PATTERN', '1').name})", slice(3, 4)),
                                             (f"DSM ({cfg.tile_path('DSM_PATTERN', '1').name})", slice(5, 6))]


def test_one_raster_for_every_tile_is_read_where_each_tile_and_image_lies(tiny_cfg, tmp_path):
    """An extra source without {id} (a city's DSM mosaic) is read where each tile lies, and where an image file
    given by path lies; one found by tile id has nothing to offer such a file: refused."""
    first, last = (raster_info(tiny_cfg.tile_path("IMAGE_PATTERN", tile_id), "image") for tile_id in ("1", "4"))
    pixel = first.transform.a
    width = round((last.transform.c - first.transform.c) / pixel) + last.width + 20
    x_centres = (np.arange(width) + 0.5) * pixel  # metres east of tile 1: a plane, warped bilinearly, stays exact
    mosaic = np.broadcast_to(x_centres.astype(np.float32), (first.height, width))
    path = write_raster(tmp_path / "data" / "eastings.tif", mosaic, replace(first, width=width, count=1, dtype="float32"))
    eastings = {"pattern": str(path), "bands": [1], "band_names": ["E"], "mean": [0.0], "std": [1.0]}
    cfg = tiny_cfg.replace(EXTRA_SOURCES=[eastings])
    scene = copy_raster(tiny_cfg.tile_path("IMAGE_PATTERN", "4"), tmp_path / "scenes" / "scene.tif")
    for stack in (tile_stack(cfg, "4"), image_stack(cfg, raster_info(scene, "image"))):
        with stack:
            read = stack.read()
        expected = last.transform.c - first.transform.c + (np.arange(last.width) + 0.5) * pixel
        np.testing.assert_allclose(read[3][:, 1:-1], np.broadcast_to(expected, read[3].shape)[:, 1:-1], atol=1e-3 * pixel)
        np.testing.assert_array_equal(read[:3], read_raster(scene, cfg.BANDS))
    with pytest.raises(EosegError, match=r"scene.tif: EXTRA_SOURCES stacks EXTRA_SOURCES\[0\] \(nDSM\) from the configured "
                                         r"tiles, which an image file given by path has no id for"):
        image_stack(tiny_cfg.replace(EXTRA_SOURCES=[NDSM, eastings]), raster_info(scene, "image"))


def test_uint8_stays_uint8_only_when_every_source_is(tiny_cfg):
    colour = {"pattern": "gts_for_participants/top_mosaic_09cm_area{id}.tif", "bands": [3, 1], "band_names": ["b", "r"],
              "mean": [0.0, 0.0], "std": [255.0, 255.0]}
    stacked, _ = read_image(tiny_cfg.replace(EXTRA_SOURCES=[colour]), "1")
    assert stacked.dtype == np.uint8 and stacked.shape[0] == 5
    np.testing.assert_array_equal(stacked[3:], read_raster(tiny_cfg.tile_path("GT_COLOR_PATTERN", "1"), [3, 1]))
    assert read_image(tiny_cfg, "1")[0].dtype == np.uint8
    assert read_image(tiny_cfg.replace(EXTRA_SOURCES=[{"derived": "ndvi"}]), "1")[0].dtype == np.float32


def test_sources_of_another_grid_are_warped_onto_the_image(tiny_cfg, tmp_path):
    source = tiny_cfg.tile_path("NDSM_PATTERN", "1")
    ndsm = read_raster(source)
    root = tmp_path / "other"
    copy_raster(source, root / "small1.tif", ndsm[:, :90, :100], width=100, height=90)
    with rasterio.open(source) as src:
        shifted = src.transform * Affine.translation(5, 0)
        away = src.transform * Affine.translation(10 * src.width, 0)
    copy_raster(source, root / "shifted1.tif", transform=shifted)
    copy_raster(source, root / "away1.tif", transform=away)
    nearest = {**NDSM, "resampling": "nearest"}
    cfg = tiny_cfg.replace(EXTRA_SOURCES=[{**nearest, "pattern": str(root / "small{id}.tif")}])
    stack = tile_stack(cfg, "1")
    stacked = stack.read()
    valid = stack.valid_mask(stacked)
    np.testing.assert_array_equal(stacked[3, :90, :100], ndsm[0, :90, :100])  # same pixels where it reaches
    assert valid[:90, :100].all() and not valid[90:].any() and not valid[:, 100:].any()  # nodata beyond
    cfg = tiny_cfg.replace(EXTRA_SOURCES=[{**nearest, "pattern": str(root / "shifted{id}.tif")}])
    stack = tile_stack(cfg, "1")
    stacked = stack.read()
    np.testing.assert_array_equal(stacked[3, :, 5:], ndsm[0, :, :-5])  # image column 5 is the source's column 0
    assert not stack.valid_mask(stacked)[:, :5].any()
    cfg = tiny_cfg.replace(EXTRA_SOURCES=[{**NDSM, "pattern": str(root / "away{id}.tif")}])
    with pytest.raises(EosegError, match="does not overlap the image") as caught:
        read_image(cfg, "1")
    assert str(root / "away1.tif") in str(caught.value)
    with pytest.raises(EosegError, match=r"tile 1: EXTRA_SOURCES\[0\] \(nDSM\) not found"):
        read_image(tiny_cfg.replace(EXTRA_SOURCES=[{**NDSM, "pattern": "nowhere/{id}.tif"}]), "1")
    with pytest.raises(EosegError, match="has 1 bands but its 'bands' asks for"):
        read_image(tiny_cfg.replace(EXTRA_SOURCES=[{**NDSM, "bands": [2], "band_names": ["x"]}]), "1")


def test_nodata_of_any_source_is_ignored_in_training(tiny_cfg, tmp_path):
    source = tiny_cfg.tile_path("NDSM_PATTERN", "1")
    ndsm = read_raster(source)
    ndsm[0, :10] = np.nan  # NaN rows
    ndsm[0, 20:30] = -9999  # nodata rows
    copy_raster(source, tmp_path / "ndsm1.tif", ndsm, nodata=-9999)
    cfg = tiny_cfg.replace(EXTRA_SOURCES=[{**NDSM, "pattern": str(tmp_path / "ndsm{id}.tif")}])
    stack = tile_stack(cfg, "1")
    with stack:
        pixels = stack.read()
        valid = stack.valid_mask(pixels)
    assert not valid[:10].any() and not valid[20:30].any() and valid[10:20].all() and valid[30:].all()
    labels = read_label(cfg.tile_path("LABEL_PATTERN", "1"))
    clean, safe_labels = training_pixels(cfg, stack, pixels, labels, Normalization.from_config(cfg))
    assert not np.isnan(clean).any()
    assert (safe_labels[:10] == cfg.IGNORE_LABEL).all() and (safe_labels[20:30] == cfg.IGNORE_LABEL).all()
    np.testing.assert_array_equal(safe_labels[30:], labels[30:])
    # no nodata value reaches the network: every band of those pixels normalises to 0
    normalised = Normalization.from_config(cfg).apply(torch.from_numpy(clean)[None])[0]
    assert (normalised[:, :10] == 0).all() and (normalised[:, 20:30] == 0).all()
    np.testing.assert_array_equal(clean[:, 30:], pixels[:, 30:])


def test_sample_statistics_count_the_valid_pixels_of_windows_spread_over_the_stack(tiny_cfg, tmp_path):
    source = tiny_cfg.tile_path("NDSM_PATTERN", "1")
    ndsm = read_raster(source)
    ndsm[0, :20] = -9999
    copy_raster(source, tmp_path / "ndsm1.tif", ndsm, nodata=-9999)
    stack = tile_stack(tiny_cfg.replace(EXTRA_SOURCES=[{**NDSM, "pattern": str(tmp_path / "ndsm{id}.tif")}]), "1")
    pixels = stack.read().reshape(4, -1).astype(np.float64)
    valid = stack.valid_mask(stack.read()).ravel()
    whole = stack.sample_statistics(size=max(stack.info.height, stack.info.width))  # one window: the whole tile
    assert whole.count == valid.sum() < valid.size
    assert whole.mean == pytest.approx(pixels[:, valid].mean(axis=1)) and whole.std == pytest.approx(pixels[:, valid].std(axis=1))
    corners = stack.sample_statistics(side=2, size=48)  # the four corner windows
    windows = [Window(col, row, 48, 48) for row in (0, stack.info.height - 48) for col in (0, stack.info.width - 48)]
    expected = np.concatenate([stack.read(w)[:, stack.valid_mask(stack.read(w), w)] for w in windows], axis=1)
    assert corners.count == expected.shape[1] == 2 * 48 * 48 + 2 * 48 * 28  # the top two reach into the nodata rows
    assert corners.mean == pytest.approx(expected.astype(np.float64).mean(axis=1))
    # windows that find under MIN_SAMPLED_PIXELS valid pixels (4 x 16 x 16 at most) missed the data: the whole is read
    assert stack.sample_statistics(side=2, size=16).count == whole.count


def scaled_copy(source, target, scale, offset, dtype, bands=None):
    """``source`` stored as GDAL does scaled values: ``dtype`` integers that stand for stored * scale + offset."""
    values = read_raster(source).astype(np.float64)
    stored = np.rint((values - offset) / scale).astype(dtype)
    copy_raster(source, target, stored, dtype=dtype)
    with rasterio.open(target, "r+") as dst:
        dst.scales, dst.offsets = [scale] * dst.count, [offset] * dst.count
    return target


def test_scaled_stored_values_are_read_as_the_values_they_stand_for(tiny_cfg, tmp_path):
    """An image stored as scaled integers (GDAL scale and offset) feeds the network the values it stands for,
    as one storing them plainly does; NODATA_ZERO still means a stored 0."""
    plain = tiny_cfg.tile_path("IMAGE_PATTERN", "1")
    scaled = scaled_copy(plain, tmp_path / "scaled" / "1.tif", scale=0.5, offset=-10.0, dtype="uint16")
    cfg = tiny_cfg.replace(DATA_ROOT=str(tmp_path / "scaled"), IMAGE_PATTERN="{id}.tif")
    expected, stack = read_raster(plain), tile_stack(cfg, "1")
    assert stack.dtype == np.float32
    with stack:
        pixels = stack.read()
        np.testing.assert_array_equal(pixels, expected.astype(np.float32))
        np.testing.assert_array_equal(stack.valid_mask(pixels), np.ones(pixels.shape[1:], bool))
    with pytest.raises(EosegError, match=r"image is float32 \(its stored uint16 values scaled by the file's GDAL scale/offset\), "
                                         r"but top_mosaic_09cm_area1.tif is uint8 before it; .* same scale and offset"):
        check_same_dtype(stack, check_same_dtype(tile_stack(tiny_cfg, "1"), None))
    stored = read_raster(scaled)
    stored[:, :5] = 0
    copy_raster(scaled, tmp_path / "zeros" / "1.tif", stored)
    with rasterio.open(tmp_path / "zeros" / "1.tif", "r+") as dst:
        dst.scales, dst.offsets = [0.5] * 3, [-10.0] * 3
    untagged_zeros = cfg.replace(DATA_ROOT=str(tmp_path / "zeros"))
    # a collar of stored zeros (read as -10) is said, as one in a file without a scale is
    assert tile_stack(untagged_zeros, "1").sample()[1][0] == pytest.approx(5 / stored.shape[1], abs=0.01)
    zeros = tile_stack(untagged_zeros.replace(NODATA_ZERO=True), "1")
    with zeros:
        valid = zeros.valid_mask(zeros.read())
    assert not valid[:5].any() and valid[5:].all()


def test_a_white_collar_without_a_nodata_tag_is_said_as_a_black_one_is(tiny_cfg, tmp_path):
    """A 35% collar of 255 was taken for values 1.8 times the training ones, "another scale or encoding", where the
    same collar of 0 got the nodata note (review)."""
    from eoseg.tiles import unmasked_fill_note

    source = tiny_cfg.tile_path("IMAGE_PATTERN", "1")
    pixels = read_raster(source)
    pixels[:, :, : pixels.shape[2] * 2 // 5] = 255
    copy_raster(source, tmp_path / "white" / source.name, pixels)
    stack = tile_stack(tiny_cfg.replace(DATA_ROOT=str(tmp_path / "white"), IMAGE_PATTERN=source.name.replace("1", "{id}")),
                       "1")
    fills = stack.sample()[1]
    assert fills[255] == pytest.approx(0.4, abs=0.02) and fills[0] < 0.01
    assert unmasked_fill_note(fills).startswith("40% of its sampled pixels are 255 in every band, its type's largest "
                                                "value, with no nodata tag (a white collar?): if they hold no data, tag "
                                                "them: rio edit-info --nodata 255 FILE")
    assert unmasked_fill_note({0: 0.3, 255: 0.3}).startswith("30% of its sampled pixels are 0")  # black said first
    assert unmasked_fill_note({0: 0.04}) == unmasked_fill_note({0: 0.0, 255: 0.1}) == ""
    assert unmasked_fill_note({0: 0.11}).startswith("11% of its sampled pixels are 0")  # review: said from 20% only


def test_tiles_read_in_other_types_are_refused_whatever_a_derived_band_makes_the_stack(tiny_cfg, tmp_path):
    """NDVI makes every stack float32; a tile read through a GDAL scale (float32) and one without (its stored uint16)
    still differ by orders of magnitude, and are refused as without NDVI."""
    plain = tiny_cfg.tile_path("IMAGE_PATTERN", "1")
    scaled_copy(plain, tmp_path / "data" / "1.tif", scale=0.0001, offset=-0.1, dtype="uint16")
    untagged = tmp_path / "data" / "2.tif"
    copy_raster(tmp_path / "data" / "1.tif", untagged, read_raster(tmp_path / "data" / "1.tif"), dtype="uint16")
    for extra in ([], [{"derived": "ndvi"}]):
        cfg = tiny_cfg.replace(DATA_ROOT=str(tmp_path / "data"), IMAGE_PATTERN="{id}.tif", EXTRA_SOURCES=extra)
        first = check_same_dtype(tile_stack(cfg, "1"), None)
        assert first[0] == "float32"
        with pytest.raises(EosegError, match=r"2.tif: image is uint16(, stacked with its extra sources as float32)?, but "
                                             r"1.tif is float32 \(its stored uint16 values scaled by the file's GDAL "
                                             r"scale/offset\) before it"):
            check_same_dtype(tile_stack(cfg, "2"), first)


def test_extra_sources_may_differ_in_type_where_their_stacks_do_not(tiny_cfg, tmp_path):
    """A DSM in float32 metres for one tile and int16 metres for another: both stacks are float32, as before."""
    import shutil

    data = tmp_path / "data"
    shutil.copytree(tiny_cfg.DATA_ROOT, data)
    cfg = tiny_cfg.replace(DATA_ROOT=str(data), EXTRA_SOURCES=[
        {"pattern": "dsm/dsm_09cm_matching_area{id}.tif", "bands": [1], "band_names": ["DSM"], "mean": [0.0], "std": [1.0]}])
    dsm = cfg.tile_path("DSM_PATTERN", "2")
    copy_raster(dsm, dsm, np.rint(read_raster(dsm)).astype(np.int16), dtype="int16", nodata=None)
    first = check_same_dtype(tile_stack(cfg, "1"), None)
    assert first[0] == "uint8, stacked with its extra sources as float32"
    assert check_same_dtype(tile_stack(cfg, "2"), first) == first


# ---------------------------------------------------------------- the truth tiles are scored on
def test_tiles_without_eroded_ground_truth_are_said_to_be_scored_on_the_labels(tiny_cfg, tmp_path):
    """A typo in GT_ERODED_PATTERN, or a tile missing from the eroded set, scores on the full labels: said."""
    from eoseg.datacheck import check_dataset

    assert eroded_fallback(tiny_cfg, ["4"]) is None
    typo = tiny_cfg.replace(GT_ERODED_PATTERN=tiny_cfg.GT_ERODED_PATTERN.replace("_noBoundary", "_no_Boundary"))
    note = eroded_fallback(typo, ["4"])
    assert note.startswith("GT_ERODED_PATTERN finds no eroded ground truth for tiles 4 (every one of them), e.g. "
                           "nothing at ") and "scored against the full labels (LABEL_PATTERN)" in note
    assert note in check_dataset(typo).problems
    assert eroded_fallback(tiny_cfg.replace(GT_ERODED_PATTERN=""), ["4"]) is None  # no eroded set: nothing to say


def test_an_indexed_eroded_truth_whose_colours_contradict_its_values_is_refused_even_under_label_values(tiny_cfg, tmp_path):
    """The eroded ground truth is colour-coded; saved with a colour table, its colours say what its values are. Read
    through a LABEL_VALUES written for the label rasters (ISPRS codes 1..6 with 0 for boundaries) its values were
    scored as other classes (OA 85% -> 25% in a review, exit 0); the remedy is expanding it to RGB, not a
    LABEL_VALUES, which would read the label rasters otherwise too."""
    from eoseg.tiles import eval_truth

    source = tiny_cfg.tile_path("GT_ERODED_PATTERN", "4")
    info = image_info(tiny_cfg, "4")
    ids = eval_truth(tiny_cfg, "4", info).read_rows(tiny_cfg.palette, 0, info.height)
    colours = {value: (*map(int, rgb), 255) for value, rgb in enumerate(tiny_cfg.palette.colors)}

    def indexed(name: str, values: np.ndarray, table: dict):
        target = tmp_path / name / "4.tif"
        write_like = dict(count=1, dtype="uint8")
        with rasterio.open(source) as src:
            profile = {**src.profile, **write_like, "photometric": "palette"}
        target.parent.mkdir()
        with rasterio.open(target, "w", **profile) as dst:
            dst.write(values.astype(np.uint8), 1)
            dst.write_colormap(1, table)
        return tiny_cfg.replace(GT_ERODED_PATTERN=str(target.parent / "{id}.tif"))

    boundary = len(colours)  # the boundaries black, after the classes
    cfg = indexed("classes_first", np.where(ids == 255, boundary, ids), {**colours, boundary: (0, 0, 0, 255)})
    shifted = cfg.replace(LABEL_VALUES={0: "ignore", **{value + 1: value for value in range(len(colours))}})
    with pytest.raises(EosegError, match=r"4.tif: its colour table gives value 0 the colour \(255, 255, 255\), PALETTE's "
                                         r"colour of class 0, but the value reads as unlabelled through LABEL_VALUES: .*"
                                         r"gdal_translate -expand rgb FILE FILE_rgb.tif.*GT_ERODED_PATTERN = \"\""):
        eval_truth(shifted, "4", info)
    with pytest.raises(EosegError, match=r"value 6 the colour \(0, 0, 0\), IGNORE_COLOR, but the value is read as no class: "
                                         r"if its colours are the classes.*-expand rgb"):
        eval_truth(cfg, "4", info)
    # its boundary value read as unlabelled by UNKNOWN_LABELS_TO_IGNORE, as its black says (code review)
    eval_truth(cfg.replace(UNKNOWN_LABELS_TO_IGNORE=True), "4", info)
    agreeing = indexed("agreeing", ids, {**colours, 255: (0, 0, 0, 255)})  # eoseg's own label maps are so
    np.testing.assert_array_equal(eval_truth(agreeing, "4", info).read_rows(agreeing.palette, 0, info.height), ids)


def test_colour_eroded_truth_with_an_untagged_alpha_band_is_refused_before_scoring(tiny_cfg, tmp_path):
    """A fourth band of 0 and 255 not tagged alpha: its transparent pixels would be scored as the classes of their
    colours; refused with the line that tags it, as convert_gt.py refuses such a colour ground truth."""
    from eoseg.tiles import eval_truth

    source = tiny_cfg.tile_path("GT_ERODED_PATTERN", "4")
    colours = read_raster(source)
    alpha = np.full_like(colours[:1], 255)
    alpha[:, :, :20] = 0
    target = tmp_path / "eroded" / source.name
    copy_raster(source, target, np.concatenate([colours, alpha]), count=4)
    with rasterio.open(target, "r+") as dst:
        dst.colorinterp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.undefined]
    cfg = tiny_cfg.replace(GT_ERODED_PATTERN=str(tmp_path / "eroded" / Path(tiny_cfg.GT_ERODED_PATTERN).name))
    info = image_info(cfg, "4")
    with pytest.raises(EosegError, match=r"band 4 holds only 0 and 255.*gdal_edit.py -colorinterp_4 alpha FILE"):
        eval_truth(cfg, "4", info)
    with rasterio.open(target, "r+") as dst:
        dst.colorinterp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.alpha]
    scored = eval_truth(cfg, "4", info).read_rows(cfg.palette, 0, info.height)
    assert (scored[:, :20] == 255).all()


def test_training_images_naming_their_bands_in_another_order_are_refused(tiny_cfg, tmp_path):
    """Two training files naming the same bands at other positions would be read swapped; their names and GDAL
    scalings are recorded, each distinct one once."""
    plain = tiny_cfg.tile_path("IMAGE_PATTERN", "1")
    files = {}
    for name, descriptions in (("a", ["B8", "B4", "B3"]), ("b", ["B8", "B4", "B3"]), ("c", ["B4", "B3", "B8"]), ("d", [""] * 3)):
        files[name] = copy_raster(plain, tmp_path / f"{name}.tif")
        with rasterio.open(files[name], "r+") as dst:
            dst.descriptions = descriptions
    scaled = scaled_copy(plain, tmp_path / "scaled.tif", scale=0.5, offset=-10.0, dtype="uint16")
    with rasterio.open(scaled, "r+") as dst:
        dst.descriptions = ["B8", "B4", "B3"]
    infos = {name: raster_info(path) for name, path in {**files, "scaled": scaled}.items()}
    record = image_bands_record([infos[name] for name in ("d", "a", "b", "scaled")], [1, 2, 3])
    assert record == {"names": [[None, None, None], ["B8", "B4", "B3"]], "scalings": [[], [[0.5] * 3, [-10.0] * 3]],
                      "colours": [["red", "green", "blue"], ["gray", "undefined", "undefined"]]}
    with pytest.raises(EosegError, match=r"c.tif: its bands \[1, 2, 3\] \(BANDS\) are named \['B4', 'B3', 'B8'\] in the "
                                         r"file, but a.tif before it named them \['B8', 'B4', 'B3'\], which this file "
                                         r"holds as bands \[3, 1, 2\]: write this file with its bands in their order"):
        image_bands_record([infos["d"], infos["a"], infos["c"]], [1, 2, 3])
    assert image_bands_record([infos["a"], infos["b"]], [2, 3, 1])["names"] == [["B4", "B3", "B8"]]


def test_the_scaling_hint_gives_a_gdal_edit_line_only_for_one_scale_and_offset(tiny_cfg):
    from eoseg.tiles import scaling_hint

    info = raster_info(tiny_cfg.tile_path("IMAGE_PATTERN", "1"))  # no scale or offset
    one = scaling_hint(info, [3, 2, 1], {"scalings": [[[2.75e-05] * 3, [-0.2] * 3]]})
    assert "read through a GDAL scale 2.75e-05 and offset -0.2, this one through no scale or offset" in one
    assert "(gdal_edit.py -scale 2.75e-05 -offset -0.2 FILE)" in one
    mixed = scaling_hint(info, [3, 2, 1], {"scalings": [[[1e-4, 2e-4, 1e-4], [-0.1] * 3]]})
    assert "scale [0.0001, 0.0002, 0.0001] and offset -0.1" in mixed and "gdal_edit.py -scale 0.0001" not in mixed
    assert scaling_hint(info, [1, 2, 3], {"scalings": [[], [[1e-4] * 3, [0.0] * 3]]}) == ""  # one was read alike


def test_tile_inputs_name_each_tiles_files_and_a_file_of_all_tiles_once(tiny_cfg):
    """What no output may be written over: every tile's image, labels and heights; one polygon file for all tiles is
    listed (and its pattern read) once, under the first tile; the pattern a step writes is left out."""
    from eoseg.tiles import tile_inputs

    cfg = tiny_cfg.replace(LABEL_PATTERN="roofs.gpkg")
    inputs = tile_inputs(cfg, ["1", "2"])
    assert inputs[cfg.tile_path("IMAGE_PATTERN", "2").resolve()] == "tile 2's IMAGE_PATTERN file"
    assert inputs[(Path(cfg.DATA_ROOT) / "roofs.gpkg").resolve()] == "tile 1's LABEL_PATTERN file"
    assert cfg.tile_path("IMAGE_PATTERN", "1").resolve() not in tile_inputs(cfg, ["1"], made_here="IMAGE_PATTERN")


def test_display_bands_are_true_colour_then_false_colour_then_the_first_three():
    assert display_bands(["R", "G", "B", "IR"]) == [0, 1, 2]
    assert display_bands(["IR", "R", "G"]) == [0, 1, 2]  # Vaihingen's IRRG as it is
    assert display_bands(["B08", "B04", "B03", "B02"]) == [1, 2, 3]
    assert display_bands(["B4", "B3", "B2"]) == [0, 1, 2]  # Landsat 7 and 8 differ there: not read as colours
    assert display_bands(["red", "red", "green", "blue"]) == [0, 1, 2]  # a colour named twice is no answer
    assert display_bands(["pan"]) == [0]


def test_an_extra_source_covering_part_of_the_image_is_said(tiny_cfg, tmp_path, capsys):
    """An nDSM over 10% of a tile left 90% of it unlabelled, with exit 0 and the blame on the image (review)."""
    source = tiny_cfg.tile_path("NDSM_PATTERN", "1")
    heights = read_raster(source)
    with rasterio.open(source) as src:
        profile = {**src.profile, "width": heights.shape[2] // 10}
    part = tmp_path / "ndsm" / "1.tif"
    part.parent.mkdir()
    with rasterio.open(part, "w", **profile) as dst:
        dst.write(heights[:, :, : heights.shape[2] // 10])
    entry = {"pattern": str(tmp_path / "ndsm" / "{id}.tif"), "bands": [1], "band_names": ["nDSM"], "mean": [0.0],
             "std": [1.0]}
    tile_stack(tiny_cfg.replace(EXTRA_SOURCES=[entry]), "1")
    assert "1.tif (EXTRA_SOURCES[0] (nDSM)) covers 10% of the image top_mosaic_09cm_area1.tif: the pixels beyond it " \
           "hold no data" in capsys.readouterr().err
    tile_stack(tiny_cfg.replace(EXTRA_SOURCES=[{**entry, "pattern": str(source).replace("1.tif", "{id}.tif")}]), "1")
    assert "covers" not in capsys.readouterr().err
