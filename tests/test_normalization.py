"""eoseg.normalization: band statistics, and the scale check every training path runs."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import rasterio
import torch

from eoseg.errors import EosegError
from eoseg.normalization import (NORMALISED_RMS_RANGE, BandStatistics, Normalization, check_scale, check_value_scale,
                                  scale_problem, source_shift, value_scale, values_of_type)

from .conftest import ROOT, as_arguments, make_tiny_config, run_script, tiny_overrides
from .test_cli import assert_one_line_error


def test_band_statistics_by_blocks_are_those_of_the_valid_pixels():
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 4096, size=(2, BandStatistics.ROWS * 2 + 37, 50)).astype(np.uint16)
    pixels[1] = 7  # a constant band
    valid = rng.random(pixels.shape[1:]) > 0.3
    statistics = BandStatistics(2)
    statistics.add(pixels[:, :100], valid[:100])  # tiles add up
    statistics.add(pixels[:, 100:], valid[100:])
    chosen = pixels[:, valid].astype(np.float64)
    assert statistics.count == valid.sum()
    np.testing.assert_allclose(statistics.mean, chosen.mean(axis=1))
    np.testing.assert_allclose(statistics.std, chosen.std(axis=1), atol=1e-6)
    np.testing.assert_array_equal(statistics.low, chosen.min(axis=1))
    np.testing.assert_array_equal(statistics.high, chosen.max(axis=1))
    means, stds = statistics.normalization(0, 2)
    assert means == [float(f"{chosen[0].mean():.6g}"), 7.0] and stds[1] == 1e-6  # a constant band divides by 1e-6, not 0
    assert stds[0] == pytest.approx(chosen[0].std(), rel=1e-5)


def statistics_of(mean: list[float], std: list[float]) -> BandStatistics:
    """Statistics of two pixels per band with this mean and std."""
    mean, std = np.asarray(mean, dtype=np.float64), np.asarray(std, dtype=np.float64)
    statistics = BandStatistics(len(mean))
    statistics.add(np.stack([mean - std, mean + std], axis=1)[:, :, None], np.ones((2, 1), dtype=bool))
    return statistics


@pytest.mark.parametrize("mean, std, refused", [
    ([80.0, 75.0, 74.0], [44.0, 36.0, 36.0], False),  # 8-bit imagery divided by 255, as the method does
    ([457.0, 75.0, 74.0], [263.0, 36.0, 36.0], False),  # 16-bit panchromatic values of a few hundred: about 2
    ([1280.0, 75.0, 74.0], [710.0, 36.0, 36.0], True),  # 12-bit imagery divided by 255: about 5.7
    ([0.31, 75.0, 74.0], [0.17, 36.0, 36.0], True),  # reflectances of 0..1 divided by 255: about 0.001
    ([0.0, 75.0, 74.0], [0.0, 36.0, 36.0], False),  # a constant band: nothing to scale
])
def test_scale_problem_names_the_bands_far_from_unit_scale_and_the_values_to_set(tmp_path, mean, std, refused):
    cfg = make_tiny_config(tmp_path)  # NORM_MEAN 0, NORM_STD 255 for IR, R, G
    statistics = statistics_of(mean, std)
    problem = scale_problem(statistics, cfg)
    assert (problem is not None) == refused
    if refused:
        rms = np.hypot(mean[0] / 255, std[0] / 255)
        assert not NORMALISED_RMS_RANGE[0] <= rms <= NORMALISED_RMS_RANGE[1]
        assert f"IR into values of mean {mean[0] / 255:.3g} and std {std[0] / 255:.3g}" in problem
        assert " R into" not in problem  # the bands in range are not named
        # the whole NORM lines of the image's bands, each band its own mean and std
        assert f"set NORM_MEAN = {[mean[0], 75.0, 74.0]} and NORM_STD = {[std[0], 36.0, 36.0]}" in problem
        assert "check_data.py --config FILE --write-norm" in problem
        with pytest.raises(EosegError, match=re.escape(problem)):
            check_scale(statistics, cfg)
    else:
        check_scale(statistics, cfg)
    assert scale_problem(BandStatistics(3), cfg) is None  # nothing read: nothing to say


def test_a_band_reaching_a_fill_value_is_said_to_want_a_nodata_tag_not_a_normalisation(tmp_path):
    """A DSM's untagged -9999 got "set mean -157, std 907" from check_data.py, and patches of heights of -9999 with
    exit 0 once set (review)."""
    cfg = make_tiny_config(tmp_path, EXTRA_SOURCES=[{"pattern": "dsm/{id}.tif", "bands": [1], "band_names": ["DSM"],
                                                     "mean": [-157.3], "std": [906.8]}])
    statistics = statistics_of([100.0, 90.0, 80.0, 260.0], [40.0, 40.0, 40.0, 20.0])
    statistics.add(np.array([[50.0], [50.0], [50.0], [-9999.0]])[:, :, None], np.ones((1, 1), dtype=bool))
    with pytest.raises(EosegError, match=r"the training tiles' DSM values reach -9999, no measurement: a nodata value "
                                         r"without a tag\? tag it in its files \(gdal_edit.py -a_nodata -9999 FILE\)"):
        check_scale(statistics, cfg)


def test_scale_problem_of_an_extra_source_names_its_entry(tmp_path):
    # elevations above sea level with the mean and std meant for heights above the ground
    cfg = make_tiny_config(tmp_path, EXTRA_SOURCES=[{"pattern": "dsm/dsm_09cm_matching_area{id}.tif", "bands": [1],
                                                     "band_names": ["DSM"], "mean": [0.0], "std": [10.0]}])
    problem = scale_problem(statistics_of([80.0, 75.0, 74.0, 262.0], [44.0, 36.0, 36.0, 3.0]), cfg)
    assert "DSM into values of mean 26.2 and std 0.3" in problem
    assert 'set EXTRA_SOURCES[0] (DSM)\'s "mean": [262.0] and "std": [3.0]' in problem and "NORM_MEAN" not in problem


def sixteen_bit_copy(sample_root, tmp_path, factor: int):
    """The tiny sample's images as uint16 of ``factor`` times their 8-bit values (e.g. 16: 12-bit imagery)."""
    data = tmp_path / "data"
    shutil.copytree(sample_root / "data", data)
    for path in (data / "top").glob("*.tif"):
        with rasterio.open(path) as src:
            pixels, profile = src.read(), src.profile
        with rasterio.open(path, "w", **{**profile, "dtype": "uint16"}) as dst:
            dst.write(pixels.astype(np.uint16) * factor)
    return data


