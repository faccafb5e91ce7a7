"""The synthetic sample: deterministic scenes, erosion, and the GeoTIFFs written."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio

import make_sample
from eoseg.config import load_config
from eoseg.errors import EosegError
from eoseg.sample import erode_labels, generate_scene, write_sample_dataset

SMALL = (96, 96)


@pytest.fixture
def cfg(tmp_path):
    return load_config().replace(DATA_ROOT=str(tmp_path / "sample"))


def test_same_seed_same_scene_other_seed_other_scene():
    first = generate_scene(SMALL, np.random.default_rng(7))
    again = generate_scene(SMALL, np.random.default_rng(7))
    other = generate_scene(SMALL, np.random.default_rng(8))
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[0], other[0])


@pytest.mark.parametrize("size", [SMALL, (64, 150), (8, 8)])
def test_shapes_types_and_label_range(size):
    image, labels, dsm = generate_scene(size, np.random.default_rng(3))
    assert image.shape == (3, *size) and image.dtype == np.uint8
    assert labels.shape == size and labels.dtype == np.uint8
    assert dsm.shape == size and dsm.dtype == np.float32
    assert labels.max() <= 5
    assert 245 < dsm.min() and dsm.max() < 280


def test_too_small_scene_is_refused():
    with pytest.raises(EosegError, match="at least"):
        generate_scene((4, 100), np.random.default_rng(0))


def test_full_scene_has_every_class_in_a_plausible_mix():
    image, labels, dsm = generate_scene((512, 512), np.random.default_rng([0, 0]))
    share = np.bincount(labels.ravel(), minlength=6) / labels.size
    assert (share > 0).all(), share
    assert 0.1 < share[0] < 0.45 and 0.1 < share[1] < 0.45  # impervious, building
    assert 0.1 < share[2] < 0.45 and 0.1 < share[3] < 0.35  # low vegetation, tree
    assert share[4] < 0.05 and share[5] < 0.06  # car, clutter
    # vegetation is bright in near-infrared (band 1), paved ground is not
    nir_ratio = image[0].astype(float) / (image[1].astype(float) + 1)
    assert nir_ratio[labels == 2].mean() > 1.3 > nir_ratio[labels == 0].mean()
    # buildings and trees stand above the ground in the DSM
    assert np.median(dsm[labels == 1]) > np.median(dsm[labels == 0]) + 4


def test_erosion_marks_boundaries_and_keeps_interiors():
    labels = np.zeros((20, 20), dtype=np.uint8)
    labels[:, 10:] = 1
    eroded = erode_labels(labels, 3, 255)
    assert (eroded[:, 7:13] == 255).all()  # within 3 px of the other class
    np.testing.assert_array_equal(eroded[:, :7], 0)
    np.testing.assert_array_equal(eroded[:, 13:], 1)
    np.testing.assert_array_equal(erode_labels(labels, 0, 255), labels)
    assert labels[0, 10] == 1  # the input is left alone


def test_erosion_matches_the_euclidean_definition():
    rng = np.random.default_rng(1)
    labels = (rng.random((6, 7)) > 0.5).astype(np.uint8).repeat(3, 0).repeat(3, 1)
    radius = 2
    eroded = erode_labels(labels, radius, 9)
    h, w = labels.shape
    for y in range(h):
        for x in range(w):
            y0, y1, x0, x1 = max(y - radius, 0), min(y + radius + 1, h), max(x - radius, 0), min(x + radius + 1, w)
            yy, xx = np.mgrid[y0:y1, x0:x1]
            disc = (yy - y) ** 2 + (xx - x) ** 2 <= radius**2
            boundary = (labels[y0:y1, x0:x1][disc] != labels[y, x]).any()
            assert eroded[y, x] == (9 if boundary else labels[y, x]), (y, x)


def test_written_tiles_are_georeferenced_and_use_the_palette(cfg):
    images = write_sample_dataset(cfg, ["1", "2"], size=96, seed=0)
    assert [p.name for p in images] == ["top_mosaic_09cm_area1.tif", "top_mosaic_09cm_area2.tif"]
    palette = cfg.palette
    bounds = []
    for tile_id in ("1", "2"):
        for name in ("IMAGE_PATTERN", "GT_COLOR_PATTERN", "GT_ERODED_PATTERN", "DSM_PATTERN"):
            with rasterio.open(cfg.tile_path(name, tile_id)) as src:
                assert src.crs.to_epsg() == 32632
                assert src.res == pytest.approx((0.09, 0.09))
                assert (src.width, src.height) == (96, 96)
                data = src.read()
                bounds.append(src.bounds)
            if name == "DSM_PATTERN":
                assert data.dtype == np.float32 and data.shape[0] == 1
            elif name == "IMAGE_PATTERN":
                assert data.dtype == np.uint8 and data.shape[0] == 3
            else:
                # only palette colours (and black boundaries in the eroded one): decodes cleanly
                labels = palette.to_labels(data.transpose(1, 2, 0), source=name)
                has_ignore = (labels == palette.ignore_label).any()
                assert has_ignore == (name == "GT_ERODED_PATTERN")
    # tiles 1 and 2 lie side by side without overlap; all files of a tile share bounds
    assert bounds[0] == bounds[3] and bounds[4] == bounds[7]
    assert bounds[0].right < bounds[4].left


def test_empty_patterns_are_skipped(cfg):
    cfg = cfg.replace(DSM_PATTERN="", NDSM_PATTERN="", GT_ERODED_PATTERN="")
    write_sample_dataset(cfg, ["5"], size=64)
    root = cfg.tile_path("IMAGE_PATTERN", "5").parent.parent
    assert sorted(p.name for p in root.iterdir()) == ["gts_for_participants", "top"]


def test_other_classes_are_refused(cfg):
    five = cfg.replace(CLASS_NAMES=cfg.CLASS_NAMES[:5], PALETTE=cfg.PALETTE[:5])
    with pytest.raises(EosegError, match="6 ISPRS classes"):
        write_sample_dataset(five, ["1"], size=64)


def test_make_sample_writes_refuses_and_replaces(tmp_path, capsys):
    root = tmp_path / "made"
    args = ["--size", "48", f"DATA_ROOT={root}", "TRAIN_IDS=['a']", "TEST_IDS=['b']"]
    make_sample.main(args)
    assert (root / "top" / "top_mosaic_09cm_areaa.tif").exists()
    assert (root / "dsm" / "dsm_09cm_matching_areab.tif").exists()
    saved = json.loads((root / "config.make_sample.json").read_text())
    assert saved["config"]["DATA_ROOT"] == str(root)
    out = capsys.readouterr().out
    assert "building" in out and "%" in out
    with pytest.raises(EosegError, match="--force"):
        make_sample.main(args)
    make_sample.main(args + ["--force"])
    assert not list(tmp_path.glob(".made*"))  # no staging folder left behind


def test_make_sample_force_spares_a_foreign_folder(tmp_path):
    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(EosegError, match="not made by make_sample"):
        make_sample.main(["--size", "48", f"DATA_ROOT={tmp_path}", "--force"])
    assert (tmp_path / "precious.txt").read_text() == "keep me"


def test_make_sample_force_spares_files_added_to_the_sample(tmp_path):
    """--force replaced the whole sample folder, with the user's own tile added to it (a note of the last session);
    then a tile of the user's listed in TRAIN_IDS, at the sample's patterns, counted as the sample's own (code
    review). What the pipeline made from the sample's tiles (label maps, records, side files) goes with it."""
    import convert_gt

    root = tmp_path / "sample"
    args = ["--size", "48", f"DATA_ROOT={root}", "TRAIN_IDS=['a']", "TEST_IDS=['b']"]
    make_sample.main(args)
    drawn = json.loads((root / "config.make_sample.json").read_text())
    assert (drawn["tile_ids"], drawn["size"], drawn["seed"]) == (["a", "b"], 48, 0)  # size and seed: review
    convert_gt.main(["--from-color", *args[2:], "LABEL_PATTERN=maps/{id}.tif"])  # another pattern than recorded
    assert (root / "maps" / "conversions.convert_gt.json").exists() and list((root / "maps").glob("*.aux.xml"))
    make_sample.main(args + ["--force"])
    assert not (root / "maps").exists()
    (root / "top" / "my_tile.tif").write_text("mine")
    with pytest.raises(EosegError, match=r"holds 1 file that neither make_sample.py nor a step reading its tiles made "
                                         r"\(.*my_tile.tif\), which --force would delete with the sample; move it out"):
        make_sample.main(args + ["--force"])
    assert (root / "top" / "my_tile.tif").read_text() == "mine"
    (root / "top" / "my_tile.tif").unlink()
    mine = root / "top" / "top_mosaic_09cm_areamine.tif"  # at the sample's pattern, and listed now
    mine.write_text("my orthophoto")
    with pytest.raises(EosegError, match=r"areamine.tif\), which --force would delete"):
        make_sample.main(["--size", "48", f"DATA_ROOT={root}", "TRAIN_IDS=['a', 'mine']", "TEST_IDS=['b']", "--force"])
    assert mine.read_text() == "my orthophoto"
    (root / "top" / "top_mosaic_09cm_areaa.tif.orig").write_text("a backup of mine")  # no GDAL side file
    mine.unlink()
    with pytest.raises(EosegError, match=r"areaa.tif.orig\)"):
        make_sample.main(args + ["--force"])


