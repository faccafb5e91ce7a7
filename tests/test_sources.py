"""Inputs beyond the image's bands: extra rasters per tile, derived NDVI, the composite, the sample's nDSM."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import rasterio
import torch
from rasterio.enums import ColorInterp
from rasterio.transform import Affine
from rasterio.windows import Window

from eoseg.checkpoint import load_model, save_checkpoint
from eoseg.composite import write_composite
from eoseg.errors import EosegError
from eoseg.extract import extract_patches, read_manifest
from eoseg.infer import run_inference
from eoseg.io import raster_info, read_label, read_raster, write_raster
from eoseg.lmdb_store import LmdbPatches, create_lmdb
from eoseg.metadata import data_signature
from eoseg.models import model_from_config
from eoseg.normalization import Normalization
from eoseg.sample import BUILDING, IMPERVIOUS, LOW_VEG, generate_scene, generate_scene_with_ndsm
from eoseg.tiles import check_same_dtype, image_info, image_stack, ndvi, read_image, tile_stack, training_pixels
from eoseg.train import train

from .conftest import TINY_TILE_SIZE, as_arguments, run_script, tiny_overrides
from .test_cli import assert_one_line_error

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


# ---------------------------------------------------------------- finding the images
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
    with rasterio.open(named, "r+") as dst:
        dst.set_band_description(1, "swir")  # names that are not BAND_NAMES' say nothing about them
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
    from eoseg.tiles import image_stack

    source = tiny_cfg.tile_path("IMAGE_PATTERN", "1")
    grey = read_raster(source)[:1]
    paletted = copy_raster(source, tmp_path / "paletted.tif", grey, count=1, photometric="palette")
    with rasterio.open(paletted, "r+") as dst:
        dst.write_colormap(1, {value: (value, value, value, 255) for value in range(256)})
    cfg = tiny_cfg.replace(BANDS=[1], BAND_NAMES=["grey"], NORM_MEAN=[0.0], NORM_STD=[255.0])
    with pytest.raises(EosegError, match=r"paletted.tif: a paletted image, .*gdal_translate -expand rgb"):
        image_stack(cfg, raster_info(paletted))


def test_a_band_misread_as_to_transparency_is_pointed_out(tiny_cfg, tmp_path):
    """RGBA written without saying the 4th band is alpha (ExtraSamples unspecified): GDAL masks nothing, so
    the transparent pixels would be labelled as data; RGB + near-infrared tagged alpha: its dark pixels would be
    nodata. check_data and inference say so."""
    from eoseg.datacheck import check_dataset
    from eoseg.tiles import alpha_band_problem

    source = tiny_cfg.tile_path("IMAGE_PATTERN", "1")
    pixels = read_raster(source)
    alpha = np.full_like(pixels[:1], 255)
    alpha[:, :, :20] = 0
    rgba = copy_raster(source, tmp_path / "rgba" / "1.tif", np.concatenate([pixels, alpha]), count=4)
    with rasterio.open(rgba, "r+") as dst:  # ExtraSamples "unspecified"
        dst.colorinterp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.undefined]
    info = raster_info(rgba)
    assert alpha_band_problem(info, [1, 2, 3]) == (f"{rgba}: band 4 holds only 0 and 255, as an alpha band does, but is not "
                                               "tagged as one: if it is transparency, its empty pixels are labelled as "
                                               "data; tag it (gdal_edit.py -colorinterp_4 alpha FILE)")
    cfg = tiny_cfg.replace(DATA_ROOT=str(tmp_path / "rgba"), IMAGE_PATTERN="{id}.tif", TRAIN_IDS=["1"], TEST_IDS=[])
    assert alpha_band_problem(info, [1, 2, 3]) in check_dataset(cfg).notes  # a mask band of data would look alike
    # tagged, GDAL reads it as the mask; a band of data (near-infrared) holds other values
    with rasterio.open(rgba, "r+") as dst:
        dst.colorinterp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.alpha]
    assert alpha_band_problem(raster_info(rgba), [1, 2, 3]) == ""
    nir = copy_raster(source, tmp_path / "rgbn" / "1.tif", np.concatenate([pixels, pixels[:1]]), count=4)
    with rasterio.open(nir, "r+") as dst:
        dst.colorinterp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.undefined]
    assert raster_info(nir).colorinterp[3] == "undefined" and alpha_band_problem(raster_info(nir), [1, 2, 3]) == ""
    # near-infrared tagged alpha (GDAL's default for a fourth band of an RGB file): its dark pixels would be nodata
    with rasterio.open(nir, "r+") as dst:
        dst.colorinterp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.alpha]
    assert alpha_band_problem(raster_info(nir), [1, 2, 3]).startswith(
        f"{nir}: band 4 is tagged as its alpha band, so GDAL reads the pixels where it is 0 as nodata, but ")
    assert "retag it (gdal_edit.py -colorinterp_4 undefined FILE)" in alpha_band_problem(raster_info(nir), [1, 2, 3])


# ---------------------------------------------------------------- NDVI
def test_ndvi_values():
    red = np.array([0, 10, 30, 200, 50], dtype=np.uint8)
    nir = np.array([0, 30, 10, 200, 0], dtype=np.uint8)
    index = ndvi(red, nir)
    assert index.dtype == np.float32
    np.testing.assert_allclose(index, [0.0, 0.5, -0.5, 0.0, -1.0])  # 0 where the sum is 0; no uint8 overflow


# ---------------------------------------------------------------- config
def test_stacked_bands_normalisation_and_signature(tiny_cfg):
    cfg = tiny_cfg.replace(EXTRA_SOURCES=[NDSM, {"derived": "ndvi"}])
    assert cfg.num_bands == 5 and cfg.BAND_NAMES == ["IR", "R", "G"]
    assert cfg.stacked_band_names == ["IR", "R", "G", "nDSM", "NDVI"]
    norm = Normalization.from_config(cfg)
    assert norm.mean == (0.0, 0.0, 0.0, 0.0, 0.0) and norm.std == (255.0, 255.0, 255.0, 10.0, 1.0)
    assert data_signature(cfg)["band_names"] == cfg.stacked_band_names
    assert model_from_config(cfg.replace(MODEL_WIDTH=0.0625)).in_channels == 5


@pytest.mark.parametrize("entry, message", [
    ("ndsm", "must be a dict"),
    ({**NDSM, "band": [1]}, "unknown key 'band' for a raster source; did you mean 'bands'?"),
    ({"pattern": "x{id}.tif", "bands": [1]}, "missing 'band_names', 'mean', 'std'"),
    ({**NDSM, "bands": [1, 2]}, "'band_names' has 1 entries but the source gives 2 band(s)"),
    ({**NDSM, "mean": [0.0, 1.0]}, "'mean' has 2 entries"),
    ({**NDSM, "std": [0.0]}, "'std' must not contain 0"),
    ({**NDSM, "bands": [0]}, "1-based band numbers"),
    ({**NDSM, "band_names": ["R"]}, "'R' repeats"),
    ({"derived": "evi"}, "unknown derived band 'evi'"),
    ({"derived": "ndvi", "red": "B"}, "the red band 'B'"),
    ({"derived": "ndvi", "pattern": "x"}, "unknown key 'pattern' for a derived source"),
])
def test_bad_extra_sources_are_one_line_errors(tiny_cfg, entry, message):
    with pytest.raises(EosegError) as caught:
        tiny_cfg.replace(EXTRA_SOURCES=[entry])
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_ndvi_needs_nir_among_the_bands(tiny_cfg):
    with pytest.raises(EosegError, match="the nir band 'IR'"):
        tiny_cfg.replace(BAND_NAMES=["R", "G", "B"], EXTRA_SOURCES=[{"derived": "ndvi"}])
    # the near-infrared may come from an extra raster
    nir = {"pattern": "top/top_mosaic_09cm_area{id}.tif", "bands": [1], "band_names": ["NIR"], "mean": [0.0], "std": [255.0]}
    cfg = tiny_cfg.replace(BAND_NAMES=["R", "G", "B"], EXTRA_SOURCES=[nir, {"derived": "ndvi", "nir": "NIR"}])
    assert cfg.num_bands == 5


# ---------------------------------------------------------------- stacking
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
    clean, safe_labels = training_pixels(cfg, stack, pixels, labels)
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
    ndsm[0, :10] = -9999
    copy_raster(source, tmp_path / "ndsm1.tif", ndsm, nodata=-9999)
    stack = tile_stack(tiny_cfg.replace(EXTRA_SOURCES=[{**NDSM, "pattern": str(tmp_path / "ndsm{id}.tif")}]), "1")
    pixels = stack.read().reshape(4, -1).astype(np.float64)
    valid = stack.valid_mask(stack.read()).ravel()
    whole = stack.sample_statistics(size=max(stack.info.height, stack.info.width))  # one window: the whole tile
    assert whole.count == valid.sum() < valid.size
    assert whole.mean == pytest.approx(pixels[:, valid].mean(axis=1)) and whole.std == pytest.approx(pixels[:, valid].std(axis=1))
    corners = stack.sample_statistics(side=2, size=16)  # the four corner windows
    windows = [Window(col, row, 16, 16) for row in (0, stack.info.height - 16) for col in (0, stack.info.width - 16)]
    expected = np.concatenate([stack.read(w)[:, stack.valid_mask(stack.read(w), w)] for w in windows], axis=1)
    assert corners.count == expected.shape[1] == 2 * 16 * 16 + 2 * 16 * 6  # the top two reach into the nodata rows
    assert corners.mean == pytest.approx(expected.astype(np.float64).mean(axis=1))


def test_nodata_values_do_not_reach_the_network_in_inference(tiny_cfg, tmp_path):
    """An nDSM hole declared nodata gives the same class probabilities around it whatever its nodata value:
    the value never reaches the network (every band of the hole takes its normalisation mean)."""
    source = tiny_cfg.tile_path("NDSM_PATTERN", "4")
    hole = (slice(None), slice(60, 80), slice(60, 80))
    labels, probabilities, weights = {}, {}, None
    for nodata in (-9999.0, -32768.0):
        ndsm = read_raster(source)
        ndsm[hole] = nodata
        copy_raster(source, tmp_path / str(nodata) / "ndsm4.tif", ndsm, nodata=nodata)
        cfg = tiny_cfg.replace(EXTRA_SOURCES=[{**NDSM, "pattern": str(tmp_path / str(nodata) / "ndsm{id}.tif")}],
                               WRITE_PREVIEW=False, WRITE_COLOR=False, WRITE_PROBABILITIES=True)
        if weights is None:
            torch.manual_seed(0)
            model = model_from_config(cfg)
            with torch.no_grad():  # an untrained network's scores hardly vary: scale them so that probabilities do
                model.conv1_1_D.weight.mul_(30)
                model.conv1_1_D.bias.mul_(30)
            weights = save_checkpoint(tmp_path / "w.pt", cfg, model, iteration=0)
        summary = run_inference(cfg, weights, tmp_path / f"out{nodata}", ["4"], progress=False)
        labels[nodata] = read_raster(summary.images[0].outputs["labels"])[0]
        probabilities[nodata] = read_raster(summary.images[0].outputs["probabilities"])
    assert (labels[-9999.0][hole[1:]] == tiny_cfg.IGNORE_LABEL).all()
    np.testing.assert_array_equal(labels[-9999.0], labels[-32768.0])
    np.testing.assert_array_equal(probabilities[-9999.0], probabilities[-32768.0])


# ---------------------------------------------------------------- sample nDSM
def test_sample_ndsm_heights_above_ground():
    image, labels, dsm, ndsm = generate_scene_with_ndsm((256, 256), np.random.default_rng([0, 1]))
    for a, b in zip((image, labels, dsm), generate_scene((256, 256), np.random.default_rng([0, 1]))):
        np.testing.assert_array_equal(a, b)  # the nDSM draws nothing: the rest is as before
    assert ndsm.dtype == np.float32 and ndsm.shape == labels.shape and ndsm.min() >= 0
    assert np.median(ndsm[labels == BUILDING]) > 3
    for ground in (IMPERVIOUS, LOW_VEG):
        assert np.median(ndsm[labels == ground]) < 0.2
    # the DSM is the terrain plus the nDSM, up to its noise
    assert np.abs(np.diff(dsm - ndsm, axis=1)).mean() < 0.1


def test_sample_writes_ndsm_beside_the_dsm(tiny_cfg):
    path = tiny_cfg.tile_path("NDSM_PATTERN", "1")
    info, dsm_info = raster_info(path), raster_info(tiny_cfg.tile_path("DSM_PATTERN", "1"))
    assert info.dtype == "float32" and info.crs == dsm_info.crs and info.transform == dsm_info.transform
    assert read_raster(path).min() >= 0


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
    with pytest.raises(EosegError, match=r"image is float32 \(its stored uint16 values scaled by the file's GDAL "
                                         r"scale/offset\) but the tiles before it are uint8"):
        check_same_dtype(pixels.dtype, raster_info(scaled), "uint8", [1, 2, 3])
    stored = read_raster(scaled)
    stored[:, :5] = 0
    copy_raster(scaled, tmp_path / "zeros" / "1.tif", stored)
    with rasterio.open(tmp_path / "zeros" / "1.tif", "r+") as dst:
        dst.scales, dst.offsets = [0.5] * 3, [-10.0] * 3
    zeros = tile_stack(cfg.replace(DATA_ROOT=str(tmp_path / "zeros"), NODATA_ZERO=True), "1")
    with zeros:
        valid = zeros.valid_mask(zeros.read())
    assert not valid[:5].any() and valid[5:].all()


def test_composite_of_heights_stored_in_centimetres(tiny_cfg, tmp_path):
    """A DSM and nDSM stored as int16 centimetres (scale 0.01) give the composite of their heights in metres."""
    cm = tiny_cfg.replace(DSM_PATTERN=str(tmp_path / "dsm" / "{id}.tif"), NDSM_PATTERN=str(tmp_path / "ndsm" / "{id}.tif"))
    for name in ("DSM_PATTERN", "NDSM_PATTERN"):
        source = tiny_cfg.tile_path(name, "1")
        heights = read_raster(source)
        copy_raster(source, tmp_path / "metres" / name / "1.tif", np.round(heights, 2).astype(np.float32))
        scaled_copy(tmp_path / "metres" / name / "1.tif", cm.tile_path(name, "1"), scale=0.01, offset=0.0, dtype="int16")
    metres = tiny_cfg.replace(DSM_PATTERN=str(tmp_path / "metres" / "DSM_PATTERN" / "{id}.tif"),
                              NDSM_PATTERN=str(tmp_path / "metres" / "NDSM_PATTERN" / "{id}.tif"))
    expected = read_raster(write_composite(metres, "1", tmp_path / "from_metres.tif"))
    np.testing.assert_array_equal(read_raster(write_composite(cm, "1", tmp_path / "from_cm.tif")), expected)


# ---------------------------------------------------------------- composite
def test_composite_of_the_sample(tiny_cfg):
    out = write_composite(tiny_cfg, "1")
    assert out == tiny_cfg.tile_path("COMPOSITE_PATTERN", "1")
    info, image_info = raster_info(out), raster_info(tiny_cfg.tile_path("IMAGE_PATTERN", "1"))
    assert info.count == 3 and info.dtype == "uint8"
    assert info.crs == image_info.crs and info.transform == image_info.transform
    composite = read_raster(out)
    dsm = read_raster(tiny_cfg.tile_path("DSM_PATTERN", "1"))[0]
    ndsm = read_raster(tiny_cfg.tile_path("NDSM_PATTERN", "1"))[0]
    image = read_raster(tiny_cfg.tile_path("IMAGE_PATTERN", "1"))
    assert composite[0].min() == 0 and composite[0].max() == 255  # min-max per tile
    assert composite[0].flat[dsm.argmin()] == 0 and composite[0].flat[dsm.argmax()] == 255
    np.testing.assert_array_equal(composite[1], np.round(np.clip(ndsm / 30.0, 0, 1) * 255).astype(np.uint8))
    expected_ndvi = np.round((ndvi(image[1], image[0]) + 1) / 2 * 255).astype(np.uint8)
    np.testing.assert_array_equal(composite[2], expected_ndvi)
    labels = read_label(tiny_cfg.tile_path("LABEL_PATTERN", "1"))
    assert composite[2][labels == LOW_VEG].mean() > composite[2][labels == IMPERVIOUS].mean() + 20  # vegetation is green
    # small row blocks give the same file contents
    again = write_composite(tiny_cfg.replace(INFER_BLOCK_ROWS=7), "1", tiny_cfg.PATCHES_DIR + "/c.tif")
    np.testing.assert_array_equal(read_raster(again), composite)


def test_composite_masks_the_pixels_without_heights(tiny_cfg, tmp_path):
    """A void of the nDSM (nodata) is masked in the composite: stacked, it leaves those pixels unlabelled as the
    nDSM itself would, instead of reading as 0 m above the ground."""
    source = tiny_cfg.tile_path("NDSM_PATTERN", "1")
    ndsm = read_raster(source)
    ndsm[0, 40:80, 50:90] = -9999
    copy_raster(source, tmp_path / "ndsm" / "1.tif", ndsm, nodata=-9999)
    cfg = tiny_cfg.replace(NDSM_PATTERN=str(tmp_path / "ndsm" / "{id}.tif"),
                           COMPOSITE_PATTERN=str(tmp_path / "composite" / "{id}.tif"))
    out = write_composite(cfg, "1")
    with rasterio.open(out) as src:
        void = src.read_masks(1) == 0
    expected = np.zeros_like(void)
    expected[40:80, 50:90] = True
    np.testing.assert_array_equal(void, expected)
    stacked = cfg.replace(EXTRA_SOURCES=[{"pattern": str(tmp_path / "composite" / "{id}.tif"), "bands": [1, 2, 3],
                                          "band_names": ["DSM", "nDSM", "NDVI"], "mean": [0.0] * 3, "std": [255.0] * 3}])
    stack = tile_stack(stacked, "1")
    with stack:
        np.testing.assert_array_equal(stack.valid_mask(stack.read()), ~expected)


def test_composite_script(tmp_path, sample_root):
    args = as_arguments({**tiny_overrides(tmp_path), "DATA_ROOT": str(sample_root / "data"),
                         "COMPOSITE_PATTERN": str(tmp_path / "composite" / "c{id}.tif")})
    result = run_script("make_composite.py", "--ids", "2", "4", *args)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "composite" / "c2.tif").is_file() and (tmp_path / "composite" / "c4.tif").is_file()
    assert json.loads((tmp_path / "composite" / "config.make_composite.json").read_text())["config"]["COMPOSITE_NDSM_MAX"] == 30.0
    assert_one_line_error(run_script("make_composite.py", "--ids", "2", *args, "NDSM_PATTERN="), "no nDSM configured")
    assert_one_line_error(run_script("make_composite.py", "--ids", "2", *args, "NIR_BAND=NIR"), "NIR_BAND 'NIR'")


def test_a_composite_that_cannot_be_written_is_not_blamed_on_its_inputs(tiny_cfg, tmp_path, monkeypatch):
    """The output is written while the inputs are open for reading: its error is the output's."""
    import eoseg.io

    open_for_real = rasterio.open

    def refuse_writing(path, mode="r", **kwargs):
        if mode == "w":
            raise rasterio.errors.RasterioIOError(f"Attempt to create new tiff file '{path}' failed: Permission denied")
        return open_for_real(path, mode, **kwargs)

    monkeypatch.setattr(eoseg.io.rasterio, "open", refuse_writing)
    out = tmp_path / "composite" / "1.tif"
    with pytest.raises(EosegError) as refused:
        write_composite(tiny_cfg, "1", out)
    message = str(refused.value)
    assert message.startswith(f"{out}: cannot write this output") and "Permission denied" in message
    assert "nDSM" not in message and "DSM" not in message and ".tmp-" not in message
    assert not any((tmp_path / "composite").iterdir())