def test_twelve_bit_tiles_under_the_8_bit_normalisation_are_refused_until_check_data_writes_theirs(sample_root, tmp_path):
    """A user's 12-bit imagery with config.py's NORM_STD of 255: extraction and training from the tiles
    refuse it in one line, before a patch is kept or a step taken; check_data.py lists it as a problem, and with
    --write-norm writes the tiles' own normalisation, with which extraction runs."""
    data = sixteen_bit_copy(sample_root, tmp_path, 16)
    overrides = as_arguments({**tiny_overrides(tmp_path), "DATA_ROOT": str(data)})
    extraction = run_script("extract_images.py", *overrides)
    assert_one_line_error(extraction, "the normalisation turns the training tiles' IR into values of mean", "set NORM_MEAN = [")
    assert not [path.name for path in tmp_path.iterdir() if "patches" in path.name]  # nor a temporary folder
    training = run_script("training.py", *overrides, "TRAIN_SOURCE=tiles")
    assert_one_line_error(training, "the normalisation turns the training tiles'")
    assert not (tmp_path / "model.pt").exists()
    config = tmp_path / "mine.py"
    config.write_text("# my 12-bit tiles\n")
    check = run_script("check_data.py", "--config", str(config), "--out", str(tmp_path / "check"), *overrides)
    assert check.returncode == 1 and "problem: the normalisation turns the training tiles'" in check.stdout
    # measured and written, the normalisation is judged as written: no problem left
    check = run_script("check_data.py", "--config", str(config), "--write-norm", "--out", str(tmp_path / "check"), *overrides)
    assert check.returncode == 0 and "normalisation turns" not in check.stdout and "wrote NORM_MEAN" in check.stdout
    written = dict(line.split(" = ") for line in config.read_text().splitlines() if line.startswith("NORM_"))
    # the values the refusal named are those check_data.py writes
    assert f"set NORM_MEAN = {written['NORM_MEAN']} and NORM_STD = {written['NORM_STD']}" in extraction.stderr
    kept = [item for item in overrides if not item.startswith("NORM_")]
    assert run_script("extract_images.py", "--config", str(config), *kept).returncode == 0
    assert (tmp_path / "patches" / "manifest.json").is_file()


