"""Colour ground truth <-> label maps (eoseg/convert.py): indexed (paletted) colour ground truth."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.enums import ColorInterp

from eoseg.convert import color_file_to_labels, labels_file_to_color
from eoseg.errors import EosegError
from eoseg.io import expand_colour_table, raster_info, read_label, read_raster, write_raster
from eoseg.labels import SCAN_ROWS, LabelValues, RasterLabels
from eoseg.palette import Palette
from eoseg.tiles import TruthSource

COLOR_GT = "gts_for_participants/top_mosaic_09cm_area{id}.tif"
LABELS = "labels/top_mosaic_09cm_area{id}.tif"


def write_indexed(path: Path, indices: np.ndarray, table: dict, like: Path) -> Path:
    """A one-band GeoTIFF of ``indices`` with the colour table ``table`` (value: RGB), on ``like``'s grid."""
    with rasterio.open(like) as src:
        profile = dict(driver="GTiff", width=src.width, height=src.height, count=1, dtype="uint8",
                       crs=src.crs, transform=src.transform)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(indices, 1)
        dst.write_colormap(1, {value: (*rgb, 255) for value, rgb in table.items()})
    return path


def test_indexed_colour_ground_truth_is_converted_by_its_colours(sample_root, tiny_cfg, tmp_path):
    """An indexed image of the ground truth whose index order is not the classes' order: its
    colours decide, as for the RGB original, and the georeference is kept."""
    rgb_source = sample_root / "data" / COLOR_GT.format(id=1)
    expected = read_label(color_file_to_labels(rgb_source, tmp_path / "from_rgb.tif", tiny_cfg.palette))
    order = [3, 5, 0, 4, 1, 2]  # index k holds the colour of class order[k]
    indices = np.argsort(order)[expected].astype(np.uint8)
    table = {index: tuple(map(int, tiny_cfg.palette.colors[class_id])) for index, class_id in enumerate(order)}
    indexed = write_indexed(tmp_path / "indexed.tif", indices, table, rgb_source)
    assert not np.array_equal(indices, expected)  # read as class ids it would be wrong
    converted = color_file_to_labels(indexed, tmp_path / "from_indexed.tif", tiny_cfg.palette)
    np.testing.assert_array_equal(read_label(converted), expected)
    assert raster_info(converted).transform == raster_info(rgb_source).transform


def test_a_label_map_coloured_by_the_palette_is_not_taken_for_colour_ground_truth(sample_root, tiny_cfg, tmp_path):
    """eoseg's own label maps carry the palette as colour table: they are label maps already."""
    labels = sample_root / "data" / LABELS.format(id=1)
    assert raster_info(labels).colour_table is not None
    with pytest.raises(EosegError, match="already a numeric label map"):
        color_file_to_labels(labels, tmp_path / "again.tif", tiny_cfg.palette)


def test_a_refused_file_leaves_none_of_the_maps_converted_before_it(sample_root, tiny_cfg, tmp_path):
    """A colour outside the palette in the second file left the first map written, which the rerun the error advised
    (--unknown-to-ignore) refused as existing (review): the maps are published together, once all are converted."""
    from eoseg.convert import colour_files_to_labels

    good = sample_root / "data" / COLOR_GT.format(id=1)
    odd = tmp_path / "odd.tif"
    with rasterio.open(good) as src:
        pixels, profile = src.read(), src.profile
    pixels[:, :4, :4] = [[[10]], [[200]], [[30]]]
    with rasterio.open(odd, "w", **profile) as dst:
        dst.write(pixels)
    pairs = [(good, tmp_path / "labels" / "1.tif"), (odd, tmp_path / "labels" / "2.tif")]
    with pytest.raises(EosegError, match=r"odd.tif: 16 pixels have colours outside the palette"):
        colour_files_to_labels(pairs, tiny_cfg.palette, tiny_cfg.CLASS_NAMES)
    assert not list((tmp_path / "labels").iterdir())
    colour_files_to_labels(pairs, tiny_cfg.palette, tiny_cfg.CLASS_NAMES, unknown_to_ignore=True)
    assert sorted(p.name for p in (tmp_path / "labels").iterdir()) == ["1.tif", "1.tif.aux.xml", "2.tif", "2.tif.aux.xml"]
    assert raster_info(pairs[1][1]).colour_table is not None and (read_label(pairs[1][1])[:4, :4] == 255).all()


