"""eoseg.palette: colour-coded ground truth <-> numeric label maps."""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eoseg.errors import EosegError
from eoseg.palette import Palette, pack_rgb

ISPRS_COLORS = [
    [255, 255, 255],
    [0, 0, 255],
    [0, 255, 255],
    [0, 255, 0],
    [255, 255, 0],
    [255, 0, 0],
]


@pytest.fixture
def palette() -> Palette:
    return Palette(ISPRS_COLORS, ignore_color=(0, 0, 0), ignore_label=255)


def naive_to_color(labels: np.ndarray, colors, ignore_color) -> np.ndarray:
    """Independent reference: one masked assignment per class."""
    out = np.empty(labels.shape + (3,), dtype=np.uint8)
    out[:] = ignore_color
    for i, c in enumerate(colors):
        out[labels == i] = c
    return out


def random_labels(rng, shape, num_classes, ignore_label, ignore_share=0.1):
    labels = rng.integers(0, num_classes, size=shape).astype(np.uint8)
    labels[rng.random(shape) < ignore_share] = ignore_label
    return labels


# ---------------------------------------------------------------- round trips
@pytest.mark.parametrize("seed", range(5))
def test_labels_color_labels_round_trip(palette, seed):
    rng = np.random.default_rng(seed)
    labels = random_labels(rng, (37, 53), palette.num_classes, palette.ignore_label)
    rgb = palette.to_color(labels)
    assert rgb.shape == (37, 53, 3)
    assert rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb, naive_to_color(labels, ISPRS_COLORS, (0, 0, 0)))
    back = palette.to_labels(rgb)
    assert back.dtype == np.uint8
    np.testing.assert_array_equal(back, labels)


def test_color_labels_color_round_trip(palette):
    rng = np.random.default_rng(1)
    # a colour image made only of palette colours and the ignore colour
    table = np.array(ISPRS_COLORS + [[0, 0, 0]], dtype=np.uint8)
    rgb = table[rng.integers(0, len(table), size=(20, 30))]
    np.testing.assert_array_equal(palette.to_color(palette.to_labels(rgb)), rgb)


def test_each_class_colour_maps_to_its_id(palette):
    rgb = np.array(ISPRS_COLORS, dtype=np.uint8).reshape(1, 6, 3)
    np.testing.assert_array_equal(palette.to_labels(rgb), [[0, 1, 2, 3, 4, 5]])


def test_large_input_matches_reference(palette):
    rng = np.random.default_rng(7)
    labels = random_labels(rng, (512, 512), palette.num_classes, palette.ignore_label)
    rgb = palette.to_color(labels)
    np.testing.assert_array_equal(rgb, naive_to_color(labels, ISPRS_COLORS, (0, 0, 0)))
    np.testing.assert_array_equal(palette.to_labels(rgb), labels)
    # every class and the ignore label actually occur
    assert set(np.unique(labels).tolist()) == {0, 1, 2, 3, 4, 5, 255}


def test_palette_order_does_not_matter_for_lookup():
    # colours given in an order unrelated to their packed value (the lookup sorts internally)
    colors = [[9, 9, 9], [0, 0, 1], [200, 0, 0], [0, 200, 0]]
    pal = Palette(colors, ignore_color=(1, 1, 1), ignore_label=255)
    rgb = np.array([[[0, 200, 0], [9, 9, 9], [1, 1, 1], [0, 0, 1], [200, 0, 0]]], dtype=np.uint8)
    np.testing.assert_array_equal(pal.to_labels(rgb), [[3, 0, 255, 1, 2]])


# ---------------------------------------------------------------- ignore colour / label
def test_ignore_colour_maps_to_ignore_label_and_back(palette):
    rgb = np.zeros((4, 5, 3), dtype=np.uint8)
    rgb[0, 0] = (255, 255, 255)
    labels = palette.to_labels(rgb)
    expected = np.full((4, 5), 255, dtype=np.uint8)
    expected[0, 0] = 0
    np.testing.assert_array_equal(labels, expected)
    back = palette.to_color(labels)
    np.testing.assert_array_equal(back, rgb)