# ---------------------------------------------------------------- the value scale of images against the training imagery's
def counted(pixels: np.ndarray) -> BandStatistics:
    statistics = BandStatistics(pixels.shape[0])
    statistics.add(pixels, np.ones(pixels.shape[1:], dtype=bool))
    return statistics


def test_value_scale_is_the_median_over_the_image_bands_of_their_magnitudes():
    rng = np.random.default_rng(0)
    pixels = rng.integers(1, 4096, size=(4, 40, 50)).astype(np.float64)
    trained = counted(pixels).record()
    assert trained["mean"] == pytest.approx(pixels.reshape(4, -1).mean(axis=1), rel=1e-5)
    assert value_scale(trained, counted(pixels * 16), 3) == pytest.approx(16, rel=1e-5)
    scaled = pixels * np.array([16.0, 16.0, 1.0, 1.0])[:, None, None]  # one band of three off: the median holds
    assert value_scale(trained, counted(scaled), 3) == pytest.approx(16, rel=1e-5)
    assert value_scale(trained, counted(pixels * [[[1]], [[1]], [[1]], [[100]]]), 3) == pytest.approx(1, rel=1e-5)  # not an image band
    assert value_scale(trained, BandStatistics(4), 3) is None  # nothing valid was read
    assert value_scale({"mean": [0.0] * 4, "std": [0.0] * 4}, counted(pixels), 3) is None  # trained on empty bands
    assert BandStatistics(2).record() is None


def test_values_of_another_type_are_of_the_training_type_near_its_scale():
    """A float copy of integer training data is held to the value check's limits (a darker 16-bit scene, 0.6 times,
    as float32: review); an integer image of another type to the note's (an 8-bit rendering of 11-bit data, 0.37
    times, is other data, refused for its type: code review)."""
    pixels = np.random.default_rng(2).integers(100, 2000, size=(3, 30, 30)).astype(np.float64)
    trained = counted(pixels).record()
    assert values_of_type(trained, counted(pixels * 0.6), 3, "uint16", measured_is_float=True)
    assert not values_of_type(trained, counted(pixels * 0.6), 3, "uint16", measured_is_float=False)
    assert not values_of_type(trained, counted(pixels * 0.3), 3, "uint16", measured_is_float=True)
    assert values_of_type(trained, counted(pixels * 1.2), 3, "uint16", measured_is_float=False)


@pytest.mark.parametrize("factor, outcome", [(1.0, None), (1.4, None), (0.7, None), (2.5, "note"), (0.4, "note"),
                                             (3.5, "error"), (0.3, "error"), (16.0, "error"), (1e-4, "error")])
