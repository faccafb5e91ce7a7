"""Labeling rasters end to end: streaming outputs, nodata, probabilities, many files, ranks."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import rasterio
import torch
from rasterio.crs import CRS
from rasterio.enums import ColorInterp
from rasterio.control import GroundControlPoint
from rasterio.transform import from_origin

from eoseg.checkpoint import save_checkpoint
from eoseg.errors import EosegError
from eoseg.config import Config
from eoseg.infer import NOT_LABELLING_SETTINGS, expand_image_arguments, run_inference
from eoseg.io import RasterWriter, read_raster, write_raster
from eoseg.models import model_from_config

from .conftest import ROOT, as_arguments, make_tiny_config

GREY = {ColorInterp.gray, ColorInterp.undefined}  # what GDAL says of bands that are not colours


@pytest.fixture
def setup(tmp_path):
    cfg = make_tiny_config(tmp_path, WRITE_PREVIEW=False)
    torch.manual_seed(0)
    weights = save_checkpoint(tmp_path / "w.pt", cfg, model_from_config(cfg), iteration=0)
    return cfg, weights


def write_geotiff(path, array, nodata=None, epsg=32632):
    with rasterio.open(path, "w", driver="GTiff", width=array.shape[2], height=array.shape[1], count=array.shape[0],
                       dtype=array.dtype.name, crs=CRS.from_epsg(epsg), transform=from_origin(500000, 5400000, 0.5, 0.5),
                       nodata=nodata) as dst:
        dst.write(array)
    return path


def random_image(rows=150, cols=170, seed=0):
    return np.random.default_rng(seed).integers(1, 256, (3, rows, cols), dtype=np.uint8)


def test_nodata_is_propagated(setup, tmp_path):
    cfg, weights = setup
    image = random_image()
    image[:, 20:60, 30:90] = 0
    source = write_geotiff(tmp_path / "in.tif", image, nodata=0)
    result = run_inference(cfg, weights, tmp_path / "out", image_paths=[source], progress=False).images[0]
    labels = read_raster(result.outputs["labels"])[0]
    assert (labels[20:60, 30:90] == cfg.IGNORE_LABEL).all()
    assert (labels[:20] != cfg.IGNORE_LABEL).all() and (labels[60:] != cfg.IGNORE_LABEL).all()
    with rasterio.open(result.outputs["labels"]) as dst:
        assert dst.nodata == cfg.IGNORE_LABEL
    color = read_raster(result.outputs["color"])
    assert (color[:, 20:60, 30:90] == np.array(cfg.IGNORE_COLOR)[:, None, None]).all()
    with rasterio.open(result.outputs["color"]) as dst:  # and transparent in GIS software, whatever the palette
        assert dst.count == 3 and np.array_equal(dst.dataset_mask() == 0, labels == cfg.IGNORE_LABEL)
    assert not list(tmp_path.glob("out/*.msk"))


def test_zero_pixels_are_nodata_only_when_asked(setup, tmp_path):
    cfg, weights = setup
    image = random_image()
    image[:, :10] = 0
    source = write_geotiff(tmp_path / "in.tif", image)  # no nodata value declared
    kept = run_inference(cfg, weights, tmp_path / "a", image_paths=[source], progress=False).images[0]
    masked = run_inference(cfg.replace(NODATA_ZERO=True), weights, tmp_path / "b", image_paths=[source], progress=False).images[0]
    assert (read_raster(kept.outputs["labels"])[0, :10] != cfg.IGNORE_LABEL).all()
    assert (read_raster(masked.outputs["labels"])[0, :10] == cfg.IGNORE_LABEL).all()


def test_outputs_equal_across_block_heights_and_batches(setup, tmp_path):
    cfg, weights = setup
    source = write_geotiff(tmp_path / "in.tif", random_image(200, 130))
    outputs = []
    for index, (block_rows, batch) in enumerate([(64, 1), (100, 5), (4096, 16)]):
        run_cfg = cfg.replace(INFER_BLOCK_ROWS=block_rows, INFER_BATCH_SIZE=batch, WRITE_PROBABILITIES=True)
        result = run_inference(run_cfg, weights, tmp_path / str(index), image_paths=[source], progress=False).images[0]
        outputs.append((read_raster(result.outputs["labels"]), read_raster(result.outputs["probabilities"])))
    for labels, probabilities in outputs[1:]:
        assert (labels == outputs[0][0]).mean() > 0.999
        assert np.abs(probabilities.astype(int) - outputs[0][1]).max() <= 1


def test_labelling_reads_none_of_the_settings_its_records_leave_out(sample_root, tmp_path, monkeypatch):
    """A completion record keeps results across other values of NOT_LABELLING_SETTINGS: labelling must not read
    them, but for those that change only its speed and memory."""
    cfg = make_tiny_config(tmp_path, DATA_ROOT=str(sample_root / "data"), WRITE_PROBABILITIES=True)
    torch.manual_seed(0)
    weights = save_checkpoint(tmp_path / "w.pt", cfg, model_from_config(cfg), iteration=0)
    read = set()
    reading = Config.__getattr__

    def recorded(self, name):
        read.add(name)
        return reading(self, name)

    monkeypatch.setattr(Config, "__getattr__", recorded)
    image = write_geotiff(tmp_path / "in.tif", random_image(90, 100))
    run_inference(cfg, weights, tmp_path / "out", tile_ids=cfg.tile_ids("test"), image_paths=[image], progress=False)
    speed_and_memory = {"DEVICE", "REUSE_FREED_MEMORY", "INFER_BATCH_SIZE", "INFER_BLOCK_ROWS", "INFER_COMPILE"}
    assert {"WINDOW", "BLEND", "INFER_BATCH_SIZE"} <= read  # what is recorded is what labelling reads
    assert read & NOT_LABELLING_SETTINGS <= speed_and_memory


def test_weights_score_ground_truth_of_another_encoding_and_palette(sample_root, tmp_path, capsys):
    """LABEL_VALUES and PALETTE say how a config's ground truth is encoded and drawn, not what the weights mean:
    weights trained on labels read through a map score another city's class ids, with a note saying so; colour
    ground truth read under another PALETTE than the weights' is noted too (it was not, review)."""
    cfg = make_tiny_config(tmp_path, DATA_ROOT=str(sample_root / "data"), WRITE_PREVIEW=False)
    trained = cfg.replace(LABEL_VALUES={value: value for value in range(6)},
                          PALETTE=cfg.PALETTE[1:] + cfg.PALETTE[:1])
    torch.manual_seed(0)
    weights = save_checkpoint(tmp_path / "w.pt", trained, model_from_config(trained), iteration=0)
    summary = run_inference(cfg, weights, tmp_path / "out", tile_ids=["4"], progress=False)
    assert summary.metrics["pixels"] > 0
    err = capsys.readouterr().err
    assert "note: the weights were trained on labels read with LABEL_VALUES {0: 0, 1: 1, 2: 2, 3: 3, 4: 4, 5: 5}, and " \
           "the ground truth is read with {}: it must be encoded so" in err
    # the tile's eroded ground truth is in colour: scored under another PALETTE, building and tree may trade places
    assert f"note: the weights were trained under PALETTE {trained.PALETTE}, and the colour ground truth is read with " \
           f"{cfg.PALETTE}: where their labels came from colours, its classes must be coloured so" in err
    run_inference(trained, weights, tmp_path / "same", tile_ids=["4"], progress=False)
    assert "note: the weights were trained" not in capsys.readouterr().err
    with pytest.raises(EosegError, match="was made with class_names"):  # what they mean still counts
        run_inference(cfg.replace(CLASS_NAMES=["a", "b", "c", "d", "e", "f"]), weights, tmp_path / "other", ["4"],
                      progress=False)


def image_placed_by_gcps(path):
    """A 100 x 90 px image placed by three ground control points alone (no geotransform)."""
    with rasterio.open(path, "w", driver="GTiff", width=100, height=90, count=3, dtype="uint8") as dst:
        dst.write(random_image(90, 100))
        dst.gcps = ([GroundControlPoint(row, col, 500000 + col, 5400000 - row) for row, col in ((0, 0), (0, 99), (89, 0))],
                    CRS.from_epsg(32632))
    return path


