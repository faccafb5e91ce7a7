"""The pipeline on real data from ../shared (skipped where it is absent).

Real ISPRS Potsdam tiles (downscaled, colour ground truth), real georeferenced rasters
in other CRSs, band counts and data types.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import rasterio
import rasterio.features
from PIL import Image

from eoseg.checkpoint import save_checkpoint
from eoseg.config import load_config
from eoseg.convert import color_file_to_labels
from eoseg.extract import extract_patches
from eoseg.grid import mean_pixel_size_m
from eoseg.infer import run_inference
from eoseg.io import raster_info, read_label, read_raster
from eoseg.lmdb_store import create_lmdb
from eoseg.models import model_from_config
from eoseg.palette import Palette
from eoseg.tiles import read_labels
from eoseg.train import train

from .conftest import ROOT, SHARED, TINY_SETTINGS, as_arguments, run_script

POTSDAM = SHARED / "isprs_real" / "potsdam_downscaled256"
GEOTIFFS = SHARED / "geotiff_real"
pytestmark = pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data is not present")


def test_potsdam_tiles_through_the_whole_pipeline(tmp_path):
    cfg = load_config(overrides=as_arguments({
        **TINY_SETTINGS,
        "DATASET": "potsdam",
        "DATA_ROOT": str(POTSDAM),
        "IMAGE_PATTERN": "top_potsdam_{id}_RGB.png",
        "GT_COLOR_PATTERN": "top_potsdam_{id}_label_color.png",
        "GT_ERODED_PATTERN": "",
        "LABEL_PATTERN": str(tmp_path / "labels" / "{id}.png"),
        "TRAIN_IDS": ["3_11"], "TEST_IDS": ["7_7"],
        "PATCHES_DIR": str(tmp_path / "patches"), "LMDB_DIR": str(tmp_path / "lmdb"),
        "TRAIN_DIR": str(tmp_path / "train"), "MODEL_FILE": str(tmp_path / "model.pt"),
        "INFER_DIR": str(tmp_path / "inference"),
    }))
    for tile_id in ("3_11", "7_7"):
        source = cfg.tile_path("GT_COLOR_PATTERN", tile_id)
        target = color_file_to_labels(source, cfg.tile_path("LABEL_PATTERN", tile_id), cfg.palette)
        labels = read_label(target)
        # exactly the six ISPRS colours: nothing ignored, and the round trip is exact
        assert labels.max() < 6
        assert np.array_equal(np.moveaxis(cfg.palette.to_color(labels), -1, 0), read_raster(source))
    extract_patches(cfg, cfg.PATCHES_DIR, progress=False)
    create_lmdb(cfg, cfg.PATCHES_DIR, cfg.LMDB_DIR, progress=False)
    weights = train(cfg, progress=False)
    summary = run_inference(cfg, weights, cfg.INFER_DIR, ["7_7"], progress=False)
    (result,) = summary.images
    assert result.outputs["labels"].suffix == ".png"  # the input is not georeferenced
    assert read_raster(result.outputs["labels"]).shape == (1, 256, 256)
    assert summary.metrics["pixels"] == 256 * 256


def _untrained_weights(cfg, path, pixel_size_m=None):
    return save_checkpoint(path, cfg, model_from_config(cfg), iteration=0, trained_on={"pixel_size_m": pixel_size_m})


@pytest.mark.parametrize("name,bands,norm_std,epsg,pixel_size", [
    ("rmnp-rgb.tif", [1, 2, 3], [255.0] * 3, 4326, 147.1),  # 3-band uint8, geographic CRS: 127 x 167 m at 40 N
    ("sample_geotiff.tif", [1], [1000.0], 32616, 0.5),       # 1-band uint16 panchromatic, UTM
])
@pytest.mark.parametrize("trained_factor", [None, 2.0])  # weights that record no pixel size, or twice the image's
def test_georeferenced_rasters_keep_crs_and_transform(tmp_path, capsys, name, bands, norm_std, epsg, pixel_size,
                                                      trained_factor):
    cfg = load_config(overrides=as_arguments({
        **TINY_SETTINGS, "BANDS": bands, "BAND_NAMES": [f"b{b}" for b in bands],
        "NORM_MEAN": [0.0] * len(bands), "NORM_STD": norm_std,
    }))
    assert mean_pixel_size_m(raster_info(GEOTIFFS / name)) == pytest.approx(pixel_size, rel=1e-3)
    trained = None if trained_factor is None else [pixel_size * trained_factor] * 2
    weights = _untrained_weights(cfg, tmp_path / "w.pt", trained)
    summary = run_inference(cfg, weights, tmp_path / "out", image_paths=[GEOTIFFS / name])
    # pixels finer than the training ones: labelled at those, and the outputs still on the image's grid
    assert ("labelled at" in capsys.readouterr().err) == (trained is not None)
    outputs = summary.images[0].outputs
    with rasterio.open(GEOTIFFS / name) as src, rasterio.open(outputs["labels"]) as labels, rasterio.open(outputs["color"]) as color:
        assert labels.crs.to_epsg() == color.crs.to_epsg() == epsg
        assert labels.transform == color.transform == src.transform
        assert (labels.width, labels.height) == (src.width, src.height)


def test_real_data_benchmark_runs_each_recipe_on_a_spatial_split(tmp_path):
    """bench/real_data.py end to end, briefly: the WHU cities in two folds, no city in both of a fold's
    splits, each network with each recipe trained and scored on its held-out cities, the table printed."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "real_data.py"), "--minutes", "0.01", "--sets", "whu",
         "--networks", "segnet", "unet", "--recipes", "method", "eoseg", "--shared", str(SHARED), "--workdir", str(tmp_path)],
        capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert result.returncode == 0, result.stderr[-2000:]
    runs = ["segnet, method recipe", "segnet, eoseg recipe", "unet, method recipe", "unet, eoseg recipe (eoseg's default)"]
    assert all(f"| whu | {run} |" in result.stdout for run in runs), result.stdout
    report = json.loads((tmp_path / "results.json").read_text())
    cities = sorted(p.name[:-len("_gt.png")] for p in (SHARED / "buildings_real" / "whu_global_cities").glob("*_gt.png"))
    for fold in (0, 1):
        cfg = load_config(tmp_path / "configs" / f"whu_{fold}.py")
        assert not set(cfg.TRAIN_IDS) & set(cfg.TEST_IDS)
        assert sorted(cfg.TRAIN_IDS + cfg.TEST_IDS) == cities
    for run in runs:
        folds = report["folds"]["whu"][run]
        # every pixel of the ten cities scored once over the two folds
        assert sum(sum(map(sum, fold["confusion_matrix"])) for fold in folds) == len(cities) * 512 * 512
    assert report["pooled"]["whu"][runs[-1]]["0"]["class_names"] == ["background", "building"]


