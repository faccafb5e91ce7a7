"""check_data.py and eoseg.datacheck: statistics, class shares and problems, each once."""

from __future__ import annotations

import json
import re

import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio

from eoseg.config import load_config
from eoseg.datacheck import check_dataset, format_report, write_norm
from eoseg.errors import EosegError
from eoseg.io import read_label
from eoseg.tiles import read_image

from .conftest import as_arguments, run_script, tiny_overrides


def test_sample_statistics_and_class_shares(tiny_cfg, tmp_path):
    result = run_script("check_data.py", *as_arguments({**tiny_overrides(tmp_path), "DATA_ROOT": tiny_cfg.DATA_ROOT}),
                        "--out", str(tmp_path / "check"))
    assert result.returncode == 0, result.stderr
    assert "problems: none" in result.stdout and (tmp_path / "check" / "class_shares.png").is_file()
    assert all(image["resolution"] == "0.09 m" for image in check_dataset(tiny_cfg).images)  # the sample's pixels
    # the statistics are those of the training tiles' pixels, computed here independently
    pixels = np.concatenate([read_image(tiny_cfg, t)[0].reshape(3, -1) for t in tiny_cfg.tile_ids("train")], axis=1)
    mean, std = pixels.mean(axis=1), pixels.std(axis=1)
    assert f"NORM_MEAN = {[float(f'{m:.6g}') for m in mean]}" in result.stdout
    assert f"NORM_STD = {[float(f'{s:.6g}') for s in std]}" in result.stdout
    report = check_dataset(tiny_cfg)
    labels = np.concatenate([read_label(tiny_cfg.tile_path("LABEL_PATTERN", t)).ravel() for t in tiny_cfg.tile_ids("train")])
    np.testing.assert_array_equal(report.class_pixels["train"], np.bincount(labels, minlength=256)[:6])
    share = 100 * report.class_pixels["test"][1] / report.class_pixels["test"].sum()
    assert f"{'building':<24}" in result.stdout and f"{share:>7.2f}%" in result.stdout
    # an --out that is a file: said before the check reads the tiles (review: "File exists" at its end)
    (tmp_path / "a_file").write_text("")
    refused = run_script("check_data.py", *as_arguments({**tiny_overrides(tmp_path), "DATA_ROOT": tiny_cfg.DATA_ROOT}),
                         "--out", str(tmp_path / "a_file"))
    assert refused.returncode == 2 and refused.stderr.strip().endswith("is a file, not a folder; choose another --out")
    assert "problems" not in refused.stdout


def test_norm_written_into_the_config_file(tiny_cfg, tmp_path):
    config = tmp_path / "mine.py"
    config.write_text("NORM_MEAN = [1.0, 2.0, 3.0]\nITERATIONS = 5\n")
    result = run_script("check_data.py", "--config", str(config), "--write-norm", "--out", str(tmp_path / "check"),
                        *as_arguments({**tiny_overrides(tmp_path), "DATA_ROOT": tiny_cfg.DATA_ROOT}))
    assert result.returncode == 0, result.stderr
    text = config.read_text()
    assert text.count("NORM_MEAN =") == 1 and text.count("NORM_STD =") == 1 and "ITERATIONS = 5" in text
    assert [line for line in result.stdout.splitlines() if line.startswith("NORM_MEAN")][0] in text


def test_norm_of_another_band_count_is_measured_and_written(tiny_cfg, tmp_path):
    """A config whose NORM_MEAN / NORM_STD do not fit BANDS (another sensor's, 12-bit ones for 8-bit data) is refused
    by every step but the one that measures them: --write-norm measures and writes them, without a scale problem."""
    config = tmp_path / "mine.py"
    config.write_text("NORM_MEAN = [0.0]\nNORM_STD = [4095.0]\n")
    arguments = as_arguments({**tiny_overrides(tmp_path), "DATA_ROOT": tiny_cfg.DATA_ROOT})
    for key in ("NORM_MEAN", "NORM_STD"):
        arguments = [a for a in arguments if not a.startswith(f"{key}=")]
    refused = run_script("check_data.py", "--config", str(config), "--out", str(tmp_path / "check"), *arguments)
    assert refused.returncode == 2 and "NORM_MEAN has 1 entries but BANDS selects 3 bands" in refused.stderr
    result = run_script("check_data.py", "--config", str(config), "--write-norm", "--out", str(tmp_path / "check"),
                        *arguments)
    assert result.returncode == 0 and "problems: none" in result.stdout, result.stdout + result.stderr
    written = load_config(config, arguments)
    assert len(written.NORM_MEAN) == len(written.NORM_STD) == 3 and 10 < written.NORM_STD[0] < 100  # 8-bit spreads