@pytest.mark.parametrize("suffix", [".tif", ".png"])
def test_label_maps_converted_under_a_palette_since_corrected_are_refused(sample_root, tiny_cfg, tmp_path, suffix):
    """PNG label maps carried no palette: converted under a PALETTE that swapped two classes' colours, then read under
    the corrected one, every pixel of the two classes trained and scored as the other, exit 0 (review)."""
    colours = [list(map(int, colour)) for colour in tiny_cfg.palette.colors]
    colours[2], colours[3] = colours[3], colours[2]
    mistaken = tiny_cfg.replace(PALETTE=colours)
    converted = color_file_to_labels(sample_root / "data" / COLOR_GT.format(id=1), tmp_path / f"1{suffix}",
                                     mistaken.palette)
    assert raster_info(converted).colour_table is not None
    with pytest.raises(EosegError, match=r"gives value 2 the colour \(0, 255, 0\), PALETTE's colour of class 3, but the "
                                         r"value reads as class 2: made by convert_gt.py under another PALETTE\?"):
        RasterLabels(raster_info(converted), raster_info(converted), LabelValues([], 6, 255), "label map",
                     tiny_cfg.palette).check()
    truth = read_label(sample_root / "data" / LABELS.format(id=1))
    swapped = truth.copy()
    swapped[truth == 2], swapped[truth == 3] = 3, 2
    np.testing.assert_array_equal(read_label(converted), swapped)  # what the mistaken PALETTE made of them


def test_class_ids_saved_in_three_bands_are_not_read_as_colours(sample_root, tiny_cfg, tmp_path):
    """Grey levels 1..n are class ids copied into R, G and B: read as colours under a tolerance, they would all go
    to IGNORE_COLOR (black), every label lost."""
    ids = read_label(sample_root / "data" / LABELS.format(id=1))
    grey = write_raster(tmp_path / "grey.tif", np.stack([ids + 1] * 3).astype(np.uint8))
    for palette in (tiny_cfg.palette, tiny_cfg.replace(LABEL_TOLERANCE=3).palette):
        with pytest.raises(EosegError, match=r"grey.tif: every pixel is grey, of levels 1, 2, 3, .*: class ids saved in "
                                             r"all three bands, not class colours; .*gdal_translate -b 1"):
            color_file_to_labels(grey, tmp_path / "labels.tif", palette)
    assert not (tmp_path / "labels.tif").exists()
    # colour ground truth of grey classes (white impervious surfaces, black unlabelled) is colour ground truth
    white_and_black = write_raster(tmp_path / "wb.tif", np.stack([np.where(ids == 0, 255, 0)] * 3).astype(np.uint8))
    assert set(np.unique(read_label(color_file_to_labels(white_and_black, tmp_path / "wb_labels.tif",
                                                         tiny_cfg.palette)))) <= {0, 255}
    # with the scattered levels of compression, near white too: refused for those colours, with the tolerance to set
    noisy = np.stack([np.where(ids == 0, 255, 0)] * 3).astype(np.uint8)
    noisy[:, :2, :2], noisy[:, 2:4, :2] = 2, 253
    with pytest.raises(EosegError, match="colours outside the palette.*LABEL_TOLERANCE=2"):
        color_file_to_labels(write_raster(tmp_path / "noisy.tif", noisy), tmp_path / "noisy_labels.tif", tiny_cfg.palette)


