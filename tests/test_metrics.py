"""eoseg.metrics against values computed by hand."""

from __future__ import annotations

import json

import numpy as np
import pytest

from eoseg.metrics import NOT_TRAINED, UNSCORED, confusion_matrix, format_table, metrics_from_confusion, nothing_scored

NAMES = ["road", "building", "tree"]
IGNORE = 255

# The hand-made example. Rows: ground truth, columns: prediction.
#             pred road  pred building  pred tree   | support (row sum)
# road            5            1            0       |   6
# building        2            3            1       |   6
# tree            0            1            3       |   4
# ------------------------------------------------
# predicted       7            5            4       |  16 pixels
CM = np.array([
    [5, 1, 0],
    [2, 3, 1],
    [0, 1, 3],
])


def pixels_from_confusion(cm: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Shuffled (truth, prediction) pixel pairs realising ``cm`` exactly."""
    truth, prediction = [], []
    for t in range(cm.shape[0]):
        for p in range(cm.shape[1]):
            truth += [t] * int(cm[t, p])
            prediction += [p] * int(cm[t, p])
    order = np.random.default_rng(seed).permutation(len(truth))
    return np.array(truth, dtype=np.uint8)[order], np.array(prediction, dtype=np.uint8)[order]


def test_confusion_matrix_counts_pixels_by_truth_row_and_prediction_column():
    truth, prediction = pixels_from_confusion(CM)
    cm = confusion_matrix(truth.reshape(4, 4), prediction.reshape(4, 4), 3, IGNORE)
    assert cm.dtype == np.int64
    np.testing.assert_array_equal(cm, CM)
    # not the transpose: truth "building" predicted "road" twice
    assert cm[1, 0] == 2 and cm[0, 1] == 1


def test_confusion_matrix_shape_mismatch_refused():
    with pytest.raises(ValueError):
        confusion_matrix(np.zeros(4), np.zeros(5), 3, IGNORE)


def test_hand_computed_metrics():
    m = metrics_from_confusion(CM, NAMES)
    assert m["pixels"] == 16
    # OA = trace / total = (5 + 3 + 3) / 16 = 11 / 16
    assert m["overall_accuracy"] == pytest.approx(11 / 16)

    road, building, tree = (m["per_class"][n] for n in NAMES)
    # precision = TP / column sum
    assert road["precision"] == pytest.approx(5 / 7)
    assert building["precision"] == pytest.approx(3 / 5)
    assert tree["precision"] == pytest.approx(3 / 4)
    # recall = TP / row sum
    assert road["recall"] == pytest.approx(5 / 6)
    assert building["recall"] == pytest.approx(3 / 6)
    assert tree["recall"] == pytest.approx(3 / 4)
    # F1 = 2 P R / (P + R) = 2 TP / (row + column)
    #   road:     2*5 / (6 + 7) = 10/13
    #   building: 2*3 / (6 + 5) = 6/11
    #   tree:     2*3 / (4 + 4) = 6/8
    assert road["f1"] == pytest.approx(10 / 13)
    assert building["f1"] == pytest.approx(6 / 11)
    assert tree["f1"] == pytest.approx(6 / 8)
    # and the same from precision and recall, as a cross-check of the identity
    for row in (road, building, tree):
        p, r = row["precision"], row["recall"]
        assert row["f1"] == pytest.approx(2 * p * r / (p + r))
    # IoU = TP / (row + column - TP)
    #   road:     5 / (6 + 7 - 5) = 5/8
    #   building: 3 / (6 + 5 - 3) = 3/8
    #   tree:     3 / (4 + 4 - 3) = 3/5
    assert road["iou"] == pytest.approx(5 / 8)
    assert building["iou"] == pytest.approx(3 / 8)
    assert tree["iou"] == pytest.approx(3 / 5)
    assert [road["support"], building["support"], tree["support"]] == [6, 6, 4]

    assert m["mean_f1"] == pytest.approx((10 / 13 + 6 / 11 + 6 / 8) / 3)
    assert m["mean_iou"] == pytest.approx((5 / 8 + 3 / 8 + 3 / 5) / 3)

    # Cohen's kappa: chance agreement pe = sum(row_i * col_i) / total^2
    #   = (6*7 + 6*5 + 4*4) / 16^2 = (42 + 30 + 16) / 256 = 88/256 = 11/32
    # kappa = (po - pe) / (1 - pe) = (22/32 - 11/32) / (21/32) = 11/21
    assert m["kappa"] == pytest.approx(11 / 21)
    assert m["confusion_matrix"] == CM.tolist()
    assert m["class_names"] == NAMES


def test_ignore_label_pixels_are_left_out():
    truth, prediction = pixels_from_confusion(CM)
    # 10 extra pixels with the ignore label as ground truth, predicted as all sorts of classes
    truth = np.concatenate([truth, np.full(10, IGNORE, dtype=np.uint8)])
    prediction = np.concatenate([prediction, np.array([0, 1, 2, 0, 1, 2, 0, 0, 0, 1], dtype=np.uint8)])
    cm = confusion_matrix(truth, prediction, 3, IGNORE)
    np.testing.assert_array_equal(cm, CM)
    m = metrics_from_confusion(cm, NAMES)
    assert m["pixels"] == 16
    assert m["overall_accuracy"] == pytest.approx(11 / 16)


def test_custom_ignore_label():
    truth = np.array([0, 1, 2, 3, 3])
    prediction = np.array([0, 1, 1, 0, 2])
    cm = confusion_matrix(truth, prediction, 3, ignore_label=3)
    assert cm.sum() == 3
    np.testing.assert_array_equal(cm, [[1, 0, 0], [0, 1, 0], [0, 1, 0]])


def test_majority_predictor_has_zero_kappa_and_low_mean_f1():
    rng = np.random.default_rng(3)
    # imbalanced but not extreme: 50% / 30% / 20%
    truth = np.repeat(np.array([0, 1, 2], dtype=np.uint8), [5000, 3000, 2000])
    rng.shuffle(truth)
    truth = truth.reshape(100, 100)
    majority = np.zeros_like(truth)
    m_major = metrics_from_confusion(confusion_matrix(truth, majority, 3, IGNORE), NAMES)
    assert m_major["overall_accuracy"] == pytest.approx(0.5)
    assert m_major["kappa"] == pytest.approx(0.0, abs=1e-12)
    # F1 of the majority class: 2*5000 / (5000 + 10000) = 2/3, the others 0
    assert m_major["mean_f1"] == pytest.approx((2 / 3) / 3)
    # never-predicted classes have undefined precision (reported as None), recall 0
    assert m_major["per_class"]["building"]["precision"] is None
    assert m_major["per_class"]["building"]["recall"] == 0.0

    # a good predictor: 90% of each class right, errors spread over the other classes
    good = truth.copy()
    wrong = rng.random(truth.shape) < 0.1
    good[wrong] = (truth[wrong] + rng.integers(1, 3, size=wrong.sum())) % 3
    m_good = metrics_from_confusion(confusion_matrix(truth, good, 3, IGNORE), NAMES)
    assert m_good["overall_accuracy"] == pytest.approx(0.9, abs=0.02)
    assert m_good["kappa"] > 0.75
    assert m_good["mean_f1"] > 0.8
    assert m_good["mean_f1"] - m_major["mean_f1"] > 0.5


def test_perfect_prediction():
    truth, _ = pixels_from_confusion(CM)
    m = metrics_from_confusion(confusion_matrix(truth, truth, 3, IGNORE), NAMES)
    assert m["overall_accuracy"] == 1.0
    assert m["kappa"] == pytest.approx(1.0)
    assert m["mean_f1"] == pytest.approx(1.0)
    assert m["mean_iou"] == pytest.approx(1.0)


def test_means_are_over_classes_present_in_ground_truth():
    # class 3 ("car") never occurs in the ground truth but is predicted once
    cm = np.array([
        [4, 0, 0, 1],
        [0, 3, 0, 0],
        [0, 0, 2, 0],
        [0, 0, 0, 0],
    ])
    m = metrics_from_confusion(cm, NAMES + ["car"])
    car = m["per_class"]["car"]
    assert car["support"] == 0
    assert car["recall"] is None  # 0 / 0
    assert car["precision"] == 0.0  # 0 / 1
    # nor F1 and IoU in metrics.json: 0.0 there made its per-class figures average otherwise than mean_f1 (review)
    assert car["f1"] is None and car["iou"] is None
    # road F1 = 2*4/(5+4) = 8/9; building and tree perfect; car left out of the mean
    assert m["mean_f1"] == pytest.approx((8 / 9 + 1 + 1) / 3)
    # road IoU = 4/(5+4-4) = 4/5
    assert m["mean_iou"] == pytest.approx((4 / 5 + 1 + 1) / 3)
    # the table shows no F1 or IoU of car (a reader averaging the column would count a 0) and says why
    table = format_table(m).splitlines()
    assert next(line for line in table if line.startswith("car")).split()[1:3] == ["-", "-"]
    assert "not in the ground truth, so not in the means: car" in table


def test_empty_confusion_gives_none_not_nan():
    m = metrics_from_confusion(np.zeros((3, 3), dtype=np.int64), NAMES)
    assert m["pixels"] == 0
    assert m["overall_accuracy"] is None and m["kappa"] is None and m["mean_f1"] is None and m["mean_iou"] is None
    json.dumps(m, allow_nan=False)  # valid JSON: null, never NaN
    assert "nothing was scored: every ground-truth pixel is IGNORE_LABEL" in format_table(m)
    # labels there are, but the image holds no data under any of them: the image is the cause
    assert "nothing was scored: the image holds no data wherever the ground truth is labelled" in format_table({**m, UNSCORED: 10})


def test_nothing_scored_says_in_one_line_why():
    """inference.py prints it for an image that scored no pixel. It held a copy of format_table's line on classes absent
    from the ground truth, appended to an undefined list where some pixel was scored: never, where it is called."""
    m = metrics_from_confusion(np.zeros((3, 3), dtype=np.int64), NAMES)
    assert nothing_scored(m) == ("nothing was scored: every ground-truth pixel is IGNORE_LABEL (or outside the classes); "
                                 "of a tile split into blocks only the held-out ones count, and sparse annotations may "
                                 "all lie in its training blocks")  # review: a drone scene's polygons in training blocks
    assert nothing_scored({**m, UNSCORED: 10}) == \
        "nothing was scored: the image holds no data wherever the ground truth is labelled"


def test_format_table_lists_classes_and_overall_accuracy():
    m = metrics_from_confusion(CM, NAMES)
    table = format_table(m, title="my run")
    assert table.splitlines()[0] == "my run"
    for name in NAMES:
        assert name in table
    assert "overall accuracy 68.8%" in table  # 11/16 = 68.75%
    assert "76.9%" in table  # road F1 10/13
    assert "kappa 0.524" in table  # 11/21
    assert "16 px" in table
    # one line per class
    class_lines = [line for line in table.splitlines() if line.split()[0] in NAMES]
    assert len(class_lines) == 3


def test_format_table_names_classes_never_predicted():
    truth = np.array([0, 0, 1, 1, 2])
    prediction = np.array([0, 0, 0, 0, 0])  # classes 1 and 2 occur, are never predicted
    table = format_table(metrics_from_confusion(confusion_matrix(truth, prediction, 3, IGNORE), NAMES))
    assert table.splitlines()[-1].startswith(f"never predicted, though in the ground truth: {NAMES[1]} (2 px), {NAMES[2]} (1 px): ")
    everything_found = metrics_from_confusion(confusion_matrix(truth, truth, 3, IGNORE), NAMES)
    absent_class = metrics_from_confusion(confusion_matrix(truth[:2], prediction[:2], 3, IGNORE), NAMES)
    assert "never predicted" not in format_table(everything_found) + format_table(absent_class)


def test_format_table_shows_undefined_values_as_dash():
    truth = np.array([0, 0, 1, 1])
    m = metrics_from_confusion(confusion_matrix(truth, np.zeros(4, dtype=int), 3, IGNORE), NAMES)
    table = format_table(m)
    tree_line = next(line for line in table.splitlines() if line.startswith("tree"))
    assert "-" in tree_line
    assert "nan" not in table.lower()


def test_the_table_fits_long_class_names_and_says_what_was_not_scored():
    names = ["impervious surfaces and roads", "b"]
    metrics = {**metrics_from_confusion(np.array([[5, 1], [0, 4]]), names), UNSCORED: 12}
    lines = format_table(metrics).splitlines()
    assert lines[1].startswith("impervious surfaces and roads  ") and len({len(line) for line in lines[:3]}) == 1
    assert "not scored: 12 px of ground truth where the image holds no data" in lines[-1]
    assert "not scored" not in format_table(metrics_from_confusion(np.array([[5, 1], [0, 4]]), names))


def test_a_class_never_predicted_is_told_apart_from_one_never_trained_on():
    names = ["road", "building", "tree"]
    metrics = metrics_from_confusion(np.array([[5, 0, 1], [3, 0, 0], [1, 0, 4]]), names)
    assert "building (3 px): not learned yet; train longer" in format_table(metrics)
    table = format_table({**metrics, NOT_TRAINED: ["building"]})
    assert "building (3 px): no training pixel was labelled so; add training tiles that hold it" in table
    assert "not learned yet" not in table


def test_a_class_predicted_though_never_trained_on_is_said():
    """An untrained output still wins some pixels: its F1 (0.3% in a review) counted in the means without a word."""
    names = ["road", "building", "water"]
    metrics = {**metrics_from_confusion(np.array([[5, 0, 1], [0, 4, 0], [2, 0, 1]]), names), NOT_TRAINED: ["water"]}
    assert format_table(metrics).splitlines()[-1] == (
        "predicted, though no training pixel was labelled so: water: an untrained output's guesses, counted in the means; "
        "add training tiles that hold them (check LABEL_VALUES and TRAIN_IDS)")
    assert "predicted, though" not in format_table({**metrics, NOT_TRAINED: []})
    # one the ground truth lacks is in no mean (the line above says so): its pixels cost the others' scores (review)
    absent = {**metrics_from_confusion(np.array([[5, 0, 1], [0, 4, 0], [0, 0, 0]]), names), NOT_TRAINED: ["water"]}
    assert format_table(absent).splitlines()[-2:] == [
        "not in the ground truth, so not in the means: water",
        "predicted, though no training pixel was labelled so: water: an untrained output's guesses, which lower the "
        "scores; add training tiles that hold them (check LABEL_VALUES and TRAIN_IDS)"]


def test_the_table_keeps_its_columns_under_class_names_of_wide_characters():
    """Chinese, Japanese and Korean characters take two columns in a terminal: padded by what they show."""
    from eoseg.metrics import shown_width

    names = ["建筑物", "road", "树木"]
    m = metrics_from_confusion(np.diag([5, 4, 3]).astype(np.int64), names)
    rows = [line for line in format_table(m).splitlines()[:4]]
    assert len({shown_width(row[:row.index("100.0")]) for row in rows[1:]}) == 1  # every F1 in the same column
    assert shown_width("建筑物 a") == 8