def test_custom_ignore_label_and_colour():
    pal = Palette([[10, 20, 30], [40, 50, 60]], ignore_color=(7, 7, 7), ignore_label=9)
    labels = np.array([[0, 1, 9]], dtype=np.uint8)
    rgb = pal.to_color(labels)
    np.testing.assert_array_equal(rgb, [[[10, 20, 30], [40, 50, 60], [7, 7, 7]]])
    np.testing.assert_array_equal(pal.to_labels(rgb), labels)


def test_no_ignore_colour_draws_ignore_label_black_and_black_is_unknown():
    pal = Palette([[10, 20, 30], [40, 50, 60]], ignore_color=None, ignore_label=255)
    rgb = pal.to_color(np.array([[0, 255]], dtype=np.uint8))
    np.testing.assert_array_equal(rgb, [[[10, 20, 30], [0, 0, 0]]])
    with pytest.raises(EosegError, match=r"\(0, 0, 0\)"):
        pal.to_labels(rgb)
    np.testing.assert_array_equal(pal.to_labels(rgb, unknown_to_ignore=True), [[0, 255]])


# ---------------------------------------------------------------- unknown colours
def test_unknown_colour_error_names_source_colour_and_count(palette):
    rgb = palette.to_color(np.zeros((10, 10), dtype=np.uint8))  # all white
    rgb[0, :7] = (12, 34, 56)  # 7 unknown pixels
    rgb[5, :3] = (1, 2, 3)  # 3 more of another colour
    with pytest.raises(EosegError) as info:
        palette.to_labels(rgb, source="gt/tile_42.tif")
    message = str(info.value)
    assert "gt/tile_42.tif" in message
    assert "(12, 34, 56)" in message
    assert "(1, 2, 3)" in message
    assert re.search(r"\b10 pixels\b", message), message  # total unknown count
    assert re.search(r"\(12, 34, 56\) x 7 px", message), message
    assert re.search(r"\(1, 2, 3\) x 3 px", message), message
    # the most frequent unknown colour is named first
    assert message.index("(12, 34, 56)") < message.index("(1, 2, 3)")


def test_unknown_colours_beyond_three_are_summarised(palette):
    rgb = np.zeros((1, 5, 3), dtype=np.uint8)
    rgb[0] = [[1, 1, 2], [2, 2, 3], [3, 3, 4], [4, 4, 5], [5, 5, 6]]  # not grey (grey would be class ids)
    with pytest.raises(EosegError, match="2 more colours"):
        palette.to_labels(rgb)


def test_unknown_to_ignore_maps_unknown_colours_to_ignore_label(palette):
    rgb = np.array([[[255, 255, 255], [12, 34, 56], [0, 0, 255], [0, 0, 0]]], dtype=np.uint8)
    labels = palette.to_labels(rgb, unknown_to_ignore=True)
    np.testing.assert_array_equal(labels, [[0, 255, 1, 255]])


def test_colour_just_above_largest_key_is_unknown(palette):
    # (255, 255, 255) is the largest packed key; the searchsorted clip must not turn
    # nearby colours into white, nor colours below the smallest key into anything
    rgb = np.array([[[255, 255, 254], [0, 0, 1]]], dtype=np.uint8)
    with pytest.raises(EosegError, match="2 pixels"):
        palette.to_labels(rgb)
    np.testing.assert_array_equal(palette.to_labels(rgb, unknown_to_ignore=True), [[255, 255]])


# ---------------------------------------------------------------- bad inputs
def test_single_band_input_is_refused_clearly(palette):
    with pytest.raises(EosegError, match=r"3-band.*\(6, 7\)|\(6, 7\).*numeric label map"):
        palette.to_labels(np.zeros((6, 7), dtype=np.uint8), source="labels.tif")
    with pytest.raises(EosegError, match="labels.tif"):
        palette.to_labels(np.zeros((6, 7), dtype=np.uint8), source="labels.tif")


@pytest.mark.parametrize("shape", [(6, 7, 1), (6, 7, 4), (3, 6, 7, 3)])
def test_wrong_band_count_is_refused(palette, shape):
    with pytest.raises(EosegError, match="3-band"):
        palette.to_labels(np.zeros(shape, dtype=np.uint8))


