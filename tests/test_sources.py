"""Extra inputs through the config, inference and the scripts: EXTRA_SOURCES settings, the composite script, the sample's nDSM."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from eoseg.checkpoint import load_model, save_checkpoint
from eoseg.errors import EosegError
from eoseg.extract import extract_patches, read_manifest
from eoseg.infer import run_inference
from eoseg.io import raster_info, read_raster
from eoseg.lmdb_store import LmdbPatches, create_lmdb
from eoseg.metadata import data_signature
from eoseg.models import model_from_config
from eoseg.normalization import Normalization
from eoseg.sample import BUILDING, IMPERVIOUS, LOW_VEG, generate_scene, generate_scene_with_ndsm
from eoseg.train import train

from .conftest import TINY_TILE_SIZE, as_arguments, run_script, tiny_overrides
from .test_cli import assert_one_line_error
from .test_tiles import NDSM, copy_raster


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
    ({**NDSM, "std": [0.0]}, "'std' values are standard deviations, above 0; got [0.0]"),
    ({**NDSM, "std": [-5.0]}, "'std' values are standard deviations, above 0"),  # review: accepted
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


# ---------------------------------------------------------------- nodata of a source in inference
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


# ---------------------------------------------------------------- composite
def test_composite_script(tmp_path, sample_root):
    args = as_arguments({**tiny_overrides(tmp_path), "DATA_ROOT": str(sample_root / "data"),
                         "COMPOSITE_PATTERN": str(tmp_path / "composite" / "c{id}.tif")})
    result = run_script("make_composite.py", "--ids", "2", "4", *args)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "composite" / "c2.tif").is_file() and (tmp_path / "composite" / "c4.tif").is_file()
    assert json.loads((tmp_path / "composite" / "config.make_composite.json").read_text())["config"]["COMPOSITE_NDSM_MAX"] == 30.0
    # composites that exist are replaced only with --force, and no tile's input ever (a pattern typed as the images')
    assert_one_line_error(run_script("make_composite.py", "--ids", "2", *args), "c2.tif exists; pass --force to replace it")
    assert run_script("make_composite.py", "--ids", "2", "--force", *args).returncode == 0
    image = sample_root / "data" / "top" / "top_mosaic_09cm_area2.tif"
    before = image.read_bytes()
    assert_one_line_error(run_script("make_composite.py", "--ids", "2", "--force", *args,
                                     "COMPOSITE_PATTERN=top/top_mosaic_09cm_area{id}.tif"),
                          "area2.tif would overwrite tile 2's IMAGE_PATTERN file; choose another COMPOSITE_PATTERN")
    assert_one_line_error(run_script("make_composite.py", "--ids", "2", "--force", *args,
                                     "COMPOSITE_PATTERN=labels/top_mosaic_09cm_area{id}.tif"),
                          "area2.tif would overwrite tile 2's LABEL_PATTERN file")
    assert image.read_bytes() == before
    # another's file where COMPOSITE_PATTERN points (an nDSM an EXTRA_SOURCES entry reads): no composite to replace
    theirs = tmp_path / "composite" / "c2.tif"
    shutil.copy(sample_root / "data" / "ndsm" / "ndsm_09cm_matching_area2.tif", theirs)
    assert_one_line_error(run_script("make_composite.py", "--ids", "2", "--force", *args),
                          "c2.tif exists and is no composite make_composite.py wrote", "choose another COMPOSITE_PATTERN")
    assert read_raster(theirs).dtype == np.float32
    theirs.unlink()
    # a PNG composite keeps no band descriptions: its folder's record says make_composite.py wrote it (code review)
    png = f"COMPOSITE_PATTERN={tmp_path / 'png' / 'c{id}.png'}"
    assert run_script("make_composite.py", "--ids", "2", *args, png).returncode == 0
    again = run_script("make_composite.py", "--ids", "2", "--force", *args, png)
    assert again.returncode == 0, again.stderr
    assert_one_line_error(run_script("make_composite.py", "--ids", "2", "--force", *args, "NDSM_PATTERN="), "no nDSM configured")
    assert_one_line_error(run_script("make_composite.py", "--ids", "2", "--force", *args, "NIR_BAND=NIR"), "NIR_BAND 'NIR'")


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