def test_make_sample_force_into_an_empty_folder(tmp_path):
    """An existing empty folder (a mount point, a mkdir) with --force: the record of a sample it does not hold was
    read, and the run failed (code review)."""
    (tmp_path / "empty").mkdir()
    make_sample.main(["--size", "48", f"DATA_ROOT={tmp_path / 'empty'}", "TRAIN_IDS=['a']", "TEST_IDS=[]", "--force"])
    assert (tmp_path / "empty" / "top" / "top_mosaic_09cm_areaa.tif").is_file()


def test_make_sample_into_a_foreign_folder_leaves_nothing_when_interrupted(tmp_path, monkeypatch):
    """Into an existing folder that holds none of its files, make_sample.py wrote tile by tile: Ctrl-C left tile 1 alone,
    which a rerun refused as existing and --force as not made by make_sample.py (review). Now built beside, moved in."""
    root = tmp_path / "mine"
    root.mkdir()
    (root / "notes.txt").write_text("mine")
    args = ["--size", "48", f"DATA_ROOT={root}", "TRAIN_IDS=['a', 'b']", "TEST_IDS=[]"]
    real = make_sample.write_sample_tile

    def interrupted(cfg, tile_id, *rest):
        if tile_id == "b":
            raise KeyboardInterrupt
        return real(cfg, tile_id, *rest)

    monkeypatch.setattr(make_sample, "write_sample_tile", interrupted)
    with pytest.raises(KeyboardInterrupt):
        make_sample.main(args)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["mine", "notes.txt"]  # no tile, no staging folder
    monkeypatch.setattr(make_sample, "write_sample_tile", real)
    make_sample.main(args)
    assert (root / "top" / "top_mosaic_09cm_areab.tif").exists() and (root / "config.make_sample.json").exists()
    assert (root / "notes.txt").read_text() == "mine"