def test_an_image_placed_by_ground_control_points_only_is_said_to_be_unplaced(setup, tmp_path, capsys):
    """Its outputs, on its own pixel grid, carry its ground control points: they were PNGs (and the probabilities a
    GeoTIFF without them), placed nowhere (review)."""
    cfg, weights = setup
    path = image_placed_by_gcps(tmp_path / "gcps.tif")
    result = run_inference(cfg.replace(WRITE_PROBABILITIES=True), weights, tmp_path / "out", image_paths=[path],
                           progress=True).images[0]
    assert "note: gcps.tif has ground control points or RPCs but no geotransform, which eoseg reads: warp it by them " \
           "first (gdalwarp -tps, or -rpc, with -t_srs); its outputs carry them (GeoTIFFs), to be warped alike" \
           in capsys.readouterr().err
    def points(raster):
        with rasterio.open(raster) as src:
            gcps, crs = src.gcps
            return [(p.row, p.col, p.x, p.y) for p in gcps], crs, src.transform.is_identity

    for key in ("labels", "color", "probabilities"):
        assert result.outputs[key].suffix == ".tif"
        assert points(result.outputs[key]) == points(path), key
    run_inference(cfg, weights, tmp_path / "plain", image_paths=[write_geotiff(tmp_path / "in.tif", random_image())])
    assert "ground control" not in capsys.readouterr().err


def test_polygon_filters_in_degrees_are_refused_before_labelling(setup, tmp_path):
    cfg, weights = setup
    image = tmp_path / "wgs84.tif"
    with rasterio.open(image, "w", driver="GTiff", width=100, height=90, count=3, dtype="uint8", crs=CRS.from_epsg(4326),
                       transform=from_origin(8.4, 49.0, 1e-5, 1e-5)) as dst:
        dst.write(random_image(90, 100))
    with pytest.raises(EosegError, match="wgs84.tif: its CRS EPSG:4326 is in degrees"):
        run_inference(cfg.replace(WRITE_POLYGONS=".gpkg", POLYGON_MIN_AREA=1.0), weights, tmp_path / "out",
                      image_paths=[image], progress=False)
    assert not (tmp_path / "out").exists()


def test_a_tile_without_ground_truth_is_said_to_be_unscored(sample_root, tmp_path, capsys):
    cfg = make_tiny_config(tmp_path, DATA_ROOT=str(sample_root / "data"), WRITE_PREVIEW=False, GT_ERODED_PATTERN="",
                           LABEL_PATTERN="labelz/{id}.tif")  # a typo
    torch.manual_seed(0)
    weights = save_checkpoint(tmp_path / "w.pt", cfg, model_from_config(cfg), iteration=0)
    summary = run_inference(cfg, weights, tmp_path / "out", tile_ids=["4"], progress=True)
    assert summary.metrics is None
    err = capsys.readouterr().err
    assert f"note: tiles 4 have no ground truth (for 4: nothing at {sample_root / 'data' / 'labelz' / '4.tif'}): " \
           "labelled, not scored" in err
    # its colour ground truth, not converted yet, is named (review: "no ground truth" beside it)
    assert f"; its colour ground truth {cfg.tile_path('GT_COLOR_PATTERN', '4')} is there: convert it (convert_gt.py " \
           "--from-color) to score it" in err


def test_probabilities_are_one_uint8_band_per_class(setup, tmp_path):
    cfg, weights = setup
    image = random_image()
    image[:, 20:60, 30:90] = 0
    source = write_geotiff(tmp_path / "in.tif", image, nodata=0)
    result = run_inference(cfg.replace(WRITE_PROBABILITIES=True), weights, tmp_path / "o", image_paths=[source], progress=False).images[0]
    labels = read_raster(result.outputs["labels"])[0]
    valid = labels != cfg.IGNORE_LABEL
    with rasterio.open(result.outputs["probabilities"]) as dst:
        assert dst.count == cfg.num_classes and dst.dtypes[0] == "uint8" and dst.crs.to_epsg() == 32632
        # each band a class, none taken for colour or alpha; nodata masked, every labelled pixel kept
        assert set(dst.colorinterp) <= GREY and np.array_equal(dst.dataset_mask() > 0, valid)
        probabilities = dst.read().astype(int)
    assert np.abs(probabilities[:, valid].sum(axis=0) - 255).max() <= cfg.num_classes
    assert np.array_equal(probabilities.argmax(0)[valid], labels[valid])


@pytest.mark.parametrize("bands", [3, 4])
def test_bands_that_are_not_colours_are_written_as_grey_levels(tmp_path, bands):
    """Four uint8 bands would otherwise be red, green, blue and alpha, and three red, green and blue."""
    path = write_raster(tmp_path / "x.tif", np.full((bands, 8, 8), 7, np.uint8)) if bands == 4 else None
    with RasterWriter(tmp_path / "p.tif", None, bands, "uint8", width=8, height=8, colour=False) as writer:
        writer.write(np.zeros((bands, 8, 8), np.uint8))
    with rasterio.open(tmp_path / "p.tif") as dst:
        assert set(dst.colorinterp) <= GREY and dst.dataset_mask().all()
    if path is not None:  # and what is not said to be colour is not colour
        with rasterio.open(path) as dst:
            assert ColorInterp.alpha not in dst.colorinterp


def test_folders_and_globs_expand(tmp_path):
    for name in ("b.tif", "a.tif", "c.png", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in expand_image_arguments([tmp_path])] == ["a.tif", "b.tif", "c.png"]
    assert [p.name for p in expand_image_arguments([str(tmp_path / "*.tif")])] == ["a.tif", "b.tif"]
    with pytest.raises(EosegError, match="no file matches"):
        expand_image_arguments([str(tmp_path / "*.jp2")])
    # overlapping patterns list a file once; a file named like a pattern is that file
    assert [p.name for p in expand_image_arguments([str(tmp_path / "*.tif"), str(tmp_path / "a*")])] == ["a.tif", "b.tif"]
    for name in ("ortho 2.tif", "ortho [2].tif"):
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in expand_image_arguments([str(tmp_path / "ortho [2].tif")])] == ["ortho [2].tif"]


def test_files_gis_software_writes_beside_rasters_are_no_images(tmp_path, capsys):
    """--images "DIR/*" labelled QGIS's overviews x.tif.ovr as an image, and refused x.tif.aux.xml as a damaged one
    (review); a shell's DIR/* gives them one by one."""
    names = ("x.tif", "x.tif.ovr", "x.tif.aux.xml", "x.tfw", "y.bmp")
    for name in names:
        (tmp_path / name).write_bytes(b"")
    # rasters of any format GDAL reads stay (a .bmp: code review), as given by path
    assert [p.name for p in expand_image_arguments([str(tmp_path / "*")])] == ["x.tif", "y.bmp"]
    assert [p.name for p in expand_image_arguments([tmp_path / name for name in names])] == ["x.tif", "y.bmp"]
    assert "note: left out " in capsys.readouterr().err
    with pytest.raises(EosegError, match=r"only files GIS software writes beside rasters .* match '.*x\.tif\.\*'"):
        expand_image_arguments([str(tmp_path / "x.tif.*")])


def test_ground_truth_the_config_names_beside_the_images_is_left_out(setup, tmp_path, capsys):
    """DeepGlobe's <id>_sat.jpg beside <id>_mask.png: --images of the folder labelled the masks as images (review)."""
    cfg, weights = setup
    folder = tmp_path / "train"
    folder.mkdir()
    for name in ("1_sat.tif", "1_mask.tif"):
        write_geotiff(folder / name, random_image(64, 64))
    cfg = cfg.replace(DATA_ROOT=str(tmp_path), IMAGE_PATTERN="train/{id}_sat.tif", GT_COLOR_PATTERN="train/{id}_mask.tif")
    summary = run_inference(cfg, weights, tmp_path / "out", image_paths=[folder], progress=True)
    assert [image.name for image in summary.images] == ["1_sat"]
    assert "note: left out 1_mask.tif: ground truth by GT_COLOR_PATTERN, not images" in capsys.readouterr().err


def test_rasters_in_subfolders_of_a_folder_are_said_to_be_left_out(setup, tmp_path, capsys):
    """A folder argument searches the folder alone: images in its subfolders were skipped without a word, and a folder
    holding them alone was "no raster files" (review). Both say so, with the pattern that searches them; an output
    folder inside it (eoseg's own maps) does not count."""
    cfg, weights = setup
    scenes = tmp_path / "scenes"
    (scenes / "sub").mkdir(parents=True)
    write_geotiff(scenes / "a.tif", random_image(40, 40))
    run_inference(cfg, weights, scenes / "out", image_paths=[scenes])  # its maps in scenes/out
    (scenes / "out" / "confusion_matrix.png").write_bytes(b"")  # a report, and a killed run's temporary map
    (scenes / "out" / ".a_labels.tmp-4242.tif").write_bytes(b"")
    expand_image_arguments([scenes])
    assert "subfolders" not in capsys.readouterr().err
    write_geotiff(scenes / "sub" / "b.tif", random_image(40, 40))
    assert [p.name for p in expand_image_arguments([scenes])] == ["a.tif"]
    assert (f"note: {scenes}: its subfolders hold rasters too (sub/b.tif), which a folder does not search: give "
            f"'{scenes}/**/*.tif' to search them as well") in capsys.readouterr().err
    nested = tmp_path / "nested"
    (nested / "deeper").mkdir(parents=True)
    write_geotiff(nested / "deeper" / "c.tif", random_image(40, 40))
    with pytest.raises(EosegError, match=r"nested: folder holds no raster files .*; its subfolders do \(deeper/c.tif\): "
                                         r"give '.*nested/\*\*/\*.tif' to search them"):
        expand_image_arguments([nested])