def test_real_data_benchmark_repeats_each_run_per_seed_on_a_step_budget(tmp_path):
    """--steps, --seeds and two --also variants on the real 16-bit SpaceNet scene: every run takes the
    steps asked for, each seed scores every pixel once over the two halves, the halves keep the
    scene's georeference, and the footprint polygons are rasterised on each half's grid."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "real_data.py"), "--steps", "2", "--seeds", "0", "1", "--sets", "spacenet",
         "--networks", "unet", "--recipes", "eoseg", "--also", "NORM_MEAN=[457.0]", "NORM_STD=[263.0]",
         "--also", "COLOR_JITTER=0.1", "--shared", str(SHARED), "--workdir", str(tmp_path)],
        capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert result.returncode == 0, result.stderr[-2000:]
    variants = ["unet, eoseg recipe (eoseg's default)", "unet, eoseg + NORM_MEAN=[457.0] NORM_STD=[263.0] recipe",
                "unet, eoseg + COLOR_JITTER=0.1 recipe"]
    assert all(re.search(rf"\| spacenet \| {re.escape(v)} \| 2\+2, 2\+2 \| [\d.]+% \| [\d.]+% \([\d.]+%-[\d.]+%\) \|", result.stdout)
               for v in variants), result.stdout
    report = json.loads((tmp_path / "results.json").read_text())
    assert report["steps"] == 2 and report["seeds"] == [0, 1]
    with rasterio.open(SHARED / "geotiff_real" / "sample_geotiff.tif") as scene:
        pixels, crs, transform = scene.width * scene.height, scene.crs, scene.transform
    for variant in variants:
        folds = report["folds"]["spacenet"][variant]
        assert sorted(fold["seed"] for fold in folds) == [0, 0, 1, 1]
        for seed in (0, 1):
            assert sum(sum(map(sum, fold["confusion_matrix"])) for fold in folds if fold["seed"] == seed) == pixels
        assert set(report["pooled"]["spacenet"][variant]) == {"0", "1"}
    with rasterio.open(tmp_path / "data" / "spacenet" / "east.tif") as image:
        assert image.crs == crs and image.dtypes[0] == "uint16" and image.width == 450
        east = raster_info(tmp_path / "data" / "spacenet" / "east.tif")
    features = json.loads((SHARED / "geotiff_real" / "geotiff_labels.geojson").read_text())["features"]
    buildings = rasterio.features.rasterize([(f["geometry"], 1) for f in features], out_shape=(900, 900),
                                            transform=transform)
    cfg = load_config(config_file=tmp_path / "configs" / "spacenet_0.py")
    np.testing.assert_array_equal(read_labels(cfg, "east", east), buildings[:, 450:])


def test_whu_mask_saved_as_an_indexed_png_converts_by_its_colours(tmp_path):
    """A real WHU building mask, saved as an indexed PNG whose first palette entry is white
    (building) and second black: GDAL's PNG driver hands over its colour table, and the
    conversion gives the labels of the RGB mask, where reading the indices would swap the classes."""
    rgb_mask = SHARED / "buildings_real" / "whu_global_cities" / "venice_gt.png"
    palette = Palette([[0, 0, 0], [255, 255, 255]], ignore_color=None)
    expected = read_label(color_file_to_labels(rgb_mask, tmp_path / "from_rgb.png", palette))
    indexed = Image.fromarray((expected == 0).astype(np.uint8), mode="P")  # index 0: building, 1: background
    indexed.putpalette([255, 255, 255, 0, 0, 0])
    indexed.save(tmp_path / "venice_indexed.png")
    converted = color_file_to_labels(tmp_path / "venice_indexed.png", tmp_path / "from_indexed.png", palette)
    assert 0 < expected.mean() < 1
    np.testing.assert_array_equal(read_label(converted), expected)


def test_potsdam_colour_ground_truth_saved_as_jpeg_converts_through_the_tolerance_it_names(tmp_path):
    """The real Potsdam colour ground truth saved as a JPEG (quality 90, Pillow's chroma subsampling):
    nearly every pixel moves off its colour. convert_gt.py refuses it in one line that names the
    tolerance and what it reads; told so, it gives the exact conversion's labels but along class edges."""
    source = POTSDAM / "top_potsdam_3_11_label_color.png"
    palette = load_config(overrides=["DATASET=potsdam"]).palette
    exact = read_label(color_file_to_labels(source, tmp_path / "exact.png", palette))
    Image.open(source).convert("RGB").save(tmp_path / "gt.jpg", quality=90)
    args = ["DATASET=potsdam", "--from-color", str(tmp_path / "gt.jpg"), "--out", str(tmp_path / "out")]
    refused = run_script("convert_gt.py", *args)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    said = re.search(r"LABEL_TOLERANCE=127 \(the most\) reads (\d+) of these (\d+) px .* and "
                     r"UNKNOWN_LABELS_TO_IGNORE=True \(or --unknown-to-ignore\) the rest", refused.stderr)
    placed, off = int(said.group(1)), int(said.group(2))
    assert off > exact.size // 2 and placed > 0.99 * off
    converted = run_script("convert_gt.py", *args, "LABEL_TOLERANCE=127", "--unknown-to-ignore")
    assert converted.returncode == 0, converted.stderr
    read = read_label(tmp_path / "out" / "gt.tif")  # a JPEG source gives a GeoTIFF
    assert (read == palette.ignore_label).sum() >= off - placed  # and those blurred towards black, IGNORE_COLOR
    assert (read == exact).mean() > 0.9  # a 1.2 m tile of 5 cm classes: many edges, each blurred by the JPEG


def test_pixel_size_benchmark_labels_each_factor_both_ways(tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "pixel_size.py"), "--sets", "potsdam", "--minutes", "0.01",
         "--factors", "0.5", "1", "2", "--shared", str(SHARED), "--workdir", str(tmp_path)],
        capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert result.returncode == 0, result.stderr[-2000:]
    rows = json.loads((tmp_path / "results.json").read_text())["sets"]["potsdam"]["rows"]
    assert [row["default"] for row in rows] == ["at the training size", "as is", "as is"]
    for row in rows:
        # both halves of the crop scored once, at the factor's size (the labels' boundaries left out)
        scored = [sum(map(sum, row[mode]["confusion_matrix"])) for mode in ("as is", "at the training size")]
        assert scored[0] == scored[1] and 0 < scored[0] <= (512 / row["factor"]) ** 2
    same = rows[1]  # at the training size, both ways are the same labelling
    assert same["as is"]["confusion_matrix"] == same["at the training size"]["confusion_matrix"]