def test_images_far_off_the_training_scale_are_refused_and_nearer_ones_noted(factor, outcome):
    pixels = np.random.default_rng(1).integers(1, 4096, size=(3, 30, 30)).astype(np.float64)
    trained = counted(pixels).record()
    measured = counted(pixels * factor)
    if outcome == "error":
        with pytest.raises(EosegError, match=f"scene.tif: its values are {factor:.2g} times .*INFER_VALUE_CHECK=False"):
            check_value_scale(trained, measured, 3, "scene.tif", refuse=True)
        note = check_value_scale(trained, measured, 3, "scene.tif", refuse=False)  # INFER_VALUE_CHECK=False: said, not refused
        assert note.startswith(f"note: scene.tif: its values are {factor:.2g} times")
    elif outcome == "note":
        assert f"its values are {factor:.2g} times" in check_value_scale(trained, measured, 3, "scene.tif", refuse=True)
    else:
        assert check_value_scale(trained, measured, 3, "scene.tif", refuse=True) is None
    assert check_value_scale(None, measured, 3, "scene.tif", refuse=True) is None  # weights that record none


def test_values_moved_by_an_offset_are_said_to_be_moved_not_scaled():
    """Sentinel-2 L2A adds 1000 to its values since processing baseline 04.00: such a scene was noted as on "another
    scale or encoding" (62.7% of its labels changed), and a dark one refused with an INFER_VALUE_SCALE that scales a
    shift (review). Values that keep the training spread are said to be moved, with the offset tag to set."""
    pixels = np.random.default_rng(5).integers(300, 1500, size=(4, 30, 30)).astype(np.float64)
    trained = counted(pixels).record()
    note = check_value_scale(trained, counted(pixels + 1000), 4, "scene.tif", refuse=True)
    assert "its values are 2 times" in note and ("; but their spread is the training values', and their means lie about "
                                                  "1000 higher: an offset the file does not tag (tag it, gdal_edit.py "
                                                  "-offset -OFFSET FILE") in note
    with pytest.raises(EosegError, match=r"would make a wrong map; but their spread is the training values', and their "
                                         r"means lie about 3000 higher: an offset .*; or INFER_VALUE_CHECK=False if they") as refused:
        check_value_scale(trained, counted(pixels + 3000), 4, "scene.tif", refuse=True)
    assert "INFER_VALUE_SCALE" not in str(refused.value)  # a factor would shrink their spread: not offered (code review)
    assert "spread" not in check_value_scale(trained, counted(pixels * 2), 4, "scene.tif", refuse=True)  # scaled
    # a brighter 8-bit photo has no offset to tag: light, haze or exposure (review: a PNG sent to Sentinel-2's offset)
    photo = np.random.default_rng(6).integers(20, 120, size=(3, 30, 30)).astype(np.float64)
    note = check_value_scale(counted(photo).record(), counted(photo + 70), 3, "city.png", refuse=True)
    assert note.endswith("higher: brighter or darker light, haze or another camera's exposure") and "gdal_edit" not in note


def test_one_band_off_the_others_scale_is_noted_by_name():
    """The median over bands does not see one band alone on another scale (near-infrared from another product):
    a note names it; bands scaled alike, on or off the training scale, give no such note."""
    pixels = np.random.default_rng(4).integers(1, 4096, size=(4, 30, 30)).astype(np.float64)
    trained = counted(pixels).record()
    names = ["R", "G", "B", "NIR"]
    note = check_value_scale(trained, counted(pixels / [[[1]], [[1]], [[1]], [[16]]]), 4, "scene.tif", refuse=True,
                             band_names=names)
    assert note == ("note: scene.tif: against those the weights were trained on, its bands do not scale alike: NIR "
                    "0.062 times as much as the others (a band from another product, or stretched on its own?); the "
                    "labels may suffer")
    for factor in (1.0, 2.0):
        assert "do not scale alike" not in (check_value_scale(trained, counted(pixels * factor), 4, "scene.tif",
                                                               refuse=True, band_names=names) or "")


