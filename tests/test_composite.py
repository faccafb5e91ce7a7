"""eoseg.composite: the DSM / nDSM / NDVI composite of a tile, its scaling, nodata and refusals."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio

from eoseg.composite import image_band, scale_dsm, scale_ndsm, scale_ndvi, write_composite
from eoseg.errors import EosegError
from eoseg.io import raster_info, read_label, read_raster
from eoseg.sample import IMPERVIOUS, LOW_VEG
from eoseg.tiles import ndvi, tile_stack

from .test_tiles import copy_raster, scaled_copy


# ---------------------------------------------------------------- scaling each band to 0..255
def test_dsm_scaled_between_the_tiles_lowest_and_highest():
    dsm = np.array([[10.0, 15.0, 20.0, np.nan]], dtype=np.float32)
    np.testing.assert_array_equal(scale_dsm(dsm, 10.0, 20.0), [[0, 128, 255, 0]])  # NaN (no height) -> 0
    flat = scale_dsm(np.full((2, 3), 7.0), 7.0, 7.0)
    assert flat.dtype == np.uint8 and flat.shape == (2, 3) and not flat.any()


def test_ndsm_scaled_up_to_its_maximum_and_clipped():
    heights = np.array([-2.0, 0.0, 15.0, 30.0, 45.0])
    np.testing.assert_array_equal(scale_ndsm(heights, 30.0), [0, 0, 128, 255, 255])


def test_ndvi_minus_one_to_one_to_0_255():
    scaled = scale_ndvi(np.array([-1.0, 0.0, 1.0, 2.0]))
    assert scaled.dtype == np.uint8
    np.testing.assert_array_equal(scaled, [0, 128, 255, 255])


def test_red_and_nir_bands_are_found_by_name_or_refused(tiny_cfg):
    assert image_band(tiny_cfg, "NIR_BAND") == 1 and image_band(tiny_cfg, "RED_BAND") == 2  # BAND_NAMES IR, R, G
    assert image_band(tiny_cfg.replace(BANDS=[3, 2, 1]), "NIR_BAND") == 3  # the file's band, not the position
    with pytest.raises(EosegError, match=r"NIR_BAND 'NIR' is not among BAND_NAMES \['IR', 'R', 'G'\]"):
        image_band(tiny_cfg.replace(NIR_BAND="NIR"), "NIR_BAND")


def test_a_composite_never_overwrites_its_input(tiny_cfg):
    dsm = tiny_cfg.tile_path("DSM_PATTERN", "1")
    before = dsm.read_bytes()
    with pytest.raises(EosegError, match=r"dsm.*1.tif would overwrite tile 1's DSM_PATTERN file; choose another "
                                         r"COMPOSITE_PATTERN"):
        write_composite(tiny_cfg, "1", dsm)
    assert dsm.read_bytes() == before


# ---------------------------------------------------------------- composites of the sample
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


def test_infinite_heights_are_masked_and_untagged_fill_values_refused(tiny_cfg, tmp_path):
    """Infinity in a DSM is no height: masked as NaN is, instead of stretching the band to all 0. A fill value without
    a nodata tag (-9999) would squeeze every real height into a few grey levels: refused, naming the tag to set."""
    source = tiny_cfg.tile_path("DSM_PATTERN", "1")
    heights = read_raster(source).astype(np.float32)
    cfg = tiny_cfg.replace(DSM_PATTERN=str(tmp_path / "dsm" / "{id}.tif"),
                           COMPOSITE_PATTERN=str(tmp_path / "composite" / "{id}.tif"))
    with_infinity = heights.copy()
    with_infinity[0, :10, :10] = np.inf
    with_infinity[0, -10:, -10:] = -np.inf
    copy_raster(source, tmp_path / "dsm" / "1.tif", with_infinity)
    with rasterio.open(write_composite(cfg, "1")) as src:
        dsm, void = src.read(1), src.read_masks(1) == 0
    assert void[:10, :10].all() and void[-10:, -10:].all() and void.sum() == 200
    assert dsm[~void].min() == 0 and dsm[~void].max() == 255  # stretched over the finite heights
    with_fill = heights.copy()
    with_fill[0, :10, :10] = -9999
    copy_raster(source, tmp_path / "dsm" / "1.tif", with_fill)
    with pytest.raises(EosegError, match=r"1.tif: the DSM holds -9999, no height on Earth: .*gdal_edit.py -a_nodata -9999"):
        write_composite(cfg.replace(COMPOSITE_PATTERN=str(tmp_path / "filled" / "{id}.tif")), "1")
    assert not (tmp_path / "filled").exists() or not any((tmp_path / "filled").iterdir())


def test_an_ndsm_fill_value_is_refused_and_heights_in_another_unit_said(tiny_cfg, tmp_path, capsys):
    """An nDSM's untagged -9999 was clipped to 0 m, ground, with exit 0; one in centimetres drew 76% of its band at 255
    without a word (review)."""
    source = tiny_cfg.tile_path("NDSM_PATTERN", "1")
    heights = read_raster(source).astype(np.float32)
    cfg = tiny_cfg.replace(NDSM_PATTERN=str(tmp_path / "ndsm" / "{id}.tif"),
                           COMPOSITE_PATTERN=str(tmp_path / "composite" / "{id}.tif"))
    with_fill = heights.copy()
    with_fill[0, :10, :10] = -9999
    copy_raster(source, tmp_path / "ndsm" / "1.tif", with_fill)
    with pytest.raises(EosegError, match=r"1.tif: the nDSM holds -9999, no height on Earth: .*gdal_edit.py -a_nodata -9999"):
        write_composite(cfg, "1")
    copy_raster(source, tmp_path / "ndsm" / "1.tif", heights * 100 + 200)  # centimetres, every pixel over 2 m
    write_composite(cfg, "1")
    assert (f"of its heights lie over COMPOSITE_NDSM_MAX ({cfg.COMPOSITE_NDSM_MAX:g} m) and are all drawn as 255: "
            "heights in another unit than metres") in capsys.readouterr().err


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
