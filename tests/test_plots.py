"""eoseg.plots: what the previews draw of an image."""

from __future__ import annotations

import warnings

import numpy as np

from eoseg.plots import display_rgb, plain_text


def test_display_rgb_stretches_other_types_and_draws_nan_holes_black():
    eight_bits = np.arange(3 * 4 * 5, dtype=np.uint8).reshape(3, 4, 5)
    np.testing.assert_array_equal(display_rgb(eight_bits), np.moveaxis(eight_bits, 0, -1))
    reflectance = np.linspace(0.0, 0.5, 3 * 40 * 50, dtype=np.float32).reshape(3, 40, 50)
    with_holes = reflectance.copy()
    with_holes[:, :10] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "invalid value encountered in cast"
        shown, holed = display_rgb(reflectance), display_rgb(with_holes)
    assert shown.dtype == np.uint8 and shown.min() == 0 and shown.max() == 255
    assert (holed[:10] == 0).all() and holed[10:].max() == 255  # the stretch is of the pixels that hold data
    assert (display_rgb(np.full((1, 3, 3), np.nan, np.float32)) == 0).all()


def test_display_rgb_draws_the_bands_named_red_green_blue_as_such_whatever_their_order():
    # a Sentinel-2 stack in band-number order (blue, green, red, near-infrared) and a 2-band radar image
    image = np.stack([np.full((2, 2), value, np.uint8) for value in (10, 20, 30, 40)])
    assert display_rgb(image, ["B02", "B03", "B04", "B08"])[0, 0].tolist() == [30, 20, 10]
    assert display_rgb(image, ["Blue", "Green", "Red", "NIR"])[0, 0].tolist() == [30, 20, 10]
    assert display_rgb(image, ["G", "IR", "R", "DSM"])[0, 0].tolist() == [20, 30, 10]  # no blue: false colour
    assert display_rgb(image, ["a", "b", "c", "d"])[0, 0].tolist() == [10, 20, 30]
    assert display_rgb(image[:2], ["VV", "VH"])[0, 0].tolist() == [10, 10, 10]


def test_class_names_are_drawn_as_written_not_as_formulas():
    assert plain_text(["cost $ / $ m2", "tree"]) == [r"cost \$ / \$ m2", "tree"]


def test_the_confusion_plot_shows_no_shares_across_a_class_the_ground_truth_lacks(tmp_path, monkeypatch):
    """A row of 0 0 0 would read as a class never recognised: a class without ground truth is drawn "-"."""
    import matplotlib.axes

    from eoseg.metrics import metrics_from_confusion
    from eoseg.plots import plot_confusion

    drawn = []
    original = matplotlib.axes.Axes.text
    def text(ax, x, y, s, **options):
        drawn.append((y, x, s))
        return original(ax, x, y, s, **options)

    monkeypatch.setattr(matplotlib.axes.Axes, "text", text)
    metrics = metrics_from_confusion(np.array([[50, 10, 0], [5, 30, 5], [0, 0, 0]]), ["a", "b", "c"])
    assert plot_confusion(metrics, tmp_path / "confusion.png").is_file()
    cells = {(row, col): text for row, col, text in drawn}
    assert [cells[(2, col)] for col in range(3)] == ["-", "-", "-"] and cells[(0, 0)] == "83"



def test_the_error_map_greys_what_is_not_scored_where_truth_or_prediction_is_the_ignore_label():
    """Nodata in the image is labelled IGNORE_LABEL and not scored: it was painted red, as an error."""
    from eoseg.plots import error_map

    truth = np.array([[0, 1, 255, 2]], dtype=np.uint8)
    prediction = np.array([[0, 2, 1, 255]], dtype=np.uint8)
    white, red, grey = (255, 255, 255), (220, 30, 30), (150, 150, 150)
    assert [tuple(pixel) for pixel in error_map(truth, prediction, 255)[0]] == [white, red, grey, grey]