# ---------------------------------------------------------------- invalid palettes
def test_duplicate_class_colours_refused():
    with pytest.raises(EosegError, match="same colour"):
        Palette([[1, 2, 3], [4, 5, 6], [1, 2, 3]])


@pytest.mark.parametrize("ignore_label", [0, 3, 5])
def test_ignore_label_colliding_with_class_id_refused(ignore_label):
    with pytest.raises(EosegError, match="collides with a class id"):
        Palette(ISPRS_COLORS, ignore_label=ignore_label)


def test_ignore_label_just_after_classes_is_accepted():
    pal = Palette(ISPRS_COLORS, ignore_label=6)
    assert pal.ignore_label == 6


@pytest.mark.parametrize("ignore_label", [-1, 256, 1000])
def test_ignore_label_outside_uint8_refused(ignore_label):
    with pytest.raises(EosegError, match="0..255"):
        Palette(ISPRS_COLORS, ignore_label=ignore_label)


def test_ignore_colour_equal_to_class_colour_refused():
    with pytest.raises(EosegError, match=r"IGNORE_COLOR.*also a class colour.*or None if the ground truth has none"):
        Palette(ISPRS_COLORS, ignore_color=(0, 255, 0))


# ---------------------------------------------------------------- colormap
def test_colormap_has_each_class_and_the_ignore_label(palette):
    cmap = palette.colormap()
    assert set(cmap) == {0, 1, 2, 3, 4, 5, 255}
    for i, colour in enumerate(ISPRS_COLORS):
        assert cmap[i] == (*colour, 255)
        assert all(type(v) is int for v in cmap[i])
    assert cmap[255] == (0, 0, 0, 255)


def test_colormap_uses_custom_ignore_colour():
    pal = Palette([[10, 20, 30]], ignore_color=(7, 8, 9), ignore_label=200)
    assert pal.colormap() == {0: (10, 20, 30, 255), 200: (7, 8, 9, 255)}


def test_pack_rgb():
    rgb = np.array([[1, 2, 3], [255, 0, 0], [0, 0, 255]], dtype=np.uint8)
    assert pack_rgb(rgb).tolist() == [0x010203, 0xFF0000, 0x0000FF]


# ---------------------------------------------------------------- property test
colour = st.tuples(st.integers(0, 255), st.integers(0, 255), st.integers(0, 255))


@st.composite
def palettes_and_labels(draw):
    colours = draw(st.lists(colour, min_size=3, max_size=13, unique=True))
    ignore_color, class_colors = colours[0], colours[1:]
    n = len(class_colors)
    ignore_label = draw(st.integers(n, 255))
    h = draw(st.integers(1, 12))
    w = draw(st.integers(1, 12))
    values = st.one_of(st.integers(0, n - 1), st.just(ignore_label))
    flat = draw(st.lists(values, min_size=h * w, max_size=h * w))
    labels = np.array(flat, dtype=np.uint8).reshape(h, w)
    return class_colors, ignore_color, ignore_label, labels


@settings(max_examples=150, deadline=None)
@given(palettes_and_labels())
def test_round_trip_property(case):
    class_colors, ignore_color, ignore_label, labels = case
    pal = Palette(class_colors, ignore_color=ignore_color, ignore_label=ignore_label)
    rgb = pal.to_color(labels)
    np.testing.assert_array_equal(rgb, naive_to_color(labels, class_colors, ignore_color))
    np.testing.assert_array_equal(pal.to_labels(rgb), labels)


def test_classes_coloured_by_a_colour_table():
    palette = Palette([[255, 255, 255], [0, 0, 255]], ignore_color=None)
    table = [(0, 0, 255), (255, 255, 255), (9, 9, 9)]  # value 0 blue, 1 white, 2 a colour no class has
    assert palette.classes_coloured(table, [0, 1, 2, 3]) == {0: 1, 1: 0, 2: None, 3: None}