def test_values_times_a_factor_give_the_same_network_inputs():
    """INFER_VALUE_SCALE: the image's bands divided by the factor, through the normalisation for it, are the
    inputs the original values give; extra bands (here the last) keep theirs, also where a Caffe band order
    moves the bands."""
    rng = np.random.default_rng(2)
    values = torch.from_numpy(rng.uniform(0, 4000, size=(2, 4, 8, 8)).astype(np.float32))
    smaller = values.clone()
    smaller[:, :3] /= 16
    for order in (None, (2, 1, 0, 3)):
        normalization = Normalization((100.0, 200.0, 300.0, 5.0), (50.0, 60.0, 70.0, 2.0), order)
        assert normalization.for_values_times(1.0, 3) is normalization
        torch.testing.assert_close(normalization.for_values_times(16.0, 3).apply(smaller), normalization.apply(values))


def test_the_value_check_counts_the_declared_scale():
    pixels = np.random.default_rng(3).integers(1, 4096, size=(3, 30, 30)).astype(np.float64)
    trained = counted(pixels).record()
    assert check_value_scale(trained, counted(pixels * 16), 3, "scene.tif", refuse=True, factor=1 / 16) is None
    with pytest.raises(EosegError, match=r"its values \(times INFER_VALUE_SCALE 2\) are 32 times .*INFER_VALUE_SCALE=0\.0625"):
        check_value_scale(trained, counted(pixels * 16), 3, "scene.tif", refuse=True, factor=2)


@pytest.mark.parametrize("factor, outcome", [(1.0, None), (0.4, None), (4.0, "note"), (0.2, "note"), (60.0, "error"),
                                             (0.01, "error")])
def test_an_extra_source_far_off_its_training_values_is_refused(factor, outcome):
    """A DSM given for an nDSM (60 times), centimetres for metres: refused; a flatter scene's heights (a fifth): noted."""
    rng = np.random.default_rng(4)
    pixels = np.concatenate([rng.integers(1, 256, size=(3, 30, 30)), rng.uniform(0, 10, size=(1, 30, 30))]).astype(np.float64)
    trained = counted(pixels).record()
    measured = counted(pixels * np.array([1, 1, 1, factor])[:, None, None])
    sources = [("nDSM", slice(3, 4))]
    if outcome == "error":
        with pytest.raises(EosegError, match=f"scene.tif: its nDSM values are {factor:.2g} times .*a DSM for an nDSM"):
            check_value_scale(trained, measured, 3, "scene.tif", refuse=True, sources=sources)
    note = check_value_scale(trained, measured, 3, "scene.tif", refuse=outcome != "error", sources=sources)
    assert (note is None) == (outcome is None)
    if note:
        assert note.startswith(f"note: scene.tif: its nDSM values are {factor:.2g} times") and "\n" not in note
    assert check_value_scale(trained, measured, 3, "scene.tif", refuse=True) is None  # the image's own bands alike


def dsm_pixels(seed: int = 5) -> np.ndarray:
    """Three 8-bit bands and heights above the sea (258 m, 4.5 m apart)."""
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.integers(1, 256, size=(3, 30, 30)), rng.normal(258, 4.5, size=(1, 30, 30))])


@pytest.mark.parametrize("metres, outcome", [(0.0, None), (-4.0, None), (9.0, "note"), (-12.0, "note"),
                                             (47.0, "error"), (-20.0, "error")])
def test_a_dsm_on_another_datum_is_refused(metres, outcome):
    """Heights above the sea on another datum, or of a town at another altitude: the magnitude hardly changes (the
    scale's ratio stays within 1.2), every pixel moves alike by many training standard deviations (4.5 m here)."""
    pixels = dsm_pixels()
    trained = counted(pixels).record()
    measured = counted(pixels + np.array([0, 0, 0, metres])[:, None, None])
    sources = [("DSM", slice(3, 4))]
    assert 1 / 1.2 < value_scale(trained, measured, slice(3, 4)) < 1.2
    assert source_shift(trained, measured, slice(3, 4)) == pytest.approx(abs(metres) / 4.5, rel=0.03, abs=0.01)
    if outcome == "error":
        with pytest.raises(EosegError, match=r"scene.tif: the mean of its DSM values, [\d.]+, lies [\d.]+ standard "
                                             r"deviations \(4\.\d+\) from that of those the weights were trained on, "
                                             r"258\.\d*: heights on another datum"):
            check_value_scale(trained, measured, 3, "scene.tif", refuse=True, sources=sources)
    note = check_value_scale(trained, measured, 3, "scene.tif", refuse=outcome != "error", sources=sources)
    assert (note is None) == (outcome is None)
    if note:
        assert note.startswith("note: scene.tif: the mean of its DSM values, ") and "\n" not in note