def test_value_scale_benchmark_scores_each_scale_and_says_what_the_check_does(tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "value_scale.py"), "--steps", "2", "--factors", "1", "16", "--norms", "255",
         "--natural", "potsdam", "--shared", str(SHARED), "--workdir", str(tmp_path)],
        capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert result.returncode == 0, result.stderr[-2000:]
    results = json.loads((tmp_path / "results.json").read_text())
    # the crop's two halves, each against the other: one city, one sensor, alike
    assert sorted(results["natural"]["potsdam"]) == ["left", "right"]
    assert all(0.7 < ratio < 1.4 for ratio in results["natural"]["potsdam"].values())
    rows = results["norms"]["255"]
    assert [row["factor"] for row in rows] == [1.0, 16.0]
    # each fold's ratio: the other half at its own scale passes, 16 times its values (12 against 16 bits) are refused
    assert [outcome for _, outcome in rows[0]["checks"]] == ["passed", "passed"]
    assert [outcome for _, outcome in rows[1]["checks"]] == ["refused", "refused"]
    assert all(12 < ratio < 20 for ratio, _ in rows[1]["checks"])
    for row in rows:  # both halves of the 900 x 900 scene scored once at each scale, with the check off
        assert sum(map(sum, row["confusion_matrix"])) == 900 * 900


