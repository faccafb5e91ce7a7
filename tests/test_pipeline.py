"""Each step of the pipeline through the eoseg API, on the tiny generated dataset."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from eoseg.checkpoint import load_checkpoint, load_model
from eoseg.convert import color_file_to_labels, labels_file_to_color
from eoseg.errors import EosegError
from eoseg.extract import extract_patches, read_manifest
from eoseg.infer import run_inference
from eoseg.io import raster_info, read_label, read_raster
from eoseg.labels import LabelValues
from eoseg.lmdb_store import LmdbPatches, create_lmdb
from eoseg.metadata import data_signature
from eoseg.models import model_from_config
from eoseg.recipe import make_loss, make_optimizer
from eoseg.sample import PIXEL_SIZE_M
from eoseg.tiles import training_filling
from eoseg.train import train

from .conftest import TINY_TILE_SIZE


# ---------------------------------------------------------------- convert
def test_convert_round_trip_keeps_georeference(tiny_cfg, tmp_path):
    source = tiny_cfg.tile_path("GT_COLOR_PATTERN", "1")
    labels_path = color_file_to_labels(source, tmp_path / "labels.tif", tiny_cfg.palette)
    color_path = labels_file_to_color(labels_path, tmp_path / "color.tif", tiny_cfg.palette, LabelValues.from_config(tiny_cfg))
    assert np.array_equal(read_raster(color_path), read_raster(source))
    labels = read_label(labels_path)
    assert set(np.unique(labels)) <= set(range(tiny_cfg.num_classes))
    with rasterio.open(source) as a, rasterio.open(labels_path) as b, rasterio.open(color_path) as c:
        assert a.crs == b.crs == c.crs and a.crs is not None
        assert a.transform == b.transform == c.transform
        assert b.colormap(1)[1][:3] == tuple(tiny_cfg.PALETTE[1])


def test_eroded_ground_truth_boundaries_become_ignore(tiny_cfg, tmp_path):
    labels = read_label(color_file_to_labels(tiny_cfg.tile_path("GT_ERODED_PATTERN", "1"), tmp_path / "e.tif", tiny_cfg.palette))
    full = read_label(tiny_cfg.tile_path("LABEL_PATTERN", "1"))
    ignored = labels == tiny_cfg.IGNORE_LABEL
    assert 0 < ignored.mean() < 0.6
    assert np.array_equal(labels[~ignored], full[~ignored])


def test_convert_refuses_numeric_label_map_as_colour(tiny_cfg, tmp_path):
    with pytest.raises(EosegError, match="already a numeric label map"):
        color_file_to_labels(tiny_cfg.tile_path("LABEL_PATTERN", "1"), tmp_path / "x.tif", tiny_cfg.palette)


# ---------------------------------------------------------------- LMDB
def test_lmdb_holds_every_patch_train_shuffled_test_in_order(tiny_cfg):
    extract_patches(tiny_cfg, tiny_cfg.PATCHES_DIR, progress=False)
    summary = create_lmdb(tiny_cfg, tiny_cfg.PATCHES_DIR, tiny_cfg.LMDB_DIR, progress=False)
    _, rows = read_manifest(tiny_cfg.PATCHES_DIR)
    for split in ("train", "test"):
        split_rows = [r for r in rows if r["split"] == split]
        db = LmdbPatches(f"{tiny_cfg.LMDB_DIR}/{split}.lmdb", expected_signature=data_signature(tiny_cfg))
        assert len(db) == summary[split] == len(split_rows)
        assert db.meta["signature"]["class_names"] == tiny_cfg.CLASS_NAMES
        stored = [db[i][0].tobytes() for i in range(len(db))]
        on_disk = [np.load(f"{tiny_cfg.PATCHES_DIR}/{r['image']}").tobytes() for r in split_rows]
        assert sorted(stored) == sorted(on_disk)
        assert (stored == on_disk) == (split == "test")


def test_lmdb_refuses_patches_of_another_config(tiny_cfg):
    extract_patches(tiny_cfg, tiny_cfg.PATCHES_DIR, progress=False)
    other = tiny_cfg.replace(BAND_NAMES=["R", "G", "B"])
    with pytest.raises(EosegError, match="band_names"):
        create_lmdb(other, tiny_cfg.PATCHES_DIR, tiny_cfg.LMDB_DIR, progress=False)


# ---------------------------------------------------------------- training
def test_a_few_steps_lower_the_loss_on_a_fixed_batch(tiny_cfg):
    torch.manual_seed(0)
    model = model_from_config(tiny_cfg)
    optimizer = make_optimizer(tiny_cfg.replace(BASE_LR=0.05), model)
    criterion = make_loss(tiny_cfg, torch.device("cpu"))
    image = read_raster(tiny_cfg.tile_path("IMAGE_PATTERN", "1"), tiny_cfg.BANDS)[:, :64, :64]
    labels = torch.from_numpy(read_label(tiny_cfg.tile_path("LABEL_PATTERN", "1"))[:64, :64]).long()[None]
    x = torch.from_numpy(image)[None].float() / 255
    losses = []
    for _ in range(15):
        loss = criterion(model(x), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]


@pytest.mark.parametrize("source", ["lmdb", "tiles"])
def test_training_writes_weights_log_plot_and_resumes(tiny_cfg, source):
    cfg = tiny_cfg.replace(TRAIN_SOURCE=source)
    if source == "lmdb":
        extract_patches(cfg, cfg.PATCHES_DIR, progress=False)
        create_lmdb(cfg, cfg.PATCHES_DIR, cfg.LMDB_DIR, progress=False)
    first = cfg.replace(ITERATIONS=3)
    train(first, progress=False)
    snapshot = f"{cfg.TRAIN_DIR}/checkpoints/iter_0000003.pt"
    assert load_checkpoint(snapshot)["iteration"] == 3
    weights = train(cfg, resume=snapshot, progress=False)
    assert load_checkpoint(weights)["iteration"] == 6
    with open(f"{cfg.TRAIN_DIR}/log.csv") as handle:
        assert [int(r["iteration"]) for r in csv.DictReader(handle)] == [2, 3, 4, 6]
    train_dir = Path(cfg.TRAIN_DIR)
    assert (train_dir / "loss.png").stat().st_size > 0
    assert json.loads((train_dir / "config.json").read_text())["config"]["TRAIN_SOURCE"] == source
    model, payload = load_model(weights, cfg)
    assert isinstance(model, torch.nn.Module)
    # the training tiles' pixel size, through the patches and the LMDB or from the tiles: what inference labels at
    assert payload["signature"]["pixel_size_m"] == pytest.approx([PIXEL_SIZE_M, PIXEL_SIZE_M])
    # and their values, each band's mean and std: the scale inference expects of an image
    pixels = np.concatenate([read_raster(cfg.tile_path("IMAGE_PATTERN", tile)).reshape(3, -1)
                             for tile in cfg.tile_ids("train")], axis=1).astype(np.float64)
    recorded = payload["signature"]["input_statistics"]
    assert recorded["mean"] == pytest.approx(pixels.mean(axis=1), rel=1e-5)
    assert recorded["std"] == pytest.approx(pixels.std(axis=1), rel=1e-5)
    # and what their files name their bands, the order inference expects of an image's
    names = [list(raster_info(cfg.tile_path("IMAGE_PATTERN", tile)).descriptions) for tile in cfg.tile_ids("train")]
    colours = [list(raster_info(cfg.tile_path("IMAGE_PATTERN", tile)).colorinterp) for tile in cfg.tile_ids("train")]
    assert payload["signature"]["image_bands"] == {"names": [[name or None for name in names[0]]], "colours": colours[:1],
                                                   "scalings": [[]]}
    # inference fills nodata as training did
    assert payload["signature"]["nodata_fill"] == pytest.approx(training_filling(cfg).fill_record())
    assert payload["signature"]["nodata_zero"] is cfg.NODATA_ZERO  # zeros labelling reads are said against it


def test_resume_beyond_iterations_is_refused(tiny_cfg):
    cfg = tiny_cfg.replace(TRAIN_SOURCE="tiles", ITERATIONS=3)
    train(cfg, progress=False)
    with pytest.raises(EosegError, match="raise ITERATIONS"):
        train(cfg, resume=f"{cfg.TRAIN_DIR}/checkpoints/iter_0000003.pt", progress=False)


# ---------------------------------------------------------------- inference
@pytest.fixture
def trained_weights(tiny_cfg):
    cfg = tiny_cfg.replace(TRAIN_SOURCE="tiles", ITERATIONS=2)
    return train(cfg, progress=False)


def test_inference_writes_georeferenced_maps_and_metrics(tiny_cfg, trained_weights):
    summary = run_inference(tiny_cfg, trained_weights, tiny_cfg.INFER_DIR, ["4"], progress=False)
    (image,) = summary.images
    source = tiny_cfg.tile_path("IMAGE_PATTERN", "4")
    with rasterio.open(source) as src, rasterio.open(image.outputs["labels"]) as labels, rasterio.open(image.outputs["color"]) as color:
        assert (labels.width, labels.height) == (src.width, src.height) == (TINY_TILE_SIZE, TINY_TILE_SIZE)
        assert labels.crs == color.crs == src.crs and labels.transform == color.transform == src.transform
        assert labels.count == 1 and color.count == 3
        assert labels.colormap(1)[0][:3] == tuple(tiny_cfg.PALETTE[0])
    assert "eroded" in image.truth_source
    report = json.loads(summary.outputs["metrics"].read_text())
    assert report["overall"]["pixels"] == summary.metrics["pixels"] > 0
    assert summary.outputs["confusion_plot"].stat().st_size > 0


def test_inference_on_plain_image_writes_png(tiny_cfg, trained_weights, tmp_path):
    image = read_raster(tiny_cfg.tile_path("IMAGE_PATTERN", "4"))[:, :50, :70]
    plain = tmp_path / "plain.png"
    with rasterio.open(plain, "w", driver="PNG", width=70, height=50, count=3, dtype="uint8") as dst:
        dst.write(image)
    summary = run_inference(tiny_cfg, trained_weights, tmp_path / "out", image_paths=[plain], progress=False)
    labels = read_raster(summary.images[0].outputs["labels"])
    assert summary.images[0].outputs["labels"].suffix == ".png" and labels.shape == (1, 50, 70)
    assert summary.metrics is None


def test_majority_class_prediction_does_not_pass(tiny_cfg):
    from eoseg.metrics import confusion_matrix, metrics_from_confusion

    truth = read_label(tiny_cfg.tile_path("LABEL_PATTERN", "4"))
    majority = np.full_like(truth, np.bincount(truth.ravel()).argmax())
    metrics = metrics_from_confusion(confusion_matrix(truth, majority, 6, 255), tiny_cfg.CLASS_NAMES)
    assert metrics["overall_accuracy"] < 0.8 and metrics["kappa"] == pytest.approx(0.0)