def test_norm_written_over_assignments_of_several_lines(tmp_path):
    """The whole assignment is replaced: a list over several lines, with comments, kept its tail (a syntax error)."""
    config = tmp_path / "mine.py"
    config.write_text("ITERATIONS = 5\nNORM_MEAN = [\n    0.0,  # R\n    0.0,  # G\n]\nNORM_STD = (\n    [3000.0] * 2\n)\n"
                      "NORM_MEAN = [1.0, 1.0]  # again\nBATCH_SIZE = 4\n")
    write_norm(config, ["NORM_MEAN = [10.0, 20.0]", "NORM_STD = [1.5, 2.5]"])
    assert config.read_text() == "ITERATIONS = 5\nNORM_STD = [1.5, 2.5]\nNORM_MEAN = [10.0, 20.0]\nBATCH_SIZE = 4\n"
    config.write_text("NORM_MEAN = [\n")
    with pytest.raises(EosegError, match="mine.py, line 1: syntax error: .*; it was left as it is"):
        write_norm(config, ["NORM_MEAN = [10.0, 20.0]"])
    assert config.read_text() == "NORM_MEAN = [\n"


def test_norm_written_into_a_config_of_another_encoding_keeps_it(tmp_path):
    """A config declaring latin-1, which every step reads, gave a UnicodeDecodeError traceback (review)."""
    config = tmp_path / "mine.py"
    config.write_bytes("# -*- coding: latin-1 -*-\nDATA_ROOT = 'Zürich'\n".encode("latin-1"))
    write_norm(config, ["NORM_MEAN = [10.0, 20.0]"])
    assert config.read_bytes() == "# -*- coding: latin-1 -*-\nDATA_ROOT = 'Zürich'\nNORM_MEAN = [10.0, 20.0]\n".encode("latin-1")


def test_norm_sharing_its_line_with_other_statements_is_left_to_the_user(tmp_path):
    """`MODEL_WIDTH = 0.5; NORM_MEAN = [...]`: the line was replaced whole, MODEL_WIDTH lost without a word (review)."""
    config = tmp_path / "mine.py"
    for text in ("MODEL_WIDTH = 0.5; NORM_MEAN = [1.0]\n", "NORM_MEAN = NORM_STD = [1.0]\n"):
        config.write_text(text)
        with pytest.raises(EosegError, match=r"mine.py, line 1: NORM_MEAN shares its line with other statements; put it "
                                             r"on a line of its own \(the file was left as it is\)"):
            write_norm(config, ["NORM_MEAN = [10.0, 20.0]"])
        assert config.read_text() == text


def test_norm_written_into_a_linked_config_keeps_the_link_and_the_permissions(tmp_path):
    shared = tmp_path / "configs" / "city.py"
    shared.parent.mkdir()
    shared.write_text("ITERATIONS = 5\n")
    shared.chmod(0o640)
    link = tmp_path / "mine.py"
    link.symlink_to(shared)
    write_norm(link, ["NORM_MEAN = [10.0, 20.0]"])
    assert link.is_symlink() and shared.read_text() == "ITERATIONS = 5\nNORM_MEAN = [10.0, 20.0]\n"
    assert shared.stat().st_mode & 0o777 == 0o640