def test_nodata_fill_benchmark_scores_the_rings_around_its_holes(tmp_path):
    """bench/nodata_fill.py end to end, briefly: the Vaihingen crop's halves, each labelled intact and with holes under
    both fills; every scored pixel of each ring counted once per variant, and the intact map unchanged from itself."""
    sys.path.insert(0, str(ROOT / "bench"))
    from nodata_fill import RINGS, VARIANTS, distance_to, holes

    mask = np.zeros((9, 9), dtype=bool)
    mask[4, 4] = True
    assert distance_to(mask, 2)[4].tolist() == [3, 3, 2, 1, 0, 1, 2, 3, 3] and distance_to(mask, 2)[2, 2] == 2
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "nodata_fill.py"), "--steps", "1", "--sets", "vaihingen",
         "--shared", str(SHARED), "--workdir", str(tmp_path)],
        capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert all(f"| vaihingen | {variant} |" in result.stdout for variant in VARIANTS), result.stdout
    counts = {variant: np.array(value) for variant, value in
              json.loads((tmp_path / "results.json").read_text())["sets"]["vaihingen"]["counts"].items()}
    labels = read_raster(SHARED / "isprs_real" / "vaihingen_area1_crop512_labels_noboundary.png")[0]
    halves = (labels[:, :256], labels[:, 256:])
    expected = [sum(((distance_to(holes(*half.shape), RINGS[-1][1]) >= near) & (distance_to(holes(*half.shape), RINGS[-1][1])
                                                                                <= far) & (half != 0)).sum() for half in halves)
                for near, far in RINGS]
    for variant in VARIANTS:
        assert counts[variant][:, 2].tolist() == expected
    assert (counts["intact"][:, 1] == 0).all()