def test_an_earlier_runs_outputs_reached_by_a_pattern_are_refused_as_images(setup, tmp_path):
    """Outputs written to scenes/labels, then scenes/**/*.tif labelled: the labels and colour maps were taken for
    images (refused for their band count, or labelled where it fits); named as outputs now."""
    cfg, weights = setup
    scenes = tmp_path / "scenes"
    scenes.mkdir()
    write_geotiff(scenes / "a.tif", random_image(90, 100))
    run_inference(cfg, weights, scenes / "labels", image_paths=[scenes], progress=False)
    with pytest.raises(EosegError, match=r"scenes/labels/a_color.tif is an output of an earlier run \(listed in "
                                         r"a_record.json\), not an image: leave its folder out of --images"):
        run_inference(cfg, weights, tmp_path / "again", image_paths=[str(scenes / "**" / "*.tif")], progress=False)
    assert run_inference(cfg, weights, tmp_path / "again", image_paths=[str(scenes / "*.tif")], progress=False).images


def test_an_interrupted_image_leaves_no_output(setup, tmp_path, monkeypatch):
    cfg, weights = setup
    source = write_geotiff(tmp_path / "in.tif", random_image(300, 100))
    import eoseg.infer

    calls = {"n": 0}
    real = eoseg.infer._write_block

    def failing(*args):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        real(*args)

    monkeypatch.setattr(eoseg.infer, "_write_block", failing)
    with pytest.raises(KeyboardInterrupt):
        run_inference(cfg.replace(INFER_BLOCK_ROWS=64), weights, tmp_path / "out", image_paths=[source], progress=False)
    assert not [p for p in (tmp_path / "out").iterdir() if p.name != "config.json"]


