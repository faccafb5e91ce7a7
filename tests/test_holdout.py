"""One scene to train and test on: its blocks split between training and test (eoseg.holdout)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine
from rasterio.warp import transform as warp_transform

from eoseg.checkpoint import save_checkpoint
from eoseg.errors import EosegError
from eoseg.holdout import (TileSplit, check_scored_tiles, ground_in_training, holdout_record, report_overlapping_tiles,
                           split_tiles, tile_split)
from eoseg.infer import run_inference
from eoseg.metadata import data_signature
from eoseg.models import model_from_config

from .conftest import TINY_TILE_SIZE, as_arguments, make_tiny_config, run_script, tiny_overrides


def covered(split: TileSplit, held_out: bool) -> np.ndarray:
    """Pixels the pieces of one kind cover, each at most once."""
    count = np.zeros((split.height, split.width), dtype=int)
    for row, col, rows, cols in split.pieces(held_out):
        count[row:row + rows, col:col + cols] += 1
    assert count.max() <= 1
    return count.astype(bool)


@pytest.mark.parametrize("every", [2, 3, 4])
def test_training_pieces_and_held_out_blocks_never_meet(every):
    split = TileSplit("scene", block=100, every=every, height=950, width=730, patch_size=40)
    held_out = split.mask(0, split.height, held_out=True)
    training = covered(split, held_out=False)
    assert not (training & held_out).any()
    assert np.array_equal(training, split.mask(0, split.height, held_out=False))
    assert (covered(split, held_out=True) <= held_out).all()
    # every pixel is held out or trained on, but for slivers too small for a patch
    assert (training | held_out).mean() > 0.97
    assert split.held_out_share() == pytest.approx(held_out.mean())
    assert split.held_out_share() == pytest.approx(1 / every, abs=0.03)
    for row, col, rows, cols in split.pieces(held_out=False):
        assert rows >= 40 and cols >= 40
    # rows of blocks read piecewise give the whole mask
    parts = [split.mask(first, min(first + 64, split.height), held_out=False) for first in range(0, split.height, 64)]
    assert np.array_equal(np.concatenate(parts), training)


def test_two_makes_a_checkerboard():
    split = TileSplit("scene", block=10, every=2, height=40, width=40, patch_size=5)
    blocks = split.mask(0, 40, held_out=True)[::10, ::10]
    assert np.array_equal(blocks, (np.add.outer(np.arange(4), np.arange(4)) % 2) == 0)


def test_only_tiles_in_both_lists_are_split(tiny_cfg):
    cfg = tiny_cfg.replace(TRAIN_IDS=["1", "2", "3"], TEST_IDS=["3", "4"], VAL_IDS=["2"], PATCH_SIZE=32, HOLDOUT_BLOCK=64)
    assert split_tiles(cfg) == ["2", "3"]
    assert holdout_record(cfg) == {"block": 64, "every": 4, "tiles": ["2", "3"]}
    assert tile_split(cfg, "1", 160, 160) is None and tile_split(cfg, "4", 160, 160) is None
    assert split_tiles(cfg.replace(HOLDOUT_BLOCK=0)) == [] and holdout_record(cfg.replace(HOLDOUT_BLOCK=0)) is None


@pytest.mark.parametrize("name, value, says", [("HOLDOUT_BLOCK", -1, "0 (no split)"),
                                               ("HOLDOUT_EVERY", 1, "2 or more")])
def test_settings_that_cannot_split_are_refused(tiny_cfg, name, value, says):
    with pytest.raises(EosegError, match=r"^" + name) as err:
        tiny_cfg.replace(**{name: value})
    assert says in str(err.value)


def test_a_block_under_two_patches_is_refused_only_where_a_tile_is_split(tiny_cfg):
    """A PATCH_SIZE over 512 was refused by the config for the default HOLDOUT_BLOCK (1024) with no tile in both
    lists, where no block is held out."""
    disjoint = tiny_cfg.replace(TRAIN_IDS=["1", "2"], TEST_IDS=["4"], PATCH_SIZE=600, HOLDOUT_BLOCK=1024)
    assert split_tiles(disjoint) == [] and holdout_record(disjoint) is None
    shared = disjoint.replace(TEST_IDS=["2", "4"])  # a config may be checked before its lists' globs can be read
    refusal = (r"^HOLDOUT_BLOCK must be 0 \(no split\) or at least 2 x PATCH_SIZE = 1200 px, so that training patches "
               r"fit beside the held-out blocks of tiles 2 \(in TRAIN_IDS and held out\); got 1024$")
    for refused in (split_tiles, holdout_record, lambda cfg: tile_split(cfg, "2", 2400, 2400)):
        with pytest.raises(EosegError, match=refusal):
            refused(shared)


def test_a_tile_too_small_for_its_blocks_names_a_block_that_fits(tiny_cfg):
    cfg = tiny_cfg.replace(TRAIN_IDS=["1"], TEST_IDS=["1"], PATCH_SIZE=32, HOLDOUT_BLOCK=256)
    with pytest.raises(EosegError, match=r"no training area of PATCH_SIZE 32; set HOLDOUT_BLOCK=80; if it is no training "
                                         r"tile, leave it out of TRAIN_IDS \(a --config importing another inherits it\)$"):
        tile_split(cfg, "1", 160, 160)  # a glob of TRAIN_IDS a --config for a test folder inherited found it (review)
    with pytest.raises(EosegError, match="no training area of PATCH_SIZE 32; set HOLDOUT_BLOCK=64"):
        tile_split(cfg, "1", 80, 160)  # a quarter held out would be 40 px blocks: the nearest share that fits
    with pytest.raises(EosegError, match="lower PATCH_SIZE to 32 and set HOLDOUT_BLOCK=80"):
        tile_split(cfg.replace(PATCH_SIZE=64), "1", 160, 160)


def one_scene(tiny_cfg, **extra):
    """The tiny sample's tile 1 as the only scene, in both lists, cut into blocks of 64 px."""
    return tiny_cfg.replace(TRAIN_IDS=["1"], TEST_IDS=["1"], PATCH_SIZE=32, TRAIN_STRIDE=16, HOLDOUT_BLOCK=64, **extra)