def test_transparent_entries_of_an_indexed_colour_ground_truth_are_unlabelled(tmp_path):
    """An indexed PNG from a drawing tool: index 0 fully transparent (tRNS), "not drawn", black beneath, where black
    is a class (a building mask's background). Its pixels carry no class; nor is a table whose other entry gives
    class 1 its colour taken for a map of class ids (black at 0 would make it look like one)."""
    from PIL import Image

    palette = Palette([[0, 0, 0], [255, 255, 255]], ignore_color=None)
    indices = np.array([[0, 0, 1, 2], [0, 1, 2, 2]], np.uint8)
    for name, colours, expected in (("three", [0, 0, 0, 0, 0, 0, 255, 255, 255], [[255, 255, 0, 1], [255, 0, 1, 1]]),
                                    ("two", [0, 0, 0, 255, 255, 255], [[255, 255, 1, 1], [255, 1, 1, 1]])):
        image = Image.fromarray(np.minimum(indices, len(colours) // 3 - 1), "P")
        image.putpalette(colours)
        image.save(tmp_path / f"{name}.png", transparency=0)
        labels = color_file_to_labels(tmp_path / f"{name}.png", tmp_path / f"{name}_labels.png", palette)
        np.testing.assert_array_equal(read_label(labels), expected)


def test_an_untagged_alpha_band_of_colour_ground_truth_is_refused(tmp_path):
    """A fourth band of 0 and 255 only that is not tagged alpha (as many exporters write it) is transparency GDAL does
    not read: its transparent pixels, black beneath, would be read as the black class. Refused with the retagging,
    which then reads them as unlabelled."""
    palette = Palette([[0, 0, 0], [255, 255, 255]], ignore_color=None)
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[:3, 2:, 2:] = 255
    rgba[3, :, 1:] = 255  # column 0 not drawn
    path = tmp_path / "gt.tif"
    with rasterio.open(path, "w", driver="GTiff", width=4, height=4, count=4, dtype="uint8", photometric="RGB") as dst:
        dst.write(rgba)
    assert raster_info(path).colorinterp[3] == "undefined"
    with pytest.raises(EosegError, match=r"gt.tif: band 4 holds only 0 and 255, as an alpha band does, but is not tagged "
                                         r"as one: .*\(gdal_edit.py -colorinterp_4 alpha FILE\)$"):
        color_file_to_labels(path, tmp_path / "labels.tif", palette)
    with rasterio.open(path, "r+") as dst:
        dst.colorinterp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.alpha]
    expected = [[255, 0, 0, 0], [255, 0, 0, 0], [255, 0, 1, 1], [255, 0, 1, 1]]
    np.testing.assert_array_equal(read_label(color_file_to_labels(path, tmp_path / "labels.tif", palette)), expected)


def test_values_without_a_colour_are_refused():
    values = np.array([[0, 1], [2, 1]], dtype=np.uint8)
    np.testing.assert_array_equal(expand_colour_table(values, [(1, 2, 3), (4, 5, 6), (7, 8, 9)], "gt.png")[:, 1, 0],
                                  [7, 8, 9])
    with pytest.raises(EosegError, match=r"gt.png: values \[2\] have no colour"):
        expand_colour_table(values, [(1, 2, 3), (4, 5, 6), None], "gt.png")


def test_transparent_pixels_of_colour_ground_truth_are_unlabelled(sample_root, tiny_cfg, tmp_path):
    """An RGBA colour ground truth (a PNG from a drawing tool): its transparent pixels carry no class,
    whatever colour lies beneath, when converted and when scored against."""
    rgb_source = sample_root / "data" / COLOR_GT.format(id=1)
    rgb = read_raster(rgb_source)
    alpha = np.full(rgb.shape[1:], 255, np.uint8)
    alpha[:40] = 0
    rgb[:, :40] = 255  # white beneath: a class colour (impervious surfaces)
    rgba = tmp_path / "rgba.tif"
    with rasterio.open(rgb_source) as src:
        profile = {**src.profile, "count": 4, "photometric": "RGB", "alpha": "YES"}
    with rasterio.open(rgba, "w", **profile) as dst:
        dst.write(np.concatenate([rgb, alpha[None]]))
    expected = read_label(color_file_to_labels(rgb_source, tmp_path / "from_rgb.tif", tiny_cfg.palette))
    expected[:40] = tiny_cfg.IGNORE_LABEL
    np.testing.assert_array_equal(read_label(color_file_to_labels(rgba, tmp_path / "from_rgba.tif", tiny_cfg.palette)),
                                  expected)
    truth = TruthSource(rgba, True, "colour ground truth").read_rows(tiny_cfg.palette, 0, rgb.shape[1])
    np.testing.assert_array_equal(truth, expected)


def test_to_color_reads_raw_codes_through_label_values_and_masks_the_unlabelled(sample_root, tiny_cfg, tmp_path):
    """Codes 10, 20, ... with 0 for no data (WorldCover's way): coloured as the classes LABEL_VALUES makes of them,
    the no-data pixels masked (black is a class colour where IGNORE_COLOR is None); eoseg's own maps of class ids
    are coloured as they are, and a colour image made so converts back to the same labels."""
    labels_path = sample_root / "data" / LABELS.format(id=1)
    ids = read_label(labels_path)
    codes = np.where(ids == tiny_cfg.IGNORE_LABEL, 0, (ids.astype(np.uint16) + 1) * 10).astype(np.uint16)
    codes[:8] = 0
    coded = write_raster(tmp_path / "codes.tif", codes, raster_info(labels_path))
    cfg = tiny_cfg.replace(IGNORE_COLOR=None, LABEL_VALUES={0: "ignore", **{(k + 1) * 10: k for k in range(6)}})
    values = LabelValues.from_config(cfg)
    colour = labels_file_to_color(coded, tmp_path / "codes_color.tif", cfg.palette, values)
    expected = np.where(codes == 0, tiny_cfg.IGNORE_LABEL, ids)
    with rasterio.open(colour) as src:
        np.testing.assert_array_equal(src.read_masks(1) == 0, expected == tiny_cfg.IGNORE_LABEL)
        np.testing.assert_array_equal(src.read()[:, 8:], np.moveaxis(cfg.palette.to_color(expected), -1, 0)[:, 8:])
    back = color_file_to_labels(colour, tmp_path / "back.tif", cfg.palette)
    np.testing.assert_array_equal(read_label(back), expected)
    own = labels_file_to_color(back, tmp_path / "own_color.tif", cfg.palette, values)  # class ids, coloured as they are
    np.testing.assert_array_equal(read_raster(own), read_raster(colour))
    png = labels_file_to_color(coded, tmp_path / "codes_color.png", cfg.palette, values)  # unlabelled: transparent
    np.testing.assert_array_equal(read_label(color_file_to_labels(png, tmp_path / "back_png.tif", cfg.palette)), expected)


def test_label_maps_record_their_unlabelled_value_and_class_names_as_inferences_do(sample_root, tiny_cfg, tmp_path):
    """convert_gt.py's label maps told GIS software neither which value is unlabelled nor what the classes are, which
    inference's label maps record; the pipeline reads them as before (a label raster's nodata tag is not read), and
    they go through --to-color and back."""
    from eoseg.convert import values_file_to_labels
    from eoseg.io import recorded_class_names

    palette, values, names = tiny_cfg.palette, LabelValues.from_config(tiny_cfg), tiny_cfg.CLASS_NAMES
    eroded = sample_root / "data" / tiny_cfg.GT_ERODED_PATTERN.format(id=1)  # its boundaries are unlabelled
    expected = palette.to_labels(np.moveaxis(read_raster(eroded), 0, -1))
    assert (expected == tiny_cfg.IGNORE_LABEL).any()
    coded = write_raster(tmp_path / "codes.tif", expected, raster_info(eroded))  # class ids as raw values
    for labels in (color_file_to_labels(eroded, tmp_path / "labels.tif", palette, class_names=names),
                   values_file_to_labels(coded, tmp_path / "from_values.tif", palette, values, class_names=names)):
        with rasterio.open(labels) as src:
            assert src.nodata == tiny_cfg.IGNORE_LABEL
        assert recorded_class_names(labels) == names  # the band's CLASS_NAMES tag, which polygonize.py reads
        categories = ET.parse(f"{labels}.aux.xml").getroot().find("PAMRasterBand").find("CategoryNames")
        assert [category.text for category in categories] == names
        info = raster_info(labels)
        np.testing.assert_array_equal(RasterLabels(info, info, values, "label map", palette).read(), expected)
        colour = labels_file_to_color(labels, tmp_path / "colour.tif", palette, values)
        np.testing.assert_array_equal(read_label(color_file_to_labels(colour, tmp_path / "back.tif", palette)), expected)


def test_label_maps_of_a_changed_colour_ground_truth_are_refused(tiny_cfg, tmp_path):
    """convert_gt.py records each configured tile's colour source; a source edited since makes its labels stale."""
    import shutil

    from eoseg.tiles import check_converted_from, record_conversion
    from eoseg.tiles import read_labels, image_info

    data = tmp_path / "data"
    shutil.copytree(tiny_cfg.DATA_ROOT, data)
    cfg = tiny_cfg.replace(DATA_ROOT=str(data))
    source, labels = cfg.tile_path("GT_COLOR_PATTERN", "1"), cfg.tile_path("LABEL_PATTERN", "1")
    color_file_to_labels(source, labels, cfg.palette)
    record_conversion(source, labels)
    read_labels(cfg, "1", image_info(cfg, "1"))
    copied = tmp_path / "copied.tif"  # the same bytes at another time (cp without -p): still the source converted
    shutil.copyfile(source, copied)
    shutil.copyfile(copied, source)
    read_labels(cfg, "1", image_info(cfg, "1"))
    with rasterio.open(source, "r+") as dst:  # a building recoloured as a tree, the labels not converted again
        rgb = dst.read()
        rgb[:, :10, :10] = np.array([0, 255, 0], np.uint8)[:, None, None]
        dst.write(rgb)
    with pytest.raises(EosegError, match=r"was converted from .*, which has changed since: its labels are the old ones; "
                                         r"run convert_gt.py --from-color --force"):
        read_labels(cfg, "1", image_info(cfg, "1"))
    check_converted_from(cfg.tile_path("LABEL_PATTERN", "2"), cfg.tile_path("GT_COLOR_PATTERN", "2"))  # no record: taken
    color_file_to_labels(source, labels, cfg.palette)
    record_conversion(source, labels)
    read_labels(cfg, "1", image_info(cfg, "1"))


def test_conversions_go_by_rows_and_judge_the_whole_raster(tiny_cfg, tmp_path):
    """A raster taller than one read of rows (SCAN_ROWS) converts as a whole read would, both ways; its colours
    outside the palette are counted over all the rows before it is refused, and nothing is written."""
    palette = tiny_cfg.palette
    ids = np.random.default_rng(0).integers(0, palette.num_classes, (SCAN_ROWS * 2 + 50, 8)).astype(np.uint8)
    ids[SCAN_ROWS + 3, :4] = palette.ignore_label
    rgb = np.moveaxis(palette.to_color(ids), -1, 0)
    colour = write_raster(tmp_path / "colour.tif", rgb)
    labels = read_label(color_file_to_labels(colour, tmp_path / "labels.tif", palette))
    np.testing.assert_array_equal(labels, ids)
    back = labels_file_to_color(tmp_path / "labels.tif", tmp_path / "back.tif", palette,
                                LabelValues([], palette.num_classes, palette.ignore_label))
    np.testing.assert_array_equal(read_raster(back), rgb)
    rgb[:, 10, :5] = 7  # (7, 7, 7): no class's colour, in the first read and in the last
    rgb[:, SCAN_ROWS * 2 + 20, :3] = 7
    odd = write_raster(tmp_path / "odd.tif", rgb)
    with pytest.raises(EosegError, match=r"odd.tif: 8 pixels have colours outside the palette \(\(7, 7, 7\) x 8 px\)"):
        color_file_to_labels(odd, tmp_path / "odd_labels.tif", palette)
    assert not (tmp_path / "odd_labels.tif").exists()


def test_a_colour_of_its_own_over_rows_is_refused_in_conversion_and_scoring(tiny_cfg, tmp_path):
    """A flat colour far from every class's over areas of several reads of rows: LABEL_TOLERANCE would merge it into
    its nearest class. Judged over the whole raster, by convert_gt.py and by scoring's check, and nothing is written."""
    palette = tiny_cfg.replace(LABEL_TOLERANCE=127).palette
    ids = np.random.default_rng(0).integers(0, palette.num_classes, (SCAN_ROWS * 2 + 50, 8)).astype(np.uint8)
    rgb = np.moveaxis(palette.to_color(ids), -1, 0)
    rgb[:, ::8, :] = np.array([0, 128, 0])[:, None, None]  # 1 row in 8, in every read: 12.5% of the pixels
    colour = write_raster(tmp_path / "colour.tif", rgb)
    with pytest.raises(EosegError, match=r"colour.tif: the colour \(0, 128, 0\) covers 13% of the pixels, and "
                                         r"LABEL_TOLERANCE=127 reads it as class 3's colour"):
        color_file_to_labels(colour, tmp_path / "labels.tif", palette)
    assert not (tmp_path / "labels.tif").exists()
    with pytest.raises(EosegError, match=r"colour.tif: the colour \(0, 128, 0\) covers 13% of the pixels"):
        TruthSource(colour, True, "colour ground truth").check(palette)
    for refuse in (lambda: color_file_to_labels(colour, tmp_path / "labels.tif", tiny_cfg.palette),
                   lambda: TruthSource(colour, True, "colour ground truth").check(tiny_cfg.palette)):
        with pytest.raises(EosegError, match=r"\(0, 128, 0\) x 2104 px\); \(0, 128, 0\) covers 13% of the pixels: compression "
                                             r"shifts flat colours .*; fix PALETTE") as refused:
            refuse()  # no tolerance: none offered, counted over the whole image in conversion and scoring alike
        assert "LABEL_TOLERANCE" not in str(refused.value)


def test_a_grey_stretch_of_a_colour_image_is_not_taken_for_class_ids(tiny_cfg, tmp_path):
    """A reviewer's case: rows of white road below the first read of rows, with one stray (2, 2, 2) pixel among them;
    the image holds colours above, so it is colour ground truth, not class ids in three bands, read by rows or not."""
    palette = tiny_cfg.palette  # class 0, impervious surfaces, is white
    ids = np.zeros((SCAN_ROWS + 6, 40), dtype=np.uint8)
    ids[:SCAN_ROWS] = 1  # building, blue
    rgb = np.moveaxis(palette.to_color(ids), -1, 0)
    rgb[:, SCAN_ROWS + 3, 7] = 2
    labels = color_file_to_labels(write_raster(tmp_path / "gt.tif", rgb), tmp_path / "labels.tif", palette,
                                  unknown_to_ignore=True)
    expected = ids.copy()
    expected[SCAN_ROWS + 3, 7] = palette.ignore_label
    np.testing.assert_array_equal(read_label(labels), expected)
    truth = TruthSource(tmp_path / "gt.tif", colour=True, description="colour ground truth", unknown_to_ignore=True)
    truth.check(palette)  # scored by rows as well
    np.testing.assert_array_equal(truth.read_rows(palette, SCAN_ROWS, SCAN_ROWS + 6), expected[SCAN_ROWS:])
    grey = np.full((3, SCAN_ROWS + 6, 40), 255, np.uint8)  # every pixel grey, levels 2 among them: class ids
    grey[:, 5, 5] = 2
    with pytest.raises(EosegError, match="every pixel is grey"):
        color_file_to_labels(write_raster(tmp_path / "grey.tif", grey), tmp_path / "grey_labels.tif", palette,
                             unknown_to_ignore=True)


def test_converting_the_tiles_writes_over_no_input_and_replaces_label_maps_only_with_force(tiny_cfg, tmp_path):
    """A LABEL_PATTERN typed as IMAGE_PATTERN wrote label maps over the images, exit 0: refused before anything is
    written, even with force; label maps that exist are replaced only with force."""
    import shutil

    from eoseg.convert import convert_colour_tiles

    data = tmp_path / "data"
    shutil.copytree(tiny_cfg.DATA_ROOT, data)
    cfg = tiny_cfg.replace(DATA_ROOT=str(data))
    images = {path: path.read_bytes() for path in (cfg.tile_path("IMAGE_PATTERN", t) for t in ("1", "2"))}
    for force in (False, True):
        with pytest.raises(EosegError, match=r"area1.tif would overwrite tile 1's IMAGE_PATTERN file; "
                                             r"choose another LABEL_PATTERN"):
            convert_colour_tiles(cfg.replace(LABEL_PATTERN=cfg.IMAGE_PATTERN), force=force, progress=False)
    assert all(path.read_bytes() == content for path, content in images.items())
    with pytest.raises(EosegError, match=r"labels/top_mosaic_09cm_area1.tif exists \(and \d+ more of the outputs\); "
                                         r"pass --force to replace it"):
        convert_colour_tiles(cfg, progress=False)
    label_map = cfg.tile_path("LABEL_PATTERN", "1")
    label_map.write_bytes(b"stale")
    pairs, note = convert_colour_tiles(cfg, force=True, progress=False)
    assert note is None and len(pairs) == len(set(cfg.tile_ids("train") + cfg.tile_ids("test")))
    np.testing.assert_array_equal(read_label(label_map), read_label(tiny_cfg.tile_path("LABEL_PATTERN", "1")))


def test_a_class_no_converted_map_holds_is_noted_with_the_share_ignore_color_takes(tmp_path):
    """A black/white building mask converted with white given as IGNORE_COLOR (and red as the building's colour):
    every building became unlabelled, exit 0 without a word. Now a note names the class and IGNORE_COLOR's share."""
    from eoseg.convert import colour_files_to_labels

    mask = np.zeros((3, 40, 50), np.uint8)
    mask[:, 10:30, 10:40] = 255  # 30% white
    pairs = [(write_raster(tmp_path / "mask.tif", mask), tmp_path / "labels.tif")]
    wrong = Palette([[0, 0, 0], [255, 0, 0]], ignore_color=[255, 255, 255])
    note = colour_files_to_labels(pairs, wrong, ["background", "building"], progress=False)
    assert note == ("note: class 1 (building, PALETTE (255, 0, 0)) occurs in none of the 1 label maps; 30% of their "
                    "pixels are unlabelled (IGNORE_COLOR (255, 255, 255)): if that colour is a class's, give it to the "
                    "class in PALETTE, set IGNORE_COLOR = None (or the colour of unlabelled pixels), and convert again "
                    "with --force")
    right = Palette([[0, 0, 0], [255, 255, 255]], ignore_color=None)
    assert colour_files_to_labels([(pairs[0][0], tmp_path / "right.tif")], right, ["background", "building"],
                                  progress=False) is None
    assert set(np.unique(read_label(tmp_path / "right.tif")).tolist()) == {0, 1}


def test_converting_files_writes_over_no_input_of_the_config_nor_twice_to_one_output(tiny_cfg, tmp_path):
    """convert_gt.py on files: --out the images' folder (the Vaihingen layout names ground truth as its image) or
    --to-color into the colour ground truth's replaced them with --force; two inputs of one name wrote one output."""
    import shutil

    from .conftest import as_arguments, run_script, tiny_overrides
    from .test_cli import assert_one_line_error

    data = tmp_path / "data"
    shutil.copytree(tiny_cfg.DATA_ROOT, data)
    args = as_arguments({**tiny_overrides(tmp_path), "DATA_ROOT": str(data)})
    colour, image, labels = (data / folder / "top_mosaic_09cm_area1.tif" for folder in ("gts_for_participants", "top", "labels"))
    before = {path: path.read_bytes() for path in (colour, image)}
    assert_one_line_error(run_script("convert_gt.py", str(colour), "--from-color", "--out", str(data / "top"), "--force",
                                     *args), "area1.tif would overwrite tile 1's IMAGE_PATTERN file; choose another --out")
    assert_one_line_error(run_script("convert_gt.py", str(labels), "--to-color", "--out", str(colour.parent), "--force",
                                     *args), "would overwrite tile 1's GT_COLOR_PATTERN file; choose another --out")
    assert all(path.read_bytes() == content for path, content in before.items())
    result = run_script("convert_gt.py", str(colour), "--from-color", "--out", str(labels.parent), "--force", *args)
    assert result.returncode == 0, result.stderr  # the config's own label maps, made again
    shutil.copy(colour, tmp_path / "copy.tif")
    (tmp_path / "other").mkdir()
    shutil.copy(colour, tmp_path / "other" / "copy.tif")
    assert_one_line_error(run_script("convert_gt.py", str(tmp_path / "copy.tif"), str(tmp_path / "other" / "copy.tif"),
                                     "--from-color", "--out", str(tmp_path / "out"), *args),
                          "would be written to the same output")