# ---------------------------------------------------------------- the pipeline with an nDSM
def test_extract_lmdb_train_and_infer_with_an_ndsm(tiny_cfg, tmp_path):
    cfg = tiny_cfg.replace(EXTRA_SOURCES=[NDSM], MODEL_WIDTH=0.0625, ITERATIONS=2, SNAPSHOT_EVERY=2, VAL_EVERY=2,
                           FLIPS=False, TRAIN_IDS=["1"])
    manifest = extract_patches(cfg, cfg.PATCHES_DIR, progress=False)
    assert manifest["dtype"] == "float32" and manifest["signature"]["band_names"] == ["IR", "R", "G", "nDSM"]
    _, rows = read_manifest(cfg.PATCHES_DIR)
    patch = np.load(f"{cfg.PATCHES_DIR}/{rows[0]['image']}")
    r, c = int(rows[0]["row"]), int(rows[0]["col"])
    np.testing.assert_array_equal(patch[3], read_raster(cfg.tile_path("NDSM_PATTERN", rows[0]["tile"]))[0, r:r + 64, c:c + 64])
    create_lmdb(cfg, cfg.PATCHES_DIR, cfg.LMDB_DIR, progress=False)
    db = LmdbPatches(f"{cfg.LMDB_DIR}/train.lmdb", expected_signature=data_signature(cfg))
    assert db[0][0].shape == (4, 64, 64) and db[0][0].dtype == np.float32
    weights = train(cfg, progress=False)  # validation reads the stacked test tile too
    model, _ = load_model(weights, cfg)
    assert model.in_channels == 4

    args = as_arguments({**tiny_overrides(tmp_path), "DATA_ROOT": tiny_cfg.DATA_ROOT, "EXTRA_SOURCES": [NDSM],
                         "MODEL_WIDTH": 0.0625})
    result = run_script("inference.py", "--tiles", "4", "--weights", str(weights), *args)
    assert result.returncode == 0, result.stderr
    labels = read_raster(tmp_path / "inference" / "top_mosaic_09cm_area4_labels.tif")
    assert labels.shape == (1, TINY_TILE_SIZE, TINY_TILE_SIZE) and labels.max() < cfg.num_classes
    assert (tmp_path / "inference" / "top_mosaic_09cm_area4_preview.png").stat().st_size > 0
    record = json.loads((tmp_path / "inference" / "top_mosaic_09cm_area4_record.json").read_text())
    assert record["made_with"]["sources"][0]["path"].endswith("ndsm_09cm_matching_area4.tif")

    # image files have no tile id to find their nDSM by: one clear line
    image = tiny_cfg.tile_path("IMAGE_PATTERN", "4")
    assert_one_line_error(run_script("inference.py", "--images", str(image), "--weights", str(weights), *args),
                          "EXTRA_SOURCES", "--tiles", "select them with BANDS")
    # a 3-band config refuses the 4-band weights
    with pytest.raises(EosegError, match="4 input bands, but the config has 3"):
        load_model(weights, tiny_cfg)


