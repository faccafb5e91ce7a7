"""eoseg.extract: cutting the tiles into patches, the manifest, and the folder they are published in."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

from eoseg import augment
from eoseg.errors import EosegError
from eoseg import extract
from eoseg.extract import extract_patches, patch_corners, read_manifest, row_reads, split_plan
from eoseg.geometry import count_windows
from eoseg.holdout import TileSplit
from eoseg.io import read_label, read_raster
from eoseg.tiles import image_info

from .conftest import TINY_TILE_SIZE


def test_training_patches_overlap_and_are_augmented_test_patches_are_neither(tiny_cfg):
    cfg = tiny_cfg.replace(FLIPS=True, ROTATIONS=[180])
    assert split_plan(cfg, "train") == (cfg.TRAIN_STRIDE, ["orig", "fliplr", "flipud", "rot180"])
    assert split_plan(cfg, "test") == (cfg.PATCH_SIZE, ["orig"])


def test_patch_corners_of_a_split_tile_keep_to_its_pieces(tiny_cfg):
    info = image_info(tiny_cfg, "1")
    whole = list(patch_corners(info, None, "train", 64, 48))
    assert whole == [(row, col) for row in (0, 48, 96) for col in (0, 48, 96)]
    blocks = TileSplit("1", block=80, every=2, height=TINY_TILE_SIZE, width=TINY_TILE_SIZE, patch_size=32)
    for split, held_out in (("train", False), ("test", True)):
        mask = blocks.mask(0, TINY_TILE_SIZE, held_out=held_out)
        corners = list(patch_corners(info, blocks, split, 32, 32))
        assert corners and all(mask[row:row + 32, col:col + 32].all() for row, col in corners), split


@pytest.mark.parametrize("height, size, stride, rows_at_once", [(160, 32, 16, 0), (160, 32, 48, 70), (1000, 64, 32, 300),
                                                               (100, 100, 50, 10**6)])
def test_row_reads_hold_every_patch_once_and_own_every_row_once(height, size, stride, rows_at_once):
    corners = [(row, col) for row in range(0, height - size + 1, stride) for col in (0, 7)]
    reads = list(row_reads(corners, height, size, rows_at_once))
    assert [corner for read in reads for corner in read.corners] == corners  # each once, in their order
    assert [read.top for read in reads] == list(np.cumsum([0] + [read.owned for read in reads[:-1]]))
    assert sum(read.owned for read in reads) == height
    for read in reads:
        assert read.owned <= read.rows and read.top + read.rows <= height
        assert all(read.top <= row < read.top + read.owned and row + size <= read.top + read.rows for row, _ in read.corners)
        assert read.rows <= max(rows_at_once, 2 * size) or len(reads) == 1


def test_a_tile_read_by_bands_of_rows_gives_the_patches_and_manifest_of_one_read(tiny_cfg, tmp_path, monkeypatch):
    """A tile of any size is cut within READ_BYTES: reads of a few rows give the same patches, class counts and
    statistics as one read of the whole tile, overlapping patches, held-out blocks and nodata included."""
    import shutil
    data = tmp_path / "data"
    shutil.copytree(tiny_cfg.DATA_ROOT, data)
    cfg = tiny_cfg.replace(DATA_ROOT=str(data), NODATA_ZERO=True, PATCH_SIZE=32, TRAIN_STRIDE=24, FLIPS=False,
                           TEST_IDS=["1", "4"], HOLDOUT_BLOCK=64, HOLDOUT_EVERY=2)
    with rasterio.open(cfg.tile_path("IMAGE_PATTERN", "2"), "r+") as dst:
        pixels = dst.read()
        pixels[:, 30:90, 40:70] = 0  # nodata across several reads
        dst.write(pixels)
    results = []
    # one read; reads of PATCH_SIZE rows; reads of 70 rows, 38 owned: not a multiple of the stride
    for read_bytes, name in ((1 << 40, "whole"), (1, "by_rows"), (70 * 160 * (2 * 3 + 3), "by_bands")):
        monkeypatch.setattr(extract, "READ_BYTES", read_bytes)
        manifest = extract_patches(cfg, tmp_path / name, progress=False)
        rows = {(r["split"], r["tile"], r["row"], r["col"]): r for r in read_manifest(tmp_path / name)[1]}
        results.append((manifest, rows, tmp_path / name))
    (whole, whole_rows, whole_dir), *by_reads = results
    for manifest, rows, folder in by_reads:
        assert whole_rows.keys() == rows.keys() and len(whole_rows) > 50
        for key, row in whole_rows.items():
            for field in ("image", "label"):
                assert np.array_equal(np.load(whole_dir / row[field]), np.load(folder / rows[key][field])), (folder, key)
        statistics = whole["input_statistics"], manifest["input_statistics"]
        assert {**whole, "input_statistics": None} == {**manifest, "input_statistics": None}  # class pixels, counts
        for key in ("mean", "std"):  # recorded at 6 digits: sums in another order may round the other way
            assert statistics[1][key] == pytest.approx(statistics[0][key], rel=1e-5), key


# ---------------------------------------------------------------- extracting the sample
def test_extract_counts_augmentations_and_manifest(tiny_cfg):
    cfg = tiny_cfg.replace(FLIPS=True, ROTATIONS=[90])
    manifest = extract_patches(cfg, cfg.PATCHES_DIR, progress=False)
    per_tile_train = count_windows(TINY_TILE_SIZE, TINY_TILE_SIZE, cfg.PATCH_SIZE, cfg.TRAIN_STRIDE)
    per_tile_test = count_windows(TINY_TILE_SIZE, TINY_TILE_SIZE, cfg.PATCH_SIZE, cfg.PATCH_SIZE)
    assert manifest["counts"] == {"train": 3 * per_tile_train * 4, "test": 1 * per_tile_test}
    read_back, rows = read_manifest(cfg.PATCHES_DIR)
    assert read_back == manifest and len(rows) == sum(manifest["counts"].values())
    assert {r["augmentation"] for r in rows if r["split"] == "train"} == {"orig", "fliplr", "flipud", "rot90"}
    assert {r["augmentation"] for r in rows if r["split"] == "test"} == {"orig"}

    # an augmented patch is the transformed original, for image and label alike
    row = next(r for r in rows if r["augmentation"] == "rot90")
    original = next(r for r in rows if r["augmentation"] == "orig" and (r["tile"], r["row"], r["col"]) == (row["tile"], row["row"], row["col"]))
    root = cfg.PATCHES_DIR
    for key in ("image", "label"):
        rotated = np.load(f"{root}/{row[key]}")
        assert np.array_equal(rotated, augment.apply("rot90", np.load(f"{root}/{original[key]}")))

    # the patch is the tile's pixels at the recorded position, and its transform is the window's
    image = read_raster(cfg.tile_path("IMAGE_PATTERN", original["tile"]), cfg.BANDS)
    r, c = int(original["row"]), int(original["col"])
    assert np.array_equal(np.load(f"{root}/{original['image']}"), image[:, r:r + 64, c:c + 64])
    with rasterio.open(cfg.tile_path("IMAGE_PATTERN", original["tile"])) as src:
        assert json.loads(original["transform"]) == pytest.approx(list(src.window_transform(((r, r + 64), (c, c + 64))))[:6])
        # and a rotated patch's places each of its pixels where the tile holds it (it gave the original's: review)
        placed = Affine(*json.loads(row["transform"]))
        for patch_row, patch_col in ((0, 0), (5, 40), (63, 2)):
            tile_row, tile_col = src.index(*(placed * (patch_col + 0.5, patch_row + 0.5)))
            assert (np.load(f"{root}/{row['image']}")[:, patch_row, patch_col] == image[:, tile_row, tile_col]).all()
    assert json.loads(Path(root, "config.json").read_text())["config"]["PATCH_SIZE"] == 64


def test_a_patch_folder_changed_since_extraction_is_refused(tiny_cfg):
    """A row removed from patches.csv was packed as 161 patches of 162 without a word; a removed .npy gave only
    "No such file or directory" (review)."""
    import csv

    extract_patches(tiny_cfg, tiny_cfg.PATCHES_DIR, progress=False)
    patches = Path(tiny_cfg.PATCHES_DIR)
    manifest, rows = read_manifest(patches)
    (patches / rows[-1]["label"]).rename(patches / "aside.npy")
    with pytest.raises(EosegError, match=rf"patch file {rows[-1]['label']} is missing; the folder changed since "
                                         r"extraction: extract again \(extract_images.py --force\)"):
        read_manifest(patches)
    (patches / "aside.npy").rename(patches / rows[-1]["label"])
    with open(patches / manifest["patch_list"], "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows[1:])
    train = manifest["counts"]["train"]
    with pytest.raises(EosegError, match=rf"lists {train - 1} train patches, manifest.json {train}; the folder changed"):
        read_manifest(patches)


def test_the_classes_recorded_as_trained_on_are_those_of_the_patches(tiny_cfg):
    """A stride beyond PATCH_SIZE leaves gaps no patch holds (as held-out blocks are): the class counts training
    reads (a class never labelled is noted) are of the pixels the patches hold, not of the whole tiles."""
    cfg = tiny_cfg.replace(PATCH_SIZE=64, TRAIN_STRIDE=96, FLIPS=False)
    manifest = extract_patches(cfg, cfg.PATCHES_DIR, progress=False)
    _, rows = read_manifest(cfg.PATCHES_DIR)
    expected = np.zeros(cfg.num_classes, dtype=np.int64)
    whole = np.zeros(cfg.num_classes, dtype=np.int64)
    for tile in cfg.tile_ids("train"):
        labels = read_label(cfg.tile_path("LABEL_PATTERN", tile))
        covered = np.zeros(labels.shape, dtype=bool)
        for row in (r for r in rows if r["split"] == "train" and r["tile"] == tile):
            covered[int(row["row"]):int(row["row"]) + 64, int(row["col"]):int(row["col"]) + 64] = True
        assert not covered.all()  # the gaps
        expected += np.bincount(labels[covered], minlength=256)[:cfg.num_classes]
        whole += np.bincount(labels.ravel(), minlength=256)[:cfg.num_classes]
    assert manifest["class_pixels"] == expected.tolist() != whole.tolist()


def test_extract_refuses_existing_folder_unless_forced(tiny_cfg):
    extract_patches(tiny_cfg, tiny_cfg.PATCHES_DIR, progress=False)
    with pytest.raises(EosegError, match="--force"):
        extract_patches(tiny_cfg, tiny_cfg.PATCHES_DIR, progress=False)
    extract_patches(tiny_cfg.replace(FLIPS=False), tiny_cfg.PATCHES_DIR, force=True, progress=False)
    assert {r["augmentation"] for r in read_manifest(tiny_cfg.PATCHES_DIR)[1]} == {"orig"}


def test_forced_extraction_into_a_linked_folder_replaces_it_where_the_link_leads(tiny_cfg, tmp_path):
    """PATCHES_DIR a link to other storage: --force rebuilds there and keeps the link."""
    storage, link = tmp_path / "storage" / "patches", tmp_path / "linked"
    storage.mkdir(parents=True)
    link.symlink_to(storage)
    extract_patches(tiny_cfg, link, progress=False)
    extract_patches(tiny_cfg.replace(FLIPS=False), link, force=True, progress=False)
    assert link.is_symlink() and link.resolve() == storage.resolve()
    assert {r["augmentation"] for r in read_manifest(storage)[1]} == {"orig"}
    assert sorted(p.name for p in storage.parent.iterdir()) == ["patches"]


def test_a_mount_point_where_the_patches_go_is_refused_before_the_work(tiny_cfg, tmp_path, monkeypatch):
    """The folder is built beside PATCHES_DIR and renamed onto it: a mount point (a disk of its own, or a link to one)
    would be written on the disk it hides, then refuse the rename."""
    import eoseg.extract

    volume, link = tmp_path / "volume", tmp_path / "linked"
    volume.mkdir()
    link.symlink_to(volume)
    monkeypatch.setattr(os.path, "ismount", lambda path: Path(path) == volume)
    monkeypatch.setattr(eoseg.extract, "tile_stack", lambda *args: pytest.fail("the work began"))
    for given in (volume, link):
        with pytest.raises(EosegError, match=f"{volume} is a mount point, .*; give a folder inside it "
                                             f"\\({volume / 'volume'}\\)"):
            extract_patches(tiny_cfg, given, force=True, progress=False)


def test_a_file_where_the_patches_go_is_refused_before_the_work(tiny_cfg, tmp_path, monkeypatch):
    import eoseg.extract

    in_the_way = tmp_path / "patches"
    in_the_way.write_text("not ours")
    monkeypatch.setattr(eoseg.extract, "tile_stack", lambda *args: pytest.fail("the work began"))
    with pytest.raises(EosegError, match=f"{in_the_way} is a file, not a folder"):
        extract_patches(tiny_cfg, in_the_way, force=True, progress=False)
    assert in_the_way.read_text() == "not ours"


def test_interrupted_extraction_leaves_nothing_accepted(tiny_cfg, monkeypatch):
    calls = {"n": 0}
    real_save = np.save

    def failing_save(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 10:
            raise KeyboardInterrupt
        real_save(*args, **kwargs)

    monkeypatch.setattr(np, "save", failing_save)
    with pytest.raises(KeyboardInterrupt):
        extract_patches(tiny_cfg, tiny_cfg.PATCHES_DIR, progress=False)
    monkeypatch.undo()
    with pytest.raises(EosegError, match="run extract_images.py"):
        read_manifest(tiny_cfg.PATCHES_DIR)


def test_extract_refuses_missing_tile_and_size_mismatch(tiny_cfg, tmp_path):
    with pytest.raises(EosegError, match="tile 99: image not found"):
        extract_patches(tiny_cfg.replace(TRAIN_IDS=["99"]), tmp_path / "p", progress=False)
    # a missing label map: convert_gt.py is named only where there is colour ground truth to convert (review)
    for colour, hint in (("gts/{id}.tif", "run convert_gt.py to make it"), ("", "check DATA_ROOT .* and LABEL_PATTERN")):
        with pytest.raises(EosegError, match=f"tile 1: numeric label map not found at .*; {hint}"):
            extract_patches(tiny_cfg.replace(LABEL_PATTERN="none/{id}.tif", GT_COLOR_PATTERN=colour), tmp_path / "p",
                            progress=False)
    # a label map of another size than its image
    labels = read_label(tiny_cfg.tile_path("LABEL_PATTERN", "1"))
    bad = tmp_path / "labels" / "top_mosaic_09cm_area1.tif"
    bad.parent.mkdir()
    with rasterio.open(bad, "w", driver="GTiff", width=100, height=90, count=1, dtype="uint8") as dst:
        dst.write(labels[:90, :100][None])
    cfg = tiny_cfg.replace(LABEL_PATTERN=str(tmp_path / "labels" / "top_mosaic_09cm_area{id}.tif"))
    with pytest.raises(EosegError, match="is 100 x 90 px with no georeference, the image .* 160 x 160 px with CRS .* cover the same grid"):
        extract_patches(cfg, tmp_path / "q", progress=False)


def test_patches_without_a_labelled_pixel_are_said_at_extraction(tiny_cfg, capsys):
    """Every training label read as IGNORE_LABEL (a LABEL_VALUES that sends them all there): training refuses such
    patches, and extraction says so first, instead of 'wrote N patches' alone."""
    cfg = tiny_cfg.replace(LABEL_VALUES={value: "ignore" for value in range(6)})
    manifest = extract_patches(cfg, cfg.PATCHES_DIR, progress=False)
    assert manifest["class_pixels"] == [0] * cfg.num_classes
    assert "note: no training patch holds a labelled pixel" in capsys.readouterr().err
    extract_patches(tiny_cfg, Path(tiny_cfg.PATCHES_DIR).parent / "labelled", progress=False)
    assert "no training patch holds" not in capsys.readouterr().err


def test_nodata_pixels_of_patches_hold_the_training_tiles_mean_as_labelling_gives_them(tiny_cfg, tmp_path):
    """One fill in training and labelling: the training tiles' mean (sampled), which the weights record; not NORM_MEAN
    (0 here), a black the network would learn as an object."""
    import shutil
    from eoseg.tiles import tile_stack, training_filling
    from eoseg.weights import recorded_normalization

    data = tmp_path / "data"
    shutil.copytree(tiny_cfg.DATA_ROOT, data)
    cfg = tiny_cfg.replace(DATA_ROOT=str(data), NODATA_ZERO=True, TEST_IDS=[])
    path = cfg.tile_path("IMAGE_PATTERN", "1")
    with rasterio.open(path, "r+") as dst:
        pixels = dst.read()
        pixels[:, :20, :30] = 0  # a hole in the first patch
        dst.write(pixels)
    fill = training_filling(cfg).fill
    expected = np.zeros(3)
    count = 0
    for tile in cfg.tile_ids("train"):
        statistics = tile_stack(cfg, tile).sample_statistics()
        expected, count = expected + statistics.mean * statistics.count, count + statistics.count
    assert fill == pytest.approx(tuple(expected / count), rel=1e-5) and min(fill) > 20  # recorded at 6 digits
    extract_patches(cfg, cfg.PATCHES_DIR, progress=False)
    _, rows = read_manifest(cfg.PATCHES_DIR)
    first = next(r for r in rows if (r["tile"], r["row"], r["col"], r["augmentation"]) == ("1", "0", "0", "orig"))
    patch = np.load(Path(cfg.PATCHES_DIR) / first["image"])
    assert patch[:, :20, :30].reshape(3, -1).T.tolist() == [np.rint(fill).tolist()] * 600
    assert (np.load(Path(cfg.PATCHES_DIR) / first["label"])[:20, :30] == cfg.IGNORE_LABEL).all()
    # labelling fills with the values the patches were filled with, which the weights record (the statistics of all
    # patch pixels they also record are not the sample's mean the fill was: 573 against 613 on a real scene)
    statistics = {"mean": [104.5, 75.25, 82.0], "std": [1.0, 1.0, 1.0]}
    record = {"signature": {"normalization": {"mean": [0.0] * 3, "std": [255.0] * 3}, "input_statistics": statistics,
                            "nodata_fill": read_manifest(cfg.PATCHES_DIR)[0]["nodata_fill"]}}
    assert recorded_normalization(record).fill == pytest.approx(fill)
    record["signature"]["nodata_fill"] = "training mean"  # weights of the first records of it: their statistics' mean
    assert recorded_normalization(record).fill == (104.5, 75.25, 82.0)
    del record["signature"]["nodata_fill"]  # weights trained before it was recorded: on NORM_MEAN, labelled so
    assert recorded_normalization(record).fill is None