def test_broken_dataset_lists_each_problem_once(sample_root, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(sample_root / "data", data)
    (data / "top" / "top_mosaic_09cm_area2.tif").unlink()  # a missing image
    label = data / "labels" / "top_mosaic_09cm_area3.tif"
    with rasterio.open(label, "r+") as dst:  # values no class has
        labels = dst.read(1)
        labels[:4, :4] = 9
        dst.write(labels, 1)
    with rasterio.open(data / "labels" / "top_mosaic_09cm_area4.tif", "r+") as dst:  # moved far away
        dst.transform = dst.transform * rasterio.transform.Affine.translation(0, 50 * dst.height)
    overrides = {**tiny_overrides(tmp_path), "DATA_ROOT": str(data), "TRAIN_IDS": ["1", "2", "3"], "TEST_IDS": ["4"],
                 "CLASS_NAMES": ["a", "b", "c", "d", "e", "f", "g"], "PALETTE": [[i, i, i] for i in range(1, 8)]}
    result = run_script("check_data.py", *as_arguments(overrides), "--out", str(tmp_path / "check"))
    assert result.returncode == 1
    problems = [line for line in result.stdout.splitlines() if line.startswith("problem: ")]
    assert len(problems) == 4, result.stdout
    assert "top_mosaic_09cm_area2.tif" in problems[0] and "not found" in problems[0]
    assert "area3.tif" in problems[1] and "9 x 16 px" in problems[1]
    assert "area4.tif" in problems[2] and "does not overlap" in problems[2]
    assert problems[3] == "problem: classes absent from the training tiles: g; the network cannot learn them"
    assert "Traceback" not in result.stderr


def test_tiles_given_by_globs_are_the_tiles_listed(tiny_cfg, tmp_path):
    """TRAIN_IDS ["*", "!4"] and TEST_IDS ["[4-9]"] over the sample's tiles 1-4 check what ["1", "2", "3"] and ["4"] do."""
    listed = run_script("check_data.py", *as_arguments({**tiny_overrides(tmp_path), "DATA_ROOT": tiny_cfg.DATA_ROOT}),
                        "--out", str(tmp_path / "listed"))
    globbed = run_script("check_data.py", *as_arguments({**tiny_overrides(tmp_path), "DATA_ROOT": tiny_cfg.DATA_ROOT,
                                                         "TRAIN_IDS": ["*", "!4"], "TEST_IDS": ["[4-9]"]}),
                         "--out", str(tmp_path / "globbed"))
    assert globbed.returncode == 0, globbed.stderr
    assert globbed.stdout == listed.stdout.replace(str(tmp_path / "listed"), str(tmp_path / "globbed"))
    record = json.loads((tmp_path / "globbed" / "config.check_data.json").read_text())
    assert record["tile_ids"] == {"TRAIN_IDS": ["1", "2", "3"], "TEST_IDS": ["4"]}


def test_training_tiles_that_cannot_be_read_say_why_once(tiny_cfg, tmp_path):
    """No training image found: each missing file is a problem, and no class is said to be absent from
    labels that were never read."""
    report = check_dataset(tiny_cfg.replace(TRAIN_IDS=["97", "98"]))
    assert len(report.problems) == 2 and all("not found" in problem for problem in report.problems), report.problems


def test_a_tile_on_another_value_scale_is_a_problem(sample_root, tmp_path):
    """Test tile 4 at an eighth of its values (12-bit data cast to 8 bits unscaled looks so): one
    normalisation cannot serve it and the training tiles."""
    data = tmp_path / "data"
    shutil.copytree(sample_root / "data", data)
    with rasterio.open(data / "top" / "top_mosaic_09cm_area4.tif", "r+") as dst:
        dst.write(dst.read() // 8)
    cfg = load_config(overrides=as_arguments({**tiny_overrides(tmp_path), "DATA_ROOT": str(data)}))
    problems = check_dataset(cfg).problems
    assert len(problems) == 1 and re.match(r"tile 4: its values are 0\.1\d times those of the training tiles", problems[0]), problems
    assert not any("values are" in problem for problem in check_dataset(cfg.replace(TEST_IDS=["3"])).problems)
    with rasterio.open(data / "top" / "top_mosaic_09cm_area4.tif", "r+") as dst:  # half as bright: a note, not a problem
        dst.write(dst.read() * 4)
    report = check_dataset(cfg)
    assert not report.problems and [note for note in report.notes if re.match(
        r"tile 4: its values are 0\.[4-6]\d times those of the training tiles together: its labels may suffer", note)]


def test_a_tile_smaller_than_a_patch_is_a_problem(tiny_cfg):
    """Extraction and training refuse a training tile smaller than PATCH_SIZE: check_data says so first, in the
    refusal's words; a test tile that small is labelled whole, no problem."""
    too_large = max(tiny_cfg.PATCH_SIZE, 161)  # the tiny sample's tiles are 160 px a side
    for source in ("lmdb", "tiles"):
        problems = check_dataset(tiny_cfg.replace(PATCH_SIZE=too_large, TRAIN_IDS=["1"], TEST_IDS=["4"],
                                                  TRAIN_SOURCE=source)).problems
        assert [p.split(": ", 1)[1] for p in problems] == [
            f"tile is 160 x 160 px, smaller than PATCH_SIZE {too_large}; lower PATCH_SIZE or leave the tile out of "
            "TRAIN_IDS"], problems
        assert problems[0].split(": ")[0].endswith("area1.tif")
    assert check_dataset(tiny_cfg.replace(TRAIN_IDS=["1"], TEST_IDS=["4"])).problems == []


def test_tiles_of_another_data_type_are_a_problem(tiny_cfg, tmp_path):
    """Extraction refuses tiles of two data types (one normalisation cannot fit both): check_data says so first."""
    data = tmp_path / "data"
    shutil.copytree(tiny_cfg.DATA_ROOT, data)
    image = data / tiny_cfg.IMAGE_PATTERN.format(id="2")
    with rasterio.open(image) as src:
        profile, pixels = {**src.profile, "dtype": "uint16"}, src.read().astype(np.uint16) * 257
    with rasterio.open(image, "w", **profile) as dst:
        dst.write(pixels)
    problems = check_dataset(tiny_cfg.replace(DATA_ROOT=str(data))).problems
    assert any(re.match(rf"{re.escape(str(image))}: image is uint16, but top_mosaic_09cm_area1.tif is uint8 before it", p)
               for p in problems)


def test_a_label_value_refused_is_counted_over_the_whole_raster(tiny_cfg, tmp_path, monkeypatch):
    """Not over the windows sampled for thin lines, which see a part of a large raster."""
    from rasterio.windows import Window
    from eoseg import datacheck

    data = tmp_path / "data"
    shutil.copytree(tiny_cfg.DATA_ROOT, data)
    labels_path = data / tiny_cfg.LABEL_PATTERN.format(id="1")
    with rasterio.open(labels_path, "r+") as dst:
        labels = dst.read(1)
        labels[:16, :16] = 7  # in the sampled window: 256 px
        labels[100:120, 100:120] = 7  # beyond it: 400 px
        dst.write(labels, 1)
    monkeypatch.setattr(datacheck, "spread_windows", lambda height, width, side, size: [Window(0, 0, 16, 16)])
    for cfg in (tiny_cfg.replace(DATA_ROOT=str(data)),  # and a tile held out in blocks, checked in both its splits
                tiny_cfg.replace(DATA_ROOT=str(data), TEST_IDS=["1"], HOLDOUT_BLOCK=64, PATCH_SIZE=32)):
        problems = [problem for problem in check_dataset(cfg).problems if problem.startswith(str(labels_path))]
        assert len(problems) == 1 and problems[0].startswith(
            f"{labels_path}: label values outside the class ids 0..5 and IGNORE_LABEL 255: 7 x 656 px"), problems


def test_training_class_shares_count_the_pixels_training_learns_from(tiny_cfg, tmp_path):
    """Labels where the image holds no data are no training pixels: check_data counts the classes as extraction
    does, so a class lying under nodata is seen missing before training says so."""
    from eoseg.extract import extract_patches

    data = tmp_path / "data"
    shutil.copytree(tiny_cfg.DATA_ROOT, data)
    cfg = tiny_cfg.replace(DATA_ROOT=str(data), TRAIN_IDS=["1"], TEST_IDS=["4"])
    image = data / cfg.IMAGE_PATTERN.format(id="1")
    building = read_label(cfg.tile_path("LABEL_PATTERN", "1")) == 1
    with rasterio.open(image) as src:
        profile, pixels = {**src.profile, "nodata": 0}, src.read()
    pixels[:, building] = 0
    with rasterio.open(image, "w", **profile) as dst:
        dst.write(pixels)
    shares = check_dataset(cfg).class_pixels["train"].tolist()
    assert shares[1] == 0 and sum(shares) > 0
    assert shares == extract_patches(cfg, cfg.PATCHES_DIR, progress=False)["class_pixels"]


def test_a_zero_collar_without_a_nodata_tag_is_a_note(tiny_cfg, tmp_path, capsys):
    """Half a training tile 0 in every band with no nodata tag: check_data says so, with NODATA_ZERO (its zeros would be
    learned as land, and counted into the statistics --write-norm writes); tagged, it says nothing."""
    data = tmp_path / "data"
    shutil.copytree(tiny_cfg.DATA_ROOT, data)
    cfg = tiny_cfg.replace(DATA_ROOT=str(data))
    image = data / cfg.IMAGE_PATTERN.format(id="2")
    with rasterio.open(image) as src:
        profile, pixels = src.profile, src.read()
    pixels[:, :, : pixels.shape[2] // 2] = 0
    with rasterio.open(image, "w", **profile) as dst:
        dst.write(pixels)
    notes = check_dataset(cfg).notes
    assert [note for note in notes if "sampled pixels are 0" in note] == \
        ["tile 2: 50% of its sampled pixels are 0 in every band with no nodata tag: if they hold no data, set "
         "NODATA_ZERO=True (or tag them: gdal_edit.py -a_nodata 0 FILE)"]
    from eoseg.extract import extract_patches

    extract_patches(cfg, cfg.PATCHES_DIR, progress=False)  # learned as land: said there too (review)
    assert "note: tile 2: 50% of its sampled pixels are 0 in every band with no nodata tag" in capsys.readouterr().err
    with rasterio.open(image, "r+") as dst:
        dst.nodata = 0
    assert not [note for note in check_dataset(cfg).notes if "sampled pixels are 0" in note]


def test_a_class_in_thin_lines_among_areas_is_named_with_the_label_values_it_may_need(tiny_cfg, tmp_path):
    """ISPRS ids (0 boundaries, 1..6 classes) read as class ids shift every class by one: the boundaries, thin lines
    between areas, are named with the LABEL_VALUES that reads them as unlabelled. Areas alone, or several thin
    classes (coarse pixels), give no note; nor does the sample."""
    from eoseg.datacheck import count_block_pixels, thin_class_note

    ids = np.repeat(np.repeat(np.random.default_rng(0).integers(1, 6, (8, 8)), 32, axis=0), 32, axis=1).astype(np.uint8)
    edges = np.zeros(ids.shape, bool)
    edges[:, 1:] |= ids[:, 1:] != ids[:, :-1]
    edges[1:, :] |= ids[1:, :] != ids[:-1, :]
    boundaries = ids.copy()
    for shift in (-1, 0, 1):  # 3 px wide, as the ISPRS eroded ground truth's
        boundaries[np.roll(edges, shift, axis=0) | np.roll(edges, shift, axis=1)] = 0
    pixels, in_blocks = count_block_pixels(boundaries, 6)
    assert pixels.sum() == 252 * 252 and in_blocks[0] == 0 and (in_blocks[1:] > 0.5 * pixels[1:]).all()
    note = thin_class_note(tiny_cfg, pixels, in_blocks)
    assert note.startswith("class 0 (impervious surfaces) lies in thin lines: 0% of its pixels lie in 5 x 5 px blocks")
    assert note.endswith("LABEL_VALUES = {0: 'ignore', 1: 0, 2: 1, 3: 2, 4: 3, 5: 4, 6: 5}")
    assert thin_class_note(tiny_cfg, *count_block_pixels(ids, 6)) is None
    coarse = np.random.default_rng(1).integers(0, 6, (256, 256)).astype(np.uint8)  # every class in specks
    assert thin_class_note(tiny_cfg, *count_block_pixels(coarse, 6)) is None
    assert not [note for note in check_dataset(tiny_cfg).notes if "thin lines" in note]
    # a one-band eroded ground truth of those ids, which scoring reads as the label maps are (review: OA 7.9%, unsaid)
    test_id = tiny_cfg.tile_ids("test")[0]
    with rasterio.open(tiny_cfg.tile_path("IMAGE_PATTERN", test_id)) as src:
        profile = {**src.profile, "count": 1, "dtype": "uint8", "photometric": None}
        tiled = np.tile(boundaries, (src.height // 252 + 1, src.width // 252 + 1))[:src.height, :src.width]
    (tmp_path / "eroded").mkdir()
    eroded = tiny_cfg.replace(GT_ERODED_PATTERN=str(tmp_path / "eroded" / "{id}.tif"))
    with rasterio.open(eroded.tile_path("GT_ERODED_PATTERN", test_id), "w", **profile) as dst:
        dst.write(tiled[None])
    notes = [note for note in check_dataset(eroded).notes if "thin lines" in note]
    assert len(notes) == 1 and notes[0].startswith("in the eroded ground truth (GT_ERODED_PATTERN), which is read as the "
                                                   "label maps are: class 0 (impervious surfaces) lies in thin lines")


def test_the_class_attribute_values_of_polygons_are_listed(sample_root, tmp_path):
    """Polygons of the sample's buildings and trees, one file for all tiles, a string class attribute:
    check_data lists each value with its polygons and what LABEL_VALUES makes of it."""
    import pyogrio.raw
    import rasterio.features
    import shapely

    cfg = load_config(overrides=as_arguments({**tiny_overrides(tmp_path), "DATA_ROOT": str(sample_root / "data")}))
    shapes, kinds = [], []
    for tile in ("1", "4"):
        with rasterio.open(cfg.tile_path("LABEL_PATTERN", tile)) as src:
            labels, transform, crs = src.read(1), src.transform, src.crs
        for class_id, kind in ((1, "roof"), (3, "tree")):
            found = [shapely.geometry.shape(g) for g, _ in rasterio.features.shapes(labels, labels == class_id, transform=transform)]
            shapes += found
            kinds += [kind] * len(found)
    path = tmp_path / "survey.gpkg"
    pyogrio.raw.write(path, shapely.to_wkb(np.array(shapes)), [np.array(kinds, dtype=object)], ["kind"], crs=str(crs),
                      geometry_type="Polygon", driver="GPKG")
    cfg = cfg.replace(LABEL_PATTERN=str(path), VECTOR_CLASS_FIELD="kind", LABEL_VALUES={"roof": 1, "tree": 0},
                      CLASS_NAMES=["tree", "building"], PALETTE=[[0, 255, 0], [0, 0, 255]], GT_ERODED_PATTERN="",
                      VECTOR_BACKGROUND_CLASS=255, TRAIN_IDS=["1"], TEST_IDS=["4"])
    report = check_dataset(cfg)
    assert report.raw_polygons == {"roof": kinds.count("roof"), "tree": kinds.count("tree")} and not report.raw_values
    text = format_report(cfg, report)
    assert f"    'roof' {kinds.count('roof'):>12} polygons -> class 1 (building)" in text
    assert f"    'tree' {kinds.count('tree'):>12} polygons -> class 0 (tree)" in text
    assert "  (polygons over the tiles: one over two tiles counted in each)" in text


def test_label_values_are_listed_in_numeric_order(tiny_cfg):
    cfg = tiny_cfg.replace(LABEL_VALUES={3: 0, 20: 1, 100: 2, 9: 3, 10: 4, 11: 5})
    report = check_dataset(tiny_cfg)
    report.raw_values = {100: 5, 20: 3, 3: 1, 9: 2}
    listed = [line.split()[0] for line in format_report(cfg, report).splitlines() if line.endswith(")") and " px -> " in line]
    assert listed == ["3", "9", "20", "100"]
    report.raw_values[7] = 4  # in no LABEL_VALUES: read as unlabelled where asked, said so (it read NOT MAPPED: review)
    assert "       7            4 px -> NOT MAPPED" in format_report(cfg, report)
    ignored = format_report(cfg.replace(UNKNOWN_LABELS_TO_IGNORE=True), report)
    assert "       7            4 px -> ignored (UNKNOWN_LABELS_TO_IGNORE)" in ignored


def test_validation_tiles_beyond_train_and_test_are_checked(tiny_cfg, tmp_path):
    """Training validates on VAL_IDS: check_data says what it would refuse there (a missing tile, no ground truth)."""
    assert not check_dataset(tiny_cfg.replace(VAL_IDS=["4"])).problems
    problems = check_dataset(tiny_cfg.replace(VAL_IDS=["9"])).problems
    assert len(problems) == 1 and problems[0].startswith("tile 9: image not found at")
    data = tmp_path / "data"
    shutil.copytree(Path(tiny_cfg.DATA_ROOT), data)
    shutil.copy(data / "top" / "top_mosaic_09cm_area4.tif", data / "top" / "top_mosaic_09cm_area5.tif")
    problems = check_dataset(tiny_cfg.replace(DATA_ROOT=str(data), GT_ERODED_PATTERN="", VAL_IDS=["5"])).problems
    assert problems == ["validation tile 5 (VAL_IDS) has no ground truth; choose VAL_IDS with labels"]


def test_how_each_image_marks_its_nodata_is_listed(tiny_cfg, tmp_path):
    """A nodata value, an alpha band, an internal mask or none: check_data's nodata column says which."""
    import rasterio

    from eoseg.io import nodata_kind

    pixels = np.random.default_rng(0).integers(1, 256, (3, 16, 16), dtype=np.uint8)
    profile = dict(driver="GTiff", width=16, height=16, dtype="uint8")
    with rasterio.open(tmp_path / "value.tif", "w", count=3, nodata=0, **profile) as dst:
        dst.write(pixels)
    with rasterio.open(tmp_path / "alpha.tif", "w", count=4, photometric="RGB", alpha="YES", **profile) as dst:
        dst.write(np.concatenate([pixels, pixels[:1]]))
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), \
            rasterio.open(tmp_path / "mask.tif", "w", count=3, **profile) as dst:
        dst.write(pixels)
        dst.write_mask(np.full((16, 16), 255, np.uint8))
    with rasterio.open(tmp_path / "none.tif", "w", count=3, **profile) as dst:
        dst.write(pixels)
    assert [nodata_kind(tmp_path / f"{name}.tif", [1, 2, 3]) for name in ("value", "alpha", "mask", "none")] == \
        ["0", "alpha", "mask", "-"]
    assert {image["nodata"] for image in check_dataset(tiny_cfg).images} == {"-"}


def test_a_report_of_tiles_that_could_not_be_read_says_so(tiny_cfg):
    """Not an empty table and 0.00% for every class, which read as empty data rather than checks that stopped."""
    cfg = tiny_cfg.replace(IMAGE_PATTERN="elsewhere/{id}.tif")
    text = format_report(cfg, check_dataset(cfg))
    assert "  none could be read: see the problems below" in text
    assert "  no labelled pixel could be read: see the problems below" in text and "0.00%" not in text
    assert "none could be read" not in format_report(tiny_cfg, check_dataset(tiny_cfg))


def test_the_resolution_of_a_grid_without_metres_is_its_pixel_side_however_it_is_turned():
    """A local grid (no CRS to give metres) rotated 90 degrees: its transform's a and e are 0, its pixels 0.7 wide."""
    from pathlib import Path

    from rasterio.transform import Affine

    from eoseg.datacheck import resolution_text
    from eoseg.io import RasterInfo

    turned = RasterInfo(Path("turned.tif"), 10, 10, 1, "uint8", None, Affine(0, 0.7, 100, 0.7, 0, 200), None)
    assert resolution_text(turned) == "0.7"
    assert resolution_text(RasterInfo(Path("plain.png"), 10, 10, 1, "uint8", None, Affine.identity(), None)) == "-"


def test_training_tiles_of_several_pixel_sizes_are_a_note(tiny_cfg, tmp_path):
    """0.09 m and 0.15 m tiles in one training set: the network learns objects at both sizes, and inference labels
    finer images at the smaller one; said, as nothing else says it."""
    from rasterio.transform import Affine

    data = tmp_path / "data"
    shutil.copytree(tiny_cfg.DATA_ROOT, data)
    cfg = tiny_cfg.replace(DATA_ROOT=str(data))
    assert not [note for note in check_dataset(cfg).notes if "pixels of" in note]
    for pattern in (cfg.IMAGE_PATTERN, cfg.LABEL_PATTERN):
        with rasterio.open(data / pattern.format(id="2"), "r+") as dst:
            dst.transform = dst.transform * Affine.scale(0.15 / 0.09)
    assert [note for note in check_dataset(cfg).notes if note.startswith(
        "the training tiles have pixels of 0.09 to 0.15 m: the network learns objects at each of those sizes, and "
        "inference labels finer images at 0.09 m")]


def test_polygons_without_a_class_attribute_are_described_not_an_empty_list(tiny_cfg):
    """Vector labels without VECTOR_CLASS_FIELD have no values to list: the report says what polygons and the rest
    read as, instead of an empty 'label values found' under 'values are class ids'."""
    from eoseg.datacheck import DataReport

    cfg = tiny_cfg.replace(LABEL_PATTERN="footprints.geojson", VECTOR_CLASS_FIELD="", VECTOR_POLYGON_CLASS=1,
                           VECTOR_BACKGROUND_CLASS=0)
    report = DataReport(class_pixels={split: np.zeros(cfg.num_classes, dtype=np.int64) for split in ("train", "test")})
    text = format_report(cfg, report)
    assert "label values found" not in text
    assert ("labels: polygons without a class attribute (VECTOR_CLASS_FIELD is empty):\n"
            "  inside a polygon -> class 1 (building) (VECTOR_POLYGON_CLASS)\n"
            "  outside them     -> class 0 (impervious surfaces) (VECTOR_BACKGROUND_CLASS)") in text


def test_the_image_table_widens_for_long_tile_ids():
    from eoseg.config import load_config
    from eoseg.datacheck import DataReport

    report = DataReport(class_pixels={split: np.zeros(6, dtype=np.int64) for split in ("train", "test")})
    report.images = [{"tile": tile, "split": "train", "size": "512 x 512", "bands": 3, "dtype": "uint8", "crs": "-",
                      "resolution": "-", "nodata": "-"} for tile in ("cairo", "los_angeles_downtown")]
    rows = format_report(load_config(), report).splitlines()[1:4]
    assert len({row.index("split" if i == 0 else "train") for i, row in enumerate(rows)}) == 1, rows


@pytest.mark.parametrize("crs, named", [
    ("+proj=tmerc +lat_0=0 +lon_0=10.3333 +k=1 +x_0=0 +y_0=-5000000 +ellps=bessel +units=m +no_defs", "unknown (tmerc)"),
    (rasterio.crs.CRS.from_proj4("+proj=tmerc +lon_0=7 +ellps=WGS84").to_wkt().replace(
        '"unknown"', '"Stadtvermessung Musterstadt Gauss-Krueger lokal"', 1), "Stadtvermessung Musterstadt..."),
])
def test_the_image_table_names_a_crs_without_a_code_briefly(tiny_cfg, tmp_path, crs, named):
    """A CRS without an EPSG code was printed as its whole WKT, hundreds of characters in every row of the table."""
    data = tmp_path / "data"
    shutil.copytree(tiny_cfg.DATA_ROOT, data)
    cfg = tiny_cfg.replace(DATA_ROOT=str(data), TRAIN_IDS=["1"], TEST_IDS=["4"])
    assert [image["crs"] for image in check_dataset(cfg).images] == ["EPSG:32632"] * 2  # a code: the code
    for raster in data.rglob("*.tif"):  # every tile's image, labels and the rest: one grid
        with rasterio.open(raster, "r+") as dst:
            dst.crs = rasterio.crs.CRS.from_user_input(crs)
    rows = format_report(cfg, check_dataset(cfg)).splitlines()[2:4]
    assert len(rows) == 2 and all(f" {named} " in row and len(row) < 150 for row in rows), rows


def test_a_test_tile_naming_the_training_bands_in_another_order_is_a_problem(tiny_cfg, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(tiny_cfg.DATA_ROOT, data)
    cfg = tiny_cfg.replace(DATA_ROOT=str(data), TRAIN_IDS=["1", "2"], TEST_IDS=["4"])
    for tile, names in (("1", ["B8", "B4", "B3"]), ("2", ["B8", "B4", "B3"]), ("4", ["B4", "B3", "B8"])):
        with rasterio.open(cfg.tile_path("IMAGE_PATTERN", tile), "r+") as dst:
            dst.descriptions = names
    problems = check_dataset(cfg).problems
    assert any("area4.tif: its bands [1, 2, 3] (BANDS) are named ['B4', 'B3', 'B8'] in the file, but the training images "
               "named them ['B8', 'B4', 'B3'], which this file holds as bands [3, 1, 2]: set BANDS = [3, 1, 2]" in p
               for p in problems), problems


def test_a_training_tile_without_a_labelled_data_pixel_is_noted(tiny_cfg, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(tiny_cfg.DATA_ROOT, data)
    cfg = tiny_cfg.replace(DATA_ROOT=str(data), TRAIN_IDS=["1", "2"], TEST_IDS=["4"])
    with rasterio.open(cfg.tile_path("IMAGE_PATTERN", "2"), "r+") as dst:
        dst.nodata = 0
        dst.write(np.zeros((dst.count, dst.height, dst.width), dtype=dst.dtypes[0]))
    notes = check_dataset(cfg).notes
    assert [n for n in notes if "training tile" in n] == [
        "training tile 2: none of its pixels holds both data and a class (all nodata, or unlabelled where it holds data): "
        "it adds nothing to training"]


def test_a_tile_whose_extra_source_is_another_raster_is_a_problem(tiny_cfg, tmp_path):
    """A DSM (heights above the sea) given for one tile's nDSM (heights above the ground): labelling refuses it, and
    check_data names it first, as it names an image on another scale."""
    data = tmp_path / "data"
    shutil.copytree(tiny_cfg.DATA_ROOT, data)
    ndsm = {"pattern": "ndsm/ndsm_09cm_matching_area{id}.tif", "bands": [1], "band_names": ["nDSM"], "mean": [0.0],
            "std": [10.0]}
    cfg = tiny_cfg.replace(DATA_ROOT=str(data), EXTRA_SOURCES=[ndsm])
    assert not [p for p in check_dataset(cfg).problems if "nDSM (" in p]
    shutil.copy(cfg.tile_path("DSM_PATTERN", "4"), data / "ndsm" / "ndsm_09cm_matching_area4.tif")
    problems = [p for p in check_dataset(cfg).problems if "nDSM (" in p]
    assert len(problems) == 1 and "a DSM for an nDSM" in problems[0]
    assert problems[0].startswith("tile 4: its nDSM (ndsm_09cm_matching_area4.tif) values are ")  # the file to fix


def test_a_tile_whose_dsm_lies_on_another_datum_is_a_problem(tiny_cfg, tmp_path):
    """A test tile's DSM raised far beyond the training tiles' heights (another datum, another town): its magnitude
    hardly changes, so only the shift of its mean in the training tiles' standard deviations tells it."""
    data = tmp_path / "data"
    shutil.copytree(tiny_cfg.DATA_ROOT, data)
    dsm = {"pattern": "dsm/dsm_09cm_matching_area{id}.tif", "bands": [1], "band_names": ["DSM"], "mean": [260.0],
           "std": [5.0]}
    cfg = tiny_cfg.replace(DATA_ROOT=str(data), EXTRA_SOURCES=[dsm])
    report = check_dataset(cfg)
    assert not [p for p in report.problems + report.notes if p.startswith("tile") and "DSM (" in p]
    # heights above the sea: said before any tile is off, with what carries over
    assert [n for n in report.notes if "DSM values lie far from 0" in n and "an nDSM" in n]
    ndsm = {**dsm, "pattern": "ndsm/ndsm_09cm_matching_area{id}.tif", "band_names": ["nDSM"]}
    assert not [n for n in check_dataset(cfg.replace(EXTRA_SOURCES=[ndsm])).notes if "far from 0" in n]
    with rasterio.open(cfg.tile_path("DSM_PATTERN", "4"), "r+") as dst:
        dst.write(dst.read() + np.float32(150.0))
    problems = [p for p in check_dataset(cfg).problems if "DSM (" in p]
    assert len(problems) == 1 and "another datum" in problems[0]
    assert problems[0].startswith(f"tile 4: the mean of its DSM ({cfg.tile_path('DSM_PATTERN', '4').name}) values, ")
    # a training tile 60 m higher up among thirteen others: part of the mean it is held to (3.4 standard deviations
    # away, where a higher one would be no further), so only noted
    with rasterio.open(cfg.tile_path("DSM_PATTERN", "4"), "r+") as dst:
        dst.write(dst.read() - np.float32(90.0))
    copies = [f"1{k}" for k in range(10)]
    for copy in copies:
        for pattern in ("IMAGE_PATTERN", "LABEL_PATTERN", "GT_COLOR_PATTERN", "GT_ERODED_PATTERN", "DSM_PATTERN"):
            if cfg.tile_path(pattern, "1").exists():
                shutil.copy(cfg.tile_path(pattern, "1"), cfg.tile_path(pattern, copy))
    report = check_dataset(cfg.replace(TRAIN_IDS=cfg.TRAIN_IDS + copies + ["4"], TEST_IDS=[]))
    assert not [p for p in report.problems if "DSM (" in p]
    assert [n for n in report.notes if re.match(r"tile 4: the mean of its DSM \(\S+\) values, \S+ lies 3\.\d standard", n)]


def test_the_report_gives_each_extra_sources_mean_and_std(tiny_cfg, capsys):
    """--write-norm writes NORM_MEAN / NORM_STD; the entries of EXTRA_SOURCES are the user's, so the report gives
    theirs, measured over the training tiles, beside the bands' table."""
    ndsm = {"pattern": "ndsm/ndsm_09cm_matching_area{id}.tif", "bands": [1], "band_names": ["nDSM"], "mean": [0.0],
            "std": [10.0]}
    cfg = tiny_cfg.replace(EXTRA_SOURCES=[ndsm, {"derived": "ndvi"}])
    report = check_dataset(cfg)
    text = format_report(cfg, report)
    mean, std = report.statistics.mean, report.statistics.std
    assert 'normalisation of EXTRA_SOURCES (each entry\'s "mean" and "std"):' in text
    expected = [f'  EXTRA_SOURCES[0] (nDSM): "mean": [{mean[3]:.6g}], "std": [{std[3]:.6g}]',
                f'  EXTRA_SOURCES[1] (NDVI): "mean": [{mean[4]:.6g}], "std": [{std[4]:.6g}]']
    assert [line for line in text.splitlines() if line.startswith("  EXTRA_SOURCES[")] == expected
    assert mean[3] > 0.5 and -1 < mean[4] < 1  # heights above the ground in metres; NDVI