def test_no_training_patch_holds_a_held_out_pixel(tiny_cfg, tmp_path):
    from eoseg.extract import extract_patches, read_manifest

    cfg = one_scene(tiny_cfg)
    manifest = extract_patches(cfg, tmp_path / "patches", progress=False)
    assert manifest["signature"]["holdout"] == {"block": 64, "every": 4, "tiles": ["1"]}
    _, rows = read_manifest(tmp_path / "patches")
    split = tile_split(cfg, "1", TINY_TILE_SIZE, TINY_TILE_SIZE)
    held_out = split.mask(0, TINY_TILE_SIZE, held_out=True)
    seen = {"train": np.zeros_like(held_out), "test": np.zeros_like(held_out)}
    for row in rows:
        top, left = int(row["row"]), int(row["col"])
        seen[row["split"]][top:top + 32, left:left + 32] = True
    assert not (seen["train"] & held_out).any() and (seen["test"] <= held_out).all()
    assert seen["test"].any() and np.array_equal(seen["train"], split.mask(0, TINY_TILE_SIZE, held_out=False))


def test_crops_come_from_the_training_pieces_only(tiny_cfg):
    from eoseg.data import training_data
    from eoseg.tiles import read_image

    cfg = one_scene(tiny_cfg, TRAIN_SOURCE="tiles")
    crops = training_data(cfg)
    image, _ = read_image(cfg, "1")
    pieces = tile_split(cfg, "1", TINY_TILE_SIZE, TINY_TILE_SIZE).pieces(held_out=False)
    assert len(crops.tiles) == len(pieces)
    for (piece, _), (row, col, rows, cols) in zip(crops.tiles, pieces):
        assert np.array_equal(piece, image[:, row:row + rows, col:col + cols])


def test_scores_count_the_held_out_blocks_only(tiny_cfg):
    from eoseg.tiles import eval_truth, read_labels, tile_stack

    cfg = one_scene(tiny_cfg)
    info = tile_stack(cfg, "1").info
    truth = eval_truth(cfg, "1", info)
    assert "held-out blocks only" in truth.description and "HOLDOUT_BLOCK" in truth.description
    scored = truth.read_rows(cfg.palette, 0, info.height)
    held_out = tile_split(cfg, "1", info.height, info.width).mask(0, info.height, held_out=True)
    assert (scored[~held_out] == cfg.IGNORE_LABEL).all()
    whole = eval_truth(cfg.replace(TRAIN_IDS=["2"]), "1", info).read_rows(cfg.palette, 0, info.height)
    assert np.array_equal(scored[held_out], whole[held_out]) and (whole != cfg.IGNORE_LABEL).sum() > (scored != cfg.IGNORE_LABEL).sum()
    assert read_labels(cfg, "1", info).shape == scored.shape