def test_class_ids_saved_in_three_bands_are_refused_however_few_and_without_a_tolerance():
    """A 0/1 building mask copied into R, G and B, buildings on 4% of it: refused with the gdal_translate -b 1 hint,
    never with a LABEL_TOLERANCE, which would read every building (level 1) as black, the background. Transparent
    pixels of any colour do not hide it; JPEG blur, whose scattered levels reach beyond the class ids, keeps the
    tolerance advice."""
    mask = np.zeros((5, 5), np.uint8)
    mask[0, 0] = 1
    rgb = np.stack([mask] * 3, axis=-1)
    empty = np.zeros((5, 5), bool)
    rgb[4, 4], empty[4, 4] = (9, 200, 3), True
    for tolerance in (0, 1, 127):
        with pytest.raises(EosegError) as refused:
            Palette([[0, 0, 0], [255, 255, 255]], ignore_color=None, tolerance=tolerance).to_labels(
                rgb, source="gt.png", empty=empty)
        assert re.fullmatch(r"gt.png: every pixel is grey, of levels 0, 1: class ids saved in all three bands, not class "
                            r"colours; take its first band as the label map \(gdal_translate -b 1 gt.png ids.tif\) .*",
                            str(refused.value))
        assert "LABEL_TOLERANCE" not in str(refused.value)
    blurred = rgb.copy()
    blurred[1, 1] = 254
    with pytest.raises(EosegError, match=r"outside the palette .*LABEL_TOLERANCE=1 \(at most 127\) reads each"):
        Palette([[0, 0, 0], [255, 255, 255]], ignore_color=None).to_labels(blurred, source="gt.jpg", empty=empty)


# ---------------------------------------------------------------- LABEL_TOLERANCE
def jpeg_round_trip(rgb: np.ndarray, tmp_path, quality: int = 85) -> np.ndarray:
    """``rgb`` (H, W, 3) saved as a JPEG by Pillow and read back: colours blurred as a compressed ground truth's are."""
    from PIL import Image

    path = tmp_path / "gt.jpg"
    Image.fromarray(rgb).save(path, quality=quality)
    return np.asarray(Image.open(path).convert("RGB"))