@pytest.mark.parametrize("metres", [-200.0, 600.0])
def test_a_dsm_far_off_is_refused_for_its_move_though_its_scale_is_only_noted(metres):
    """200 m lower is 0.23 times the magnitude, 600 m higher 3.3 times: the scale alone gives a note; the move of the
    mean, tens of standard deviations, refuses it as it refuses a smaller one."""
    pixels = dsm_pixels()
    trained = counted(pixels).record()
    measured = counted(pixels + np.array([0, 0, 0, metres])[:, None, None])
    with pytest.raises(EosegError, match="standard deviations .* heights on another datum"):
        check_value_scale(trained, measured, 3, "scene.tif", refuse=True, sources=[("DSM", slice(3, 4))])


def test_a_source_that_follows_the_scene_is_only_noted_when_it_moves():
    """An nDSM of a high-rise district against a city's (8 m, 3 m apart: 4 standard deviations), or backscatter in
    decibels (below 0) given for an nDSM (above 0, one magnitude): values near 0 against their spread, which the
    scene moves, not a datum; a note, as the scale's check notes a very different scene."""
    rng = np.random.default_rng(6)
    image = rng.integers(1, 256, size=(3, 30, 30))
    city = np.concatenate([image, rng.normal(8, 3, size=(1, 30, 30))])
    note = check_value_scale(counted(city).record(), counted(city + np.array([0, 0, 0, 12])[:, None, None]), 3,
                             "scene.tif", refuse=True, sources=[("nDSM", slice(3, 4))])
    assert note.startswith("note: scene.tif: the mean of its nDSM values, 20") and "a scene unlike" in note
    heights = np.concatenate([image, rng.uniform(0, 10, size=(1, 30, 30))])
    negated = counted(heights * np.array([1, 1, 1, -1])[:, None, None])
    assert 0.99 < value_scale(counted(heights).record(), negated, slice(3, 4)) < 1.01
    note = check_value_scale(counted(heights).record(), negated, 3, "scene.tif", refuse=True,
                             sources=[("nDSM", slice(3, 4))])
    assert note.startswith("note: scene.tif: the mean of its nDSM values, -4.9") and " lies 3.4 standard" in note


def test_the_band_that_moved_is_named_in_a_source_of_several():
    rng = np.random.default_rng(7)
    pixels = np.concatenate([rng.integers(1, 256, size=(3, 30, 30)), rng.normal(258, 4.5, size=(1, 30, 30)),
                             np.full((1, 30, 30), 7.0)])  # a DSM and a constant band: the latter never varied
    measured = counted(pixels + np.array([0, 0, 0, 40, 0])[:, None, None])
    with pytest.raises(EosegError, match=r"the mean of its DSM, flag values \(band 1\), 29\d"):
        check_value_scale(counted(pixels).record(), measured, 3, "scene.tif", refuse=True,
                          sources=[("DSM, flag", slice(3, 5))])