def test_weights_trained_on_a_split_refuse_to_score_its_tile_otherwise(tiny_cfg, capsys):
    cfg = one_scene(tiny_cfg)
    recorded = data_signature(cfg)
    check_scored_tiles(recorded, cfg, ["1"], "weights w.pt")
    check_scored_tiles(recorded, cfg.replace(HOLDOUT_BLOCK=0, TRAIN_IDS=["2"]), ["4"], "weights w.pt")  # another tile
    assert capsys.readouterr().err == ""
    for other in (cfg.replace(HOLDOUT_BLOCK=0), cfg.replace(HOLDOUT_EVERY=2), cfg.replace(TRAIN_IDS=["2"])):
        with pytest.raises(EosegError, match="weights w.pt were trained on the blocks of tile 1"):
            check_scored_tiles(recorded, other, ["1"], "weights w.pt")


def test_a_tile_trained_and_scored_whole_is_warned_of_with_a_block_that_splits_it(tiny_cfg, capsys):
    """The warning named HOLDOUT_BLOCK=1024, which a 512 px tile then refused for leaving it no training area
    (review): it names one that splits the tiles."""
    import re

    from eoseg.io import raster_info

    cfg = one_scene(tiny_cfg).replace(HOLDOUT_BLOCK=0)
    report_overlapping_tiles(cfg)
    block = int(re.search(r"\(HOLDOUT_BLOCK=(\d+) would hold out blocks of them\)", capsys.readouterr().err).group(1))
    info = raster_info(cfg.tile_path("IMAGE_PATTERN", "1"))
    assert block < 1024 and tile_split(cfg.replace(HOLDOUT_BLOCK=block), "1", info.height, info.width) is not None


def test_a_tile_the_weights_never_trained_on_is_not_scored_on_its_held_out_blocks_alone(tiny_cfg):
    """A config for another folder importing the training one: its TRAIN_IDS glob found the new tiles, in TEST_IDS
    too, so each was split and only a quarter of it scored, exit 0 (review). Weights recording their training tiles
    refuse; those recording none (older) are scored as before."""
    recorded = data_signature(tiny_cfg.replace(TRAIN_IDS=["2", "3"], PATCH_SIZE=32))
    with pytest.raises(EosegError, match=r"weights w.pt were not trained on tile 1 \(they record tiles 2, 3\), but the "
                                         r"config has it in TRAIN_IDS and held out, so only its held-out blocks would be "
                                         r"scored: set TRAIN_IDS to the tiles the weights were trained on, or to \[\]"):
        check_scored_tiles(recorded, one_scene(tiny_cfg), ["1"], "weights w.pt")
    check_scored_tiles(recorded, one_scene(tiny_cfg).replace(TRAIN_IDS=[]), ["1"], "weights w.pt")
    check_scored_tiles({key: value for key, value in recorded.items() if key != "train_tiles"}, one_scene(tiny_cfg),
                       ["1"], "old.pt")


def test_scoring_a_tile_the_weights_were_trained_on_whole_is_said(tiny_cfg, capsys):
    """Weights record their training tiles: a config that moved one to TEST_IDS scores what they memorised."""
    recorded = data_signature(tiny_cfg)
    assert recorded["train_tiles"] == ["1", "2", "3"]
    check_scored_tiles(recorded, tiny_cfg.replace(TRAIN_IDS=["2", "3"], TEST_IDS=["1", "4"]), ["1", "4"], "weights w.pt")
    assert capsys.readouterr().err == ("warning: weights w.pt were trained on tiles 1 (as they record): their scores measure "
                                       "what the model memorised, not how it generalises\n")
    # started from an encoder trained on tile 4 (same id; whether the same image, the weights cannot tell)
    check_scored_tiles({**recorded, "inherited_train_tiles": ["1", "4"]}, tiny_cfg, ["4"], "weights w.pt")
    assert capsys.readouterr().err == ("warning: weights w.pt started from weights (ENCODER_WEIGHTS or INIT_WEIGHTS) "
                                       "trained on tiles 4 (as they record): if those were these images, their scores measure what the model "
                                       "memorised, not how it generalises\n")
    check_scored_tiles({**recorded, "train_tiles": ["2"]}, tiny_cfg, ["1", "4"], "weights w.pt")
    check_scored_tiles({key: value for key, value in recorded.items() if key != "train_tiles"}, tiny_cfg, ["1"], "old.pt")
    assert capsys.readouterr().err == ""