def test_derived_ndvi_labels_image_files(tiny_cfg, tmp_path):
    cfg = tiny_cfg.replace(EXTRA_SOURCES=[{"derived": "ndvi"}], MODEL_WIDTH=0.0625, WRITE_PREVIEW=False)
    weights = save_checkpoint(tmp_path / "ndvi.pt", cfg, model_from_config(cfg), 0)
    summary = run_inference(cfg, weights, tmp_path / "out", image_paths=[cfg.tile_path("IMAGE_PATTERN", "4")],
                            progress=False)
    assert read_raster(summary.images[0].outputs["labels"]).shape == (1, TINY_TILE_SIZE, TINY_TILE_SIZE)


def test_five_band_weights_refused_by_a_three_band_config(tiny_cfg, tmp_path):
    five = tiny_cfg.replace(EXTRA_SOURCES=[NDSM, {"derived": "ndvi"}], MODEL_WIDTH=0.0625)
    weights = save_checkpoint(tmp_path / "five.pt", five, model_from_config(five), 0)
    three = tiny_cfg.replace(MODEL_WIDTH=0.0625)
    with pytest.raises(EosegError, match="trained for 5 input bands, but the config has 3"):
        load_model(weights, three)
    with pytest.raises(EosegError, match="band_names"):  # same count, other bands
        other = three.replace(EXTRA_SOURCES=[{**NDSM, "band_names": ["height"]}, {"derived": "ndvi"}])
        load_model(weights, other)
    with pytest.raises(EosegError, match="trained for 5 input bands"):
        run_inference(three, weights, tmp_path / "out", ["4"], progress=False)


def test_tiles_without_eroded_ground_truth_are_said_to_be_scored_on_the_labels(tiny_cfg, tmp_path):
    """A typo in GT_ERODED_PATTERN, or a tile missing from the eroded set, scores on the full labels: said."""
    from eoseg.datacheck import check_dataset
    from eoseg.tiles import eroded_fallback

    assert eroded_fallback(tiny_cfg, ["4"]) is None
    typo = tiny_cfg.replace(GT_ERODED_PATTERN=tiny_cfg.GT_ERODED_PATTERN.replace("_noBoundary", "_no_Boundary"))
    note = eroded_fallback(typo, ["4"])
    assert note.startswith("GT_ERODED_PATTERN finds no eroded ground truth for tiles 4 (every one of them), e.g. "
                           "nothing at ") and "scored against the full labels (LABEL_PATTERN)" in note
    assert note in check_dataset(typo).problems
    assert eroded_fallback(tiny_cfg.replace(GT_ERODED_PATTERN=""), ["4"]) is None  # no eroded set: nothing to say