def test_a_run_stopped_midway_leaves_no_report_of_the_run_before(sample_root, tmp_path, monkeypatch):
    """A --force run under another STRIDE, interrupted: the earlier run's metrics.json, table and plot stayed beside
    the new config.json, listing maps it had removed (review). Every run removes them first and writes its own at its
    end; a run that scores nothing keeps no earlier table or plot either."""
    import eoseg.infer

    cfg = make_tiny_config(tmp_path, DATA_ROOT=str(sample_root / "data"), WRITE_PREVIEW=False)
    weights = save_checkpoint(tmp_path / "w.pt", cfg, model_from_config(cfg), iteration=0)
    out = tmp_path / "out"
    run_inference(cfg, weights, out, tile_ids=["4"], progress=False)
    reports = ["confusion_matrix.png", "metrics.json", "metrics.txt"]
    assert all((out / name).exists() for name in reports)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(eoseg.infer, "_label_once", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_inference(cfg.replace(STRIDE=cfg.STRIDE // 2), weights, out, tile_ids=["4"], progress=False, force=True)
    monkeypatch.undo()
    assert not any((out / name).exists() for name in reports)
    run_inference(cfg, weights, out, tile_ids=["4"], progress=False, force=True)
    unscored = write_geotiff(tmp_path / "scene.tif", random_image(60, 70))
    run_inference(cfg, weights, out, image_paths=[unscored], progress=False, force=True)
    assert sorted(name for name in reports if (out / name).exists()) == ["metrics.json"]


def test_a_run_of_other_settings_still_writing_the_folder_is_refused(setup, tmp_path):
    """Two runs of other STRIDEs started a second apart into one folder each passed the check of the records before
    either wrote one: both exited 0, their maps mixed under one report (review). A run marks the folder while it
    writes; one of another signature is refused, a killed run's mark (unlocked) is cleared."""
    import fcntl

    cfg, weights = setup
    scene = write_geotiff(tmp_path / "scene.tif", random_image(60, 70))
    out = tmp_path / "out"
    out.mkdir()
    mark = out / ".labelling-1-other.lock"
    with open(mark, "w") as running:
        fcntl.flock(running, fcntl.LOCK_EX)
        running.write("other weights and settings")
        running.flush()
        with pytest.raises(EosegError, match=rf"another labelling run, with other weights or labelling settings, is "
                                             rf"writing {out} \(it holds {mark.name}\); wait for it to end"):
            run_inference(cfg, weights, out, image_paths=[scene], progress=False)
        with pytest.raises(EosegError, match="another labelling run"):
            run_inference(cfg, weights, out, image_paths=[scene], progress=False, force=True)
    assert run_inference(cfg, weights, out, image_paths=[scene], progress=False).images  # its run ended (or was killed)
    assert not list(out.glob(".labelling-*"))


def test_outputs_never_overwrite_a_tiles_ground_truth(sample_root, tmp_path):
    """Label maps named like the outputs (tile_labels.tif) in the output folder: labelling wrote its prediction over
    the ground truth it scored against, exit 0, and the next run scored the prediction against itself."""
    import shutil

    shutil.copytree(sample_root / "data", tmp_path / "data")
    truth = tmp_path / "data" / "gt" / "top_mosaic_09cm_area4_labels.tif"
    truth.parent.mkdir()
    shutil.copy(tmp_path / "data" / "labels" / "top_mosaic_09cm_area4.tif", truth)
    cfg = make_tiny_config(tmp_path, WRITE_PREVIEW=False, GT_ERODED_PATTERN="",
                           LABEL_PATTERN="gt/top_mosaic_09cm_area{id}_labels.tif")
    weights = save_checkpoint(tmp_path / "w.pt", cfg, model_from_config(cfg), iteration=0)
    before = truth.read_bytes()
    for force in (False, True):
        with pytest.raises(EosegError, match=rf"{truth} would overwrite tile 4's LABEL_PATTERN file; choose another "
                                             r"--out \(or INFER_DIR\)"):
            run_inference(cfg, weights, truth.parent, tile_ids=["4"], progress=False, force=force)
    assert truth.read_bytes() == before
    assert run_inference(cfg, weights, tmp_path / "out", tile_ids=["4"], progress=False).metrics is not None
    images = cfg.tile_path("IMAGE_PATTERN", "4").parent  # where IMAGE_PATTERN's globs would read the maps (review)
    with pytest.raises(EosegError, match=r"holds the input top_mosaic_09cm_area4.tif: a later run over it would label"):
        run_inference(cfg, weights, images, tile_ids=["4"], progress=False, force=True)


def test_a_file_of_an_outputs_name_that_no_record_lists_is_replaced_only_with_force(setup, tmp_path):
    """Another tool's map (or the user's ground truth) named scene_labels.tif in the output folder was replaced
    unasked; this step's own outputs, listed by a record, are still replaced when stale."""
    cfg, weights = setup
    scene = write_geotiff(tmp_path / "scene.tif", random_image(60, 70))
    out = tmp_path / "out"
    out.mkdir()
    theirs = write_geotiff(out / "scene_labels.tif", np.ones((1, 60, 70), np.uint8))
    with pytest.raises(EosegError, match=rf"{theirs} exists, and no record of an earlier labelling in {out} lists it "
                                         r"\(label into another --out\?\); pass --force to replace it"):
        run_inference(cfg, weights, out, image_paths=[scene], progress=False)
    assert (read_raster(theirs) == 1).all()
    summary = run_inference(cfg, weights, out, image_paths=[scene], progress=False, force=True)
    assert summary.images[0].outputs["labels"] == theirs and not (read_raster(theirs) == 1).all()
    os.utime(scene, ns=(scene.stat().st_atime_ns, scene.stat().st_mtime_ns + 10**9))  # a new version of the image
    rerun = run_inference(cfg, weights, out, image_paths=[scene], progress=False)  # its own outputs: relabelled unasked
    assert not rerun.images[0].reused


def test_outputs_of_a_run_stopped_before_its_completion_record_are_its_own(setup, tmp_path, monkeypatch):
    """Every output published, then the run killed: the pending record written before them lists them, so the rerun
    relabels the image instead of refusing them as a user's files."""
    import eoseg.infer

    cfg, weights = setup
    scene = write_geotiff(tmp_path / "scene.tif", random_image(60, 70))

    def killed(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(eoseg.infer, "_write_record", killed)
    with pytest.raises(KeyboardInterrupt):
        run_inference(cfg, weights, tmp_path / "out", image_paths=[scene], progress=False)
    monkeypatch.undo()
    pending = json.loads((tmp_path / "out" / "scene_record.json").read_text())
    assert not pending["complete"] and (tmp_path / "out" / pending["outputs"]["labels"]["file"]).exists()
    summary = run_inference(cfg, weights, tmp_path / "out", image_paths=[scene], progress=False)
    assert not summary.images[0].reused
    assert json.loads((tmp_path / "out" / "scene_record.json").read_text())["complete"]
    # killed before any output, by another run: nothing of it holds other settings (code review)
    killed = {"name": "other", "made_with": {"weights_sha256": "other weights"}, "complete": False,
              "outputs": {"labels": {"file": "other_labels.tif", "size": -1, "sha256": ""}}}
    (tmp_path / "out" / "other_record.json").write_text(json.dumps(killed))
    assert run_inference(cfg, weights, tmp_path / "out", image_paths=[scene], progress=False).images[0].reused
    # killed after an output: refused as other settings' results, said to be unfinished (review)
    (tmp_path / "out" / "other_labels.tif").write_bytes(b"partial")
    with pytest.raises(EosegError, match=r"holds results made with other weights and another config: other \(unfinished: "
                                         r"its run was killed\)"):
        run_inference(cfg, weights, tmp_path / "out", image_paths=[scene], progress=False)


def test_tiles_whose_folders_name_them_are_labelled_under_their_ids(sample_root, tmp_path):
    """IMAGE_PATTERN "{id}/ortho.tif": every tile's outputs were named ortho_*, and two tiles refused as inputs of
    one name (review); a tile listed twice in --tiles was refused the same way, where TEST_IDS lists it once."""
    import shutil

    for tile_id in ("1", "4"):
        (tmp_path / "data" / tile_id).mkdir(parents=True)
        shutil.copy(sample_root / "data" / "top" / f"top_mosaic_09cm_area{tile_id}.tif", tmp_path / "data" / tile_id / "ortho.tif")
    shutil.copytree(sample_root / "data" / "labels", tmp_path / "data" / "labels")
    cfg = make_tiny_config(tmp_path, WRITE_PREVIEW=False, IMAGE_PATTERN="{id}/ortho.tif", GT_ERODED_PATTERN="")
    weights = save_checkpoint(tmp_path / "w.pt", cfg, model_from_config(cfg), iteration=0)
    summary = run_inference(cfg, weights, tmp_path / "out", tile_ids=["1", "4", "4"], progress=False)
    assert [image.name for image in summary.images] == ["1_ortho", "4_ortho"]
    assert all(image.metrics is not None for image in summary.images)
    assert (tmp_path / "out" / "4_ortho_labels.tif").is_file()


def test_two_ranks_share_four_tiles(setup, tmp_path):
    cfg, weights = setup
    folder = tmp_path / "scenes"
    folder.mkdir()
    for index in range(4):
        write_geotiff(folder / f"scene{index}.tif", random_image(90, 80, seed=index))
    overrides = as_arguments({k: cfg.to_dict()[k] for k in ("WINDOW", "STRIDE", "MODEL_WIDTH", "DEVICE", "WRITE_PREVIEW")})
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               str(ROOT / "inference.py"), "--images", str(folder), "--weights", str(weights), "--out", str(tmp_path / "out"), *overrides]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "out" / "metrics.json").read_text())["images"]
    assert sorted(report) == [f"scene{i}" for i in range(4)]
    ranks = [entry["rank"] for entry in report.values()]
    assert sorted(ranks) == [0, 0, 1, 1]
    assert sorted(p.name for p in (tmp_path / "out").glob("*_labels.tif")) == [f"scene{i}_labels.tif" for i in range(4)]
    assert not list((tmp_path / "out").glob(".*tmp*"))


def test_onnxruntime_engine_cog_and_polygons(setup, tmp_path):
    cfg, weights = setup
    source = write_geotiff(tmp_path / "in.tif", random_image(128, 160))
    torch_run = run_inference(cfg, weights, tmp_path / "torch", image_paths=[source], progress=False).images[0]
    onnx_cfg = cfg.replace(INFER_ENGINE="onnxruntime", WRITE_COG=True, WRITE_POLYGONS=".geojson")
    onnx_run = run_inference(onnx_cfg, weights, tmp_path / "onnx", image_paths=[source], progress=False).images[0]
    assert (read_raster(onnx_run.outputs["labels"]) == read_raster(torch_run.outputs["labels"])).mean() > 0.999
    with rasterio.open(onnx_run.outputs["labels"]) as dst:
        assert dst.crs.to_epsg() == 32632 and dst.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        assert dst.colormap(1)[0][:3] == tuple(cfg.PALETTE[0])
    features = json.loads(onnx_run.outputs["polygons"].read_text())["features"]
    assert {f["properties"]["class_name"] for f in features} <= set(cfg.CLASS_NAMES) and features
    with pytest.raises(EosegError, match="multiples of 32"):
        run_inference(onnx_cfg.replace(WINDOW=48, STRIDE=24), weights, tmp_path / "bad", image_paths=[source], progress=False)


def test_an_image_finer_than_the_training_imagery_is_labelled_at_its_pixel_size(tmp_path, capsys):
    cfg = make_tiny_config(tmp_path, WRITE_PREVIEW=False)
    torch.manual_seed(0)
    model = model_from_config(cfg)
    weights = {size: save_checkpoint(tmp_path / f"w{size}.pt", cfg, model, iteration=0, trained_on={"pixel_size_m": [size, size]})
               for size in (0.5, 1.0, 0.25)}
    source = write_geotiff(tmp_path / "in.tif", random_image(90, 110))  # 0.5 m pixels

    def labelled(weights_file, out, **settings):
        """The labels and class probabilities, checked to be on the image's grid."""
        result = run_inference(cfg.replace(WRITE_PROBABILITIES=True, **settings), weights_file, tmp_path / out,
                               image_paths=[source]).images[0]
        with rasterio.open(source) as image:
            for output in ("labels", "probabilities"):
                with rasterio.open(result.outputs[output]) as src:
                    assert (src.width, src.height, src.crs, src.transform) == (image.width, image.height, image.crs, image.transform)
        return np.concatenate([read_raster(result.outputs["labels"]), read_raster(result.outputs["probabilities"])])

    as_is = labelled(weights[0.5], "same")
    assert "note:" not in capsys.readouterr().err
    coarser_model = labelled(weights[1.0], "finer")
    note = capsys.readouterr().err
    assert "in.tif has 0.5 x 0.5 m pixels and the weights were trained on 1 m: labelled at 1 m (55 x 45 px)" in note
    assert 'INFER_PIXEL_SIZE="image"' in note and "another grid" not in note
    assert (coarser_model[1:] != as_is[1:]).mean() > 0.1  # labelled on another grid, the probabilities move
    np.testing.assert_array_equal(labelled(weights[1.0], "image", INFER_PIXEL_SIZE="image"), as_is)
    assert "note:" not in capsys.readouterr().err
    np.testing.assert_array_equal(labelled(weights[0.5], "asked", INFER_PIXEL_SIZE=1.0), coarser_model)
    # an image coarser than the training imagery is labelled as it is, and a line says so
    np.testing.assert_array_equal(labelled(weights[0.25], "coarser"), as_is)
    note = capsys.readouterr().err
    assert "in.tif has 0.5 x 0.5 m pixels, coarser than the 0.25 m the weights were trained on: labelled as it is" in note


def test_preview_draws_the_ground_truth_as_it_is_scored(sample_root, tmp_path, monkeypatch):
    """A 0/255 building mask (LABEL_VALUES) is drawn in its classes' colours, not its 255 as ignored;
    of a tile also trained on, only the held-out blocks, the others as not scored."""
    import shutil

    from eoseg import plots
    from eoseg.holdout import tile_split
    from eoseg.io import read_label

    data = tmp_path / "data"
    shutil.copytree(sample_root / "data", data)
    mask_path = data / "labels" / "top_mosaic_09cm_area1.tif"
    buildings = read_label(mask_path) == 1
    with rasterio.open(mask_path, "r+") as dst:
        dst.write(np.where(buildings, 255, 0).astype(dst.dtypes[0]), 1)
    cfg = make_tiny_config(tmp_path, DATA_ROOT=str(data), GT_ERODED_PATTERN="", CLASS_NAMES=["other", "building"],
                           PALETTE=[[255, 255, 255], [0, 0, 255]], LABEL_VALUES={0: 0, 255: 1}, TRAIN_IDS=["1"],
                           TEST_IDS=["1"], PATCH_SIZE=32, HOLDOUT_BLOCK=64, WRITE_PREVIEW=True)
    torch.manual_seed(0)
    weights = save_checkpoint(tmp_path / "w.pt", cfg, model_from_config(cfg), iteration=0)
    drawn = {}
    original = plots.plot_prediction

    def capture(image, prediction_rgb, path, truth_rgb=None, errors=None, title="", legend=None):
        drawn["truth_rgb"] = truth_rgb
        return original(image, prediction_rgb, path, truth_rgb, errors, title, legend)

    monkeypatch.setattr(plots, "plot_prediction", capture)
    result = run_inference(cfg, weights, tmp_path / "out", ["1"], progress=False).images[0]
    assert result.outputs["preview"].stat().st_size > 0
    held_out = tile_split(cfg, "1", *buildings.shape).mask(0, buildings.shape[0], held_out=True)
    expected = cfg.palette.to_color(np.where(held_out, buildings.astype(np.uint8), cfg.IGNORE_LABEL))
    assert buildings[held_out].any() and np.array_equal(drawn["truth_rgb"], expected)  # full size here (< 1024 px)
    # black a class and no IGNORE_COLOR (building masks): the pixels not scored in a colour no class has
    masks = cfg.replace(IGNORE_COLOR=None, PALETTE=[[0, 0, 0], [0, 0, 255]])
    run_inference(masks, weights, tmp_path / "masks", ["1"], progress=False)
    unscored = {tuple(colour) for colour in drawn["truth_rgb"][~held_out].reshape(-1, 3).tolist()}
    assert len(unscored) == 1 and unscored.isdisjoint({(0, 0, 0), (0, 0, 255)})


def test_boundaries_scored_as_a_class_under_other_label_values_are_warned_of(sample_root, tmp_path, capsys):
    """Weights trained on ISPRS ids ({0: 'ignore', 1: 0, ...}) scoring their ground truth read with LABEL_VALUES {}:
    boundaries scored as a class, every class shifted by one, OA 6.4% with a note alone (review). The thin-line class
    of check_data.py is now said at scoring too."""
    import shutil

    data = tmp_path / "data"
    shutil.copytree(sample_root / "data", data)
    cfg = make_tiny_config(tmp_path, DATA_ROOT=str(data), WRITE_PREVIEW=False, GT_ERODED_PATTERN="", GT_COLOR_PATTERN="")
    size = read_raster(cfg.tile_path("IMAGE_PATTERN", "4")).shape[1]
    ids = np.repeat(np.repeat(np.random.default_rng(0).integers(1, 6, (size // 32 + 1,) * 2), 32, 0), 32, 1)[:size, :size]
    edges = np.zeros(ids.shape, bool)
    edges[:, 1:] |= ids[:, 1:] != ids[:, :-1]
    edges[1:, :] |= ids[1:, :] != ids[:-1, :]
    for shift in (-1, 0, 1):  # boundaries 3 px wide, 0 as in the ISPRS eroded ground truth
        ids[np.roll(edges, shift, axis=0) | np.roll(edges, shift, axis=1)] = 0
    with rasterio.open(cfg.tile_path("IMAGE_PATTERN", "4")) as src:
        profile = {**src.profile, "count": 1, "dtype": "uint8", "photometric": None}
    with rasterio.open(cfg.tile_path("LABEL_PATTERN", "4"), "w", **profile) as dst:
        dst.write(ids.astype(np.uint8)[None])
    trained = cfg.replace(LABEL_VALUES={0: "ignore", **{value: value - 1 for value in range(1, 7)}})
    torch.manual_seed(0)
    weights = save_checkpoint(tmp_path / "w.pt", trained, model_from_config(trained), iteration=0)
    run_inference(cfg, weights, tmp_path / "out", tile_ids=["4"], progress=False)
    assert ("warning: top_mosaic_09cm_area4.tif: class 0 (impervious surfaces) lies in thin lines" in
            capsys.readouterr().err)
    run_inference(trained, weights, tmp_path / "same", tile_ids=["4"], progress=False)
    assert "thin lines" not in capsys.readouterr().err
    # the same ids as a one-band eroded ground truth, under the LABEL_VALUES the weights were trained with: it is read
    # through those of the label maps, and scored OA 7.9% without a word (review)
    eroded = cfg.replace(GT_ERODED_PATTERN="eroded/top_mosaic_09cm_area{id}.tif")
    (data / "eroded").mkdir()
    with rasterio.open(eroded.tile_path("GT_ERODED_PATTERN", "4"), "w", **profile) as dst:
        dst.write(ids.astype(np.uint8)[None])
    weights = save_checkpoint(tmp_path / "w_ids.pt", cfg, model_from_config(cfg), iteration=0)
    run_inference(eroded, weights, tmp_path / "eroded", tile_ids=["4"], progress=False)
    assert ("warning: top_mosaic_09cm_area4.tif: class 0 (impervious surfaces) lies in thin lines" in
            capsys.readouterr().err)


def weights_of_values(cfg: Config, path, pixels: np.ndarray, dtype: str):
    """Untrained weights of ``cfg`` that record ``pixels`` (3 bands) of ``dtype`` as their training values."""
    from eoseg.normalization import BandStatistics

    statistics = BandStatistics(3)
    statistics.add(pixels, np.ones(pixels.shape[1:], dtype=bool))
    torch.manual_seed(0)
    return save_checkpoint(path, cfg, model_from_config(cfg), iteration=0,
                           trained_on={"input_dtype": dtype, "input_statistics": statistics.record()})


def test_reports_that_no_labelling_run_left_are_replaced_only_with_force_and_a_training_run_never(setup, tmp_path):
    """metrics.json, config.json... of the user's, or of a training run (whose config.json --resume holds it to),
    were replaced without --force (review)."""
    cfg, weights = setup
    source = write_geotiff(tmp_path / "in.tif", random_image(64, 64))
    theirs = tmp_path / "results"
    theirs.mkdir()
    (theirs / "metrics.json").write_text("keep me")
    with pytest.raises(EosegError, match=r"results holds metrics.json, which no labelling run left there .*pass --force"):
        run_inference(cfg, weights, theirs, image_paths=[source], progress=False)
    assert (theirs / "metrics.json").read_text() == "keep me"
    run_inference(cfg, weights, theirs, image_paths=[source], progress=False, force=True)
    run_inference(cfg, weights, theirs, image_paths=[source], progress=False)  # its own: labelled again as ever
    for path in theirs.iterdir():  # as the other shares of a --shard run find it before a first record: a labelling run's
        if path.name != "config.json":
            path.unlink()
    run_inference(cfg, weights, theirs, image_paths=[source], progress=False)
    training = tmp_path / "train"
    (training / "checkpoints").mkdir(parents=True)
    (training / "log.csv").write_text("iteration,loss\n")
    (training / "config.json").write_text("{}")
    for force in (False, True):
        with pytest.raises(EosegError, match=r"train holds a training run .*label into another --out"):
            run_inference(cfg, weights, training, image_paths=[source], progress=False, force=force)
    assert (training / "config.json").read_text() == "{}"


def test_a_folder_labelled_in_two_runs_says_its_report_is_the_last_runs(setup, tmp_path, capsys):
    """--images a then --images b into one folder: metrics.json listed b alone beside a's maps, unsaid (review)."""
    cfg, weights = setup
    first, second = (write_geotiff(tmp_path / f"{name}.tif", random_image(64, 64)) for name in ("a", "b"))
    run_inference(cfg, weights, tmp_path / "out", image_paths=[first], progress=False)
    run_inference(cfg, weights, tmp_path / "out", image_paths=[second], progress=True)
    assert "also holds the maps of a, labelled by an earlier run; metrics.json reports this run's images only" in \
        capsys.readouterr().err
    report = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert list(report["images"]) == ["b"] and report["earlier_images"] == ["a"]


def test_the_saved_config_names_the_network_the_weights_hold(setup, tmp_path, capsys):
    cfg, weights = setup
    source = write_geotiff(tmp_path / "in.tif", random_image(64, 64))
    other = cfg.replace(MODEL_WIDTH=cfg.MODEL_WIDTH * 2)
    run_inference(other, weights, tmp_path / "out", image_paths=[source], progress=False)
    assert "which is used" in capsys.readouterr().err
    saved = json.loads((tmp_path / "out" / "config.json").read_text())["config"]
    assert saved["MODEL_WIDTH"] == cfg.MODEL_WIDTH  # what ran, not the config's unused width
    # and the same weights under either width are one run's results, not another config's
    run_inference(cfg, weights, tmp_path / "out", image_paths=[source], progress=False)


def test_zeros_of_weights_trained_with_nodata_zero_are_said_even_as_a_small_share(tmp_path, capsys):
    """Weights trained with NODATA_ZERO=True never saw a pixel 0 in every band; labelling with the default False
    labelled 25% of a swath edge as land without a word (review). Said from 1% of the pixels on, naming the setting."""
    import torch as torch_

    cfg = make_tiny_config(tmp_path, WRITE_PREVIEW=False)
    pixels = random_image(100, 100)
    plain = weights_of_values(cfg, tmp_path / "plain.pt", pixels, "uint8")
    payload = torch_.load(plain, weights_only=True)
    payload["signature"]["nodata_zero"] = True
    trained_on_zero = tmp_path / "nodata_zero.pt"
    torch_.save(payload, trained_on_zero)
    edged = pixels.copy()
    edged[:, :, :3] = 0  # 3% of the image: under the share said of any weights
    image = write_geotiff(tmp_path / "edged.tif", edged)
    run_inference(cfg, plain, tmp_path / "plain", image_paths=[image])
    assert "0 in every band" not in capsys.readouterr().err
    run_inference(cfg, trained_on_zero, tmp_path / "zero", image_paths=[image])
    assert ("edged.tif: labelled as it is; 3% of its sampled pixels are 0 in every band, which the weights were trained "
            "to take for no data (NODATA_ZERO=True, as they record), and are labelled here as land: set NODATA_ZERO=True"
            ) in capsys.readouterr().err
    run_inference(cfg.replace(NODATA_ZERO=True), trained_on_zero, tmp_path / "masked", image_paths=[image])
    assert "0 in every band" not in capsys.readouterr().err


def test_an_image_of_another_data_type_holding_the_training_values_is_labelled_as_it_is(tmp_path, capsys):
    """8-bit values stored as float32 (or uint16) are the training data's: labelled, with a note; other values are not."""
    cfg = make_tiny_config(tmp_path, WRITE_PREVIEW=False)
    pixels = random_image(90, 110)
    weights = weights_of_values(cfg, tmp_path / "w.pt", pixels, "uint8")

    def labelled(array, name):
        result = run_inference(cfg, weights, tmp_path / name, image_paths=[write_geotiff(tmp_path / f"{name}.tif", array)])
        return read_raster(result.images[0].outputs["labels"])

    as_uint8 = labelled(pixels, "uint8")
    assert "note:" not in capsys.readouterr().err
    np.testing.assert_array_equal(labelled(pixels.astype(np.float32), "float32"), as_uint8)
    assert "float32.tif: its pixels are float32, the training data's uint8; its values lie in uint8's range" in \
        capsys.readouterr().err
    brighter = pixels.astype(np.uint16) + 40  # on the training scale (1.2 times), but past 8 bits: other data
    with pytest.raises(EosegError, match=r"uint16.tif: its pixels are uint16, but the weights were trained on uint8"):
        labelled(brighter, "uint16")


def test_a_float_copy_of_a_darker_16_bit_scene_is_labelled_as_the_scene_is(tmp_path, capsys):
    """A float32 copy of a uint16 scene at 0.6 times the training values was refused (suggesting INFER_VALUE_SCALE
    1.66, 66% brighter) where the uint16 scene got a note, and its refusal stopped every image of the run (review).
    It is held to the value check's limits as the scene is; a refusal (INFER_VALUE_CHECK off: nothing compared) fails
    that image alone and says how to have it compared."""
    cfg = make_tiny_config(tmp_path, WRITE_PREVIEW=False)
    pixels = random_image(90, 110).astype(np.uint16) * 4
    weights = weights_of_values(cfg, tmp_path / "w.pt", pixels, "uint16")
    darker = (pixels * 0.6).astype(np.uint16)
    scene = write_geotiff(tmp_path / "scene.tif", darker)
    copy = write_geotiff(tmp_path / "copy.tif", darker.astype(np.float32))
    as_scene = run_inference(cfg, weights, tmp_path / "scene", image_paths=[scene], progress=False)
    capsys.readouterr()
    as_copy = run_inference(cfg, weights, tmp_path / "copy", image_paths=[copy])
    np.testing.assert_array_equal(read_raster(as_copy.images[0].outputs["labels"]),
                                  read_raster(as_scene.images[0].outputs["labels"]))
    assert "copy.tif: its values are 0.6 times those the weights were trained on" in capsys.readouterr().err
    unchecked = run_inference(cfg.replace(INFER_VALUE_CHECK=False), weights, tmp_path / "unchecked",
                              image_paths=[copy, scene], progress=False)
    assert [image.name for image in unchecked.images] == ["scene"]
    assert "set INFER_VALUE_CHECK=True to have its values compared with theirs" in unchecked.failed[str(copy)]


def test_the_value_scale_is_checked_on_data_the_sampled_windows_miss(tmp_path):
    """Reflectance 0..1 against weights of 0..255 values, in a small part of a large nodata frame that lies
    between the windows the check reads first: the whole raster is read, and the image refused."""
    from eoseg.io import spread_windows

    cfg = make_tiny_config(tmp_path, WRITE_PREVIEW=False)
    pixels = random_image(90, 110)
    weights = weights_of_values(cfg, tmp_path / "w.pt", pixels, "float32")
    frame = np.full((3, 2000, 2000), -9999, np.float32)
    frame[:, 300:390, 300:410] = pixels / 255
    sampled = np.zeros(frame.shape[1:], bool)
    for window in spread_windows(2000, 2000, 4, 256):
        sampled[window.toslices()] = True
    assert not sampled[300:390, 300:410].any()  # the data lies where the first windows do not reach
    scene = write_geotiff(tmp_path / "scene.tif", frame, nodata=-9999)
    with pytest.raises(EosegError, match=r"scene.tif: its values are 0.0039 times those the weights were trained on"):
        run_inference(cfg, weights, tmp_path / "out", image_paths=[scene])


def test_an_image_refused_for_its_values_leaves_the_others_of_a_folder_labelled(tmp_path):
    """A small dark chip (a quarter of the training values: water, shadow) among images on the training scale: it
    is listed as not labelled, with both remedies and how few pixels were measured, and the others are labelled."""
    cfg = make_tiny_config(tmp_path, WRITE_PREVIEW=False)
    weights = weights_of_values(cfg, tmp_path / "w.pt", random_image(90, 110), "uint8")
    scenes = [write_geotiff(tmp_path / f"scene{i}.tif", random_image(90, 110, seed=i)) for i in (1, 2)]
    dark = write_geotiff(tmp_path / "dark.tif", (random_image(32, 32, seed=3) // 4).astype(np.uint8))
    summary = run_inference(cfg, weights, tmp_path / "out", image_paths=[scenes[0], dark, scenes[1]])
    assert [image.name for image in summary.images] == ["scene1", "scene2"]
    assert all(image.outputs["labels"].is_file() for image in summary.images)
    why = summary.failed[str(dark)]
    assert "dark.tif: its values are 0.2" in why and "only 1024 valid pixels" in why
    assert "if the images are on another scale, set INFER_VALUE_SCALE=" in why and "INFER_VALUE_CHECK=False" in why
    assert not (tmp_path / "out" / "dark_labels.tif").exists()
    with pytest.raises(EosegError, match=r"dark.tif: its values are 0.2"):  # one image alone: refused, nothing written
        run_inference(cfg, weights, tmp_path / "alone", image_paths=[dark])
    assert not (tmp_path / "alone").exists()


def test_png_outputs_show_nodata_transparent(setup, tmp_path):
    """A plain image's nodata (here its alpha collar) is transparent in its PNG outputs, as masked in GeoTIFFs."""
    from PIL import Image

    cfg, weights = setup
    alpha = np.full((90, 100), 255, np.uint8)
    alpha[:, :20] = 0
    path = tmp_path / "plain.png"
    with rasterio.open(path, "w", driver="PNG", width=100, height=90, count=4, dtype="uint8") as dst:
        dst.write(np.concatenate([random_image(90, 100), alpha[None]]))
    outputs = run_inference(cfg.replace(WRITE_COLOR=True), weights, tmp_path / "out", image_paths=[path]).images[0].outputs
    labels = Image.open(outputs["labels"])
    assert labels.mode == "P" and labels.info["transparency"] == cfg.IGNORE_LABEL
    assert (np.asarray(labels)[:, :20] == cfg.IGNORE_LABEL).all() and (np.asarray(labels)[:, 20:] < 6).all()
    colour = np.asarray(Image.open(outputs["color"]))
    assert colour.shape == (90, 100, 4)
    np.testing.assert_array_equal(colour[..., 3], alpha)


def test_an_image_with_a_crs_but_no_transform_is_not_taken_for_placed(setup, tmp_path, capsys):
    """gdal_translate -a_srs on a plain image: its outputs would carry the CRS at pixel coordinates (near the
    projection's origin, mirrored); it is labelled as the plain image it is, and said so."""
    cfg, weights = setup
    path = tmp_path / "crs_only.tif"
    with rasterio.open(path, "w", driver="GTiff", width=64, height=64, count=3, dtype="uint8",
                       crs=CRS.from_epsg(32632)) as dst:
        dst.write(random_image(64, 64))
    from eoseg.io import raster_info

    info = raster_info(path)
    assert not info.georeferenced and "has a CRS but no geotransform, which places no pixel" in info.unplaced
    labelled = run_inference(cfg, weights, tmp_path / "out", image_paths=[path], progress=True).images[0]
    assert labelled.outputs["labels"].suffix == ".png"
    assert "crs_only.tif has a CRS but no geotransform" in capsys.readouterr().err


def test_a_raster_of_several_blocks_shows_its_rows_labelled(setup, tmp_path, capsys):
    """The only bar counted images: a 15000 px raster showed 0/1 for minutes, and looked hung (review). A raster of
    more than one block of INFER_BLOCK_ROWS shows a bar of its rows; one of a single block, none."""
    cfg, weights = setup
    scene = write_geotiff(tmp_path / "tall.tif", random_image(150, 60))
    run_inference(cfg.replace(INFER_BLOCK_ROWS=64), weights, tmp_path / "blocks", image_paths=[scene])
    assert "tall:   0%|          | 0/150 [00:00<?, ?row/s]" in capsys.readouterr().err
    run_inference(cfg.replace(INFER_BLOCK_ROWS=512), weights, tmp_path / "one", image_paths=[scene])
    assert "/150 [" not in capsys.readouterr().err


def test_outputs_of_an_image_that_changed_and_cannot_be_labelled_are_removed(setup, tmp_path, capsys):
    """An image damaged since it was labelled: the rerun listed it as not labelled, and left its old map with a record
    saying "complete" (review). They are removed; the other images' outputs are kept."""
    import rasterio.shutil

    from eoseg.errors import DamagedInputError

    cfg, weights = setup
    scenes = [write_geotiff(tmp_path / f"{name}.tif", random_image(60, 70, seed=i)) for i, name in enumerate("ab")]
    out = tmp_path / "out"
    first = run_inference(cfg, weights, out, image_paths=scenes)
    old_a = first.images[0].outputs
    content = scenes[0].read_bytes()[:-4000]  # truncated: its last rows unreadable now
    scenes[0].write_bytes(content)
    rerun = run_inference(cfg, weights, out, image_paths=scenes)
    assert [image.name for image in rerun.images] == ["b"] and rerun.images[0].reused and str(scenes[0]) in rerun.failed
    assert not any(path.exists() for path in old_a.values()) and not (out / "a_record.json").exists()
    # refused before labelling (rewritten without its georeference, and polygons asked for): removed, and said
    polygons = cfg.replace(WRITE_POLYGONS=".gpkg")
    placed = write_geotiff(tmp_path / "placed.tif", random_image(60, 70, seed=3))
    old_placed = run_inference(polygons, weights, tmp_path / "poly", image_paths=[placed, scenes[1]]).images[0].outputs
    with rasterio.open(placed, "w", driver="GTiff", width=70, height=60, count=3, dtype="uint8") as dst:
        dst.write(random_image(60, 70, seed=3))
    assert str(placed) in run_inference(polygons, weights, tmp_path / "poly", image_paths=[placed, scenes[1]]).failed
    assert not any(path.exists() for path in old_placed.values()) and not (tmp_path / "poly" / "placed_record.json").exists()
    assert "note: removed the outputs of placed.tif that an earlier run made of it as it was then" in capsys.readouterr().err
    # a mosaic whose tile cannot be looked at (a share unmounted): unknown, not changed; its outputs are kept
    share = tmp_path / "share"
    share.mkdir()
    write_geotiff(share / "tile.tif", random_image(60, 70, seed=5))
    mosaic = tmp_path / "mosaic.vrt"
    rasterio.shutil.copy(share / "tile.tif", mosaic, driver="VRT")
    run_inference(cfg, weights, out, image_paths=[mosaic])
    share.rename(tmp_path / "unmounted")
    assert str(mosaic) in run_inference(cfg, weights, out, image_paths=[mosaic, scenes[1]]).failed
    (tmp_path / "unmounted").rename(share)
    assert run_inference(cfg, weights, out, image_paths=[mosaic]).images[0].reused
    # alone (none labelled): removed too, before the error
    run_inference(cfg, weights, tmp_path / "alone", image_paths=[scenes[1]])
    scenes[1].write_bytes(scenes[1].read_bytes()[:-4000])
    with pytest.raises(DamagedInputError):
        run_inference(cfg, weights, tmp_path / "alone", image_paths=[scenes[1]])
    assert not list((tmp_path / "alone").glob("b_*"))


def test_cog_of_a_plain_image_is_said_to_be_a_png(setup, tmp_path, capsys):
    """WRITE_COG on images placed nowhere wrote PNGs without a word: the user asked for COGs and got none."""
    cfg, weights = setup
    (tmp_path / "scenes").mkdir()
    write_geotiff(tmp_path / "scenes" / "placed.tif", random_image(60, 70))
    with rasterio.open(tmp_path / "scenes" / "plain.png", "w", driver="PNG", width=70, height=60, count=3,
                       dtype="uint8") as dst:
        dst.write(random_image(60, 70))
    summary = run_inference(cfg.replace(WRITE_COG=True, WRITE_PROBABILITIES=True), weights, tmp_path / "out",
                            image_paths=[tmp_path / "scenes"])
    assert sorted(image.outputs["labels"].suffix for image in summary.images) == [".png", ".tif"]
    err = capsys.readouterr().err  # its probabilities are a TIFF, but no COG either (review)
    assert "note: WRITE_COG: plain.png is not placed on the ground; its outputs are no Cloud-Optimized GeoTIFFs (maps " \
           "PNGs, probabilities a plain TIFF)" in err
    assert "placed.tif" not in err.split("WRITE_COG")[1].split("\n")[0]


def test_polygons_of_an_image_without_a_crs_are_refused_before_labelling(setup, tmp_path):
    """A PNG placed by a world file has no CRS (GDAL reads no .prj beside it): polygons could not be placed."""
    cfg, weights = setup
    path = tmp_path / "placed.png"
    with rasterio.open(path, "w", driver="PNG", width=64, height=64, count=3, dtype="uint8") as dst:
        dst.write(random_image(64, 64))
    (tmp_path / "placed.pgw").write_text("0.5\n0\n0\n-0.5\n500000.25\n5399999.75\n")
    with pytest.raises(EosegError, match=r"placed.png: WRITE_POLYGONS writes map polygons, and the image has no CRS.*; "
                                         r"give it a CRS \(gdal_edit.py -a_srs EPSG:CODE placed.png\)"):
        run_inference(cfg.replace(WRITE_POLYGONS=".gpkg"), weights, tmp_path / "out", image_paths=[path], progress=False)
    assert not (tmp_path / "out").exists()
    (tmp_path / "placed.pgw").unlink()  # placed nowhere: a CRS alone would not place it (review)
    with pytest.raises(EosegError, match=r"give it a CRS and a geotransform \(gdal_translate -a_srs EPSG:CODE -a_ullr"):
        run_inference(cfg.replace(WRITE_POLYGONS=".gpkg"), weights, tmp_path / "out", image_paths=[path], progress=False)


def test_polygons_an_image_cannot_carry_are_refused_before_labelling(setup, tmp_path):
    """An image placed by GCPs was told to get a CRS (gdal_translate -a_srs), which leaves it unplaced; a .geojson in a
    CRS without an equal EPSG code was written without its CRS (readers took the metres for degrees)."""
    cfg, weights = setup
    path = image_placed_by_gcps(tmp_path / "gcps.tif")
    with pytest.raises(EosegError, match=r"gcps.tif: WRITE_POLYGONS writes map polygons, and the image has no CRS or no "
                                         r"geotransform to place them with; gcps.tif has ground control points .*gdalwarp -tps"):
        run_inference(cfg.replace(WRITE_POLYGONS=".gpkg"), weights, tmp_path / "out", image_paths=[path], progress=False)
    custom = tmp_path / "custom.tif"
    with rasterio.open(custom, "w", driver="GTiff", width=100, height=90, count=3, dtype="uint8",
                       crs=CRS.from_proj4("+proj=tmerc +lon_0=9.3 +k=1 +x_0=20000 +ellps=GRS80 +units=m"),
                       transform=from_origin(20000, 5400000, 0.5, 0.5)) as dst:
        dst.write(random_image(90, 100))
    with pytest.raises(EosegError, match=r"custom.tif \(WRITE_POLYGONS=.geojson\): its CRS .* has no authority code .* write "
                                         r"a GeoPackage \(.gpkg\) instead"):
        run_inference(cfg.replace(WRITE_POLYGONS=".geojson"), weights, tmp_path / "out", image_paths=[custom], progress=False)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("setting", [{"WRITE_POLYGONS": ".gpkg"}, {"INFER_PIXEL_SIZE": 1.0}])
def test_an_image_that_cannot_give_what_the_config_asks_fails_alone(setup, tmp_path, setting):
    """One image without a georeference in a folder, under WRITE_POLYGONS or a pixel size in metres: nothing was
    labelled (review); it is listed as not labelled, as damaged files are, and the others are labelled."""
    cfg, weights = setup
    (tmp_path / "scenes").mkdir()
    placed = write_geotiff(tmp_path / "scenes" / "placed.tif", random_image(60, 70))
    plain = tmp_path / "scenes" / "plain.png"
    with rasterio.open(plain, "w", driver="PNG", width=70, height=60, count=3, dtype="uint8") as dst:
        dst.write(random_image(60, 70))
    summary = run_inference(cfg.replace(**setting), weights, tmp_path / "out", image_paths=[tmp_path / "scenes"],
                            progress=False)
    assert [image.name for image in summary.images] == [placed.stem] and list(summary.failed) == [str(plain)]
    assert "plain.png" in summary.failed[str(plain)] and next(iter(setting)) in summary.failed[str(plain)]


def named_geotiff(path, array, names, **tags):
    """``write_geotiff`` with each band's description (its name in the file) set, and GDAL ``scales``/``offsets``."""
    write_geotiff(path, array)
    with rasterio.open(path, "r+") as dst:
        dst.descriptions = names
        if tags:
            dst.scales, dst.offsets = tags["scales"], tags["offsets"]
    return path


def test_an_image_naming_the_training_bands_in_another_order_is_refused(tmp_path, capsys):
    """Sentinel-2 band codes say nothing of colour: the weights record what the training files named their BANDS,
    and a file holding those names elsewhere is refused with the BANDS that reads it alike."""
    from eoseg.io import raster_info
    from eoseg.tiles import image_bands_record

    cfg = make_tiny_config(tmp_path, WRITE_PREVIEW=False)
    pixels = random_image(60, 70)
    training = named_geotiff(tmp_path / "training.tif", pixels, ["B04", "B03", "B02"])
    record = image_bands_record([raster_info(training)], cfg.BANDS)
    weights = save_checkpoint(tmp_path / "w.pt", cfg, model_from_config(cfg), iteration=0, trained_on={"image_bands": record})
    swapped = named_geotiff(tmp_path / "swapped.tif", pixels[::-1].copy(), ["B02", "B03", "B04"])
    with pytest.raises(EosegError, match=r"swapped.tif: its bands \[1, 2, 3\] \(BANDS\) are named \['B02', 'B03', 'B04'\] "
                                         r".* set BANDS = \[3, 2, 1\] to read them alike"):
        run_inference(cfg, weights, tmp_path / "out", image_paths=[swapped])
    read_alike = run_inference(cfg.replace(BANDS=[3, 2, 1]), weights, tmp_path / "alike", image_paths=[swapped])
    as_trained = run_inference(cfg, weights, tmp_path / "trained", image_paths=[training])
    np.testing.assert_array_equal(read_raster(read_alike.images[0].outputs["labels"]),
                                  read_raster(as_trained.images[0].outputs["labels"]))
    assert "named" not in capsys.readouterr().err
    other = named_geotiff(tmp_path / "other.tif", pixels, ["Band 1", "Band 2", "Band 3"])
    run_inference(cfg, weights, tmp_path / "other", image_paths=[other])
    assert "other.tif: its bands [1, 2, 3] (BANDS) are named ['Band 1', 'Band 2', 'Band 3'] in the file, the files the " \
           "weights were trained on named them ['B04', 'B03', 'B02']" in capsys.readouterr().err


def test_an_image_missing_the_training_images_offset_is_told_how_to_tag_it(tmp_path, capsys):
    """Reflectance stored as value * 10000 + 1000 (a GDAL scale of 0.0001 and offset of -0.1) against an image that lost
    its tags: the refusal says to tag it, since no INFER_VALUE_SCALE undoes the offset; labelled with one, a note says so."""
    from eoseg.io import raster_info
    from eoseg.normalization import BandStatistics
    from eoseg.tiles import image_bands_record

    cfg = make_tiny_config(tmp_path, WRITE_PREVIEW=False, NORM_STD=[0.1, 0.1, 0.1])
    stored = (random_image(60, 70).astype(np.uint16) * 20 + 1000)
    tagged = named_geotiff(tmp_path / "tagged.tif", stored, ["B8", "B4", "B3"], scales=[1e-4] * 3, offsets=[-0.1] * 3)
    values = stored * 1e-4 - 0.1
    statistics = BandStatistics(3)
    statistics.add(values, np.ones(values.shape[1:], dtype=bool))
    weights = save_checkpoint(tmp_path / "w.pt", cfg, model_from_config(cfg), iteration=0, trained_on={
        "input_dtype": "float32", "input_statistics": statistics.record(),
        "image_bands": image_bands_record([raster_info(tagged)], cfg.BANDS)})
    run_inference(cfg, weights, tmp_path / "tagged", image_paths=[tagged])
    assert "note:" not in capsys.readouterr().err
    untagged = named_geotiff(tmp_path / "untagged.tif", stored, ["B8", "B4", "B3"])
    hint = ("the training images were read through a GDAL scale 0.0001 and offset -0.1, this one through no scale or "
            "offset: if it holds their product, tag it as they are (gdal_edit.py -scale 0.0001 -offset -0.1 FILE)")
    with pytest.raises(EosegError) as refused:
        run_inference(cfg, weights, tmp_path / "untagged", image_paths=[untagged])
    assert "INFER_VALUE_SCALE" in str(refused.value) and hint in str(refused.value)
    as_float = named_geotiff(tmp_path / "float.tif", stored.astype(np.float32), ["B8", "B4", "B3"])
    with pytest.raises(EosegError) as refused:  # of the training data's type: refused by its values' scale
        run_inference(cfg, weights, tmp_path / "float", image_paths=[as_float])
    assert "times those the weights were trained on" in str(refused.value) and hint in str(refused.value)
    run_inference(cfg.replace(INFER_VALUE_SCALE=0.0001), weights, tmp_path / "scaled", image_paths=[as_float])
    assert "float.tif: labelled with INFER_VALUE_SCALE 0.0001; " + hint in capsys.readouterr().err


def coloured_geotiff(path, array, colours):
    """``write_geotiff`` with GDAL's colour interpretation of each band set."""
    write_geotiff(path, array)
    with rasterio.open(path, "r+") as dst:
        dst.colorinterp = colours
    return path


def test_the_band_order_warning_compares_the_files_with_the_training_files(tmp_path):
    """IRRG weights warned of every file GDAL calls RGB, the very files they were trained on (the ISPRS tiles) among
    them, so the warning told nothing (review). Files saying what the training files said are not warned of; files
    saying other colours are, against the training files' colours; without colours there, against BAND_NAMES."""
    from eoseg.io import raster_info
    from eoseg.tiles import image_bands_record

    cfg = make_tiny_config(tmp_path, WRITE_PREVIEW=False)  # BAND_NAMES: IR, R, G
    rgb, bgr = ([getattr(ColorInterp, c) for c in order] for order in (("red", "green", "blue"), ("blue", "green", "red")))
    pixels = random_image(40, 50)
    declared_rgb = coloured_geotiff(tmp_path / "irrg_declared_rgb.tif", pixels, rgb)
    declared_bgr = coloured_geotiff(tmp_path / "declared_bgr.tif", pixels, bgr)
    undeclared = coloured_geotiff(tmp_path / "undeclared.tif", pixels, [ColorInterp.undefined] * 3)

    def warning(trained_on, image, name: str) -> str | None:
        record = image_bands_record([raster_info(trained_on)], cfg.BANDS)
        weights = save_checkpoint(tmp_path / f"{name}.pt", cfg, model_from_config(cfg), iteration=0,
                                  trained_on={"image_bands": record})
        return run_inference(cfg, weights, tmp_path / name, image_paths=[image], progress=False).band_order_warning

    assert warning(declared_rgb, declared_rgb, "same") is None
    assert warning(declared_rgb, declared_bgr, "other") == (
        "declared_bgr.tif: GDAL says bands 1, 2, 3 are blue, green, red, but the training images' files said red, green, "
        "blue; if the bands are in another order, set BANDS to reorder them")
    assert warning(undeclared, declared_rgb, "names").startswith(
        "irrg_declared_rgb.tif: GDAL says bands 1, 2, 3 are red, green, blue, but the weights were trained on IR, R, G")
    assert warning(declared_rgb, undeclared, "silent") is None
    # kept in metrics.json beside the maps, where a notebook's reader looks later too (review)
    assert json.loads((tmp_path / "other" / "metrics.json").read_text())["band_order_warning"].startswith("declared_bgr.tif")
    assert "band_order_warning" not in json.loads((tmp_path / "same" / "metrics.json").read_text())