def test_check_data_counts_each_split_on_its_own_blocks(tiny_cfg):
    from eoseg.datacheck import check_dataset
    from eoseg.tiles import read_labels, tile_stack

    cfg = one_scene(tiny_cfg)
    report = check_dataset(cfg)
    info = tile_stack(cfg, "1").info
    labels = read_labels(cfg, "1", info)
    split = tile_split(cfg, "1", info.height, info.width)
    for name, held_out in (("train", False), ("test", True)):
        ids = labels[split.mask(0, info.height, held_out)]
        expected = np.bincount(ids[ids < cfg.num_classes], minlength=cfg.num_classes)
        assert np.array_equal(report.class_pixels[name], expected), name
    assert report.statistics.count == split.mask(0, info.height, held_out=False).sum()
    assert sum(report.raw_values.values()) == info.height * info.width  # each raw value counted once


def test_one_scene_trains_and_scores_on_its_own_blocks_end_to_end(sample_root, tmp_path):
    settings = {**tiny_overrides(tmp_path), "DATA_ROOT": str(sample_root / "data"), "TRAIN_IDS": ["1"], "TEST_IDS": ["1"],
                "PATCH_SIZE": 32, "HOLDOUT_BLOCK": 64, "TRAIN_SOURCE": "tiles", "VAL_EVERY": 3, "WRITE_PREVIEW": False}
    trained = run_script("training.py", *as_arguments(settings))
    assert trained.returncode == 0, trained.stderr
    assert "note: tiles 1 are in TRAIN_IDS and held out: 1 block in 4 of 64 x 64 px" in trained.stderr
    labelled = run_script("inference.py", *as_arguments(settings))
    assert labelled.returncode == 0, labelled.stderr
    report = json.loads((tmp_path / "inference" / "metrics.json").read_text())
    (image,) = report["images"].values()
    assert "held-out blocks only" in image["truth"]
    counted = np.asarray(image["metrics"]["confusion_matrix"]).sum()
    assert 0 < counted <= 64 * 64 + 32 * 32  # blocks (0, 0) and (2, 2) of the 160 px tile
    refused = run_script("inference.py", *as_arguments({**settings, "HOLDOUT_BLOCK": 0}), "--force")
    assert refused.returncode != 0 and "were trained on the blocks of tile 1" in refused.stderr
    assert "Traceback" not in refused.stderr