def test_the_source_offset_benchmark_scores_each_offset_and_says_what_the_check_does(tmp_path):
    """bench/source_offset.py end to end, briefly: the sample's test tiles with their DSM as it is pass the check, 100 m
    higher (some 20 of the training tiles' standard deviations) are refused; every offset is labelled and scored."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "source_offset.py"), "--steps", "1", "--seeds", "0", "--size", "128",
         "--offsets", "0", "100", "--workdir", str(tmp_path)],
        capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert result.returncode == 0, result.stderr[-2000:]
    rows = json.loads((tmp_path / "results.json").read_text())["rows"]
    assert [row["offset_m"] for row in rows] == [0.0, 100.0]
    assert [outcome for _, outcome in rows[0]["checks"]] == ["passed", "passed"]
    assert [outcome for _, outcome in rows[1]["checks"]] == ["refused", "refused"]
    assert all(shift > 10 for shift, _ in rows[1]["checks"])
    for row in rows:  # both test tiles scored at each offset, with the check off
        assert sum(map(sum, row["confusion_matrix"])) > 0
    assert "| +100 m |" in result.stdout


def test_source_shift_leaves_bands_that_never_varied():
    trained = {"mean": [1.0, 5.0], "std": [2.0, 0.0]}
    assert source_shift(trained, counted(np.full((2, 4, 4), 9.0)), slice(0, 2)) == 4.0
    assert source_shift(trained, counted(np.full((2, 4, 4), 9.0)), slice(1, 2)) is None
    assert source_shift(trained, BandStatistics(2), slice(0, 2)) is None


def test_source_bands_place_each_raster_source_in_the_stacked_input(tiny_cfg):
    cfg = tiny_cfg.replace(EXTRA_SOURCES=[
        {"pattern": "dsm_{id}.tif", "bands": [1], "band_names": ["DSM"], "mean": [0.0], "std": [1.0]},
        {"derived": "ndvi"},
        {"pattern": "sar_{id}.tif", "bands": [1, 2], "band_names": ["VV", "VH"], "mean": [0.0] * 2, "std": [1.0] * 2}])
    assert cfg.source_bands == [("DSM", slice(3, 4)), ("VV, VH", slice(5, 7))]


def test_nodata_takes_the_training_imagerys_mean_where_it_is_known():
    """NORM_MEAN 0 (the method's 1/255) filled holes with black, which the network labelled into the pixels around
    them; the training imagery's mean is a flat, ordinary colour."""
    normalization = Normalization((0.0, 0.0, 0.0), (255.0, 255.0, 255.0))
    pixels = np.full((3, 2, 2), 200, np.uint8)
    valid = np.array([[True, False], [True, True]])
    assert normalization.fill_invalid(pixels, valid)[:, 0, 1].tolist() == [0, 0, 0]
    filled = normalization.filled_with({"mean": [104.4, 75.6, 82.0], "std": [30.0, 20.0, 25.0]})
    assert filled.fill_invalid(pixels, valid)[:, 0, 1].tolist() == [104, 76, 82]  # the nearest uint8
    assert filled.fill_invalid(pixels, valid)[:, 1].tolist() == pixels[:, 1].tolist()
    np.testing.assert_allclose(filled.fill_invalid(pixels.astype(np.float32), valid)[:, 0, 1], [104.4, 75.6, 82.0])
    # INFER_VALUE_SCALE 0.5 on the image's 2 bands: their raw values are twice the training ones
    assert filled.for_values_times(0.5, 2).fill == pytest.approx((208.8, 151.2, 82.0))
    assert normalization.filled_with(None) is normalization
    assert normalization.filled_with({"mean": [1.0], "std": [1.0]}) is normalization  # of other bands


@pytest.mark.parametrize("measured, suggested", [
    (9380.0, "10000 (9.38e+03 measured on its values)"),  # reflectance 0..1 of a 0..10000 product (review)
    (0.0657, "0.0625 (0.0657 measured on its values)"),  # 16-bit values, weights of 12-bit ones
    (16.4, "16 (16.4 measured on its values)"),
    (262.0, "255 (262 measured on its values)"),  # 8-bit values against 0..1
    (2.5, "2.5 (measured on its values)"),  # near no encoding's factor: the scene's own light, as measured
])
def test_the_suggested_value_scale_is_the_encodings_factor_it_lies_near(measured, suggested):
    from eoseg.normalization import suggested_value_scale

    assert suggested_value_scale(measured) == suggested