def blocky_labels(rng, size: int = 96, block: int = 16, classes: int = 6) -> np.ndarray:
    """Class regions of ``block`` px, as a ground truth's are (not pixel noise, which JPEG destroys)."""
    coarse = rng.integers(0, classes, size=(size // block, size // block)).astype(np.uint8)
    return np.kron(coarse, np.ones((block, block), dtype=np.uint8))


def test_jpeg_colours_are_refused_with_the_tolerance_that_reads_them(palette, tmp_path):
    labels = blocky_labels(np.random.default_rng(0))
    blurred = jpeg_round_trip(palette.to_color(labels), tmp_path)
    assert not np.array_equal(blurred, palette.to_color(labels))  # the JPEG did move colours
    with pytest.raises(EosegError) as refused:
        palette.to_labels(blurred, source="gt.jpg")
    message = str(refused.value)
    suggested = int(re.search(r"LABEL_TOLERANCE=(\d+) \(at most 127\) reads each", message).group(1))
    assert message.startswith("gt.jpg: ") and "\n" not in message
    tolerant = Palette(ISPRS_COLORS, ignore_color=(0, 0, 0), ignore_label=255, tolerance=suggested)
    read = tolerant.to_labels(blurred)
    assert (read == labels).mean() > 0.99  # JPEG blurs the edges between classes only
    with pytest.raises(EosegError, match="outside the palette"):  # one level less leaves a colour unread
        Palette(ISPRS_COLORS, (0, 0, 0), 255, tolerance=suggested - 1).to_labels(blurred)


def test_a_colour_far_from_its_class_over_an_area_is_a_colour_of_its_own_whatever_the_tolerance(palette, tmp_path):
    """One flat colour 127 levels from tree's green over 14% of the image is another class, not compression: the
    remedy offers no tolerance, and LABEL_TOLERANCE=127, which would merge it into tree, is refused once the whole
    image is read. JPEG's shifts of flat colours, a few levels, and its blurred edges are read."""
    labels = blocky_labels(np.random.default_rng(0))
    rgb = palette.to_color(labels)
    rgb[:36, :36] = (0, 128, 0)  # 1296 of 9216 px
    with pytest.raises(EosegError) as refused:
        palette.refuse_unknown(palette.read_colours(rgb)[1], "gt.tif", pixels=rgb.shape[0] * rgb.shape[1])
    assert "(0, 128, 0) covers 14% of the pixels" in str(refused.value) and "LABEL_TOLERANCE" not in str(refused.value)
    tolerant = Palette(ISPRS_COLORS, ignore_color=(0, 0, 0), ignore_label=255, tolerance=127)
    near: dict = {}
    for first in range(0, rgb.shape[0], 32):  # by rows, as files are read
        tolerant.read_colours(rgb[first:first + 32], "gt.tif", near=near)
    with pytest.raises(EosegError, match=r"gt\.tif: the colour \(0, 128, 0\) covers 14% of the pixels, and "
                                         r"LABEL_TOLERANCE=127 reads it as class 3's colour \(0, 255, 0\), 127 levels "
                                         r"away: compression shifts flat colours"):
        tolerant.refuse_other_colours(near, "gt.tif")
    shifted = palette.to_color(labels)
    shifted[labels == 3] = (2, 250, 3)  # a flat colour shifted by compression, over its whole class
    blurred = jpeg_round_trip(shifted, tmp_path)
    near = {}
    read, unknown = tolerant.read_colours(blurred, "gt.jpg", near=near)
    tolerant.check_whole_image(unknown, near, "gt.jpg", unknown_to_ignore=False)
    assert (read == labels).mean() > 0.99 and near[""] == labels.size


def test_tolerance_reads_each_colour_as_the_one_it_is_within_reach_of():
    palette = Palette([[255, 255, 255], [0, 0, 255]], ignore_color=(0, 0, 0), ignore_label=255, tolerance=20)
    rgb = np.array([[[235, 255, 240], [10, 0, 236], [20, 20, 20], [21, 0, 0], [128, 128, 128]]], dtype=np.uint8)
    assert palette.to_labels(rgb, unknown_to_ignore=True).tolist() == [[0, 1, 255, 255, 255]]
    with pytest.raises(EosegError, match=r"2 pixels have colours outside the palette \(.*\(21, 0, 0\) x 1 px"):
        palette.to_labels(rgb)
    exact = np.array([[[255, 255, 255], [0, 0, 255], [0, 0, 0]]], dtype=np.uint8)
    assert palette.to_labels(exact).tolist() == [[0, 1, 255]]


def test_colours_far_from_every_class_colour_suggest_no_tolerance(palette):
    rgb = np.array([[[128, 0, 128]]], dtype=np.uint8)  # 128 levels from each colour: no tolerance places it
    with pytest.raises(EosegError) as refused:
        palette.to_labels(rgb)
    assert "LABEL_TOLERANCE" not in str(refused.value) and "fix PALETTE" in str(refused.value)


@pytest.mark.parametrize("tolerance,match", [
    (128, r"LABEL_TOLERANCE 128: the PALETTE and IGNORE_COLOR colours \(255, 255, 255\) and \(0, 0, 255\) differ by "
          r"255 levels, so a value could lie within 128 of both; use at most 127"),
    (-1, "a whole number of levels >= 0"),
    (2.5, "a whole number of levels >= 0"),
    (True, "a whole number of levels >= 0"),
])
def test_tolerance_that_could_reach_two_colours_is_refused(tolerance, match):
    with pytest.raises(EosegError, match=match):
        Palette(ISPRS_COLORS, (0, 0, 0), 255, tolerance=tolerance)
    Palette(ISPRS_COLORS, (0, 0, 0), 255, tolerance=127)


def test_tolerance_counts_the_ignore_colour_as_one_to_keep_apart():
    near_black = [[255, 255, 255], [40, 40, 40]]
    Palette(near_black, ignore_color=None, tolerance=100)
    with pytest.raises(EosegError, match=r"\(40, 40, 40\) and \(0, 0, 0\) differ by 40 levels.*use at most 19"):
        Palette(near_black, ignore_color=(0, 0, 0), tolerance=20)