def write_placed_image(path, left: float, top: float, size: int = 40, crs: str | None = "EPSG:32632", pixel: float = 1.0):
    """A 3-band uint8 image whose top-left corner is at (``left``, ``top``) in ``crs`` (None: a transform alone)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path, "w", driver="GTiff", width=size, height=size, count=3, dtype="uint8", crs=crs,
                       transform=Affine(pixel, 0, left, 0, -pixel, top)) as dst:
        dst.write(np.full((3, size, size), 100, dtype=np.uint8))


def test_held_out_tiles_on_the_ground_of_training_tiles_are_named(tmp_path, capsys):
    images = tmp_path / "data" / "images"
    write_placed_image(images / "train_a.tif", 500000, 5000040)
    write_placed_image(images / "train_b.tif", 500040, 5000040)
    write_placed_image(images / "inside.tif", 500030, 5000040)  # 10 x 40 px on train_a, 30 x 40 on train_b
    write_placed_image(images / "beside.tif", 500080, 5000040)  # touches train_b along an edge: no shared ground
    write_placed_image(images / "fringe.tif", 499960.2, 5000040)  # a strip of 0.2 px on train_a: under 1%
    # from the middle of train_a and train_b's lower halves, in the neighbouring UTM zone (its grid turned by about 4
    # degrees there): half of it on their ground, found across CRSs
    x, y = warp_transform("EPSG:32632", "EPSG:32631", [500020], [5000020])
    write_placed_image(images / "other_zone.tif", x[0], y[0], crs="EPSG:32631")
    write_placed_image(images / "unplaced.tif", 0, 0, crs=None, pixel=0)  # no georeference: passed over
    # training tiles that PROJ cannot bring into a view of the globe from above Europe: in the South Pacific (infinite
    # coordinates), and reaching past the pole (an error): passed over there
    write_placed_image(images / "train_pacific.tif", -170.0, -51.0, crs="EPSG:4326", pixel=0.01)
    write_placed_image(images / "train_pole.tif", -170.0, -51.0, crs="EPSG:4326", pixel=1.0)
    write_placed_image(images / "europe.tif", 0, 0, crs="+proj=ortho +lat_0=50 +lon_0=10 +datum=WGS84")
    cfg = make_tiny_config(tmp_path, IMAGE_PATTERN="images/{id}.tif", TRAIN_IDS=["train_*"],
                           TEST_IDS=["inside", "beside", "fringe", "unplaced", "europe"], VAL_IDS=["other_zone"])
    found = ground_in_training(cfg)
    assert sorted(found) == ["inside", "other_zone"]
    assert found["inside"][0] == pytest.approx(1.0) and found["inside"][1] == ["train_a", "train_b"]
    assert found["other_zone"][0] == pytest.approx(0.5, abs=0.05) and found["other_zone"][1] == ["train_a", "train_b"]
    report_overlapping_tiles(cfg)
    err = capsys.readouterr().err
    assert "held-out tile inside: 100% of its ground is in training tiles too (by their georeference: train_a, train_b)" in err
    assert "beside" not in err and "fringe" not in err


def test_held_out_blocks_on_the_ground_of_other_training_tiles_are_named(tmp_path, capsys):
    """A tile split into blocks beside an overlapping training scene: the scene's patches held a fifth of the
    held-out blocks' ground, and no step said so (review: neighbouring satellite scenes overlap)."""
    images = tmp_path / "data" / "images"
    write_placed_image(images / "scene.tif", 500000, 5000128, size=128)  # blocks of 32 px: (0,0) (1,3) (2,2) (3,1) held out
    write_placed_image(images / "neighbour.tif", 500064, 5000096, size=64)  # blocks (1,2) (1,3) (2,2) (2,3): 2 held out
    write_placed_image(images / "corner.tif", 500032, 5000128, size=32)  # block (0,1): trained on anyway
    cfg = make_tiny_config(tmp_path, IMAGE_PATTERN="images/{id}.tif", TRAIN_IDS=["scene", "neighbour", "corner"],
                           TEST_IDS=["scene"], PATCH_SIZE=16, HOLDOUT_BLOCK=32, HOLDOUT_EVERY=4)
    found = ground_in_training(cfg)
    assert list(found) == ["scene"] and found["scene"][0] == pytest.approx(0.5) and found["scene"][1] == ["neighbour"]
    report_overlapping_tiles(cfg)
    assert ("held-out tile scene: 50% of its held-out blocks' ground is in training tiles too (by their georeference: "
            "neighbour)") in capsys.readouterr().err
    corner_only = cfg.replace(TRAIN_IDS=["scene", "corner"])
    assert ground_in_training(corner_only) == {}


def test_a_second_flight_over_a_split_scene_counts_the_ground_trained_on_and_is_said_at_scoring(tmp_path, capsys):
    """A drone site flown twice, the first flight split into blocks: the second's scores counted ground the model
    learned from, said by check_data.py but not by inference.py; and the share counted the first flight's held-out
    blocks as trained on (review)."""
    images = tmp_path / "data" / "images"
    write_placed_image(images / "first.tif", 500000, 5000128, size=128)  # blocks of 32 px, 4 of 16 held out
    write_placed_image(images / "second.tif", 500000, 5000128, size=128)  # the same ground
    cfg = make_tiny_config(tmp_path, IMAGE_PATTERN="images/{id}.tif", TRAIN_IDS=["first"], TEST_IDS=["first", "second"],
                           PATCH_SIZE=16, HOLDOUT_BLOCK=32, HOLDOUT_EVERY=4, WRITE_PREVIEW=False, LABEL_PATTERN="",
                           GT_ERODED_PATTERN="", GT_COLOR_PATTERN="")
    found = ground_in_training(cfg)
    assert list(found) == ["second"] and found["second"][0] == pytest.approx(0.75)
    torch.manual_seed(0)
    weights = save_checkpoint(tmp_path / "w.pt", cfg, model_from_config(cfg), iteration=0)
    labels = tmp_path / "labels"
    labels.mkdir()
    for name in ("first", "second"):  # ground truth for scoring: every pixel class 1
        with rasterio.open(labels / f"{name}.tif", "w", driver="GTiff", width=128, height=128, count=1, dtype="uint8",
                           crs="EPSG:32632", transform=Affine(1, 0, 500000, 0, -1, 5000128)) as dst:
            dst.write(np.ones((1, 128, 128), np.uint8))
    scored = cfg.replace(LABEL_PATTERN=str(labels / "{id}.tif"), TEST_IDS=["second"])
    run_inference(scored, weights, tmp_path / "out", tile_ids=["second"], progress=True)
    assert "warning: held-out tile second: 75% of its ground is in training tiles too" in capsys.readouterr().err
