"""Outputs that name their classes: label GeoTIFFs (category names, attribute table), label PNG
palettes, probability and composite band names, previews with a legend, polygons only on a map."""

from __future__ import annotations

import ctypes
import glob
import os

import numpy as np
import pytest
import rasterio
import torch

from eoseg import plots
from eoseg.checkpoint import save_checkpoint
from eoseg.composite import write_composite
from eoseg.infer import run_inference
from eoseg.models import model_from_config

from .conftest import make_tiny_config, run_script
from .test_gis import scene, write_labels
from .test_infer import random_image, write_geotiff
from .test_cli import assert_one_line_error


def gdal_library():
    """The GDAL that rasterio bundles, called directly: what gdalinfo and QGIS read, side files included."""
    found = glob.glob(os.path.join(os.path.dirname(rasterio.__file__), os.pardir, "rasterio.libs", "libgdal*.so*"))
    if not found:
        pytest.skip("rasterio's bundled libgdal is not at rasterio.libs/ (a wheel built otherwise)")
    lib = ctypes.CDLL(found[0])
    lib.GDALAllRegister()
    lib.GDALOpen.restype, lib.GDALOpen.argtypes = ctypes.c_void_p, [ctypes.c_char_p, ctypes.c_int]
    lib.GDALClose.argtypes = [ctypes.c_void_p]
    lib.GDALGetRasterBand.restype, lib.GDALGetRasterBand.argtypes = ctypes.c_void_p, [ctypes.c_void_p, ctypes.c_int]
    lib.GDALGetDefaultRAT.restype, lib.GDALGetDefaultRAT.argtypes = ctypes.c_void_p, [ctypes.c_void_p]
    lib.GDALRATGetRowCount.argtypes = [ctypes.c_void_p]
    lib.GDALRATGetColumnCount.argtypes = [ctypes.c_void_p]
    lib.GDALRATGetNameOfCol.restype, lib.GDALRATGetNameOfCol.argtypes = ctypes.c_char_p, [ctypes.c_void_p, ctypes.c_int]
    lib.GDALRATGetValueAsString.restype = ctypes.c_char_p
    lib.GDALRATGetValueAsString.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
    lib.GDALGetRasterCategoryNames.restype = ctypes.POINTER(ctypes.c_char_p)
    lib.GDALGetRasterCategoryNames.argtypes = [ctypes.c_void_p]
    return lib


def gdal_classes(path) -> tuple[list[str], list[dict]]:
    """(category names, attribute table rows) of band 1 as GDAL reports them."""
    lib = gdal_library()
    dataset = lib.GDALOpen(str(path).encode(), 0)
    assert dataset, f"GDAL cannot open {path}"
    try:
        band = lib.GDALGetRasterBand(dataset, 1)
        table = lib.GDALGetDefaultRAT(band)  # also has the GeoTIFF driver load the side file
        rows = []
        if table:
            columns = [lib.GDALRATGetNameOfCol(table, c).decode() for c in range(lib.GDALRATGetColumnCount(table))]
            rows = [{name: lib.GDALRATGetValueAsString(table, r, c).decode() for c, name in enumerate(columns)}
                    for r in range(lib.GDALRATGetRowCount(table))]
        names, categories = lib.GDALGetRasterCategoryNames(band), []
        while names and names[len(categories)] is not None:
            categories.append(names[len(categories)].decode())
        return categories, rows
    finally:
        lib.GDALClose(dataset)


@pytest.fixture
def setup(tmp_path):
    cfg = make_tiny_config(tmp_path, WRITE_PROBABILITIES=True)
    torch.manual_seed(0)
    weights = save_checkpoint(tmp_path / "w.pt", cfg, model_from_config(cfg), iteration=0)
    return cfg, weights


def test_label_geotiff_names_its_classes_for_gdal_and_rasterio(setup, tmp_path):
    cfg, weights = setup
    source = write_geotiff(tmp_path / "scene.tif", random_image())
    outputs = run_inference(cfg.replace(WRITE_COG=True), weights, tmp_path / "out", image_paths=[source],
                            progress=False).images[0].outputs
    categories, rows = gdal_classes(outputs["labels"])
    assert categories == cfg.CLASS_NAMES
    assert [(int(r["Value"]), r["Class"]) for r in rows] == list(enumerate(cfg.CLASS_NAMES))
    assert [[int(r[c]) for c in ("Red", "Green", "Blue")] for r in rows] == [list(c) for c in cfg.PALETTE]
    with rasterio.open(outputs["labels"]) as labels:
        assert labels.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"  # the names survive the conversion
        assert labels.colormap(1)[1] == (*cfg.PALETTE[1], 255)
        assert labels.tags(1)["CLASS_NAMES"] == '["' + '", "'.join(cfg.CLASS_NAMES) + '"]'
    with rasterio.open(outputs["probabilities"]) as probabilities:
        assert list(probabilities.descriptions) == cfg.CLASS_NAMES
    assert categories != [] and gdal_classes(outputs["color"]) == ([], [])  # the check itself can fail


