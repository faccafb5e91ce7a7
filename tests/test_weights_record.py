"""eoseg.weights_record: the self-description of exported weights files, and its check against a config."""

from __future__ import annotations

import json

import pytest

from eoseg.errors import EosegError
from eoseg.metadata import data_signature
from eoseg.models import model_from_config
from eoseg.weights_record import FORMAT, check_weights_record, weights_record

from .conftest import make_tiny_config


@pytest.fixture(scope="module")
def cfg(tmp_path_factory):
    return make_tiny_config(tmp_path_factory.mktemp("record"), MODEL_WIDTH=0.0625)


@pytest.fixture(scope="module")
def record(cfg):
    return weights_record(model_from_config(cfg), data_signature(cfg, holdout=False), False, "trained by eoseg")


def test_the_record_describes_model_and_data(record, cfg):
    assert record["format"] == FORMAT and record["origin"] == "trained by eoseg" and record["imposed_normalization"] is False
    assert record["model"] == {"name": "segnet", "in_channels": 3, "num_classes": 6, "width": 0.0625}
    assert record["signature"] == data_signature(cfg, holdout=False)
    assert json.loads(json.dumps(record)) == record  # stored as JSON in the file's header or metadata
    check_weights_record(record, cfg, "m.safetensors")


@pytest.mark.parametrize("bad", [None, [], {"format": "other-1"}, {"model": {}, "signature": {}}])
def test_a_record_not_written_by_eoseg_is_refused(bad, cfg):
    with pytest.raises(EosegError, match=f"^m.onnx: no '{FORMAT}' record; not written by eoseg$"):
        check_weights_record(bad, cfg, "m.onnx")


def test_a_damaged_record_is_one_line(record, cfg):
    damaged = {**record, "model": {key: value for key, value in record["model"].items() if key != "width"}}
    with pytest.raises(EosegError, match=r"^m.onnx: its eoseg record lacks model.width, so it is damaged or was edited"):
        check_weights_record(damaged, cfg, "m.onnx")


@pytest.mark.parametrize("key, value", [("width", "abc"), ("width", float("nan")), ("width", 1e9), ("width", 0),
                                        ("in_channels", "3"), ("num_classes", 0), ("in_channels", True), ("name", 3)])
def test_a_record_of_values_no_model_is_built_of_is_one_line(record, cfg, key, value):
    """An edited header: a width as text or NaN was a traceback, one of 1e9 an attempt to allocate terabytes."""
    edited = {**record, "model": {**record["model"], key: value}}
    with pytest.raises(EosegError, match=rf"^m.onnx: its eoseg record holds model.{key} = .*which no model is built of"):
        check_weights_record(edited, cfg, "m.onnx")


def test_weights_of_other_bands_or_classes_are_refused(record, cfg):
    with pytest.raises(EosegError, match="m.onnx was trained for 3 input bands, but the config has 4"):
        check_weights_record(record, cfg.replace(EXTRA_SOURCES=[{"derived": "ndvi"}]), "m.onnx")
    with pytest.raises(EosegError, match=r"m.onnx was made with band_names = \['IR', 'R', 'G'\]"):
        check_weights_record(record, cfg.replace(BAND_NAMES=["R", "G", "B"]), "m.onnx")


def test_an_imposed_normalisation_overrides_the_configs(record, cfg):
    """Imported weights (Caffe's) dictate their normalisation: the config's NORM_MEAN and NORM_STD do not matter."""
    other = cfg.replace(NORM_MEAN=[100.0, 100.0, 100.0], NORM_STD=[50.0, 50.0, 50.0])
    with pytest.raises(EosegError, match="normalization"):
        check_weights_record(record, other, "m.onnx")
    check_weights_record({**record, "imposed_normalization": True}, other, "m.onnx")