def test_label_png_carries_the_palette(setup, tmp_path):
    cfg, weights = setup
    source = tmp_path / "plain.png"
    with rasterio.open(source, "w", driver="PNG", width=90, height=70, count=3, dtype="uint8") as png:
        png.write(random_image(70, 90))
    outputs = run_inference(cfg.replace(WRITE_PROBABILITIES=False), weights, tmp_path / "out", image_paths=[source],
                            progress=False).images[0].outputs
    assert outputs["labels"].suffix == ".png"
    with rasterio.open(outputs["labels"]) as labels:
        palette = labels.colormap(1)
        values = labels.read(1)
    assert [palette[i][:3] for i in range(cfg.num_classes)] == [tuple(c) for c in cfg.PALETTE]
    assert values.max() < cfg.num_classes  # still class ids, drawn in their colours by any viewer
    assert not list((tmp_path / "out").glob("*.aux.xml"))


def test_preview_has_a_legend_of_the_classes_present_and_nodata_apart(setup, tmp_path, monkeypatch):
    cfg, weights = setup
    image = random_image()
    image[:, 20:60, 30:90] = 0
    source = write_geotiff(tmp_path / "in.tif", image, nodata=0)
    drawn = {}
    original = plots.plot_prediction

    def capture(image, prediction_rgb, path, truth_rgb=None, errors=None, title="", legend=None):
        drawn.update(prediction_rgb=prediction_rgb, legend=legend)
        return original(image, prediction_rgb, path, truth_rgb, errors, title, legend)

    monkeypatch.setattr(plots, "plot_prediction", capture)
    result = run_inference(cfg, weights, tmp_path / "out", image_paths=[source], progress=False).images[0]
    assert result.outputs["preview"].stat().st_size > 0
    with rasterio.open(result.outputs["labels"]) as labels:
        present = sorted(set(np.unique(labels.read(1)).tolist()) - {cfg.IGNORE_LABEL})
    names = [name for name, _ in drawn["legend"]]
    assert names == [cfg.CLASS_NAMES[i] for i in present] + ["no data"]
    nodata_rgb = drawn["legend"][-1][1]
    assert all(np.abs(np.array(nodata_rgb) - np.array(c)).sum() >= 128 for c in cfg.PALETTE + [cfg.IGNORE_COLOR])
    assert (drawn["prediction_rgb"][20:60, 30:90] == nodata_rgb).all()  # the preview is full size here (< 1024 px)


def test_nodata_colour_keeps_away_from_every_class_colour():
    magenta_taken = np.array([[255, 0, 255], [0, 0, 0], [255, 255, 255]])
    colour = plots.nodata_color(magenta_taken)
    assert colour != (255, 0, 255) and np.abs(magenta_taken - np.array(colour)).sum(axis=1).min() >= 128


def test_composite_bands_are_named_after_their_sources(tiny_cfg):
    out = write_composite(tiny_cfg, "1")
    with rasterio.open(out) as composite:
        dsm, ndsm, index = composite.descriptions
    assert dsm.startswith("DSM of ") and ndsm.startswith("nDSM of ") and index.startswith("NDVI of ")
    assert tiny_cfg.tile_path("DSM_PATTERN", "1").name in dsm


def test_polygonize_refuses_a_label_map_without_crs_unless_told(tmp_path):
    source = tmp_path / "labels.png"
    with rasterio.open(source, "w", driver="PNG", width=48, height=36, count=1, dtype="uint8") as png:
        png.write(scene(height=36, width=48)[None])
    out = tmp_path / "classes.gpkg"
    assert_one_line_error(run_script("polygonize.py", str(source), "--out", str(out)),
                          "is not georeferenced (no CRS): its polygons would be in pixel coordinates")
    assert not out.exists()
    result = run_script("polygonize.py", str(source), "--out", str(out), "--pixel-coordinates")
    assert result.returncode == 0, result.stderr
    assert "no CRS: coordinates are pixel columns and rows" in result.stdout and out.is_file()
    georeferenced = run_script("polygonize.py", str(write_labels(tmp_path / "g.tif", scene())), "--out", str(out), "--force")
    assert georeferenced.returncode == 0 and "CRS EPSG:32632" in georeferenced.stdout
